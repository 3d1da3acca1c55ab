"""The collator: response-only labels, the text-only prompt as answering sees it, skipped videos."""

from __future__ import annotations

import pytest
import torch

from test_training_utils import (
    corrupt_row,
    one_torch_thread,  # noqa: F401 (module-wide fixture)
    toy_world_rows,
    write_manifest,
)
from transformers_v2l.processing_video2lora import Video2LoraProcessor
from transformers_v2l.training.collator import IGNORE_INDEX, Video2LoraDataCollator, response_token_ids
from transformers_v2l.training.data import load_manifest


@pytest.fixture(scope="module")
def processor(tiny_vlm_path):
    return Video2LoraProcessor.from_pretrained(tiny_vlm_path)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("collator-data")
    rows = [*toy_world_rows(root, count=2), corrupt_row(root)]
    return load_manifest(write_manifest(root, rows))


def test_labels_cover_exactly_the_response(processor, examples):
    collator = Video2LoraDataCollator(processor, num_frames=4, longest_edge=64)
    batch = collator(examples[:2])
    tokenizer = processor.tokenizer
    query = processor.query_inputs([e["prompt"] for e in examples[:2]])
    for row, example in enumerate(examples[:2]):
        prompt = query["input_ids"][row][query["attention_mask"][row].bool()].tolist()
        n = len(prompt)
        assert batch["input_ids"][row, :n].tolist() == prompt  # the answering prompt, token for token
        assert (batch["labels"][row, :n] == IGNORE_INDEX).all()
        response = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert response.tolist() == response_token_ids(processor, example["target_text"])
        assert tokenizer.decode(response) == " " + example["target_text"] + "<end_of_utterance>"
        length = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :length].tolist() == prompt + response.tolist()  # right padded
    assert tokenizer.decode(batch["input_ids"][0, : len(prompt)]).endswith("<end_of_utterance>\nAssistant:")
    assert batch["pixel_values"].shape[:2] == (2, 4) and batch["context_input_ids"].shape[0] == 2
    assert int(batch["num_skipped"]) == 0


def test_chat_template_renders_the_same_conversation(processor):
    tokenizer = processor.tokenizer
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "An answer."}]},
    ]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    prompt_ids = processor.query_inputs(["Q?"])["input_ids"][0].tolist()
    joined = tokenizer.decode(prompt_ids + response_token_ids(processor, "An answer."))
    assert rendered.startswith(joined)  # the template adds only a trailing newline


def test_corrupt_videos_are_dropped_and_counted(processor, examples):
    collator = Video2LoraDataCollator(processor, num_frames=4, longest_edge=64)
    batch = collator([examples[2], examples[0]])
    assert int(batch["num_skipped"]) == 1 and batch["example_ids"] == [examples[0]["id"]]
    assert batch["input_ids"].shape[0] == batch["pixel_values"].shape[0] == 1
    beyond_the_end = {**examples[0], "start": 100.0, "end": 200.0}  # scene metadata longer than the video
    assert int(collator([beyond_the_end, examples[1]])["num_skipped"]) == 1
    empty = collator([examples[2]])
    assert empty["input_ids"].shape[0] == 0 and int(empty["num_skipped"]) == 1 and "pixel_values" not in empty


def test_cached_teacher_tokens_and_topk_are_aligned(processor, examples):
    collator = Video2LoraDataCollator(processor, num_frames=4, longest_edge=64)
    example = {**examples[0], "target_token_ids": [40, 41, 42], "teacher_topk_ids": [[40, 1], [41, 2], [42, 3]],
               "teacher_topk_logprobs": [[-0.1, -2.0], [-0.2, -3.0], [-0.3, -4.0]]}  # fmt: skip
    batch = collator([example])
    positions = (batch["labels"][0] != IGNORE_INDEX).nonzero().flatten()
    assert batch["labels"][0, positions].tolist() == [40, 41, 42]
    assert batch["teacher_topk_ids"][0, positions, 0].tolist() == [40, 41, 42]
    assert torch.allclose(batch["teacher_topk_logprobs"][0, positions, 1], torch.tensor([-2.0, -3.0, -4.0]))
