"""LLaVA-OneVision as a first-class family, on a tiny random `LlavaOnevisionForConditionalGeneration`.

Binding, prompt and pixels (checked against transformers' own `LlavaOnevisionProcessor` where torchvision
is installed), features of batches with different frame counts, the whole user flow, PEFT adapters in a
process that never imports transformers_v2l, and the `v2l` commands (teacher, train with resume, eval, bench).
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
import torch

from fixtures.families import (
    assert_benchmarks_run,
    assert_chunked_is_the_composition_of_its_chunks,
    assert_commands_run,
    assert_plain_peft_answers_like_hn_answer,
)
from fixtures.models import TINY_HYPERNET, randomize_outputs
from fixtures.videos import write_video
from transformers_v2l import (
    AdapterMismatchError,
    GeneratedLora,
    Video2LoraConfig,
    Video2LoraHypernetwork,
    Video2LoraProcessor,
)
from transformers_v2l.families import FAMILIES, family_class, get_family
from transformers_v2l.families.llava_onevision import LlavaOnevisionFamily
from transformers_v2l.injection import inject_lora, stack_adapters

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
FAMILY = LlavaOnevisionFamily


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ov_path(tmp_path_factory):
    """A saved tiny LLaVA-OneVision (toy-world size: 64 px tiles, 16 video tokens per frame)."""
    model, tokenizer = FAMILY.build_tiny_model(seed=0)
    return FAMILY.save_tiny_model(model, tokenizer, tmp_path_factory.mktemp("tiny-llava-ov"))


@pytest.fixture(scope="module")
def ov_vlm(ov_path):
    return FAMILY.model_class().from_pretrained(ov_path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def processor(ov_path):
    return Video2LoraProcessor.from_pretrained(ov_path, num_frames=6)


@pytest.fixture
def hypernet(ov_vlm, ov_path, processor):
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(ov_path, **TINY_HYPERNET)
    return randomize_outputs(Video2LoraHypernetwork(config, base_model=ov_vlm, processor=processor))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov-clips")
    return {n: write_video(root / f"clip{n}.mp4", n, size=(48, 80), fps=2) for n in (5, 12, 20)}


def _video(frames: int, seed: int = 0, size=(30, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, *size, 3), dtype=np.uint8)


def _same_adapter(a: GeneratedLora, b: GeneratedLora, atol=1e-5) -> bool:
    return all(
        torch.allclose(a.lora_A[m], b.lora_A[m], atol=atol)
        and torch.allclose(a.lora_B[m], b.lora_B[m], atol=atol)
        for m in a.target_modules
    )


# ---- the family ----------------------------------------------------------------------------------------
def test_registry_binding_and_real_shapes(ov_path, ov_vlm):
    assert family_class("llava_onevision") is FAMILY and isinstance(get_family(ov_vlm), FAMILY)
    config = Video2LoraConfig.from_base_model(ov_path, **TINY_HYPERNET)
    assert (config.base_model_type, config.num_hidden_layers, dict(config.module_shapes)) == (
        "llava_onevision", 4, {"down_proj": [128, 64]},
    )  # fmt: skip
    assert (
        get_family(ov_vlm).target_module(3, "down_proj")
        is ov_vlm.model.language_model.layers[3].mlp.down_proj
    )
    from transformers import LlavaOnevisionConfig

    shapes = FAMILY.presets["llava-ov-0.5b"]  # the 0.5B checkpoint's config, no weights
    real = LlavaOnevisionConfig(vision_config={"model_type": "siglip_vision_model", **shapes["vision"]},
                                text_config={"model_type": "qwen2", **shapes["text"]})  # fmt: skip
    bound = Video2LoraConfig.from_base_model(real, target_modules=["down_proj", "q_proj"])
    assert bound.num_hidden_layers == 24 and bound.hidden_size == 896
    assert dict(bound.module_shapes) == {"down_proj": [4864, 896], "q_proj": [896, 896]}
    assert FAMILY.vision_settings_for(real)["num_image_tokens"] == 729


def test_prompt_is_the_official_template_with_the_video_expanded(processor):
    frames, tokens = 3, 3 * 16 + 1
    pixels = FAMILY.video_pixels(processor, _video(frames), processor.longest_edge)
    text = FAMILY.video_text(processor, None, pixels, "Remember this.", add_generation_prompt=False)
    assert text == "<|im_start|>user " + "<video>" * tokens + "\nRemember this.<|im_end|>"
    asked = FAMILY.video_text(processor, None, pixels, "Why?", add_generation_prompt=True)
    assert asked.endswith("\nWhy?<|im_end|><|im_start|>assistant\n")
    assert FAMILY.tokens_per_frame(processor) == 16
    assert FAMILY.tokens_per_frame(Video2LoraProcessor(processor.tokenizer, "llava_onevision")) == 196  # 0.5B
    query = processor.tokenizer.decode(processor.query_inputs("What happens?")["input_ids"][0])
    assert query == "<|im_start|>user \nWhat happens?<|im_end|><|im_start|>assistant\n"
    video_id = processor.tokenizer.convert_tokens_to_ids("<video>")
    assert not (
        processor.query_inputs(["What happens?"])["input_ids"] == video_id
    ).any()  # zero visual tokens
    custom = Video2LoraProcessor(
        processor.tokenizer, "llava_onevision", chat_template="{{ messages[0]['role'] }}"
    )
    with pytest.raises(ValueError, match="renders no '<video>'"):
        custom.internalization_inputs(_video(2))


def test_pixels_settings_and_sampling(processor, ov_path, tmp_path):
    video = _video(4, size=(64, 64))  # already the tile size: normalization only
    pixels = FAMILY.video_pixels(processor, video, 384)["pixel_values_videos"]
    expected = (torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert pixels.shape == (4, 3, 64, 64) and (pixels - expected).abs().max() < 1e-6
    odd = FAMILY.video_pixels(processor, _video(2, size=(203, 121)), 384)["pixel_values_videos"]
    assert odd.shape == (2, 3, 64, 64) and odd.abs().max() <= 1.0  # squashed to the tile, in [-1, 1]
    assert FAMILY.sample_frame_indices(300, 30.0, num_frames=8) == [0, 37, 75, 112, 150, 187, 225, 262]
    assert FAMILY.sample_frame_indices(5, 30.0, num_frames=8) == [0, 1, 2, 3, 4]
    settings = {**processor.vision}
    for bad, match in (({"resample": 1}, "resample"), ({"num_image_tokens": 700}, "square")):
        with pytest.raises(ValueError, match=match):
            FAMILY.check_vision_settings({**settings, **bad})
    # the llava-hf layout: the video processor's config in a subfolder, 0.5B's settings
    folder = tmp_path / "llava-hf-layout"
    (folder / "video_processor").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.json"):  # no config.json
        (folder / name).write_bytes((ov_path / name).read_bytes())
    sizes = {
        "size": {"height": 384, "width": 384},
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
        "resample": 3,
    }
    (folder / "video_processor" / "preprocessor_config.json").write_text(json.dumps(sizes))
    settings = {"processor_class": "LlavaOnevisionProcessor", "num_image_tokens": 729}
    (folder / "processor_config.json").write_text(json.dumps(settings))
    loaded = Video2LoraProcessor.from_pretrained(folder)
    found = (loaded.family, loaded.vision["image_size"], loaded.vision["num_image_tokens"], loaded.num_frames)
    assert found == ("llava_onevision", 384, 729, 8)  # the family from processor_class alone


def test_batches_of_different_frame_counts_encode_each_row_as_alone(hypernet, processor):
    videos = [_video(3, seed=1), _video(5, seed=2)]
    family = hypernet.family
    batch = processor.internalization_inputs(videos, return_metadata=False)
    assert batch["pixel_values_videos"].shape[:2] == (2, 5)
    features, mask = family.extract_features(**batch)
    for row, video in enumerate(videos):
        single = processor.internalization_inputs(video, return_metadata=False)
        alone, _ = family.extract_features(**single)  # the model's own forward (one row: no padding)
        length = single["input_ids"].shape[1]
        torch.testing.assert_close(features[row, :, :length], alone[0], atol=1e-5, rtol=1e-4)
        assert mask[row].sum() == length
    # generation: `generation_inputs` turns the mixed batch into embeddings; each row answers as if alone
    asked = processor.video_in_context_inputs(videos, ["What happens?", "Why?"], return_metadata=False)
    settings = {
        "max_new_tokens": 4,
        "do_sample": False,
        "output_logits": True,
        "return_dict_in_generate": True,
    }
    together = hypernet.vlm.generate(**family.generation_inputs(**asked), **settings)
    for row, (video, question) in enumerate(zip(videos, ["What happens?", "Why?"])):
        single = processor.video_in_context_inputs(video, question, return_metadata=False)
        assert family.generation_inputs(**single).keys() == single.keys()  # one row: unchanged
        alone = hypernet.vlm.generate(**single, **settings)
        new = alone.sequences[0, single["input_ids"].shape[1] :].tolist()  # at most 4 tokens
        assert together.sequences[row, asked["input_ids"].shape[1] :].tolist()[: len(new)] == new
        torch.testing.assert_close(together.logits[0][row], alone.logits[0][0], atol=1e-4, rtol=1e-4)
    # through the public path: the runtime asks the family for its generation inputs
    answers = hypernet.answer_with_video(videos, ["What happens?", "Why?"], max_new_tokens=4)
    for video, question, answer in zip(videos, ["What happens?", "Why?"], answers):
        assert answer == hypernet.answer_with_video(video, question, max_new_tokens=4)
    broken = {**batch, "input_ids": batch["input_ids"][:, 1:]}
    broken["input_ids"][0, 0] = processor.tokenizer.convert_tokens_to_ids("<video>")
    with pytest.raises(ValueError, match="video tokens"):
        family.extract_features(**broken)


# ---- the user flow ----------------------------------------------------------------------------------------
def test_internalize_answer_with_and_without_the_video(hypernet, clips):
    adapter = hypernet.internalize(clips[12])
    assert adapter.base_model_type == "llava_onevision" and len(adapter.metadata["frame_indices"]) == 6
    assert adapter.lora_A["down_proj"].shape == (4, hypernet.config.effective_rank, 128)
    assert isinstance(hypernet.answer(adapter, "What happens in the video?", max_new_tokens=6), str)
    assert isinstance(hypernet.answer_with_video(clips[12], "What happens?", max_new_tokens=6), str)
    batched = hypernet.internalize([clips[5], clips[12], clips[20]], batch_size=3)  # 5, 6 and 6 frames
    for video, adapter in zip([clips[5], clips[12], clips[20]], batched):
        assert _same_adapter(adapter, hypernet.internalize(video))
    questions = ["What happens in the video?", "Which color is the sky today?"]
    rows = hypernet.answer(batched[:2], questions, max_new_tokens=8)
    assert rows == [hypernet.answer(a, q, max_new_tokens=8) for a, q in zip(batched[:2], questions)]


def test_use_adapter_and_chunked_composition(hypernet, clips):
    adapter = hypernet.internalize(clips[20])
    inputs = hypernet.processor.query_inputs(["What happens?"])
    weights = {k: v.clone() for k, v in hypernet.vlm.state_dict().items()}
    with inject_lora(hypernet.family, *stack_adapters([adapter])):
        hooked = hypernet.vlm(**inputs).logits
    with hypernet.use_adapter(adapter):
        torch.testing.assert_close(hypernet.vlm(**inputs).logits, hooked, atol=1e-4, rtol=1e-4)
        with pytest.raises(RuntimeError, match="merged adapter"):
            hypernet.internalize(clips[5])
    assert all(torch.equal(hypernet.vlm.state_dict()[k], v) for k, v in weights.items())
    # 10 s at 2 fps, chunks of 3 s at the processor's 1 fps: 6, 6, 6 and 2 frames, 3 sampled of each but the last
    assert_chunked_is_the_composition_of_its_chunks(hypernet, clips[20], chunk_frames=3, batch_size=2)


# ---- PEFT, vLLM's key names --------------------------------------------------------------------------------
def test_adapter_is_a_plain_peft_adapter_of_the_model_class(hypernet, ov_path, clips, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    adapter, folder = assert_plain_peft_answers_like_hn_answer(hypernet, ov_path, clips[12], tmp_path)
    keys = sorted(adapter.to_peft_state_dict())
    assert all(re.fullmatch(r"base_model\.model\.model\.language_model\.layers\.\d\.mlp\.down_proj\.lora_[AB]\.weight", k)
               for k in keys)  # fmt: skip
    regex = json.loads((folder / "adapter_config.json").read_text())["target_modules"]
    fresh = FAMILY.model_class().from_pretrained(ov_path, dtype=torch.float32)
    peft_keys = sorted(
        get_peft_model_state_dict(get_peft_model(fresh, LoraConfig(r=adapter.rank, target_modules=regex)))
    )
    assert keys == peft_keys  # exactly what PEFT itself writes for LlavaOnevisionForConditionalGeneration
    # two registered families on `model.language_model.layers`: the keys alone cannot say which
    twin = type("TwinFamily", (FAMILY,), {"name": "twin", "model_types": ("twin",)})
    monkeypatch.setitem(FAMILIES, "twin", twin)
    with pytest.raises(AdapterMismatchError, match="pass base_model_type"):
        GeneratedLora.from_peft_state_dict(adapter.to_peft_state_dict(), adapter.config.to_dict())
    loaded = GeneratedLora.from_pretrained(folder)  # the card records the family
    assert loaded.base_model_type == "llava_onevision" and _same_adapter(loaded, adapter, atol=0)


# ---- the v2l commands ------------------------------------------------------------------------------------------
def test_teacher_train_resume_and_eval(ov_path, tmp_path):
    assert_commands_run(ov_path, "llava_onevision", 64, tmp_path)


def test_benchmarks_run_for_the_family(tmp_path, monkeypatch):
    setup = assert_benchmarks_run("llava-ov-0.5b", FAMILY, 64, tmp_path, monkeypatch)
    assert setup.tokens_per_frame == 16  # the preset's family, tiny: 64 px tiles


# ---- the official LlavaOnevisionProcessor (needs torchvision) ------------------------------------------------
@pytest.fixture(scope="module")
def ov_05b_folder(ov_path, tmp_path_factory):
    """The tiny tokenizer with llava-onevision-qwen2-0.5b-ov-hf's processor settings (384 px, 729 patches)."""
    folder = tmp_path_factory.mktemp("llava-ov-0.5b-settings")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.json", "preprocessor_config.json"):
        (folder / name).write_bytes((ov_path / name).read_bytes())
    video = json.loads((ov_path / "video_preprocessor_config.json").read_text())
    (folder / "video_preprocessor_config.json").write_text(
        json.dumps({**video, "size": {"height": 384, "width": 384}})
    )
    settings = json.loads((ov_path / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps({**settings, "num_image_tokens": 729}))
    config = json.loads((ov_path / "config.json").read_text())
    config["vision_config"].update(image_size=384, patch_size=14)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _decode_all(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [N, H, W, 3]


@pytest.mark.torchvision
@pytest.mark.skipif(not HAS_TORCHVISION, reason="the official LlavaOnevisionVideoProcessor needs torchvision")
@pytest.mark.parametrize("settings", ["tiny", "llava-ov-0.5b"])
def test_matches_official_llava_onevision_processor(settings, ov_path, ov_05b_folder, real_clip):
    from transformers import LlavaOnevisionProcessor
    from transformers.video_utils import VideoMetadata as OfficialMetadata

    folder = ov_path if settings == "tiny" else ov_05b_folder
    official, ours = (
        LlavaOnevisionProcessor.from_pretrained(folder),
        Video2LoraProcessor.from_pretrained(folder),
    )
    for total, fps, count in [
        (300, 30.0, 8),
        (120, 29.97, 12),
        (10, 1.0, 8),
        (8, 25.0, 8),
        (97, 7.5, 32),
        (5, 2.0, 3),
    ]:
        probe = OfficialMetadata(total_num_frames=total, fps=fps, duration=total / fps)
        assert official.video_processor.sample_frames(probe, num_frames=count).tolist() == (
            FAMILY.sample_frame_indices(total, fps, num_frames=count)
        ), (total, fps, count)
    videos = {f"{t}x{h}x{w}": _video(t, seed=t, size=(h, w)) for t, h, w in [(1, 5, 7), (3, 101, 37), (2, 37, 101),
                                                                            (8, 64, 64), (4, 720, 1280)]}  # fmt: skip
    for name in ("carphone_distorted.mp4", "bikes.mp4"):
        frames = _decode_all(real_clip(name))
        videos[name] = frames[FAMILY.sample_frame_indices(len(frames), 25.0, num_frames=8)]
    for name, video in videos.items():
        for text, generation, side in (
            ("Internalize this.", False, "right"),
            ("What happens?", True, "left"),
        ):
            conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
            prompt = official.apply_chat_template(conversation, add_generation_prompt=generation)
            theirs = official(text=[prompt], videos=[video], return_tensors="pt")
            mine = ours.video_inputs(video, [text], add_generation_prompt=generation, padding_side=side)
            diff = (mine["pixel_values_videos"] - theirs["pixel_values_videos"]).abs().max().item()
            print(f"[official] {settings} {name}: {mine['input_ids'].shape[1]} tokens equal="
                  f"{torch.equal(mine['input_ids'], theirs['input_ids'])}, pixel max abs diff={diff:.3g}")  # fmt: skip
            assert torch.equal(mine["input_ids"], theirs["input_ids"]), name
            assert torch.equal(mine["attention_mask"], theirs["attention_mask"]), name
            assert diff <= 1e-6, name
    pair = [videos["8x64x64"], videos["carphone_distorted.mp4"]]  # a batch: same frame count
    prompts = [official.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}],
                                            add_generation_prompt=True) for q in ("Why?", "What happens here?")]  # fmt: skip
    theirs = official(text=prompts, videos=pair, return_tensors="pt", padding=True, padding_side="left")
    mine = ours.video_in_context_inputs(pair, ["Why?", "What happens here?"])
    assert torch.equal(mine["input_ids"], theirs["input_ids"]) and torch.equal(
        mine["attention_mask"], theirs["attention_mask"]
    )
    assert (mine["pixel_values_videos"] - theirs["pixel_values_videos"]).abs().max() <= 1e-6


@pytest.mark.slow
def test_real_shapes_internalize_and_answer():
    """The 0.5B checkpoint's shapes (random weights, bf16) with the paper's hypernetwork: one frame end to end."""
    from transformers_v2l.benchmarks import models

    setup = models.build_setup("llava-ov-0.5b")
    assert setup.tokens_per_frame == 196 and setup.hypernet.config.num_hidden_layers == 24
    adapter = setup.hypernet.internalize(models.random_video(1))
    assert adapter.lora_A["down_proj"].shape == (24, 32, 4864) and adapter.lora_B["down_proj"].shape == (
        24,
        32,
        896,
    )
    assert isinstance(setup.hypernet.answer(adapter, "What happens?", max_new_tokens=2), str)
