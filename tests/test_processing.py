"""Tests of `Video2LoraProcessor`: the authors' fixture, batching and padding, loading, and the official processor."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from transformers_v2l.families.smolvlm import SmolVLMFamily, resize_output_size
from transformers_v2l.processing_video2lora import Video2LoraProcessor
from transformers_v2l.video_io import load_video

FIXTURE_A = Path(__file__).resolve().parent / "data" / "frames2lora" / "fixture-A"
needs_fixture_a = pytest.mark.skipif(
    not FIXTURE_A.is_dir(), reason="shared/frames2lora/fixture-A is not beside the repo"
)
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.fixture(scope="module")
def fixture_a():
    from safetensors.torch import load_file

    return load_file(FIXTURE_A / "expected.safetensors"), json.loads((FIXTURE_A / "meta.json").read_text())


@pytest.fixture(scope="module")
def processor(tiny_vlm_path):
    return Video2LoraProcessor.from_pretrained(tiny_vlm_path)


def test_resize_output_size_rounds_to_even():
    assert resize_output_size(720, 1280, 384) == (216, 384)
    assert resize_output_size(272, 640, 384) == (164, 384)  # 163.2 -> 163 -> 164
    assert resize_output_size(640, 272, 384) == (384, 164)
    assert resize_output_size(30, 40, 384) == (288, 384)
    assert resize_output_size(100, 100, 9000) == (4096, 4096)


# ---- the authors' fixture ---------------------------------------------------------------------


@needs_fixture_a
@pytest.mark.parametrize("mode", ["frames2lora", "transformers-5"])
def test_fixture_a_prompt_and_pixels(fixture_a, mode):
    expected, meta = fixture_a
    processor = Video2LoraProcessor.from_pretrained(FIXTURE_A / "tiny-smolvlm", resize_mode=mode)
    vision = processor.vision
    assert (vision["image_seq_len"], vision["max_image_size"], processor.longest_edge) == (4, 32, 384)
    inputs = processor.internalization_inputs(FIXTURE_A / "tiny-video.mp4")
    assert inputs["video_metadata"][0].frame_indices == expected["video.frame_indices"].tolist()
    assert torch.equal(inputs["input_ids"], expected["video.input_ids"])
    assert torch.equal(inputs["attention_mask"], expected["video.attention_mask"])
    assert torch.equal(inputs["pixel_attention_mask"].to(torch.uint8), expected["video.pixel_attention_mask"])
    diff = (
        (inputs["pixel_values"].bfloat16().float() - expected["video.pixel_values_bf16"]).abs().max().item()
    )
    # frames2lora (PIL LANCZOS, 4.51.3) is exact; transformers-5 (torch LANCZOS) is within one uint8 level
    assert diff == 0.0 if mode == "frames2lora" else diff <= 0.0098, diff
    frames, video_meta = load_video(FIXTURE_A / "tiny-video.mp4")
    pixels = SmolVLMFamily.video_pixels(processor, frames, processor.longest_edge)
    text = SmolVLMFamily.video_text(
        processor, video_meta, pixels, processor.instruction, add_generation_prompt=False
    )
    assert text == meta["video"]["decoded_prompt"]


@needs_fixture_a
def test_fixture_a_query_prompt(fixture_a):
    expected, _ = fixture_a
    processor = Video2LoraProcessor.from_pretrained(FIXTURE_A / "tiny-smolvlm")
    assert torch.equal(processor.query_inputs("Describe the video.")["input_ids"], expected["text.input_ids"])


# ---- batching and prompts ---------------------------------------------------------------------


def _videos():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (frames, 30, 40, 3), dtype=np.uint8) for frames in (3, 5)]


def test_batch_is_right_padded_and_rows_match_single(processor):
    short, long = _videos()
    batch = processor.internalization_inputs([short, long], instruction="Remember this.")
    assert batch["pixel_values"].shape == (2, 5, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
    assert batch["pixel_attention_mask"].shape == (2, 5, 64, 64)
    assert batch["pixel_attention_mask"][0, 3:].sum() == 0 and batch["pixel_values"][0, 3:].abs().sum() == 0
    for row, video in enumerate((short, long)):
        single = processor.internalization_inputs(video, instruction="Remember this.")
        length = single["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][row, :length], single["input_ids"][0])
        assert (batch["input_ids"][row, length:] == processor.pad_token_id).all()
        assert batch["attention_mask"][row].sum() == length
        frames = video.shape[0]
        assert torch.equal(batch["pixel_values"][row, :frames], single["pixel_values"][0])
        image_tokens = (single["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<image>")).sum()
        assert image_tokens == frames * processor.vision["image_seq_len"] == frames * 16


def test_prompt_text_of_an_array_video(processor):
    frames, meta = load_video(_videos()[0])
    pixels = SmolVLMFamily.video_pixels(processor, frames, processor.longest_edge)
    text = SmolVLMFamily.video_text(processor, meta, pixels, "Remember this.", add_generation_prompt=True)
    image = "<fake_token_around_image><global-img>" + "<image>" * 16 + "<fake_token_around_image>"
    assert text == (
        "<|im_start|>User: You are provided the following series of three frames from a 0:00:03 [H:MM:SS] video.\n"
        + "".join(f"\nFrame from 00:0{i}:" + image for i in range(3))
        + "\n\nRemember this.<end_of_utterance>\nAssistant:"
    )


def test_query_inputs_left_padded(processor):
    inputs = processor.query_inputs(["What color is it?", "Why?"])
    texts = processor.tokenizer.batch_decode(inputs["input_ids"], skip_special_tokens=False)
    assert texts[0] == "<|im_start|>User: What color is it?<end_of_utterance>\nAssistant:"
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][1, -1] == 1
    assert inputs["input_ids"][1, 0] == processor.pad_token_id


def test_video_in_context_inputs(processor):
    video = _videos()[0]
    inputs = processor.video_in_context_inputs(video, ["What happens?", "Any people?"])
    assert inputs["pixel_values"].shape[:2] == (2, 3) and len(inputs["video_metadata"]) == 2
    text = processor.tokenizer.decode(inputs["input_ids"][0][inputs["attention_mask"][0].bool()])
    assert text.endswith("\n\nWhat happens?<end_of_utterance>\nAssistant:")
    assert inputs["attention_mask"][0, -1] == 1 and inputs["attention_mask"][:, 0].tolist() == [0, 1]
    assert processor(videos=video, text="What happens?")["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match=r"2 videos but 3 texts"):
        processor.video_in_context_inputs(_videos(), ["a", "b", "c"])


def test_a_conversation_about_a_video_holds_the_video_in_its_first_turn(processor):
    video = _videos()[0]
    conversation = [{"role": "user", "content": "Describe the video."}, {"role": "assistant", "content": "A dog."},
                    {"role": "user", "content": "What color is it?"}]  # fmt: skip
    inputs = processor.video_in_context_inputs(video, [conversation, "What color is it?"])
    rows = [ids[mask.bool()] for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    text = processor.tokenizer.decode(rows[0])
    assert text.startswith("<|im_start|>User: You are provided the following series of three frames")
    assert text.endswith("\n\nDescribe the video.<end_of_utterance>\nAssistant: A dog.<end_of_utterance>\n"
                         "User: What color is it?<end_of_utterance>\nAssistant:")  # fmt: skip
    image = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (rows[0] == image).sum() == (rows[1] == image).sum() == 3 * 16  # one copy of the video
    for bad in (
        [],
        [{"role": "assistant", "content": "A dog."}],
        [{"role": "user", "content": [{"type": "text"}]}],
    ):
        with pytest.raises(ValueError, match="starts with a user turn whose content is text"):
            processor.video_in_context_inputs(video, [bad])


def test_inputs_run_through_the_tiny_model(processor, tiny_vlm):
    inputs = processor.internalization_inputs(_videos())
    inputs.pop("video_metadata")
    with torch.no_grad():
        logits = tiny_vlm(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape


# ---- loading and saving -----------------------------------------------------------------------


def test_from_plain_smolvlm_folder(processor, tiny_vlm_path, tmp_path):
    assert (processor.vision["image_seq_len"], processor.vision["max_image_size"], processor.fps) == (
        16,
        64,
        1.0,
    )
    assert (processor.longest_edge, processor.num_frames, processor.vision["resample"]) == (384, 12, 1)
    assert processor.family == "smolvlm"
    assert processor.instruction == "Internalize this video for later captioning."
    override = Video2LoraProcessor.from_pretrained(tiny_vlm_path, num_frames=4, longest_edge=256)
    assert (override.num_frames, override.longest_edge) == (4, 256)
    folder = shutil.copytree(tiny_vlm_path, tmp_path / "no-processor-config")
    (folder / "processor_config.json").unlink()
    assert Video2LoraProcessor.from_pretrained(folder).vision["image_seq_len"] == 16  # from config.json


def test_uncached_hub_repo_offline(monkeypatch, tmp_path):
    from transformers_v2l.errors import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError, match=r"v2l-tests/not-cached"):
        Video2LoraProcessor.from_pretrained("v2l-tests/not-cached", cache_dir=str(tmp_path))


def test_save_and_load_round_trip(tiny_vlm_path, tmp_path):
    processor = Video2LoraProcessor.from_pretrained(
        tiny_vlm_path, num_frames=6, longest_edge=128, resize_mode="frames2lora", instruction="Keep it."
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (
        saved["processor_class"] == "Video2LoraProcessor" and saved["vision"]["resize_mode"] == "frames2lora"
    )
    loaded = Video2LoraProcessor.from_pretrained(tmp_path)
    for key in ("family", "longest_edge", "num_frames", "fps", "skip_secs", "instruction", "vision", "answer",
                "chat_template"):  # fmt: skip
        assert getattr(loaded, key) == getattr(processor, key), key
    video = _videos()[1]
    a, b = processor.internalization_inputs(video), loaded.internalization_inputs(video)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_invalid_settings(processor):
    with pytest.raises(ValueError, match=r"resize_mode"):
        Video2LoraProcessor(processor.tokenizer, "smolvlm", vision={"resize_mode": "bilinear"})
    with pytest.raises(ValueError, match=r"num_frames"):
        Video2LoraProcessor(processor.tokenizer, "smolvlm", num_frames=0)
    with pytest.raises(ValueError, match=r"Unknown smolvlm pixel settings \['tile'\]"):
        Video2LoraProcessor(processor.tokenizer, "smolvlm", vision={"tile": 3})
    with pytest.raises(ValueError, match=r"answer\['protocol'\]"):
        Video2LoraProcessor(processor.tokenizer, "smolvlm", answer={"protocol": "guess"})
    with pytest.raises(ValueError, match=r"no VLM family with model_type 'gpt2'"):
        Video2LoraProcessor(processor.tokenizer, "gpt2")


# ---- the official SmolVLM processor (needs torchvision) ---------------------------------------

SMOLVLM2_500M_PREPROCESSOR = {  # the public SmolVLM2-500M-Video-Instruct settings, as best known
    "image_processor_type": "SmolVLMImageProcessor",
    "processor_class": "SmolVLMProcessor",
    "do_convert_rgb": True,
    "do_image_splitting": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 1,
    "rescale_factor": 1 / 255,
    "max_image_size": {"longest_edge": 512},
    "size": {"longest_edge": 2048},
    "video_sampling": {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": 512}},
}


@pytest.fixture(scope="module")
def smolvlm2_500m_folder(tmp_path_factory):
    """The tiny tokenizer with SmolVLM2-500M's processor settings (512 px tiles, 64 tokens per frame)."""
    folder = tmp_path_factory.mktemp("smolvlm2-500m-settings")
    SmolVLMFamily.build_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(SMOLVLM2_500M_PREPROCESSOR))
    (folder / "processor_config.json").write_text(
        json.dumps({"image_seq_len": 64, "processor_class": "SmolVLMProcessor"})
    )
    return folder


def _official_inputs(official, videos, texts, add_generation_prompt, padding_side, longest_edge):
    from transformers.video_utils import VideoMetadata as OfficialMetadata

    prompts = []
    for text in texts:
        content = [{"type": "video", "path": "clip.mp4"}, {"type": "text", "text": text}]
        conversation = [{"role": "user", "content": content}]
        prompts.append(
            official.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt)
        )
    metadata = [
        OfficialMetadata(
            total_num_frames=m.total_num_frames,
            fps=m.fps,
            width=m.width,
            height=m.height,
            duration=m.duration,
            frames_indices=list(m.frame_indices),
        )
        for _, m in videos
    ]
    return official(
        text=prompts,
        videos=[frames for frames, _ in videos],
        video_metadata=metadata,
        do_sample_frames=False,
        size={"longest_edge": longest_edge},
        padding=True,
        padding_side=padding_side,
        return_tensors="pt",
    )


def _assert_same(ours, theirs, label):
    diff = (ours["pixel_values"] - theirs["pixel_values"]).abs().max().item()
    print(
        f"[official] {label}: input_ids equal={torch.equal(ours['input_ids'], theirs['input_ids'])}, "
        f"pixel_values {tuple(ours['pixel_values'].shape)} max abs diff={diff:.3g}"
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"]), label
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"]), label
    assert torch.equal(ours["pixel_attention_mask"], theirs["pixel_attention_mask"]), label
    assert diff <= 1e-6, label


@pytest.mark.torchvision
@pytest.mark.skipif(not HAS_TORCHVISION, reason="the official SmolVLMVideoProcessor needs torchvision")
@pytest.mark.parametrize("settings", ["tiny", "smolvlm2-500m"])
def test_matches_official_smolvlm_processor(settings, tiny_vlm_path, smolvlm2_500m_folder, real_clips):
    from transformers import SmolVLMProcessor
    from transformers.video_utils import VideoMetadata as OfficialMetadata

    folder = tiny_vlm_path if settings == "tiny" else smolvlm2_500m_folder
    official, ours = SmolVLMProcessor.from_pretrained(folder), Video2LoraProcessor.from_pretrained(folder)
    clips = {name: load_video(path, num_frames=ours.num_frames) for name, path in real_clips.items()}
    if FIXTURE_A.is_dir():
        clips["tiny-video.mp4"] = load_video(FIXTURE_A / "tiny-video.mp4")
    for name, (frames, meta) in clips.items():
        probe = OfficialMetadata(total_num_frames=meta.total_num_frames, fps=meta.fps, duration=meta.duration)
        sampled = official.video_processor.sample_frames(
            metadata=probe, num_frames=ours.num_frames, fps=ours.fps
        )
        assert sampled.tolist() == meta.frame_indices, name
        theirs = _official_inputs(
            official, [(frames, meta)], [ours.instruction], False, "right", ours.longest_edge
        )
        _assert_same(ours.internalization_inputs((frames, meta)), theirs, f"{settings} {name}")
    # Batches: transformers 5.23 writes the *padded* frame count into every prompt ("twelve frames" for a
    # 4-frame video batched with a 12-frame one); we keep each video's own count, so a row's tokens do not
    # depend on its batch. Pixels are compared with the official batch, tokens with official single videos.
    pair = [clips["carphone_distorted.mp4"], clips["world.mp4"]]  # 4 and 12 frames
    questions = ["What happens?", "Is anyone riding a bike in this clip?"]
    for texts, generation, side in (([ours.instruction] * 2, False, "right"), (questions, True, "left")):
        ours_batch = (
            ours.video_in_context_inputs(pair, texts) if generation else ours.internalization_inputs(pair)
        )
        theirs = _official_inputs(official, pair, texts, generation, side, ours.longest_edge)
        label = f"{settings} batch of 2 ({'video in context' if generation else 'internalization'})"
        singles = [
            _official_inputs(official, [v], [t], generation, side, ours.longest_edge)
            for v, t in zip(pair, texts)
        ]
        width = ours_batch["input_ids"].shape[1]
        for row, single in enumerate(singles):
            pad = width - single["input_ids"].shape[1]
            padded = torch.nn.functional.pad(
                single["input_ids"][0], (pad, 0) if side == "left" else (0, pad), value=ours.pad_token_id
            )
            assert torch.equal(ours_batch["input_ids"][row], padded), label
        # transformers 5.23 also sets pixel_attention_mask to 1 on padded (all-zero) frames; ours is 0 there
        # (the model skips all-zero frames either way), so masks are compared on real frames only.
        real = ours_batch["pixel_attention_mask"].flatten(2).any(-1)  # [B, T]
        assert real.sum(1).tolist() == [4, 12]
        assert torch.equal(ours_batch["pixel_attention_mask"][real], theirs["pixel_attention_mask"][real]), (
            label
        )
        theirs["pixel_attention_mask"] = ours_batch["pixel_attention_mask"]
        theirs["input_ids"], theirs["attention_mask"] = ours_batch["input_ids"], ours_batch["attention_mask"]
        _assert_same(ours_batch, theirs, label)


# ---- ProcessorMixin's contract (adapted from transformers' processor tests) ------------------------


def test_apply_chat_template_templates_text_once_and_tokenizes(processor):
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Describe this."}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert text == "<|im_start|>User: Describe this.<end_of_utterance>\nAssistant:"
    assert text == processor.chat_text([{"role": "user", "content": "Describe this."}])
    ids = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    assert ids == processor.query_inputs("Describe this.")["input_ids"][0].tolist()
    batch = processor.apply_chat_template(
        [conversation, [{"role": "user", "content": [{"type": "text", "text": "Why?"}]}]],
        add_generation_prompt=True, tokenize=True, return_dict=True, processor_kwargs={"padding_side": "right"},
    )  # fmt: skip
    assert (
        batch["attention_mask"][1, 0] == 1 and batch["attention_mask"][1, -1] == 0
    )  # right padding honoured
    with pytest.raises(ValueError, match="padding"):
        processor.apply_chat_template(conversation, processor_kwargs={"padding": "max_length"})
    with pytest.raises(ValueError, match="continue_final_message"):
        processor.apply_chat_template(conversation, continue_final_message=True)


def test_apply_chat_template_with_a_video_gives_the_family_inputs(processor):
    video = _videos()[0]
    conversation = [
        {
            "role": "user",
            "content": [{"type": "video", "video": video}, {"type": "text", "text": "What happens?"}],
        }
    ]
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    expected = processor.video_in_context_inputs(video, "What happens?", return_metadata=False)
    for key in ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"):
        assert torch.equal(inputs[key], expected[key]), key
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert text.startswith("<|im_start|>User: You are provided the following series of three frames")
    two_turns = [*conversation, {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]}]
    with pytest.raises(ValueError, match="one user turn"):
        processor.apply_chat_template(two_turns)


def test_from_pretrained_passes_tokenizer_options_and_keeps_template_dicts(tiny_vlm_path, tmp_path):
    processor = Video2LoraProcessor.from_pretrained(tiny_vlm_path, model_max_length=77)
    assert processor.tokenizer.model_max_length == 77
    processor.chat_template = {
        "default": processor.text_chat_template,
        "terse": "{{ messages[0]['content'] }}",
    }
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "additional_chat_templates" / "terse.jinja").exists()
    loaded = Video2LoraProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == processor.chat_template
    assert loaded.text_chat_template == processor.text_chat_template


def test_a_version_01_processor_config_loads(tiny_vlm_path, tmp_path):
    folder = shutil.copytree(tiny_vlm_path, tmp_path / "v01")
    (folder / "processor_config.json").write_text(json.dumps({  # what 0.1's save_pretrained wrote
        "processor_class": "Video2LoraProcessor", "image_seq_len": 16, "max_image_size": 64, "longest_edge": 48,
        "num_frames": 6, "fps": 1.0, "skip_secs": 1.0, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "rescale_factor": 1 / 255, "resample": 1, "resize_mode": "frames2lora", "instruction": "Keep it.",
    }))  # fmt: skip
    loaded = Video2LoraProcessor.from_pretrained(folder)
    assert (loaded.family, loaded.num_frames, loaded.longest_edge, loaded.instruction) == (
        "smolvlm",
        6,
        48,
        "Keep it.",
    )
    assert loaded.vision["resize_mode"] == "frames2lora" and loaded.answer == {"protocol": "direct"}
