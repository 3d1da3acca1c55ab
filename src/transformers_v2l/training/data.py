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
import math
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "REQUIRED_COLUMNS",
    "SPAN_KINDS",
    "SpanSampler",
    "TaskMixture",
    "TaskMixtureSampler",
    "Video2LoraDataset",
    "example_task_types",
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
            from .teacher_outputs import load_teacher_dataset

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


# ---- task mixtures -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskMixture:
    """How often each task type is drawn for training: captions and questions, for example.

    The paper trains on captioning only and names mixed captioning and question-answering supervision
    as future work for the answer-style gap of zero-shot QA. A mixture keys on each example's
    `task_type` column (the manifests' `caption`, `qa`, ...): a type is drawn with probability
    proportional to its weight, whatever its number of rows. The loss stays normalized by response
    tokens, so a type with long responses (captions) weighs more per example than one with short
    answers; raise the short type's weight to compensate.

    Args:
        weights: `{task_type: weight}`, relative weights >= 0 (a type with weight 0 is never drawn).

    Example:
        ```python
        mixture = TaskMixture.parse("caption=1,qa=3")
        mixture.probabilities()  # {'caption': 0.25, 'qa': 0.75}
        ```
    """

    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        from ..errors import InvalidArgumentError

        weights = {str(k): float(v) for k, v in dict(self.weights).items()}
        bad = {k: v for k, v in weights.items() if not math.isfinite(v) or v < 0}
        if not weights or bad or sum(weights.values()) <= 0:
            raise InvalidArgumentError(
                "A task mixture needs weights >= 0 for each task type, at least one of them positive, got "
                f"{dict(self.weights)!r}; for example 'caption=1,qa=3'."
            )
        object.__setattr__(self, "weights", weights)

    @classmethod
    def parse(cls, spec: TaskMixture | Mapping[str, float] | str) -> TaskMixture:
        """A mixture from `"caption=1,qa=3"` (or `caption:1 qa:3`), a mapping, or a mixture.

        Args:
            spec: the mixture's text form, a `{task_type: weight}` mapping, or a `TaskMixture`.

        Returns:
            The `TaskMixture`.

        Raises:
            InvalidArgumentError: the text is not `type=weight` pairs, or a weight is negative.

        Example:
            ```python
            TaskMixture.parse("caption=2, qa=1").weights  # {'caption': 2.0, 'qa': 1.0}
            ```
        """
        from ..errors import InvalidArgumentError

        if isinstance(spec, TaskMixture):
            return spec
        if isinstance(spec, Mapping):
            return cls(dict(spec))
        weights = {}
        for item in str(spec).replace(",", " ").split():
            name, sep, value = item.replace(":", "=").partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise InvalidArgumentError(
                    f"Cannot read the task mixture {spec!r}: write task_type=weight pairs, such as 'caption=1,qa=3'."
                ) from None
        return cls(weights)

    def probabilities(self) -> dict[str, float]:
        """Each task type's probability of being drawn (the weights, normalized).

        Returns:
            `{task_type: probability}`, in the order of `weights`.

        Example:
            ```python
            TaskMixture({"caption": 1, "qa": 1}).probabilities()  # {'caption': 0.5, 'qa': 0.5}
            ```
        """
        total = sum(self.weights.values())
        return {name: weight / total for name, weight in self.weights.items()}

    def check(self, task_types: Sequence[str | None]) -> dict[str, int]:
        """Check that the examples' task types fit the mixture; count the examples of each.

        Args:
            task_types: the task type of every example (`example_task_types`).

        Returns:
            `{task_type: number of examples}` for the mixture's types.

        Raises:
            InvalidArgumentError: an example has a task type the mixture does not name (give it weight
                0 to leave it out), or a type with a positive weight has no example.

        Example:
            ```python
            TaskMixture.parse("caption=1,qa=1").check(["caption", "qa", "qa"])  # {'caption': 1, 'qa': 2}
            ```
        """
        from ..errors import InvalidArgumentError

        counts = {name: 0 for name in self.weights}
        unknown = {}
        for task in task_types:
            if task in counts:
                counts[task] += 1
            else:
                unknown[task] = unknown.get(task, 0) + 1
        if unknown:
            raise InvalidArgumentError(
                f"The training data has examples of task types the mixture {self.weights} does not name: "
                f"{unknown} (as `task_type` column values). Name every type, with weight 0 to leave one out."
            )
        empty = [name for name, weight in self.weights.items() if weight > 0 and counts[name] == 0]
        if empty:
            raise InvalidArgumentError(
                f"The task mixture draws {empty} but the training data has no example of that task type "
                f"(counts: {counts})."
            )
        return counts


def example_task_types(dataset: Any) -> list[str | None]:
    """The `task_type` of every example of a dataset, in order, read without decoding anything.

    Args:
        dataset: a `Video2LoraDataset`, a `datasets.Dataset`, or a sequence of example dicts.

    Returns:
        One task type (or `None`) per example.

    Example:
        ```python
        example_task_types([{"task_type": "caption"}, {"task_type": "qa"}])  # ['caption', 'qa']
        ```
    """
    rows = dataset.examples if isinstance(dataset, Video2LoraDataset) else dataset
    column_names = getattr(rows, "column_names", None)
    if column_names is not None:  # a datasets.Dataset: read the column at once
        return list(rows["task_type"]) if "task_type" in column_names else [None] * len(rows)
    return [row.get("task_type") for row in rows]


class TaskMixtureSampler(torch.utils.data.Sampler):
    """Dataset indices drawn by task type: first a type by its weight, then that type's next example.

    Each type's examples come in a shuffled order and all are used before any repeats. The draws are a
    pure function of `(seed, epoch)`, so every process of a distributed run and a resumed run see the
    same order (`Trainer` calls `set_epoch`).

    Args:
        task_types: each example's task type, in dataset order (`example_task_types`).
        mixture: the `TaskMixture` (or its text form).
        num_samples: indices per epoch; defaults to the number of examples.
        seed: base seed of the draws.

    Example:
        ```python
        sampler = TaskMixtureSampler(["caption", "qa", "qa", "qa"], "caption=1,qa=1", seed=0)
        list(sampler)  # four indices, about half of them 0
        ```
    """

    def __init__(
        self,
        task_types: Sequence[str | None],
        mixture: TaskMixture | Mapping[str, float] | str,
        num_samples: int | None = None,
        seed: int = 0,
    ):
        self.mixture = TaskMixture.parse(mixture)
        self.mixture.check(task_types)
        self.indices = {
            name: [i for i, t in enumerate(task_types) if t == name] for name in self.mixture.weights
        }
        self.num_samples = len(task_types) if num_samples is None else int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of epoch `epoch` next (called by `Trainer` at the start of each epoch).

        Args:
            epoch: the epoch number.

        Example:
            ```python
            sampler.set_epoch(1)
            ```
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        import numpy as np

        rng = np.random.default_rng([self.seed, self.epoch, 7919])
        names = [name for name, weight in self.mixture.weights.items() if weight > 0]
        probabilities = np.array([self.mixture.weights[name] for name in names], dtype=np.float64)
        picks = rng.choice(len(names), size=self.num_samples, p=probabilities / probabilities.sum())
        orders = {name: [] for name in names}
        for pick in picks:
            name = names[int(pick)]
            if not orders[name]:  # every example of this type once, then a new shuffle
                orders[name] = [self.indices[name][int(j)] for j in rng.permutation(len(self.indices[name]))]
            yield orders[name].pop()
