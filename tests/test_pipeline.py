"""The whole user flow on a tiny SmolVLM and real clips: internalize, answer, save, load."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.models import TINY_HYPERNET, randomize_outputs
from transformers_v2l import (
    AdapterMismatchError,
    GeneratedLora,
    Video2LoraConfig,
    Video2LoraHypernetwork,
    Video2LoraProcessor,
    VideoDecodeError,
)
from transformers_v2l.adapter_ops import merged_adapter
from transformers_v2l.injection import inject_lora, stack_adapters
from transformers_v2l.video_io import load_video


@pytest.fixture
def hypernet(tiny_vlm, tiny_vlm_path):
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(tiny_vlm_path, **TINY_HYPERNET)
    processor = Video2LoraProcessor.from_pretrained(tiny_vlm_path, num_frames=6, longest_edge=96)
    return randomize_outputs(Video2LoraHypernetwork(config, base_model=tiny_vlm, processor=processor))


def assert_same_adapter(a: GeneratedLora, b: GeneratedLora, atol=1e-5):
    for module in a.target_modules:
        assert (a.lora_A[module] - b.lora_A[module]).abs().max() <= atol
        assert (a.lora_B[module] - b.lora_B[module]).abs().max() <= atol


def test_internalize_and_answer_real_clip(hypernet, real_clip):
    adapter = hypernet.internalize(real_clip("bikes.mp4"))
    config = hypernet.config
    assert isinstance(adapter, GeneratedLora)
    assert adapter.lora_A["down_proj"].shape == (config.num_hidden_layers, config.effective_rank, 128)
    assert adapter.metadata["instruction"] == hypernet.processor.instruction
    assert len(adapter.metadata["frame_indices"]) == 6 == adapter.metadata["num_frames"]
    assert len(adapter.metadata["sha256"]) == 64
    answer = hypernet.answer(adapter, "What happens in the video?", max_new_tokens=8)
    assert isinstance(answer, str)


def test_batch_of_videos_equals_single_calls(hypernet, real_clip, synthetic_videos):
    videos = [real_clip("bikes.mp4"), real_clip("b.avi"), synthetic_videos["ten_frames"]]
    batched = hypernet.internalize(videos, batch_size=3)
    assert len(batched) == 3
    for video, adapter in zip(videos, batched):
        assert_same_adapter(adapter, hypernet.internalize(video))


def test_every_input_form_gives_the_same_adapter(hypernet, real_clip):
    path = real_clip("carphone_distorted.mp4")
    reference = hypernet.internalize(str(path))
    with open(path, "rb") as handle:
        assert_same_adapter(hypernet.internalize(handle), reference, atol=0)
    assert_same_adapter(hypernet.internalize(path.read_bytes()), reference, atol=0)
    assert_same_adapter(hypernet.internalize(io.BytesIO(path.read_bytes())), reference, atol=0)
    frames, _ = load_video(path, num_frames=6)
    from_array = hypernet.internalize(frames)
    from_pil = hypernet.internalize([Image.fromarray(f) for f in frames])
    assert_same_adapter(from_array, from_pil, atol=0)
    assert from_array.lora_A["down_proj"].shape == reference.lora_A["down_proj"].shape


def test_batched_answering_matches_one_row_at_a_time(hypernet, real_clip):
    adapters = hypernet.internalize([real_clip("bikes.mp4"), real_clip("b.avi")], batch_size=2)
    questions = ["What happens in the video?", "Which color is the sky today?"]
    batched = hypernet.answer(adapters, questions, max_new_tokens=10)
    singles = [hypernet.answer(a, q, max_new_tokens=10) for a, q in zip(adapters, questions)]
    assert batched == singles
    # one adapter shared by several questions
    shared = hypernet.answer(adapters[0], questions, max_new_tokens=10)
    assert shared[0] == singles[0]


def test_answer_prompt_has_no_visual_tokens(hypernet):
    inputs = hypernet.processor.query_inputs(["What happens in the video?"])
    image_token = hypernet.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert not (inputs["input_ids"] == image_token).any()


def test_answer_with_video_in_context(hypernet, real_clip):
    answer = hypernet.answer_with_video(
        real_clip("bikes.mp4"), "What happens in the video?", max_new_tokens=6
    )
    assert isinstance(answer, str)


def test_answer_plain_is_the_base_model_alone(hypernet, real_clip):
    adapter = hypernet.internalize(real_clip("bikes.mp4"))
    silent = GeneratedLora(
        lora_A=adapter.lora_A,
        lora_B={m: torch.zeros_like(b) for m, b in adapter.lora_B.items()},
        scaling=adapter.scaling,
    )
    questions = ["What happens in the video?", "Which color is the sky today?"]
    plain = hypernet.answer_plain(questions, max_new_tokens=10)
    assert plain == hypernet.answer(silent, questions, max_new_tokens=10)
    assert hypernet.answer_plain(questions[0], max_new_tokens=10) == plain[0]
    with hypernet.use_adapter(adapter), pytest.raises(RuntimeError, match="merged adapter"):
        hypernet.answer_plain(questions)


def test_answer_refuses_a_foreign_adapter(hypernet):
    layers = hypernet.config.num_hidden_layers
    foreign = GeneratedLora(
        lora_A={"down_proj": torch.zeros(layers, 4, 256)},
        lora_B={"down_proj": torch.zeros(layers, 4, 64)},
        scaling=1.0,
    )
    with pytest.raises(AdapterMismatchError, match="module shapes"):
        hypernet.answer(foreign, "Hello?")
    with pytest.raises(ValueError, match="2 adapters for 3 questions"):
        hypernet.answer([foreign, foreign], ["a", "b", "c"])


def test_bad_video_raises_a_typed_error(hypernet, synthetic_videos, tmp_path):
    with pytest.raises(VideoDecodeError, match=r"notes\.mp4"):
        hypernet.internalize(synthetic_videos["not_a_video"])
    with pytest.raises(VideoDecodeError, match=r"missing\.mp4"):
        hypernet.internalize(tmp_path / "missing.mp4")


def test_save_load_flow(hypernet, tiny_vlm, real_clip, tmp_path):
    video = real_clip("bikes.mp4")
    adapter = hypernet.internalize(video)
    hypernet.save_pretrained(tmp_path)
    reloaded = Video2LoraHypernetwork.from_pretrained(
        tmp_path, base_model=tiny_vlm, processor=hypernet.processor
    )
    assert_same_adapter(reloaded.internalize(video), adapter, atol=0)
    frames = np.zeros((3, 40, 60, 3), np.uint8)
    assert reloaded.internalize(frames).rank == hypernet.config.effective_rank


def test_internalize_with_chunk_frames_composes_chunk_adapters(hypernet, real_clip):
    from transformers_v2l.long_video import internalize_chunked

    video = real_clip("bikes.mp4")
    chunked = hypernet.internalize(video, chunk_frames=3)
    direct = internalize_chunked(hypernet, video, chunk_frames=3)
    assert chunked.rank == direct.rank > hypernet.config.effective_rank
    assert_same_adapter(chunked, direct, atol=0)
    assert_same_adapter(hypernet.internalize(video, chunk_frames=3, batch_size=2), direct)  # chunks batched
    with pytest.raises(ValueError, match="drop num_frames"):
        hypernet.internalize(video, chunk_frames=3, num_frames=6)


def test_use_adapter_merges_for_the_block_and_restores_the_weights(hypernet, real_clip):
    adapters = hypernet.internalize([real_clip("bikes.mp4"), real_clip("b.avi")], batch_size=2)
    adapter, other = adapters
    questions = ["What happens in the video?", "Which color is the sky today?"]
    inputs = hypernet.processor.query_inputs(questions)
    weights = {k: v.clone() for k, v in hypernet.vlm.state_dict().items()}
    with inject_lora(hypernet.family, *stack_adapters([adapter, adapter])):
        hooked = hypernet.vlm(**inputs).logits
    expected = hypernet.answer(adapter, questions, max_new_tokens=8)

    with hypernet.use_adapter(adapter) as merged:
        assert merged is adapter
        torch.testing.assert_close(hypernet.vlm(**inputs).logits, hooked, atol=1e-4, rtol=1e-4)
        assert hypernet.answer(adapter, questions, max_new_tokens=8) == expected
        with pytest.raises(RuntimeError, match="other than the one merged"):
            hypernet.answer(other, questions[0])
        with pytest.raises(RuntimeError, match="merged adapter"):
            hypernet.internalize(real_clip("bikes.mp4"))
        with pytest.raises(RuntimeError, match="merged adapter"):
            hypernet.answer_with_video(real_clip("bikes.mp4"), questions[0])

    restored = hypernet.vlm.state_dict()
    assert all(torch.equal(restored[k], v) for k, v in weights.items())
    assert merged_adapter(hypernet.vlm) is None
