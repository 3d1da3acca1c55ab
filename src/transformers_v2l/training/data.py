"""Training examples: manifests, `datasets` datasets, video spans, and the span sampler.

A training example is a video (a path, optionally a `start` and `end` time in seconds), a prompt
and a target text. Manifests use the authors' JSONL format, one object per line:

```json
{"id": "ft-0001", "video_path": "videos/0001.mp4", "task_type": "caption",
 "prompt": "Describe the video.", "target_text": "A man rides a bike.", "dataset": "finevideo",
 "split": "train", "metadata": {"duration": 31.5, "scenes": [{"start": 0.0, "end": 12.2}, ...]}}
```

`start`/`end` may be top-level columns or live in `metadata`. Relative `video_path`s resolve
against a data root (by default the manifest's folder). Scene lists are read from
`metadata["scenes"]` or FineVideo's `metadata["content_metadata"]["scenes"]`; each scene is
`{"start": s, "end": e}`, `[s, e]`, or FineVideo's `{"timestamps": {"start_timestamp": "00:00:01.500", ...}}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "REQUIRED_COLUMNS",
    "SPAN_KINDS",
    "SpanSampler",
    "Video2LoraDataset",
    "expand_spans",
    "load_example_video",
    "load_examples",
    "load_manifest",
    "normalize_example",
    "parse_scenes",
]

#: Columns every manifest row must have (`target_text` may be null in a teacher job's input).
REQUIRED_COLUMNS = ("id", "video_path", "prompt")
#: Optional columns of the authors' format, filled with defaults when missing.
OPTIONAL_COLUMNS = {"task_type": None, "target_text": None, "dataset": None, "split": None, "metadata": None}
#: The span kinds the sampler draws, in the order of `SpanSampler.mix`.
SPAN_KINDS = ("single_scene", "multi_scene", "full_video")


# ---- rows ----------------------------------------------------------------------------------------
def _as_metadata(value: Any) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, str):  # datasets / parquet store free-form metadata as a JSON string
        return json.loads(value)
    return dict(value)


def _as_seconds(value: Any) -> float | None:
    """A time in seconds from a number or a `[HH:]MM:SS[.mmm]` string."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        seconds = 0.0
        for part in value.strip().split(":"):
            seconds = seconds * 60 + float(part)
        return seconds
    return float(value)


def resolve_video_path(video_path: str, data_root: str | os.PathLike | None) -> str:
    """An absolute path for a manifest's `video_path` (URLs and absolute paths are kept)."""
    if "://" in video_path or os.path.isabs(video_path) or data_root is None:
        return video_path
    return str(Path(data_root) / video_path)


def normalize_example(row: dict, data_root: str | os.PathLike | None = None, where: str = "example") -> dict:
    """Validate one example and bring it into the canonical form used by collators and the teacher.

    Args:
        row: a manifest row or dataset item.
        data_root: folder relative `video_path`s resolve against.
        where: how to name the row in error messages (for example `"train.jsonl line 3"`).

    Returns:
        A new dict with every column of the authors' format, `metadata` as a dict, `video_path`
        resolved, and `start`/`end` as floats or `None` (taken from the row or from its metadata).

    Example:
        ```python
        normalize_example({"id": "a", "video_path": "a.mp4", "prompt": "Describe."}, data_root="data")
        ```
    """
    missing = [name for name in REQUIRED_COLUMNS if row.get(name) in (None, "")]
    if missing:
        raise ValueError(f"{where} is missing the required column(s) {missing}; it has {sorted(row)}.")
    example = {**OPTIONAL_COLUMNS, **row}
    example["id"] = str(example["id"])
    example["metadata"] = _as_metadata(example["metadata"])
    example["video_path"] = resolve_video_path(str(example["video_path"]), data_root)
    for key in ("start", "end"):
        value = row.get(key, example["metadata"].get(key))
        example[key] = _as_seconds(value)
    if example["start"] is not None and example["end"] is not None and example["end"] <= example["start"]:
        raise ValueError(
            f"{where}: the span end ({example['end']}) must be after its start ({example['start']})."
        )
    return example


def load_manifest(
    path: str | os.PathLike, data_root: str | os.PathLike | None = None, split: str | None = None
) -> list[dict]:
    """Read a JSONL manifest in the authors' format.

    Args:
        path: the `.jsonl` file.
        data_root: folder relative video paths resolve against; defaults to the manifest's folder.
        split: keep only rows whose `split` column equals this value.

    Returns:
        The normalized examples, in file order.

    Example:
        ```python
        examples = load_manifest("data/finevideo.jsonl", split="train")
        ```
    """
    path = Path(path)
    root = Path(data_root) if data_root is not None else path.parent
    examples, seen = [], set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number} is not valid JSON: {error}") from None
            example = normalize_example(row, root, where=f"{path} line {number}")
            if split is not None and example["split"] != split:
                continue
            if example["id"] in seen:
                raise ValueError(f"{path} line {number}: the id {example['id']!r} appears twice.")
            seen.add(example["id"])
            examples.append(example)
    return examples


def load_examples(
    source: str | os.PathLike | Any, data_root: str | os.PathLike | None = None, split: str | None = None
) -> list[dict] | Video2LoraDataset:
    """Examples from a JSONL manifest, a teacher output folder, a saved or in-memory `datasets` dataset.

    Args:
        source: a `.jsonl` path, a folder written by `v2l teacher` or `Dataset.save_to_disk`, a
            `.parquet` file, or a `datasets.Dataset`.
        data_root: folder relative video paths resolve against.
        split: keep only rows of this split.

    Returns:
        A list of normalized examples (manifests) or a `Video2LoraDataset` over a `datasets.Dataset`.

    Example:
        ```python
        train = load_examples("teacher-out/", data_root="/data/finevideo")
        ```
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".jsonl":
            return load_manifest(path, data_root, split)
        from ..errors import require

        datasets = require("datasets", "training", "Loading training data")
        if path.is_dir() and (path / "teacher_config.json").exists():
            from .teacher import load_teacher_dataset

            source = load_teacher_dataset(path)
        elif path.is_dir():
            source = datasets.load_from_disk(str(path))
        elif path.suffix == ".parquet":
            source = datasets.Dataset.from_parquet(str(path))
        else:
            raise ValueError(
                f"Cannot read training data from {path}: expected .jsonl, .parquet or a dataset folder."
            )
        data_root = data_root if data_root is not None else (path if path.is_dir() else path.parent)
    if split is not None:
        source = source.filter(lambda row: row.get("split") == split)
    return Video2LoraDataset(source, data_root)


class Video2LoraDataset(torch.utils.data.Dataset):
    """A map-style dataset of normalized examples over a list of dicts or a `datasets.Dataset`.

    Args:
        examples: rows in the authors' format (extra columns such as teacher outputs are kept).
        data_root: folder relative video paths resolve against.

    Example:
        ```python
        dataset = Video2LoraDataset(load_manifest("train.jsonl"))
        dataset[0]["video_path"]
        ```
    """

    def __init__(self, examples: Sequence[dict] | Any, data_root: str | os.PathLike | None = None):
        self.examples = examples
        self.data_root = data_root

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        row = dict(self.examples[int(index)])
        return normalize_example(row, self.data_root, where=f"example {index}")


def load_example_video(example: dict, processor: Any = None, num_frames: int = 12) -> tuple[Any, Any]:
    """Decode an example's span with SmolVLM2's sampling rule: `(frames [T, H, W, 3], VideoMetadata)`.

    Args:
        example: a normalized example (`video_path`, `start`, `end`).
        processor: a `Video2LoraProcessor` whose `fps` and `skip_secs` set the sampling rule.
        num_frames: maximum frames sampled from the span.

    Returns:
        The pair `load_video` returns, which the processor accepts as a video.

    Raises:
        VideoDecodeError: the file is missing or cannot be decoded, or the span holds no frame.

    Example:
        ```python
        frames, meta = load_example_video({"video_path": "a.mp4", "start": 2.0, "end": 6.0}, processor)
        ```
    """
    from ..errors import VideoDecodeError
    from ..video_io import load_video

    settings = {"num_frames": num_frames, "start": example.get("start"), "end": example.get("end")}
    if processor is not None:
        settings.update(
            target_fps=getattr(processor, "fps", 1.0), skip_secs=getattr(processor, "skip_secs", 1.0)
        )
    try:
        return load_video(example["video_path"], compute_sha256=False, **settings)
    except VideoDecodeError:
        raise
    except ValueError as error:  # a span that holds no frame (scene metadata beyond the real video length)
        raise VideoDecodeError(str(error)) from error


# ---- spans ---------------------------------------------------------------------------------------
def parse_scenes(metadata: dict) -> list[tuple[float, float]]:
    """Scene boundaries `[(start, end), ...]` in seconds, sorted, from an example's metadata.

    Args:
        metadata: the example's `metadata` dict (authors' or FineVideo layout).

    Returns:
        The scenes with a positive length, sorted by start time; empty when there are none.

    Example:
        ```python
        parse_scenes({"scenes": [{"start": 0, "end": 4.5}, [4.5, 9.0]]})  # [(0.0, 4.5), (4.5, 9.0)]
        ```
    """
    scenes = metadata.get("scenes")
    if scenes is None:
        scenes = (metadata.get("content_metadata") or {}).get("scenes")
    spans = []
    for scene in scenes or []:
        if isinstance(scene, dict):
            times = scene.get("timestamps", scene)
            start = _as_seconds(times.get("start", times.get("start_timestamp")))
            end = _as_seconds(times.get("end", times.get("end_timestamp")))
        else:
            start, end = (_as_seconds(value) for value in scene)
        if start is not None and end is not None and end > start:
            spans.append((start, end))
    return sorted(spans)


@dataclass(frozen=True)
class SpanSampler:
    """Draws training spans from scene metadata: single-scene, adjacent multi-scene or full-video.

    Every draw is a pure function of `(seed, example id, draw index)`, so reruns, resumed jobs and
    any number of processes produce the same spans.

    Args:
        mix: probabilities of single-scene, adjacent multi-scene and full-video spans (the paper: 60/30/10).
        seed: base seed of all draws.
        max_scenes: the longest run of adjacent scenes a multi-scene span may join.

    Example:
        ```python
        sampler = SpanSampler(seed=0)
        start, end, kind = sampler.sample(example, draw=0)  # (None, None, "full_video") without scenes
        ```
    """

    mix: tuple[float, float, float] = (0.6, 0.3, 0.1)
    seed: int = 0
    max_scenes: int = 4

    def __post_init__(self):
        if len(self.mix) != 3 or any(p < 0 for p in self.mix) or sum(self.mix) <= 0:
            raise ValueError(f"SpanSampler.mix must be three non-negative weights, got {self.mix!r}.")
        if self.max_scenes < 2:
            raise ValueError(f"SpanSampler.max_scenes must be at least 2, got {self.max_scenes!r}.")

    def _rng(self, example_id: str, draw: int) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}\0{example_id}\0{draw}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "little"))

    def sample(self, example: dict, draw: int = 0) -> tuple[float | None, float | None, str]:
        """One span of `example`: `(start, end, kind)`; `start = end = None` means the whole video.

        Without scenes the span is the full video; with one scene a multi-scene draw becomes full-video.

        Args:
            example: an example dict; its `id` seeds the draw and its `metadata` may list scenes.
            draw: the draw index, for several spans of one video.

        Returns:
            `(start, end, kind)` with `kind` one of `"single_scene"`, `"multi_scene"`, `"full_video"`.

        Example:
            ```python
            SpanSampler(seed=0).sample({"id": "a", "metadata": {}}, draw=0)  # (None, None, 'full_video')
            ```
        """
        rng = self._rng(str(example["id"]), draw)
        kind = rng.choices(SPAN_KINDS, weights=self.mix)[0]
        scenes = parse_scenes(_as_metadata(example.get("metadata")))
        if kind == "multi_scene" and len(scenes) < 2:
            kind = "full_video"
        if kind == "full_video" or not scenes:
            return None, None, "full_video"
        if kind == "single_scene":
            start, end = scenes[rng.randrange(len(scenes))]
            return start, end, kind
        length = rng.randint(2, min(self.max_scenes, len(scenes)))
        first = rng.randrange(len(scenes) - length + 1)
        return scenes[first][0], scenes[first + length - 1][1], kind


def expand_spans(examples: Iterable[dict], sampler: SpanSampler, spans_per_video: int = 1) -> list[dict]:
    """Draw `spans_per_video` spans for each example that has no explicit span yet.

    Args:
        examples: normalized examples.
        sampler: the span sampler.
        spans_per_video: spans drawn per video; the new rows get ids `"{id}#span{j}"` when more than one.

    Returns:
        New rows with `start`, `end` and `metadata["span_kind"]` set. Rows that already have a
        `start` or `end` are kept unchanged.

    Example:
        ```python
        rows = expand_spans(load_manifest("finevideo.jsonl"), SpanSampler(seed=0), spans_per_video=2)
        ```
    """
    rows = []
    for example in examples:
        if example.get("start") is not None or example.get("end") is not None:
            rows.append(example)
            continue
        for draw in range(spans_per_video):
            start, end, kind = sampler.sample(example, draw)
            row = {**example, "start": start, "end": end}
            row["metadata"] = {**_as_metadata(example.get("metadata")), "span_kind": kind}
            if spans_per_video > 1:
                row["id"] = f"{example['id']}#span{draw}"
            rows.append(row)
    return rows
