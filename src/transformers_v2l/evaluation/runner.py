"""The generation runner: both conditions over a benchmark, batched and resumable.

* `base`: the frozen VLM answers with the video in its context (`answer_with_video`).
* `v2l`: the video is internalized into a LoRA adapter (`internalize`) and the same VLM answers
  from the adapter with zero visual tokens (`answer`).

Each finished batch is appended to one JSONL file and flushed and fsynced before the next batch
starts, so a crash loses at most the batch in flight. On restart, `(id, condition)` pairs already
in the file are skipped; a partial last line (a crash in the middle of a write) is cut off before
new lines are appended, and any other unreadable line is ignored with a warning.

One record per example and condition:

```json
{"id": "...", "condition": "v2l", "benchmark": "vdc", "subset": "short", "task": "caption",
 "video": "...", "start": null, "end": null, "prompt": "...", "output": "...", "references": ["..."],
 "timings": {"internalize_seconds": 0.8, "ttft_seconds": null, "generate_seconds": 0.3}, "batch_size": 4}
```

Timings are wall-clock shares of a batch: `generate_seconds` is the batch's answering time
divided by its size, and `internalize_seconds` is the internalization time of this example's video
(a batch's internalization time divided by the number of videos it internalized). In the `v2l`
condition examples are ordered by video, and questions about one video share one adapter, also
across two consecutive batches, as in the paper's amortization setting. `ttft_seconds` is `null`:
the model API does not report time to first token (the benchmarks module measures it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..training.utils import atomic_write_text

__all__ = ["CONDITIONS", "Video2LoraModel", "load_outputs", "run_generation"]

logger = logging.getLogger(__name__)

#: The two conditions, in the order they run.
CONDITIONS = ("base", "v2l")


@runtime_checkable
class Video2LoraModel(Protocol):
    """What the runner needs from a model: `Video2LoraHypernetwork` satisfies it.

    Example:
        ```python
        >>> isinstance(Video2LoraHypernetwork.from_pretrained("my-hypernet"), Video2LoraModel)
        True
        ```
    """

    def internalize(self, videos: list[Any], *, batch_size: int = 1) -> list[Any]:
        """One adapter per video.

        Args:
            videos (`list`): Video paths (or anything the model's processor decodes).
            batch_size (`int`, *optional*, defaults to 1): Videos per encoder pass.

        Returns:
            `list`: One adapter per video, in order.

        Example:
            ```python
            >>> adapters = model.internalize(["a.mp4", "b.mp4"], batch_size=2)
            ```
        """

    def answer(self, adapters: list[Any], questions: list[str], *, max_new_tokens: int = 64) -> list[str]:
        """One answer per (adapter, question) row, with no visual tokens in the prompt.

        Args:
            adapters (`list`): One adapter per row.
            questions (`list[str]`): One question per row.
            max_new_tokens (`int`, *optional*, defaults to 64): Generation budget per answer.

        Returns:
            `list[str]`: One answer per row.

        Example:
            ```python
            >>> model.answer(adapters, ["What happens?", "Who is there?"])
            ```
        """

    def answer_with_video(
        self, videos: list[Any], questions: list[str], *, max_new_tokens: int = 64
    ) -> list[str]:
        """One answer per (video, question) row, with the video in context.

        Args:
            videos (`list`): One video per row.
            questions (`list[str]`): One question per row.
            max_new_tokens (`int`, *optional*, defaults to 64): Generation budget per answer.

        Returns:
            `list[str]`: One answer per row (the base condition of the evaluation).

        Example:
            ```python
            >>> model.answer_with_video(["a.mp4", "b.mp4"], ["What happens?", "Who is there?"])
            ```
        """


def _scan(path: Path) -> tuple[set[tuple[str, str]], int]:
    """Done (id, condition) pairs, and the byte length of the file's complete lines."""
    done: set[tuple[str, str]] = set()
    if not path.exists():
        return done, 0
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # everything after the last newline is a partial write
    for number, line in enumerate(data[:complete].splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done.add((str(record["id"]), str(record["condition"])))
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring unreadable line %d of %s", number, path)
    if complete < len(data):
        logger.warning("Dropping a partial last line (%d bytes) of %s", len(data) - complete, path)
    return done, complete


def load_outputs(path: str | os.PathLike) -> list[dict]:
    """Read a runner output file, skipping a partial last line and unreadable lines.

    Args:
        path (`str` or `os.PathLike`): The JSONL file written by [`run_generation`].

    Returns:
        `list[dict]`: The records, in file order (the last record wins for a repeated id/condition).

    Example:
        ```python
        >>> records = load_outputs("runs/vdc/outputs.jsonl")
        >>> sorted({r["condition"] for r in records})
        ['base', 'v2l']
        ```
    """
    data = Path(path).read_bytes()
    records: dict[tuple[str, str], dict] = {}
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            record = json.loads(line)
            records[(str(record["id"]), str(record["condition"]))] = record
        except (ValueError, KeyError, TypeError):
            continue
    return list(records.values())


def _check_settings(path: Path, settings: dict, resume: bool) -> None:
    meta = path.with_name(path.name + ".settings.json")
    if resume and meta.exists():
        previous = json.loads(meta.read_text(encoding="utf-8"))
        changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if changed:
            raise ValueError(
                f"{path} was written with other settings {changed} (old, new); use another output "
                "file or pass resume=False to start over."
            )
    atomic_write_text(meta, json.dumps(settings, indent=2, sort_keys=True))


def _batches(rows: Sequence[dict], size: int) -> Iterable[list[dict]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


def _video_input(row: dict, video_loader, warned: list[bool]):
    if row.get("start") is None and row.get("end") is None:
        return row["video"]
    if video_loader is not None:
        return video_loader(row["video"], row.get("start"), row.get("end"))
    if not warned[0]:
        logger.warning(
            "Examples have clip bounds (start/end) but no `video_loader` was given: using whole videos."
        )
        warned[0] = True
    return row["video"]


def _clip_key(row: dict) -> tuple:
    return (row["video"], row.get("start"), row.get("end"))


def _run_batch(model, condition: str, batch: list[dict], settings: dict, video_loader, warned, carry: dict):
    """Answer one batch; `carry` maps clip keys to (adapter, seconds) from the previous batch."""
    max_new_tokens = settings["max_new_tokens"]
    prompts = [row["prompt"] for row in batch]
    cost: dict[tuple, float | None] = {}
    if condition == "base":
        videos = [_video_input(row, video_loader, warned) for row in batch]
        start = time.perf_counter()
        outputs = model.answer_with_video(videos, prompts, max_new_tokens=max_new_tokens)
        new_carry = {}
    else:
        first = {}
        for row in batch:
            first.setdefault(_clip_key(row), row)
        new = [key for key in first if key not in carry]
        adapters = {key: carry[key] for key in first if key in carry}
        if new:
            start = time.perf_counter()
            made = model.internalize(
                [_video_input(first[key], video_loader, warned) for key in new],
                batch_size=settings["internalize_batch_size"],
            )
            seconds = (time.perf_counter() - start) / len(new)
            adapters.update({key: (adapter, seconds) for key, adapter in zip(new, made)})
        cost = {key: seconds for key, (_, seconds) in adapters.items()}
        start = time.perf_counter()
        outputs = model.answer(
            [adapters[_clip_key(r)][0] for r in batch], prompts, max_new_tokens=max_new_tokens
        )
        new_carry = adapters
    generate_seconds = (time.perf_counter() - start) / len(batch)
    if isinstance(outputs, str) or len(outputs) != len(batch):
        raise RuntimeError(
            f"The model returned {len(outputs)} outputs for a batch of {len(batch)} ({condition})."
        )
    records = [
        {
            "id": row["id"],
            "condition": condition,
            **{k: row.get(k) for k in ("benchmark", "subset", "task", "video", "start", "end", "prompt")},
            "output": output,
            "references": list(row["references"]),
            "timings": {
                "internalize_seconds": cost.get(_clip_key(row)),
                "ttft_seconds": None,
                "generate_seconds": generate_seconds,
            },
            "batch_size": len(batch),
        }
        for row, output in zip(batch, outputs)
    ]
    return records, new_carry


def run_generation(
    model: Video2LoraModel,
    dataset: Iterable[dict],
    output_path: str | os.PathLike,
    *,
    conditions: Sequence[str] = CONDITIONS,
    batch_size: int = 4,
    internalize_batch_size: int | None = None,
    max_new_tokens: int = 128,
    resume: bool = True,
    video_loader: Callable[[str, float | None, float | None], Any] | None = None,
    settings: dict | None = None,
    progress: bool = False,
) -> Path:
    """Generate outputs for both conditions and append them to a JSONL file, resumably.

    Args:
        model ([`Video2LoraModel`]): A hypernetwork (or anything with the three methods).
        dataset (`Iterable[dict]`): Rows in the benchmark schema (a `datasets.Dataset` works).
        output_path (`str` or `os.PathLike`): The JSONL file (created, or appended to).
        conditions (`Sequence[str]`, *optional*): Subset of `("base", "v2l")`.
        batch_size (`int`, *optional*, defaults to 4): Examples answered per call.
        internalize_batch_size (`int`, *optional*): Videos per internalization pass
            (defaults to `batch_size`).
        max_new_tokens (`int`, *optional*, defaults to 128): Generation budget, same for both.
        resume (`bool`, *optional*, defaults to True): Skip examples already in the file. With
            False the file is started afresh.
        video_loader (`Callable`, *optional*): `(path, start, end) -> video` for rows with clip
            bounds, e.g. a decoder returning the clip's frames; without it whole videos are used.
        settings (`dict`, *optional*): Extra run settings (e.g. the checkpoint name) recorded in
            `<output>.settings.json`; resuming with different settings raises.
        progress (`bool`, *optional*, defaults to False): Show a progress bar.

    Returns:
        `Path`: The output file.

    Example:
        ```python
        >>> ds = load_benchmark("vdc", "VDC_1k.jsonl", "vdc/videos")
        >>> run_generation(hypernetwork, ds, "runs/vdc/outputs.jsonl", batch_size=8)
        PosixPath('runs/vdc/outputs.jsonl')
        ```
    """
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"Unknown condition(s) {unknown}; choose from {list(CONDITIONS)}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_settings = {
        "max_new_tokens": max_new_tokens,
        "internalize_batch_size": internalize_batch_size or batch_size,
        **(settings or {}),
    }
    if not resume:
        path.unlink(missing_ok=True)
    _check_settings(path, run_settings, resume)
    done, complete = _scan(path)
    rows = [dict(row) for row in dataset]
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("The dataset has duplicate `id`s; the runner keys its cache by id.")
    todo = [(c, [r for r in rows if (str(r["id"]), c) not in done]) for c in CONDITIONS if c in conditions]
    total = sum(len(t) for _, t in todo)
    logger.info("%d outputs to generate (%d already in %s)", total, len(done), path)
    warned = [False]
    from tqdm.auto import tqdm

    with open(path, "ab") as handle, tqdm(total=total, disable=not progress, unit="example") as bar:
        handle.truncate(complete)  # cut a partial last line before appending
        for condition, pending in todo:
            if condition == "v2l":  # questions about one video land in one batch and share its adapter
                pending = sorted(
                    pending, key=lambda r: (r["video"], r.get("start") or 0.0, r.get("end") or 0.0)
                )
            carry: dict = {}  # adapters of the previous batch, reused when a video spans two batches
            for batch in _batches(pending, batch_size):
                records, carry = _run_batch(
                    model, condition, batch, run_settings, video_loader, warned, carry
                )
                lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                handle.write(lines.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
                bar.update(len(batch))
    return path
