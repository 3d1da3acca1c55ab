"""Writing a whole toy world to disk: videos and JSONL manifests, and reading manifests back."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .render import render_clip, write_video
from .scene import CAPTION_STYLES, ToyClip, sample_clip


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def manifest_rows(
    clip: ToyClip, video_path: str, caption_styles: tuple[str, ...] = ("video",)
) -> list[dict[str, Any]]:
    """The manifest rows of one clip: its captions, then each question, in the Frames2LoRA format.

    Args:
        clip: a clip from `sample_clip` or `make_clip`.
        video_path: the clip's video file, as written in the rows (usually relative to the manifest).
        caption_styles: which of `CAPTION_STYLES` get a caption row.

    Returns:
        One dict per row, with `id`, `video_path`, `task_type`, `prompt`, `target_text`, `dataset`,
        `split` and `metadata`.

    Example:
        ```python
        rows = manifest_rows(make_clip(0), "videos/test/test-00000.mp4")
        rows[0]["id"], rows[1]["id"]  # ('test-00000-caption', 'test-00000-qa0')
        ```
    """
    meta = clip.metadata()
    rows = []
    for style in caption_styles:
        rows.append(
            {
                "id": f"{clip.id}-caption" + ("" if style == "video" else f"-{style}"),
                "video_path": video_path,
                "task_type": "caption",
                "prompt": CAPTION_STYLES[style],
                "target_text": clip.style_caption(style),
                "dataset": "tiny_world",
                "split": clip.split,
                "metadata": {**meta, "clip_id": clip.id, "caption_style": style},
            }
        )
    for k, qa in enumerate(clip.qa):
        rows.append(
            {
                "id": f"{clip.id}-qa{k}",
                "video_path": video_path,
                "task_type": "qa",
                "prompt": qa["question"],
                "target_text": qa["answer"],
                "dataset": "tiny_world",
                "split": clip.split,
                "metadata": {"clip_id": clip.id, "qa_kind": qa["kind"], "seed": clip.seed},
            }
        )
    return rows


def generate_world(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 2000,
    num_validation: int = 200,
    num_test: int = 200,
    seed: int = 0,
    caption_styles: tuple[str, ...] = ("video",),
) -> dict[str, Path]:
    """Write every clip as an `.mp4` and one JSONL manifest per split.

    Clip `i` of a split is drawn from seed `seed * 1_000_003 + i`, so splits are disjoint and the
    output only depends on the arguments. Files that already exist are kept.

    Args:
        out_dir: folder that receives `videos/{split}/*.mp4` and `{split}.jsonl`.
        num_train: clips in the train split.
        num_validation: clips in the validation split.
        num_test: clips in the test split (each shows a held-out color and shape pair).
        seed: world seed.
        caption_styles: which of `CAPTION_STYLES` get a caption row per clip (`video` always first).

    Returns:
        `{split: manifest path}`.

    Example:
        ```python
        manifests = generate_world("data/tiny_world", num_train=100, num_validation=20, num_test=20)
        rows = read_manifest(manifests["test"])
        ```
    """
    out = Path(out_dir)
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    manifests = {}
    for split, count in counts.items():
        rows = []
        for i in range(count):
            clip = sample_clip(seed * 1_000_003 + i, split, index=i)
            relative = Path("videos") / split / f"{clip.id}.mp4"
            if not (out / relative).exists():
                write_video(render_clip(clip), out / relative)
            rows.extend(manifest_rows(clip, str(relative), caption_styles))
        path = out / f"{split}.jsonl"
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
        manifests[split] = path
    return manifests


def read_manifest(path: str | os.PathLike, *, resolve_paths: bool = True) -> list[dict[str, Any]]:
    """Read a JSONL manifest; relative `video_path`s are resolved against the manifest's folder.

    Args:
        path: a `.jsonl` file from `generate_world`.
        resolve_paths: make `video_path` absolute.

    Returns:
        The rows as dictionaries.

    Example:
        ```python
        rows = read_manifest("data/tiny_world/test.jsonl")
        rows[0]["video_path"]  # an absolute path to the clip
        ```
    """
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if resolve_paths:
        for row in rows:
            if not os.path.isabs(row["video_path"]):
                row["video_path"] = str(path.parent / row["video_path"])
    return rows
