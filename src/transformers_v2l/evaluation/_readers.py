"""Helpers shared by the benchmark readers: file formats, video lookup, rows, sampling."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import require
from .prompts import PROMPT_TEMPLATES

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: One annotation file, several files, or a folder.
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]

_VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".MP4", ".m4v")


def benchmark_features():
    """The `datasets.Features` of every benchmark reader's output (the common schema).

    Returns:
        `datasets.Features`: `id`, `video`, `start`, `end`, `prompt`, `references`, `task`, `subset` and
        `benchmark`.

    Raises:
        MissingDependencyError: `datasets` is not installed (the `evaluation` extra).

    Example:
        ```python
        >>> list(benchmark_features())
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    datasets = require("datasets", "evaluation", "Reading a benchmark")
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "video": datasets.Value("string"),
            "start": datasets.Value("float64"),
            "end": datasets.Value("float64"),
            "prompt": datasets.Value("string"),
            "references": datasets.Sequence(datasets.Value("string")),
            "task": datasets.Value("string"),
            "subset": datasets.Value("string"),
            "benchmark": datasets.Value("string"),
        }
    )


# ----------------------------------------------------------------------------- file helpers


def annotation_paths(annotations: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(annotations, (str, os.PathLike)):
        return [Path(annotations)]
    return [Path(p) for p in annotations]


def read_records(path: Path) -> list:
    """Records of a .json (list or dict), .jsonl, .csv or .parquet file."""
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except ValueError as error:
                        raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
        return records
    if suffix == ".json":
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    if suffix == ".parquet":
        datasets = require("datasets", "evaluation", "Reading parquet annotations")
        return datasets.Dataset.from_parquet(str(path)).to_list()
    raise ValueError(
        f"Unsupported annotation format {path.suffix!r} for {path}; use .json, .jsonl, .csv or .parquet."
    )


def require_fields(record: dict, fields: Iterable[str], source: str) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise ValueError(f"{source}: record is missing field(s) {missing}; it has {sorted(record)}.")


def _video_candidates(name: str) -> list[str]:
    names = [name]
    if name.startswith("v_"):
        names.append(name[2:])
    else:
        names.append(f"v_{name}")
    out = []
    for candidate in names:
        if Path(candidate).suffix in _VIDEO_EXTENSIONS:
            out.append(candidate)
        else:
            out.extend(candidate + ext for ext in _VIDEO_EXTENSIONS)
    return out


class VideoResolver:
    """Find each video in the folder; policy for missing ones: "error", "skip" or "keep"."""

    def __init__(self, videos: str | os.PathLike, missing: str):
        if missing not in {"error", "skip", "keep"}:
            raise ValueError(f"`missing_videos` must be 'error', 'skip' or 'keep', got {missing!r}.")
        self.root = Path(videos)
        self.missing_policy = missing
        self.missing: list[str] = []

    def __call__(self, name: str) -> str | None:
        for candidate in _video_candidates(str(name)):
            path = self.root / candidate
            if path.is_file():
                return str(path)
        self.missing.append(str(name))
        if self.missing_policy == "keep":
            return str(self.root / (name if Path(name).suffix else f"{name}.mp4"))
        return None

    def check(self, benchmark: str) -> None:
        if not self.missing:
            return
        shown = ", ".join(self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
        message = f"{benchmark}: {len(self.missing)} video(s) not found under {self.root}: {shown}"
        if self.missing_policy == "error":
            raise FileNotFoundError(message + " (pass missing_videos='skip' to drop those examples)")
        if self.missing_policy == "skip":
            logger.warning("%s; skipped them", message)


def make_row(
    benchmark, subset, task, id_, video, references, *, prompt=None, question=None, start=None, end=None
):
    """One example in the common schema; the prompt comes from `PROMPT_TEMPLATES` unless given."""
    if prompt is None:
        template = PROMPT_TEMPLATES[
            (benchmark, subset if (benchmark, subset) in PROMPT_TEMPLATES else "default")
        ]
        prompt = template.format(question=str(question).strip()) if question is not None else template
    refs = [str(r).strip() for r in ([references] if isinstance(references, str) else references)]
    refs = [r for r in refs if r]
    return {
        "id": str(id_),
        "video": video,
        "start": None if start is None else float(start),
        "end": None if end is None else float(end),
        "prompt": prompt,
        "references": refs,
        "task": task,
        "subset": subset,
        "benchmark": benchmark,
    }


def sample_rows(
    rows: list[dict], sample_size: int | None, seed: int, unit: Callable[[dict], str] | None = None
):
    """Per subset: draw `sample_size` rows (or units, e.g. videos) without replacement, keep order."""
    if sample_size is None:
        return rows
    if sample_size < 1:
        raise ValueError(f"`sample_size` must be positive or None, got {sample_size}.")
    out = []
    for subset in sorted({r["subset"] for r in rows}):
        group = [r for r in rows if r["subset"] == subset]
        keys = list(dict.fromkeys(unit(r) for r in group)) if unit else list(range(len(group)))
        if len(keys) > sample_size:
            chosen = np.random.default_rng(seed).choice(len(keys), size=sample_size, replace=False)
            kept = {keys[i] for i in chosen}
            group = [r for i, r in enumerate(group) if (unit(r) if unit else i) in kept]
        out.extend(group)
    return out


def finish(benchmark, rows, resolver, sample_size, seed, unit=None):
    resolver.check(benchmark)
    rows = [r for r in rows if r["video"] is not None and r["references"]]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{benchmark}: duplicate example ids {dupes}; check the annotation files.")
    rows = sample_rows(rows, sample_size, seed, unit)
    datasets = require("datasets", "evaluation", "Reading a benchmark")
    return datasets.Dataset.from_list(rows, features=benchmark_features())


def check_choices(kind: str, chosen: Iterable[str], allowed: Sequence[str]) -> None:
    """Raise if `chosen` (e.g. VDC styles) names anything outside `allowed`."""
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown {kind}(s) {unknown}; choose from {list(allowed)}.")


def iter_records(annotations: PathOrPaths, required: Sequence[str] = ()) -> Iterator[tuple[Path, dict]]:
    """(path, record) for every record of every annotation file, in file order, checking `required`."""
    for path in annotation_paths(annotations):
        for record in read_records(path):
            require_fields(record, required, str(path))
            yield path, record


class RowBuilder:
    """One reader's rows: the benchmark, task and video lookup are given once, then a row per `add`.

    `video(name)` resolves a video (policy `missing_videos`), `row(...)` builds one example in the
    common schema (`make_row`, subset "default" unless given), `add(...)` builds and keeps it, and
    `dataset(sample_size, seed)` checks, samples and returns the kept rows (`finish`).
    """

    def __init__(self, benchmark: str, task: str, videos: str | os.PathLike, missing_videos: str):
        self.benchmark = benchmark
        self.task = task
        self.video = VideoResolver(videos, missing_videos)
        self.rows: list[dict] = []

    def row(self, id_, video: str | None, references, *, subset: str = "default", **fields) -> dict:
        """`make_row` for this benchmark; `fields` are its keywords, plus `task` to override the reader's."""
        task = fields.pop("task", self.task)
        return make_row(self.benchmark, subset, task, id_, video, references, **fields)

    def add(self, id_, video: str | None, references, *, subset: str = "default", **fields) -> None:
        self.rows.append(self.row(id_, video, references, subset=subset, **fields))

    def add_subsets(
        self, vid, video: str | None, values: Iterable[tuple[str, object]], text: Callable | None = None
    ) -> None:
        """One row `<vid>:<subset>` per (subset, value) pair whose value is set; `text` maps the value."""
        for subset, value in values:
            if value:
                self.add(f"{vid}:{subset}", video, text(value) if text else value, subset=subset)

    def dataset(
        self, sample_size: int | None, seed: int, unit: Callable[[dict], str] | None = None
    ) -> datasets.Dataset:
        return finish(self.benchmark, self.rows, self.video, sample_size, seed, unit)


def as_text(value) -> str:
    """Text of an annotation field: a string, a list (one line per item) or an object's text field."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("caption", "description", "event", "name", "text"):
            if key in value:
                return str(value[key])
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Iterable):
        return "\n".join(as_text(v) for v in value)
    return str(value)
