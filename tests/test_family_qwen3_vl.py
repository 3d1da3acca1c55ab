"""Qwen3-VL as a family on a tiny random `Qwen3VLForConditionalGeneration`: what differs from Qwen2.5-VL.

Timestamped prompts, its sampler and whole-video pixel budget (against the official processor where
torchvision is installed), DeepStack in the captured features, internalizing and answering (merged and
hooked, chunked long videos), plain PEFT, and the `v2l` commands (teacher, train with resume, eval, bench).
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch

from fixtures.families import (
    assert_benchmarks_run,
    assert_chunked_is_the_composition_of_its_chunks,
    assert_commands_run,
    assert_plain_peft_answers_like_hn_answer,
    assert_same_as_official_qwen,
    official_qwen_inputs,
)
from fixtures.models import TINY_HYPERNET, randomize_outputs
from fixtures.videos import write_video
from transformers_v2l import Video2LoraConfig, Video2LoraHypernetwork, Video2LoraProcessor
from transformers_v2l.families import get_family
from transformers_v2l.families.qwen2_5_vl import VIDEO_TOKEN
from transformers_v2l.families.qwen3_vl import Qwen3VLFamily
from transformers_v2l.injection import inject_lora, stack_adapters
from transformers_v2l.video_io import load_video

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


@pytest.fixture(scope="module")
def qwen3_path(tmp_path_factory):
    """A saved tiny Qwen3-VL: 4 decoder layers, DeepStack after the first two, at most 12 frames of 128 x 128 px."""
    model, tokenizer = Qwen3VLFamily.build_tiny_model(seed=0)
    return Qwen3VLFamily.save_tiny_model(model, tokenizer, tmp_path_factory.mktemp("tiny-qwen3_vl"))


@pytest.fixture(scope="module")
def qwen3_vlm(qwen3_path):
    return Qwen3VLFamily.model_class().from_pretrained(qwen3_path, dtype=torch.float32).eval()


@pytest.fixture
def hypernet(qwen3_vlm, qwen3_path):
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(qwen3_path, **TINY_HYPERNET)
    processor = Video2LoraProcessor.from_pretrained(qwen3_path, num_frames=6)
    return randomize_outputs(Video2LoraHypernetwork(config, base_model=qwen3_vlm, processor=processor))


def _video(frames=4, height=90, width=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_binding_and_preset(qwen3_path, qwen3_vlm):
    config = Video2LoraConfig.from_base_model(qwen3_path)
    assert (config.base_model_type, config.num_hidden_layers, config.module_shapes) == (
        "qwen3_vl",
        4,
        {"down_proj": [128, 64]},
    )
    family = get_family(qwen3_vlm)
    assert isinstance(family, Qwen3VLFamily) and qwen3_vlm.config.vision_config.deepstack_visual_indexes == [
        0,
        1,
    ]
    regex = family.peft_target_regex(["down_proj"])
    assert [n for n, _ in qwen3_vlm.named_modules() if re.fullmatch(regex, n)] == [
        f"model.language_model.layers.{i}.mlp.down_proj" for i in range(4)
    ]
    shapes = Qwen3VLFamily.presets["qwen3-vl-2b"]
    bound = Video2LoraConfig.from_base_model(
        Qwen3VLFamily._config(shapes["vision"], shapes["text"], shapes["token_ids"], True)
    )
    assert (bound.num_hidden_layers, bound.hidden_size, bound.module_shapes) == (
        28,
        2048,
        {"down_proj": [6144, 2048]},
    )


def test_timestamped_prompt_and_sampler(qwen3_path):
    processor = Video2LoraProcessor.from_pretrained(qwen3_path)
    assert (processor.family, processor.vision["patch_size"], processor.vision["max_pixels"]) == (
        "qwen3_vl",
        16,
        12 * 128 * 128,
    )
    frames, meta = load_video(_video(5), num_frames=5)  # arrays: 1 frame per second
    inputs = processor.internalization_inputs((frames, meta), instruction="Remember this.")
    grid_t, grid_h, grid_w = inputs["video_grid_thw"][0].tolist()
    assert grid_t == 3  # 5 frames: two pairs and the last frame twice
    patch = "<|vision_start|>" + VIDEO_TOKEN * (grid_h * grid_w // 4) + "<|vision_end|>"
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert f"<0.5 seconds>{patch}<2.5 seconds>{patch}<4.0 seconds>{patch}" in text  # each pair's mean time
    assert text.endswith("Remember this.<|im_end|>\n") and "second_per_grid_ts" not in inputs
    assert int((inputs["mm_token_type_ids"] == 2).sum()) == grid_t * grid_h * grid_w // 4
    sample = Qwen3VLFamily.sample_frame_indices
    assert sample(300, 30.0, num_frames=12) == [0, 27, 54, 82, 109, 136, 163, 190, 217, 245, 272, 299]
    assert sample(30, 30.0, num_frames=12) == [0, 10, 19, 29]  # 1 s at 2 fps: at least 4 frames
    assert sample(9, 1.0, num_frames=12, target_fps=1.0) == list(range(9))  # no rounding to pairs


def test_features_are_the_layer_inputs_with_deepstack(hypernet, qwen3_vlm):
    inputs = hypernet.processor.internalization_inputs([_video(4)], return_metadata=False)
    features, _ = hypernet.extract_features(**inputs)
    with torch.no_grad():
        outputs = qwen3_vlm.model(**inputs, output_hidden_states=True)
        video = qwen3_vlm.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    states = outputs.hidden_states  # the embeddings, then each layer's output before DeepStack adds to it
    deepstack = [
        torch.cat(level) for level in video.deepstack_features
    ]  # [N_video_tokens, H] per early layer
    visual = inputs["mm_token_type_ids"] == 2  # [B, S]
    assert len(deepstack) == 2 and torch.equal(features[:, 0], states[0])
    for layer in range(1, 4):
        expected = states[layer].clone()
        if layer - 1 < len(
            deepstack
        ):  # the input of this layer holds the vision features added after the last
            expected[visual] += deepstack[layer - 1]
            assert not torch.equal(features[:, layer], states[layer])
        assert torch.equal(features[:, layer], expected), layer


def test_internalize_answer_and_batch(hypernet):
    adapters = hypernet.internalize([_video(4), _video(6, 40, 60, seed=1)], batch_size=2)
    assert adapters[0].base_model_type == "qwen3_vl"
    questions = ["What happens in the video?", "Which color is the sky?"]
    batched = hypernet.answer(adapters, questions, max_new_tokens=6)
    assert batched == [hypernet.answer(a, q, max_new_tokens=6) for a, q in zip(adapters, questions)]
    assert isinstance(hypernet.answer_with_video(_video(4), questions[0], max_new_tokens=4), str)


def test_use_adapter_answers_and_chunked_composition(hypernet, tmp_path):
    adapter = hypernet.internalize(_video(4))
    questions = ["What happens in the video?", "Which color is the sky?"]
    calls = []  # the keyword arguments of each forward pass of the base model during hn.answer
    hook = hypernet.vlm.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(kwargs), with_kwargs=True
    )
    try:
        hooked = hypernet.answer(adapter, questions, max_new_tokens=6)
    finally:
        hook.remove()
    query = hypernet.processor.query_inputs(questions)
    tokenizer = hypernet.processor.tokenizer
    markers = [VIDEO_TOKEN, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    vision_ids = torch.tensor(tokenizer.convert_tokens_to_ids(markers))
    assert len(set(vision_ids.tolist())) == 4 and tokenizer.unk_token_id not in vision_ids.tolist()
    assert torch.equal(calls[0]["input_ids"], query["input_ids"])  # the prompt hn.answer runs: the questions
    assert not torch.isin(query["input_ids"], vision_ids).any()  # answering: zero visual tokens
    assert all(c.get("pixel_values_videos") is None and c.get("pixel_values") is None for c in calls)
    with torch.no_grad(), inject_lora(hypernet.family, *stack_adapters([adapter, adapter])):
        logits = hypernet.vlm(**query).logits
    weights = {k: v.clone() for k, v in hypernet.vlm.state_dict().items()}
    with hypernet.use_adapter(adapter), torch.no_grad():
        assert not all(torch.equal(hypernet.vlm.state_dict()[k], v) for k, v in weights.items())  # merged
        torch.testing.assert_close(hypernet.vlm(**query).logits, logits, atol=1e-4, rtol=1e-4)
        assert hypernet.answer(adapter, questions, max_new_tokens=6) == hooked
        with pytest.raises(RuntimeError, match="merged adapter"):
            hypernet.internalize(_video(4))
    assert all(torch.equal(hypernet.vlm.state_dict()[k], v) for k, v in weights.items())  # restored
    long = write_video(tmp_path / "long.mp4", 45, size=(90, 160), fps=10)  # 4.5 s: chunks of 2 s, 2 s, 0.5 s
    assert_chunked_is_the_composition_of_its_chunks(hypernet, long, chunk_frames=4, batch_size=2)


@pytest.mark.slow  # the same mechanism as Qwen2.5-VL's default test, on Qwen3VLForConditionalGeneration
def test_plain_peft_in_a_fresh_process(hypernet, qwen3_path, tmp_path):
    assert_plain_peft_answers_like_hn_answer(hypernet, qwen3_path, _video(4), tmp_path)


def test_teacher_train_resume_and_eval(qwen3_path, tmp_path):
    assert_commands_run(qwen3_path, "qwen3_vl", 64, tmp_path)


def test_benchmarks_run_for_the_family(tmp_path, monkeypatch):
    assert_benchmarks_run("qwen3-vl-2b", Qwen3VLFamily, 64, tmp_path, monkeypatch)


@pytest.mark.torchvision
@pytest.mark.skipif(not HAS_TORCHVISION, reason="the official Qwen3VLVideoProcessor needs torchvision")
def test_matches_the_official_qwen3_vl_processor(real_clips, tmp_path):
    from transformers import Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata as OfficialMetadata

    model, tokenizer = Qwen3VLFamily.build_tiny_model(seed=0)
    folder = Qwen3VLFamily.save_tiny_model(model, tokenizer, tmp_path / "defaults", min_pixels=128 * 32 * 32,
                                           max_pixels=32 * 32 * 768)  # the video processor's own budget  # fmt: skip
    official, ours = Qwen3VLProcessor.from_pretrained(folder), Video2LoraProcessor.from_pretrained(folder)
    assert type(official.video_processor).__name__ == "Qwen3VLVideoProcessor"
    clips = {f"{name} {n}@{fps}": load_video(path, num_frames=n, target_fps=fps, skip_secs=0.0)
             for name, path in real_clips.items() for n, fps in ((12, 2.0), (5, 1.0))}  # fmt: skip
    rng = np.random.default_rng(0)
    for height, width in ((37, 901), (271, 333), (1, 60), (29, 29)):
        clips[f"noise {height}x{width}"] = load_video(
            rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
        )
    for label, clip in clips.items():
        for edge in (224, 384):
            budget = Qwen3VLFamily.pixel_budget(ours, edge, max(len(clip[0]), 2))
            theirs = official_qwen_inputs(official, [clip], [ours.instruction], False, "right", budget)
            theirs["second_per_grid_ts"] = torch.zeros(1)  # Qwen3-VL has none; compared below as absent
            mine = ours.internalization_inputs(clip, longest_edge=edge)
            assert "second_per_grid_ts" not in mine
            assert_same_as_official_qwen(
                {**mine, "second_per_grid_ts": torch.zeros(1)}, theirs, f"{label} at {edge}"
            )
    official.video_processor.max_frames = ours.num_frames
    for name, path in real_clips.items():  # from a file: the frames the official rule samples
        meta = ours.internalization_inputs(path)["video_metadata"][0]
        probe = OfficialMetadata(total_num_frames=meta.total_num_frames, fps=meta.fps)
        assert meta.frame_indices == official.video_processor.sample_frames(probe, fps=ours.fps).tolist(), (
            name
        )
    for total, fps in ((300, 30.0), (30, 30.0), (9, 1.0), (151, 29.97), (7, 3.0)):
        for num_frames, target in ((12, 2.0), (5, 1.0), (64, 2.0)):
            official.video_processor.max_frames = num_frames
            expected = official.video_processor.sample_frames(
                OfficialMetadata(total_num_frames=total, fps=fps), fps=target
            )
            assert (
                Qwen3VLFamily.sample_frame_indices(total, fps, num_frames=num_frames, target_fps=target)
                == expected.tolist()
            )
