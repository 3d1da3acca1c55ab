"""Qwen2.5-VL as a family, end to end on a tiny random `Qwen2_5_VLForConditionalGeneration`.

Binding and target modules, the prompt, pixels and 3-D positions (against the official processor where
torchvision is installed), the captured features, internalizing and answering, plain PEFT in a fresh
process, the family recorded with adapters, the training and evaluation commands and the benchmarks.
"""

from __future__ import annotations

import importlib.util
import json
import math
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
from transformers_v2l import GeneratedLora, Video2LoraConfig, Video2LoraHypernetwork, Video2LoraProcessor
from transformers_v2l.errors import AdapterMismatchError
from transformers_v2l.families import FAMILIES, get_family, register_family
from transformers_v2l.families.qwen2_5_vl import VIDEO_TOKEN, Qwen2_5_VLFamily
from transformers_v2l.injection import inject_lora, stack_adapters
from transformers_v2l.video_io import load_video

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    """A saved tiny Qwen2.5-VL (model, tokenizer, preprocessor config, chat template): at most 112 x 112 px frames."""
    model, tokenizer = Qwen2_5_VLFamily.build_tiny_model(seed=0)
    return Qwen2_5_VLFamily.save_tiny_model(model, tokenizer, tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="module")
def qwen_vlm(qwen_path):
    return Qwen2_5_VLFamily.model_class().from_pretrained(qwen_path, dtype=torch.float32).eval()


@pytest.fixture
def hypernet(qwen_vlm, qwen_path):
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(qwen_path, **TINY_HYPERNET)
    processor = Video2LoraProcessor.from_pretrained(qwen_path, num_frames=6)
    return randomize_outputs(Video2LoraHypernetwork(config, base_model=qwen_vlm, processor=processor))


def _video(frames=5, height=90, width=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


# ---- binding -------------------------------------------------------------------------------------------
def test_from_base_model_binds_the_language_model_and_targets_only_it(qwen_path, qwen_vlm):
    config = Video2LoraConfig.from_base_model(qwen_path, target_modules=["down_proj", "q_proj"])
    text = qwen_vlm.config.text_config
    assert (config.base_model_type, config.num_hidden_layers, config.hidden_size) == ("qwen2_5_vl", 4, 64)
    assert config.module_shapes == {"down_proj": [text.intermediate_size, 64], "q_proj": [64, 64]}
    family = get_family(qwen_vlm)
    assert isinstance(family, Qwen2_5_VLFamily)
    family.check_shapes(4, config.module_shapes, "The config")  # the derived shapes are the live ones
    regex = family.peft_target_regex(["down_proj"])
    names = [name for name, _ in qwen_vlm.named_modules()]
    assert any(n.startswith("model.visual.blocks.") and n.endswith("mlp.down_proj") for n in names)
    matched = [n for n in names if re.fullmatch(regex, n)]
    assert matched == [f"model.language_model.layers.{i}.mlp.down_proj" for i in range(4)]
    assert family.peft_key(2, "down_proj") == "base_model.model.model.language_model.layers.2.mlp.down_proj"


def test_preset_has_the_3b_shapes():
    from transformers_v2l.testing import family_of_preset, presets

    assert presets()["qwen2.5-vl-3b"] is Qwen2_5_VLFamily is family_of_preset("qwen2.5-vl-3b")
    shapes = Qwen2_5_VLFamily.presets["qwen2.5-vl-3b"]
    config = Qwen2_5_VLFamily._config(shapes["vision"], shapes["text"], shapes["token_ids"], True)
    bound = Video2LoraConfig.from_base_model(config)
    assert (bound.num_hidden_layers, bound.hidden_size, bound.module_shapes) == (
        36,
        2048,
        {"down_proj": [11008, 2048]},
    )
    with torch.device("meta"):
        model = Qwen2_5_VLFamily.model_class()(config)
    count = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    assert abs(count - 3.755e9) < 0.01e9, count  # Qwen2.5-VL-3B-Instruct: 3.75B parameters


# ---- processing ----------------------------------------------------------------------------------------
def test_processor_settings_come_from_the_checkpoint_and_are_checked(qwen_path, tmp_path):
    processor = Video2LoraProcessor.from_pretrained(qwen_path)
    assert (processor.family, processor.num_frames, processor.fps, processor.skip_secs) == (
        "qwen2_5_vl",
        12,
        2.0,
        0.0,
    )
    assert (processor.vision["min_pixels"], processor.vision["max_pixels"]) == (28 * 28, 112 * 112)
    assert processor.longest_edge == 336 and Qwen2_5_VLFamily.tokens_per_frame(processor) == 8
    only = (
        tmp_path / "processor-only"
    )  # a processor-only folder (no config.json) names its family by its class
    only.mkdir()
    for name in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.json"):
        (only / name).write_bytes((qwen_path / name).read_bytes())
    assert Video2LoraProcessor.from_pretrained(only).family == "qwen2_5_vl"
    big = Video2LoraProcessor(processor.tokenizer, "qwen2_5_vl")
    assert (
        Qwen2_5_VLFamily.pixel_budget(big) == (100352, 112896)
        and Qwen2_5_VLFamily.tokens_per_frame(big) == 72
    )
    for vision, message in (({"resample": 2}, "resample"), ({"min_pixels": 10**7}, "must not exceed"),
                            ({"merge_size": 0}, "merge_size")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            Video2LoraProcessor(processor.tokenizer, "qwen2_5_vl", vision=vision)


def test_prompt_positions_and_batches(qwen_path, real_clip):
    processor = Video2LoraProcessor.from_pretrained(qwen_path)
    frames, meta = load_video(real_clip("bikes.mp4"), num_frames=6, target_fps=2.0, skip_secs=0.0)
    inputs = processor.internalization_inputs((frames, meta), instruction="Remember this.")
    grid = inputs["video_grid_thw"][0].tolist()
    assert grid == [3, 4, 12]  # 640x272 in at most 112 * 112 px: 56 x 168, 2 x 6 merged patches per 2 frames
    assert inputs["pixel_values_videos"].shape == (3 * 4 * 12, 3 * 2 * 14 * 14)
    count = math.prod(grid) // 4
    tokenizer = processor.tokenizer
    assert tokenizer.decode(inputs["input_ids"][0]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
        + VIDEO_TOKEN * count + "<|vision_end|>Remember this.<|im_end|>\n"
    )  # fmt: skip
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == video_id).long() * 2)
    sampled_fps = len(meta.frame_indices) / meta.total_num_frames * meta.fps
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / sampled_fps])
    short, long = _video(3, 40, 60, seed=1), _video(6, 90, 160, seed=2)
    batch = processor.video_in_context_inputs([short, long], ["What happens?", "Any people?"])
    # Qwen's rule samples frames in pairs: 2 of the 3 frames, all 6 of the other; seconds per temporal patch are
    # temporal_patch_size / the sampled rate (2 frames over 3 s: 3.0), as Qwen2_5_VLProcessor computes them
    assert batch["video_grid_thw"].tolist() == [[1, 2, 4], [3, 6, 10]]
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([3.0, 2.0])
    for row, video in enumerate((short, long)):
        single = processor.video_in_context_inputs(video, ["What happens?", "Any people?"][row])
        width = single["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][row, -width:], single["input_ids"][0])  # left padded
        assert torch.equal(batch["mm_token_type_ids"][row, -width:], single["mm_token_type_ids"][0])
    query = processor.query_inputs(["What happens in the video?"])["input_ids"]
    vision_ids = tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, "<|vision_start|>", "<|image_pad|>"])
    assert not torch.isin(query, torch.tensor(vision_ids)).any()  # answering: zero visual tokens


def test_frame_sampling_rule():
    sample = Qwen2_5_VLFamily.sample_frame_indices
    # 10 s at 30 fps, 2 fps wanted: 20 frames, capped at 12 and spread over the whole video
    assert sample(300, 30.0, num_frames=12, target_fps=2.0) == [
        0,
        25,
        50,
        75,
        100,
        125,
        150,
        175,
        200,
        225,
        250,
        275,
    ]
    assert sample(30, 30.0, num_frames=12, target_fps=2.0) == [0, 7, 15, 22]  # 1 s: at least 4 frames
    assert sample(9, 1.0, num_frames=12, target_fps=1.0) == [0, 1, 2, 3, 4, 5, 6, 7]  # floored to pairs
    assert sample(5, 1.0, num_frames=5, target_fps=2.0) == [0, 1, 2, 3]
    assert sample(1, 24.0, num_frames=12) == [0] and sample(40, 10.0, num_frames=1) == [0]
    assert sample(100, 10.0, num_frames=4, target_fps=2.0, skip_secs=1.0) == [
        10,
        30,
        50,
        70,
    ]  # 1 s off each end
    with pytest.raises(ValueError, match="num_frames"):
        sample(10, 1.0, num_frames=0)


# ---- features --------------------------------------------------------------------------------------------
def test_features_are_the_inputs_of_every_decoder_layer(hypernet, qwen_vlm):
    inputs = hypernet.processor.internalization_inputs(
        [_video(4), _video(6, 40, 60, seed=3)], return_metadata=False
    )
    features, mask = hypernet.extract_features(**inputs)
    with torch.no_grad():
        states = qwen_vlm.model(
            **inputs, output_hidden_states=True
        ).hidden_states  # L + 1: inputs, then the final norm
    assert features.shape == (2, 4, inputs["input_ids"].shape[1], 64) and torch.equal(
        mask, inputs["attention_mask"]
    )
    for layer in range(4):
        assert torch.equal(features[:, layer], states[layer]), layer
    flat = dict(inputs)
    flat.pop(
        "mm_token_type_ids"
    )  # without them the 3-D positions would be lost: they are rebuilt from the ids
    assert torch.equal(hypernet.family.extract_features(**flat)[0], features)


# ---- internalizing and answering ---------------------------------------------------------------------------
def test_internalize_answer_batch_merge_and_chunks(hypernet, real_clip, tmp_path):
    clip = real_clip("bikes.mp4")
    adapter = hypernet.internalize(clip)
    assert adapter.base_model_type == "qwen2_5_vl" and adapter.lora_A["down_proj"].shape == (4, 8, 128)
    assert len(adapter.metadata["frame_indices"]) == 6
    other = hypernet.internalize(_video(4))
    questions = ["What happens in the video?", "Which color is the sky?"]
    batched = hypernet.answer([adapter, other], questions, max_new_tokens=6)
    assert batched == [hypernet.answer(a, q, max_new_tokens=6) for a, q in zip([adapter, other], questions)]
    assert isinstance(hypernet.answer_with_video(clip, questions[0], max_new_tokens=4), str)
    inputs = hypernet.processor.query_inputs(questions)
    with torch.no_grad(), inject_lora(hypernet.family, *stack_adapters([adapter, adapter])):
        hooked = hypernet.vlm(**inputs).logits
    weights = {k: v.clone() for k, v in hypernet.vlm.state_dict().items()}
    with hypernet.use_adapter(adapter), torch.no_grad():
        torch.testing.assert_close(hypernet.vlm(**inputs).logits, hooked, atol=1e-4, rtol=1e-4)
        assert hypernet.answer(adapter, questions, max_new_tokens=6)[0] == batched[0]
    assert all(torch.equal(hypernet.vlm.state_dict()[k], v) for k, v in weights.items())
    long = write_video(tmp_path / "long.mp4", 45, size=(90, 160), fps=10)  # 4.5 s: chunks of 2 s, 2 s, 0.5 s
    assert_chunked_is_the_composition_of_its_chunks(hypernet, long, chunk_frames=4)


# ---- adapters as PEFT artifacts -----------------------------------------------------------------------------
def test_plain_peft_in_a_fresh_process_answers_like_hn_answer(hypernet, qwen_path, real_clip, tmp_path):
    assert_plain_peft_answers_like_hn_answer(hypernet, qwen_path, real_clip("bikes.mp4"), tmp_path)


def test_shared_decoder_path_needs_the_recorded_family(hypernet, tmp_path):
    from transformers_v2l import peft_state_dict

    adapter = hypernet.internalize(_video(4))
    folder = adapter.save_pretrained(tmp_path / "adapter")
    temporary = None
    if not [
        c
        for c in set(FAMILIES.values())
        if c.layers_path == Qwen2_5_VLFamily.layers_path and c.name != "qwen2_5_vl"
    ]:
        temporary = register_family(type("SharedPathFamily", (Qwen2_5_VLFamily,), {"name": "shared_path_test",
                                                                                 "model_types": ("shared_path_test",)}))  # fmt: skip
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        with pytest.raises(AdapterMismatchError, match="pass base_model_type"):
            peft_state_dict.parse(adapter.to_peft_state_dict(), config)
        loaded = GeneratedLora.from_pretrained(folder)  # the card's video2lora block records the family
        assert loaded.base_model_type == "qwen2_5_vl"
        assert torch.equal(loaded.lora_B["down_proj"], adapter.lora_B["down_proj"])
        assert "base_model_type: qwen2_5_vl" in (folder / "README.md").read_text()
    finally:
        if temporary is not None:
            FAMILIES.pop("shared_path_test")


# ---- commands -----------------------------------------------------------------------------------------------
def test_teacher_train_resume_and_eval(qwen_path, tmp_path):
    assert_commands_run(qwen_path, "qwen2_5_vl", 112, tmp_path)


def test_benchmarks_run_for_the_family(tmp_path, monkeypatch):
    assert_benchmarks_run("qwen2.5-vl-3b", Qwen2_5_VLFamily, 56, tmp_path, monkeypatch)


# ---- the official processor (needs torchvision) ------------------------------------------------------------
@pytest.mark.torchvision
@pytest.mark.skipif(not HAS_TORCHVISION, reason="the official Qwen2VLVideoProcessor needs torchvision")
def test_matches_the_official_qwen2_5_vl_processor(qwen_path, real_clips, tmp_path):
    from transformers import Qwen2_5_VLProcessor
    from transformers.video_utils import VideoMetadata as OfficialMetadata

    model, tokenizer = Qwen2_5_VLFamily.build_tiny_model(seed=0)
    folder = Qwen2_5_VLFamily.save_tiny_model(
        model, tokenizer, tmp_path / "wide", min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28
    )  # the video processor's own range
    official, ours = Qwen2_5_VLProcessor.from_pretrained(folder), Video2LoraProcessor.from_pretrained(folder)
    assert type(official.video_processor).__name__ == "Qwen2VLVideoProcessor"
    clips = {}
    for name, path in real_clips.items():
        for frames, fps in ((12, 2.0), (5, 1.0), (8, 4.0)):  # odd frame counts pad with the last frame
            clips[f"{name} {frames}@{fps}"] = load_video(
                path, num_frames=frames, target_fps=fps, skip_secs=0.0
            )
    rng = np.random.default_rng(0)
    for height, width in ((37, 901), (271, 333), (1, 60), (29, 29)):  # odd and extreme sizes
        clips[f"noise {height}x{width}"] = load_video(
            rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
        )
    for label, clip in clips.items():
        for edge in (224, 336, 448):
            budget = Qwen2_5_VLFamily.pixel_budget(ours, edge)
            theirs = official_qwen_inputs(official, [clip], [ours.instruction], False, "right", budget)
            assert_same_as_official_qwen(
                ours.internalization_inputs(clip, longest_edge=edge), theirs, f"{label} at {edge}"
            )
    for name, path in real_clips.items():  # from a file: the frames the official rule samples
        meta = ours.internalization_inputs(path)["video_metadata"][0]
        probe = OfficialMetadata(total_num_frames=meta.total_num_frames, fps=meta.fps)
        expected = official.video_processor.sample_frames(probe, fps=ours.fps, max_frames=ours.num_frames)
        assert meta.frame_indices == expected.tolist(), name
    pair = [clips["carphone_distorted.mp4 5@1.0"], clips["world.mp4 12@2.0"]]
    texts = ["What happens?", "Is anyone riding a bike in this clip?"]
    budget = Qwen2_5_VLFamily.pixel_budget(ours)
    theirs = official_qwen_inputs(official, pair, texts, True, "left", budget)
    assert_same_as_official_qwen(
        ours.video_in_context_inputs(pair, texts), theirs, "batch of 2, video in context"
    )
    for total, fps in ((300, 30.0), (30, 30.0), (9, 1.0), (151, 29.97), (1000, 25.0), (7, 3.0)):
        for num_frames, target in ((12, 2.0), (5, 1.0), (64, 2.0), (2, 0.5)):
            expected = official.video_processor.sample_frames(
                OfficialMetadata(total_num_frames=total, fps=fps), fps=target, max_frames=num_frames
            ).tolist()
            assert (
                Qwen2_5_VLFamily.sample_frame_indices(total, fps, num_frames=num_frames, target_fps=target)
                == expected
            )
