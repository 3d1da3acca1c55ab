"""Batches for hypernetwork training: internalization inputs, a text-only prompt, and response labels.

For each example the collator builds two inputs:

* the internalization prompt (the video span's frames and the instruction), from the processor's
  `internalization_inputs`, prefixed `context_` (`context_input_ids`, `context_attention_mask`,
  and the family's video inputs): the frozen encoder turns it into features;
* the answer model's text, with no visual tokens: the family's chat turn exactly as `query_inputs`
  tokenizes it (for SmolVLM `<|im_start|>User: {prompt}<end_of_utterance>\\nAssistant:`), followed by
  the response as the chat template renders an assistant turn, through the family's end-of-turn
  token (for SmolVLM ` {target}<end_of_utterance>`), right padded. `labels` equal `input_ids` on the
  response tokens and -100 everywhere else, so the loss covers the response only.

A video that cannot be decoded is dropped from the batch and counted in `num_skipped`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import VideoDecodeError

logger = logging.getLogger(__name__)

__all__ = ["IGNORE_INDEX", "Video2LoraDataCollator", "response_token_ids"]

IGNORE_INDEX = -100
_MARKER = "\x00response\x00"


def _end_of_turn_id(processor) -> int:
    tokenizer = processor.tokenizer
    token_id = tokenizer.convert_tokens_to_ids(processor.family_class.end_of_turn_token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        token_id = tokenizer.eos_token_id
    return int(token_id)


def _assistant_prefix(processor) -> str:
    """What the chat template puts between the generation prompt and an assistant turn's text (` ` for SmolVLM)."""
    user = [{"role": "user", "content": "?"}]
    prompt = processor.chat_text(user)
    full = processor.chat_text(
        [*user, {"role": "assistant", "content": _MARKER}], add_generation_prompt=False
    )
    if not full.startswith(prompt) or _MARKER not in full:
        return ""
    return full[len(prompt) : full.index(_MARKER)]


def response_token_ids(processor, target_text: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of an assistant response as the family's chat template renders it after the generation prompt.

    Args:
        processor: the `Video2LoraProcessor` (its tokenizer, chat template and family).
        target_text: the response text (leading/trailing whitespace is stripped).
        max_tokens: keep at most this many tokens, the end-of-turn token included.

    Returns:
        The ids of the response text and the family's end-of-turn token (for SmolVLM
        `" {target_text}<end_of_utterance>"`).

    Example:
        ```python
        response_token_ids(processor, "A dog runs.")
        ```
    """
    text = _assistant_prefix(processor) + target_text.strip()
    ids = [*processor.tokenizer(text, add_special_tokens=False)["input_ids"], _end_of_turn_id(processor)]
    return ids[:max_tokens] if max_tokens else ids


@dataclass
class Video2LoraDataCollator:
    """Collate examples into encoder inputs, the text-only answer prompt, and response labels.

    Args:
        processor: a `Video2LoraProcessor` (for `internalization_inputs`, `query_inputs` and `tokenizer`).
        instruction: the internalization instruction; `None` uses the processor's default.
        num_frames: frames sampled per video span.
        longest_edge: frame resize target in pixels.
        max_target_tokens: responses are cut to this many tokens.
        video_loader: `(example) -> video` decoding one example's span; by default
            `load_example_video` (SmolVLM2's sampling rule within the span). It raises `VideoDecodeError` on a bad file.

    Returns (from `__call__`):
        A dict of tensors: `input_ids`, `attention_mask`, `labels` `[B, T]`; `context_input_ids`,
        `context_attention_mask` `[B, S]`; `pixel_values` `[B, F, 3, h, w]` and `pixel_attention_mask`;
        `teacher_topk_ids`/`teacher_topk_logprobs` `[B, T, k]` when the rows carry teacher top-k;
        `num_skipped` (scalar); and `example_ids`, `prompts`, `targets` (lists, for evaluation).

    Example:
        ```python
        collator = Video2LoraDataCollator(processor, num_frames=12, longest_edge=384)
        batch = collator([dataset[0], dataset[1]])
        ```
    """

    processor: Any
    instruction: str | None = None
    num_frames: int = 12
    longest_edge: int = 384
    max_target_tokens: int | None = 512
    video_loader: Callable[[dict], Any] | None = None

    def load_video(self, example: dict) -> Any:
        """Decode one example's span (frames and metadata) for `internalization_inputs`.

        Args:
            example: one example dict (`video_path`, and optionally `start`/`end` in seconds).

        Returns:
            Whatever `video_loader` returns; by default a `(frames, VideoMetadata)` pair.

        Raises:
            VideoDecodeError: the video cannot be read (the collator then skips the example).

        Example:
            ```python
            frames, meta = collator.load_video({"id": "a", "video_path": "a.mp4", "prompt": "Describe the video."})
            ```
        """
        if self.video_loader is not None:
            return self.video_loader(example)
        from .data import load_example_video

        return load_example_video(example, self.processor, self.num_frames)

    # ---- text ------------------------------------------------------------------------------------
    def prompt_token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's chat-formatted ids, exactly as `query_inputs` feeds them at answering time.

        Args:
            prompts: the questions or instructions.

        Returns:
            One list of token ids per prompt, without padding.

        Example:
            ```python
            collator.prompt_token_ids(["Describe the video."])[0][:4]
            ```
        """
        inputs = self.processor.query_inputs(list(prompts))
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        return [row[m.bool()].tolist() for row, m in zip(ids, mask)]

    def target_token_ids(self, example: dict) -> list[int]:
        """The response ids: the teacher's own tokens when cached, else the tokenized `target_text`.

        Args:
            example: one example dict with `target_token_ids` or `target_text`.

        Returns:
            Token ids, cut to `max_target_tokens`.

        Raises:
            ValueError: the example has neither (run `v2l teacher` first).

        Example:
            ```python
            collator.target_token_ids({"id": "a", "target_text": "A red circle moves left."})
            ```
        """
        cached = example.get("target_token_ids")
        if cached is not None and len(cached):
            return list(cached)[: self.max_target_tokens] if self.max_target_tokens else list(cached)
        if example.get("target_text") is None:
            raise ValueError(f"Example {example.get('id')!r} has no target_text: run `v2l teacher` first.")
        return response_token_ids(self.processor, example["target_text"], self.max_target_tokens)

    def text_inputs(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Right-padded `input_ids`, `attention_mask` and `labels` (plus teacher top-k when present).

        Args:
            examples: example dicts with `prompt` and a target (see `target_token_ids`).

        Returns:
            `[B, T]` tensors; `labels` is `IGNORE_INDEX` outside the response tokens.

        Example:
            ```python
            text = collator.text_inputs([{"id": "a", "prompt": "What happens?", "target_text": "It moves."}])
            text["labels"].shape  # [1, T]
            ```
        """
        tokenizer = self.processor.tokenizer
        prompts = self.prompt_token_ids([e["prompt"] for e in examples]) if examples else []
        targets = [self.target_token_ids(e) for e in examples]
        length = max((len(p) + len(t) for p, t in zip(prompts, targets)), default=0)
        batch = len(examples)
        input_ids = torch.full((batch, length), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        topk = [e.get("teacher_topk_ids") for e in examples]
        use_topk = batch > 0 and all(t is not None and len(t) for t in topk)
        if use_topk:
            k = len(topk[0][0])
            out["teacher_topk_ids"] = torch.zeros((batch, length, k), dtype=torch.long)
            out["teacher_topk_logprobs"] = torch.zeros((batch, length, k), dtype=torch.float32)
        for row, (prompt, target) in enumerate(zip(prompts, targets)):
            end = len(prompt) + len(target)
            input_ids[row, :end] = torch.tensor(prompt + target)
            attention_mask[row, :end] = 1
            labels[row, len(prompt) : end] = torch.tensor(target)
            if use_topk:  # teacher position j predicted response token j
                n = len(target)
                ids = torch.tensor(examples[row]["teacher_topk_ids"][:n], dtype=torch.long)
                logprobs = torch.tensor(examples[row]["teacher_topk_logprobs"][:n], dtype=torch.float32)
                out["teacher_topk_ids"][row, len(prompt) : len(prompt) + len(ids)] = ids
                out["teacher_topk_logprobs"][row, len(prompt) : len(prompt) + len(ids)] = logprobs
        return out

    # ---- videos ----------------------------------------------------------------------------------
    def context_inputs(self, videos: list) -> dict[str, torch.Tensor]:
        """The internalization inputs of decoded videos, with the processor's text keys prefixed `context_`.

        Args:
            videos: decoded videos, as `load_video` returns them.

        Returns:
            `context_input_ids`, `context_attention_mask`, `pixel_values` and `pixel_attention_mask`.

        Example:
            ```python
            inputs = collator.context_inputs([collator.load_video(example)])
            ```
        """
        kwargs = {"num_frames": self.num_frames, "longest_edge": self.longest_edge}
        if self.instruction is not None:
            kwargs["instruction"] = self.instruction
        inputs = self.processor.internalization_inputs(videos, **kwargs)
        out = {}
        for key, value in inputs.items():
            if not torch.is_tensor(value):
                continue
            out[f"context_{key}" if key in ("input_ids", "attention_mask") else key] = value
        return out

    def __call__(self, examples: Sequence[dict]) -> dict[str, Any]:
        kept, videos, skipped = [], [], 0
        for example in examples:
            try:
                videos.append(self.load_video(example))
            except VideoDecodeError as error:
                logger.warning("Skipping example %s: %s", example.get("id"), error)
                skipped += 1
                continue
            kept.append(example)
        batch: dict[str, Any] = self.text_inputs(kept)
        if kept:
            batch.update(self.context_inputs(videos))
        batch["num_skipped"] = torch.tensor(skipped, dtype=torch.long)
        batch["example_ids"] = [e["id"] for e in kept]
        batch["prompts"] = [e["prompt"] for e in kept]
        batch["targets"] = [e.get("target_text") for e in kept]
        return batch
