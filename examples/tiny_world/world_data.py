"""The decoded world on disk, and the base model's processor and prompts over it (tiny-world recipe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prompts import RecipePrompts


def load_frames(work: Path, split: str) -> dict:
    """A split's decoded clips: `frames [N, n, H, W, 3]` uint8, `ids`, `indices`, `fps`, `duration`."""
    data = np.load(work / "world" / f"{split}_frames.npz")
    return {k: data[k] for k in data.files}


def load_processor(path: Path, cfg):
    """The `Video2LoraProcessor` of the base model saved at `path`, set to the recipe's frames, size and protocol.

    A `qa_format="dialog"` model answers by the `recall` protocol (its description of the video, then the
    question as the next turn), which the processor saves with the hypernetwork, so that `hn.answer` and
    `hn.answer_with_video` ask as the model was trained.
    """
    from transformers_v2l.processing_video2lora import Video2LoraProcessor
    from transformers_v2l.toy_world import CAPTION_PROMPT

    answer = {"protocol": "direct"}
    if cfg.qa_format == "dialog":
        answer = {"protocol": "recall", "recall_prompt": CAPTION_PROMPT, "reader": cfg.dialog_reader,
                  "recall_max_new_tokens": 48}  # fmt: skip
    return Video2LoraProcessor.from_pretrained(
        path, longest_edge=cfg.image_size, num_frames=cfg.num_frames, answer=answer
    )


def clip_metadata(data: dict, video_path: str):
    """The `VideoMetadata` of any clip of a split from `load_frames` (every clip shares the sampling)."""
    from transformers_v2l.video_sampling import VideoMetadata

    indices, fps, duration = [int(i) for i in data["indices"]], float(data["fps"]), float(data["duration"])
    size = data["frames"].shape[-2]
    return VideoMetadata(video_path, None, round(duration * fps), fps, duration, size, size, indices)


def cached_video_loader(work: Path, split: str):
    """`(example) -> (frames, VideoMetadata)` from the decoded-frame cache, so no step decodes twice."""
    data = load_frames(work, split)
    index = {clip_id: i for i, clip_id in enumerate(data["ids"])}

    def loader(example: dict):
        return data["frames"][index[example["metadata"]["clip_id"]]], clip_metadata(
            data, example["video_path"]
        )

    return loader


def recipe_prompts(work: Path, cfg, path: Path, split: str = "train") -> RecipePrompts:
    """The prompts of the base model saved at `path`, for the world's frame sampling."""
    data = load_frames(work, split)
    return RecipePrompts(load_processor(path, cfg), data["frames"][0], clip_metadata(data, ""))
