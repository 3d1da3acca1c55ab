"""Prompts and packed batches of the tiny-world recipe, rendered by the base model's own processor.

Every prompt comes from `Video2LoraProcessor` and the base model's family (`family.video_text`,
`family.query_text`, `response_token_ids`), so the recipe trains on exactly the token sequences that
`internalize`, `answer` and `answer_with_video` build, for any supported family. Base training packs
every task on one clip after a single copy of its video prefix.
"""

from __future__ import annotations

import numpy as np
import torch

from transformers_v2l import toy_world
from transformers_v2l.training.collator import response_token_ids


class RecipePrompts:
    """The recipe's prompts for one base model and one frame sampling, in its family's chat format.

    Args:
        processor: the base model's `Video2LoraProcessor`.
        frames: one clip's sampled frames `[n, H, W, 3]` uint8 (every clip of the world shares the sampling).
        metadata: that clip's `VideoMetadata`.

    Example:
        ```python
        prompts = RecipePrompts(processor, frames, metadata)
        prompts.video_prompt("Describe the video.")  # the expanded video turn and the assistant's opening
        ```
    """

    def __init__(self, processor, frames: np.ndarray, metadata):
        self.processor, self.family, self.metadata = processor, processor.family_class, metadata
        self.tokenizer = processor.tokenizer
        # the given clip's pixels: the prompts depend on the sampling and frame count, not on the content
        self.reference_pixels = self.family.video_pixels(processor, frames, processor.longest_edge)

    def pixels(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """The family's vision inputs of one clip (`{"pixel_values": [n, 3, H, W]}` for SmolVLM2)."""
        return self.family.video_pixels(self.processor, frames, self.processor.longest_edge)

    def batch_pixels(self, clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Several clips' `pixels` as one batch of the family's video inputs."""
        return self.family.collate_video_pixels(clips)

    def video_prompt(self, question: str) -> str:
        """One user turn `[video, question]` and the assistant's opening."""
        return self.family.video_text(self.processor, self.metadata, self.reference_pixels, question, True)

    def text_prompt(self, question: str) -> str:
        """One text-only user turn and the assistant's opening (zero visual tokens)."""
        return self.family.query_text(self.processor, question)

    def answer_ids(self, answer: str) -> list[int]:
        """The scored part of a task: the answer as the chat template renders it, and the end of the turn."""
        return response_token_ids(self.processor, answer)

    def dialog(self, caption: str, question: str) -> str:
        """See `dialog_turn`."""
        return dialog_turn(self.processor, caption, question)


_MARK = "\x00turn\x00"


def dialog_turn(processor, caption: str, question: str) -> str:
    """The user text that, asked as one turn, renders exactly as the conversation caption prompt / caption / question.

    A dialog-format question is the turn after the model's own description of the video; training and
    evaluation ask it as one user turn holding this text, and the checkpoint's `recall` answering protocol
    (`hn.answer`, `hn.answer_with_video`) asks the same conversation turn by turn: the token ids are the
    same for every family (for SmolVLM2 the text is `toy_world.dialog_prompt`'s).

    Args:
        processor: the base model's `Video2LoraProcessor` (its chat template).
        caption: the description the model gave to `toy_world.CAPTION_PROMPT`.
        question: the question.

    Returns:
        The user text.
    """
    head, tail = processor.chat_text([{"role": "user", "content": _MARK}]).split(_MARK)
    conversation = processor.chat_text([
        {"role": "user", "content": toy_world.CAPTION_PROMPT},
        {"role": "assistant", "content": caption},
        {"role": "user", "content": question},
    ])  # fmt: skip
    if not (conversation.startswith(head) and conversation.endswith(tail)):
        raise ValueError("The chat template does not render a conversation as one user turn's head and tail.")
    return conversation[len(head) : len(conversation) - len(tail)]


class PackedTasks:
    """Several `(question, answer)` tasks on one video, packed after one shared video prefix.

    Every task's tokens attend to the prefix and to their own earlier tokens only, and keep the
    positions they would have alone, so the loss equals the sum over separate sequences while the
    video is encoded once. This is only a training speed-up: evaluation uses plain prompts.

    Args:
        prompts: the recipe's `RecipePrompts`.
        qa_format: `"direct"`, `"reasoned"` or `"dialog"` (see `RecipeConfig.qa_format`).
    """

    def __init__(self, prompts: RecipePrompts, qa_format: str = "direct"):
        self.prompts, self.tokenizer, self.qa_format = prompts, prompts.tokenizer, qa_format
        # the longest token prefix that every prompt on this video shares
        probes = [self._ids(prompts.video_prompt(q)) for q in ("Describe", "What", "A")]
        n = 0
        while all(len(x) > n and x[n] == probes[0][n] for x in probes):
            n += 1
        self.prefix_ids = probes[0][:n]
        self._cache: dict[tuple[str, ...], tuple[list[int], list[int]]] = {}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def segment(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        key = (question, answer)
        if key not in self._cache:
            prompt = self._ids(self.prompts.video_prompt(question))
            target = self.prompts.answer_ids(answer)
            p = len(self.prefix_ids)
            if prompt[:p] != self.prefix_ids:
                raise ValueError("The video prefix does not tokenize the same inside a full prompt.")
            self._cache[key] = (prompt[p:] + target, [-100] * (len(prompt) - p) + target)
        return self._cache[key]

    def text_segment(self, question: str, description: str, answer: str) -> tuple[list[int], list[int]]:
        """A text-only answer from a given description: reasoned (the description is given, unscored),
        or dialog (the description is the first assistant turn). Only the answer is scored."""
        key = (question, description, answer)
        if key in self._cache:
            return self._cache[key]
        if self.qa_format == "dialog":
            prompt = self._ids(self.prompts.text_prompt(self.prompts.dialog(description, question)))
            target = self.prompts.answer_ids(answer)
            self._cache[key] = (prompt + target, [-100] * len(prompt) + target)
        else:
            prompt = self._ids(self.prompts.text_prompt(question))
            given = self.prompts.answer_ids(description)[:-1]  # the description, without the end of turn
            full = self.prompts.answer_ids(toy_world.reasoned_answer(description, answer))
            if full[: len(given)] != given:
                raise ValueError("A description does not tokenize the same inside a reasoned answer.")
            self._cache[key] = (prompt + full, [-100] * (len(prompt) + len(given)) + full[len(given) :])
        return self._cache[key]

    def batch(
        self,
        clips_tasks: list[list[tuple[str, str]]],
        text_tasks: list[list[tuple[str, str, str]]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`input_ids`, 4D boolean `attention_mask`, `position_ids` and `labels` for a batch of clips.

        `text_tasks[i]` holds `(question, description, answer)` segments for row `i` that see neither
        the video nor the other segments, at positions from 0, as a text-only prompt would be.
        """
        p = len(self.prefix_ids)
        rows = []
        for i, tasks in enumerate(clips_tasks):
            ids, labels, positions, segments = list(self.prefix_ids), [-100] * p, list(range(p)), [0] * p
            for k, (question, answer) in enumerate(tasks, start=1):
                seg_ids, seg_labels = self.segment(question, answer)
                ids += seg_ids
                labels += seg_labels
                positions += range(p, p + len(seg_ids))
                segments += [k] * len(seg_ids)
            for k, task in enumerate(text_tasks[i] if text_tasks else [], start=len(tasks) + 1):
                seg_ids, seg_labels = self.text_segment(*task)
                ids += seg_ids
                labels += seg_labels
                positions += range(len(seg_ids))
                segments += [-k] * len(seg_ids)  # negative: does not see the video prefix
            rows.append((ids, labels, positions, segments))
        width = max(len(r[0]) for r in rows)
        batch = len(rows)
        input_ids = torch.full((batch, width), self.tokenizer.pad_token_id, dtype=torch.long)
        label_t = torch.full((batch, width), -100, dtype=torch.long)
        position_ids = torch.zeros((batch, width), dtype=torch.long)
        segment_t = torch.full((batch, width), -(10**6), dtype=torch.long)  # padding
        for i, (ids, labels, positions, segments) in enumerate(rows):
            n = len(ids)
            input_ids[i, :n], label_t[i, :n] = torch.tensor(ids), torch.tensor(labels)
            position_ids[i, :n], segment_t[i, :n] = torch.tensor(positions), torch.tensor(segments)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same = segment_t[:, :, None] == segment_t[:, None, :]
        # video segments (ids > 0) see the video prefix; text-only segments (ids < 0) and padding do not
        to_prefix = (segment_t[:, None, :] == 0) & (segment_t[:, :, None] >= 0)
        mask = (causal & (same | to_prefix)) | torch.eye(
            width, dtype=torch.bool
        )  # padding rows see themselves
        return {
            "input_ids": input_ids,  # [B, S]
            "attention_mask": mask[:, None],  # [B, 1, S, S]
            "position_ids": position_ids,  # [B, S]
            "labels": label_t,  # [B, S]
        }
