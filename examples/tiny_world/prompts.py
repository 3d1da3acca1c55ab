"""Prompts and packed batches of the tiny-world recipe, in SmolVLM2's video-in-context format.

The same token sequences `Video2LoraProcessor` builds (checked token for token in the tests), written
out directly so that base training can pack every task on one clip after a single copy of its video.
"""

from __future__ import annotations

import numpy as np
import torch

from transformers_v2l import toy_world


def video_prompt_text(indices: list[int], fps: float, duration: float, image_seq_len: int) -> str:
    """The expanded video part of a SmolVLM2 user turn."""
    from num2words import num2words

    seconds = int(duration)
    text = (
        f"You are provided the following series of {num2words(len(indices))} frames from a "
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} [H:MM:SS] video.\n"
    )
    image = "<fake_token_around_image><global-img>" + "<image>" * image_seq_len + "<fake_token_around_image>"
    for idx in indices:
        stamp = int(idx // fps)
        text += f"\nFrame from {stamp // 60:02d}:{stamp % 60:02d}:{image}"
    return text + "\n\n"


def chat(user_text: str, answer: str | None = None) -> str:
    prompt = f"<|im_start|>User: {user_text}<end_of_utterance>\nAssistant:"
    return prompt if answer is None else prompt + f" {answer}<end_of_utterance>"


def pixel_values(frames: np.ndarray) -> torch.Tensor:
    """uint8 `[..., H, W, 3]` to SmolVLM's normalized `[..., 3, H, W]` float32 (mean 0.5, std 0.5)."""
    x = torch.from_numpy(frames).float().div_(255.0)
    return x.sub_(0.5).div_(0.5).movedim(-1, -3).contiguous()


class PackedTasks:
    """Several `(question, answer)` tasks on one video, packed after one shared video prefix.

    Every task's tokens attend to the prefix and to their own earlier tokens only, and keep the
    positions they would have alone, so the loss equals the sum over separate sequences while the
    video is encoded once. This is only a training speed-up: evaluation uses plain prompts.
    """

    def __init__(self, tokenizer, prefix: str, qa_format: str = "direct"):
        self.tokenizer = tokenizer
        self.qa_format = qa_format
        # the longest token prefix that every prompt on this video shares
        probes = [
            tokenizer(chat(prefix + q), add_special_tokens=False)["input_ids"]
            for q in ("Describe", "What", "A")
        ]
        n = 0
        while all(len(x) > n and x[n] == probes[0][n] for x in probes):
            n += 1
        self.prefix_ids = probes[0][:n]
        self.prefix_text = prefix
        self._cache: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def _answer_ids(self, answer: str) -> list[int]:
        """The scored part of every task: the answer and the end of the turn."""
        return self.tokenizer(f" {answer}<end_of_utterance>", add_special_tokens=False)["input_ids"]

    def segment(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        key = (question, answer)
        if key not in self._cache:
            prompt = self.tokenizer(chat(self.prefix_text + question), add_special_tokens=False)["input_ids"]
            target = self._answer_ids(answer)
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
            prompt = self.tokenizer(
                chat(toy_world.dialog_prompt(description, question, end_of_turn_token="<end_of_utterance>")),
                add_special_tokens=False,
            )["input_ids"]
            target = self._answer_ids(answer)
            self._cache[key] = (prompt + target, [-100] * len(prompt) + target)
        else:
            prompt = self.tokenizer(chat(question), add_special_tokens=False)["input_ids"]
            given = self.tokenizer(f" {description}", add_special_tokens=False)["input_ids"]
            full = self.tokenizer(
                f" {toy_world.reasoned_answer(description, answer)}<end_of_utterance>",
                add_special_tokens=False,
            )["input_ids"]
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
            "input_ids": input_ids,
            "attention_mask": mask[:, None],
            "position_ids": position_ids,
            "labels": label_t,
        }
