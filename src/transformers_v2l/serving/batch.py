"""`v2l internalize --manifest videos.jsonl --store DIR`: a whole collection into a `v2l serve` store.

Every video of the manifest becomes a job of the store with the id `v2l serve` gives the same upload
(`store.video_id`: the file's SHA-256 and the hypernetwork's revision), so a server started on the
store afterwards answers for those ids at once. The work is:

* **sharded** across processes: under `accelerate launch` (or torchrun, or any launcher that sets
  `RANK`/`WORLD_SIZE`/`LOCAL_RANK` and `MASTER_ADDR`/`MASTER_PORT`) process `r` of `W` takes the
  manifest lines `r, r + W, r + 2W, ...` and runs on `cuda:LOCAL_RANK` when there is a GPU. The
  processes meet once, after every one of them has opened the store (opening it removes what a killed
  run left half-written), then never again;
* **resumable**: a video whose adapter is in the store is skipped (only its bytes are hashed); a job
  that a killed run left queued or processing runs again (at most three attempts, as in the server);
  every write goes through `VideoStore` (atomic renames), so a kill at any point leaves no half-written
  video, job or adapter;
* reported with a progress bar (stderr) and one JSON line per video on stdout:
  `{"rank", "line", "video", "id", "status", ...}` with `status` one of `internalized`, `skipped`
  (already ready), `failed` (now or in an earlier run) and `rejected` (not a video the server accepts).

The manifest is JSON Lines: one object per line with `"video"` (or `"video_path"`, as in training
manifests), a path relative to the manifest's folder; other keys are ignored, blank lines skipped, and
a video listed twice is internalized once. Do not run `v2l serve` on the same store at the same time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, Video2LoraError

__all__ = [
    "BatchSummary",
    "ManifestEntry",
    "internalize_manifest",
    "launch_context",
    "read_manifest",
    "run_manifest",
    "shard_entries",
]

MAX_ATTEMPTS = 3  # as the server's worker: a job interrupted this often is marked failed
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestEntry:
    """One video of a manifest.

    Args:
        line: its line number in the manifest (1-based).
        path: the video file (resolved against the manifest's folder).
        name: the file name, recorded in the job as the client's file name.

    Example:
        ```python
        ManifestEntry(1, Path("clips/a.mp4"), "a.mp4")
        ```
    """

    line: int
    path: Path
    name: str


@dataclass
class BatchSummary:
    """What one process did with its shard.

    Args:
        rank: the process's rank.
        world_size: the number of processes.
        internalized: ids internalized by this run.
        skipped: ids whose adapter was already in the store.
        failed: `{id or path: message}` for videos that failed (now or in an earlier run).
        rejected: `{path: message}` for files that are not videos the server accepts.

    Example:
        ```python
        summary = internalize_manifest(hn, entries, "v2l-store")
        print(len(summary.internalized), len(summary.skipped))
        ```
    """

    rank: int = 0
    world_size: int = 1
    internalized: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every video of the shard has its adapter."""
        return not self.failed and not self.rejected


# ---- the manifest -------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read a JSONL manifest of videos and check every file exists, before any model loads.

    Args:
        path: the `.jsonl` file: one `{"video": "relative/or/absolute.mp4"}` per line (`"video_path"`
            is accepted too; other keys are ignored).

    Returns:
        The entries in file order, each video once (a repeated path keeps its first line).

    Raises:
        InvalidArgumentError: the manifest is missing or empty, a line is not a JSON object with a
            video path, or videos are missing, empty or URLs (all such lines are named at once).

    Example:
        ```python
        entries = read_manifest("videos.jsonl")
        ```
    """
    from ..video_io import check_video_source

    manifest = Path(path)
    if not manifest.is_file():
        raise InvalidArgumentError(
            f'--manifest {path}: no such file (a JSON Lines file, one {{"video": PATH}} per line).'
        )
    entries, seen, problems = [], set(), []
    with manifest.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{manifest.name} line {number}"
            try:
                row = json.loads(text)
            except ValueError as error:
                raise InvalidArgumentError(f"{where} is not JSON ({error}).") from None
            video = row.get("video", row.get("video_path")) if isinstance(row, dict) else None
            if not isinstance(video, str) or not video:
                raise InvalidArgumentError(
                    f'{where} has no video path: write {{"video": "clip.mp4"}} (got {text.strip()[:80]}).'
                )
            resolved = (manifest.parent / video).expanduser().absolute()
            if resolved in seen:
                continue
            seen.add(resolved)
            try:
                check_video_source(str(resolved) if "://" not in video else video)
            except Video2LoraError as error:
                problems.append(f"{where}: {error}")
                continue
            entries.append(ManifestEntry(number, resolved, resolved.name))
    if problems:
        shown = "\n  ".join(problems[:20]) + (
            f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        raise InvalidArgumentError(
            f"{len(problems)} video(s) of {manifest} cannot be read; nothing was done:\n  {shown}"
        )
    if not entries:
        raise InvalidArgumentError(f"{manifest} lists no videos.")
    return entries


def shard_entries(entries: Sequence[ManifestEntry], rank: int, world_size: int) -> list[ManifestEntry]:
    """The entries process `rank` of `world_size` takes: every `world_size`-th, starting at `rank`.

    Args:
        entries: the manifest's entries.
        rank: this process's rank, `0 <= rank < world_size`.
        world_size: the number of processes.

    Returns:
        The shard (disjoint from every other rank's; together they are all entries).

    Raises:
        InvalidArgumentError: a rank outside `[0, world_size)`.

    Example:
        ```python
        shard_entries(entries, rank=1, world_size=2)
        ```
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidArgumentError(
            f"rank must be in [0, {world_size}) with world_size >= 1, got rank {rank}."
        )
    return list(entries[rank::world_size])


# ---- processes ------------------------------------------------------------------------------------------
def launch_context() -> tuple[int, int, int]:
    """This process's `(rank, world_size, local_rank)` from the variables `accelerate launch`/torchrun set.

    Returns:
        `(RANK, WORLD_SIZE, LOCAL_RANK)`; `(0, 1, 0)` when the process was started alone.

    Raises:
        InvalidArgumentError: the variables are not integers or are inconsistent.

    Example:
        ```python
        rank, world_size, local_rank = launch_context()
        ```
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        rank = int(os.environ.get("RANK", str(local_rank)))
    except ValueError:
        raise InvalidArgumentError("RANK, WORLD_SIZE and LOCAL_RANK must be integers.") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidArgumentError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size}).")
    return rank, world_size, local_rank


@contextlib.contextmanager
def _process_group(world_size: int) -> Iterator[Callable[[], None]]:
    """A barrier across the launched processes (gloo), or a no-op for one process."""
    if world_size == 1:
        yield lambda: None
        return
    import torch.distributed as dist

    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing and not dist.is_initialized():
        raise InvalidArgumentError(f"WORLD_SIZE={world_size} but {' and '.join(missing)} not set: start the processes "
                                   "with `accelerate launch` or torchrun, which set them.")  # fmt: skip
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo")
    try:
        yield dist.barrier
    finally:
        if created:
            dist.destroy_process_group()


def _open_store(hn, store_dir: str | os.PathLike, rank: int, barrier: Callable[[], None]):
    """Open the store in every process, rank 0 first; nobody works until everyone has opened it.

    Opening a store empties its `uploads/` folder (what a killed run left there), so no process may
    write there before the last one has opened it.
    """
    from . import model_access
    from .store import VideoStore

    def open_it():
        revision = model_access.hypernetwork_fingerprint(hn)
        return VideoStore(store_dir, revision=revision, base_model=model_access.base_model_name(hn))

    store = open_it() if rank == 0 else None
    barrier()
    store = store or open_it()
    barrier()
    return store


# ---- one video ------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_in(source: Path, target: Path) -> tuple[str, int]:
    """Copy a video into the store's `uploads/`, hashing it on the way; fsync before it is accepted."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest(), size


@contextlib.contextmanager
def _claim(store, video: str) -> Iterator[None]:
    """Hold an exclusive lock on a video id, so the same bytes listed twice are internalized by one process."""
    try:
        import fcntl
    except ImportError:  # not POSIX: lines are already disjoint across processes
        yield
        return
    with open(store.root / "uploads" / f"{video}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _ShardRun:
    """The state of one process's pass over its shard."""

    def __init__(self, hn, store, summary: BatchSummary, report: Callable[[dict], None], progress):
        self.hn, self.store, self.summary, self.report, self.progress = hn, store, summary, report, progress

    def _done(self, entry: ManifestEntry, video: str | None, status: str, **extra: Any) -> None:
        self.report({"rank": self.summary.rank, "line": entry.line, "video": str(entry.path), "id": video,
                     "status": status, **extra})  # fmt: skip
        self.progress.update(1)

    def prepare(self, entry: ManifestEntry) -> str | None:
        """Put the video into the store if it is new; the id to internalize, or `None` when there is nothing to do."""
        from .store import video_id
        from .uploads import probe_upload

        video = video_id(_sha256(entry.path), self.store.revision)
        try:
            record = self.store.get(video)
        except KeyError:  # UnknownVideoError: new to the store
            upload = self.store.upload_path()
            try:
                sha256, size = _copy_in(entry.path, upload)
                metadata = probe_upload(upload, filename=entry.name, max_duration=float("inf"))
            except (Video2LoraError, OSError) as error:
                upload.unlink(missing_ok=True)
                self.summary.rejected[str(entry.path)] = str(error)
                self._done(entry, None, "rejected", error=str(error))
                return None
            record, _ = self.store.accept(upload, sha256, size, entry.name, metadata)
            video = record["id"]
        if record["status"] == "ready":
            self.summary.skipped.append(video)
            self._done(entry, video, "skipped")
            return None
        if record["status"] == "failed":
            self.summary.failed[video] = record.get("error") or "failed"
            self._done(entry, video, "failed", error=record.get("error"), earlier=True)
            return None
        return video

    def run(self, batch: list[tuple[ManifestEntry, str]]) -> None:
        """Internalize a batch of (entry, id): one forward pass, then one video at a time if it fails."""
        with contextlib.ExitStack() as locks:
            todo = []
            for entry, video in sorted(batch, key=lambda pair: pair[1]):  # one lock order: no deadlock
                locks.enter_context(_claim(self.store, video))
                if self._start(entry, video):
                    todo.append((entry, video))
            if not todo:
                return
            start = time.perf_counter()
            try:
                paths = [str(self.store.video_path(video)) for _, video in todo]
                adapters = list(self.hn.internalize(paths, batch_size=len(paths), show_progress=False))
            except (Video2LoraError, OSError) as error:
                if len(todo) == 1:
                    self._fail(*todo[0], error)
                    return
                adapters = None
            if adapters is None:  # one bad video fails alone
                for entry, video in todo:
                    self._retry_alone(entry, video)
                return
            seconds = (time.perf_counter() - start) / len(todo)
            for (entry, video), adapter in zip(todo, adapters):
                self._install(entry, video, adapter, seconds)

    def _retry_alone(self, entry: ManifestEntry, video: str) -> None:
        start = time.perf_counter()
        try:
            adapter = self.hn.internalize(str(self.store.video_path(video)), show_progress=False)
        except (Video2LoraError, OSError) as error:
            self._fail(entry, video, error)
            return
        self._install(entry, video, adapter, time.perf_counter() - start)

    def _start(self, entry: ManifestEntry, video: str) -> bool:
        """Mark the job processing (counting the attempt); `False` if another process finished it meanwhile."""
        record = self.store.get(video)
        if record["status"] == "ready":
            self.summary.skipped.append(video)
            self._done(entry, video, "skipped")
            return False
        if record["status"] == "failed":  # another process failed it meanwhile
            self._fail(entry, video, record.get("error") or "failed", record=False)
            return False
        attempts = int(record.get("attempts", 0))
        if attempts >= MAX_ATTEMPTS:
            message = (f"Internalization was interrupted {attempts} times (the process stopped during it); "
                       "giving up on this video.")  # fmt: skip
            self.store.update(video, status="failed", error=message)
            self._fail(entry, video, message, record=False)
            return False
        self.store.update(video, status="processing", attempts=attempts + 1)
        return True

    def _fail(self, entry: ManifestEntry, video: str, error, *, record: bool = True) -> None:
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        message = message.replace(str(self.store.video_path(video)), entry.name)
        if record:
            self.store.update(video, status="failed", error=message)
        self.summary.failed[video] = message
        self._done(entry, video, "failed", error=message)

    def _install(self, entry: ManifestEntry, video: str, adapter, seconds: float) -> None:
        adapter.metadata["source"] = entry.name  # as the server does: the file's name, not the store's path
        adapter.metadata["video_id"] = video
        folder = self.store.upload_path()
        adapter.save_pretrained(folder)
        summary = {"rank": adapter.rank, "num_layers": adapter.num_layers, "target_modules": adapter.target_modules,
                   "nbytes": adapter.nbytes, "internalization_seconds": round(seconds, 3)}  # fmt: skip
        self.store.install_adapter(video, folder, adapter=summary)
        shutil.rmtree(folder, ignore_errors=True)  # only if the video vanished meanwhile
        self.summary.internalized.append(video)
        self._done(entry, video, "internalized", seconds=round(seconds, 3))


def internalize_manifest(hn, entries: Sequence[ManifestEntry], store_dir: str | os.PathLike, *, batch_size: int = 1,
                         show_progress: bool = True, report: Callable[[dict], None] | None = None) -> BatchSummary:  # fmt: skip
    """Internalize this process's shard of a manifest into a `v2l serve` store; finished videos are skipped.

    Run it in every process of a launch (`accelerate launch`): each takes its shard of `entries`
    (`shard_entries` with `launch_context()`), and the processes wait for each other once, after all
    have opened the store.

    Args:
        hn: the `Video2LoraHypernetwork` (the store is tied to its revision).
        entries: the whole manifest (`read_manifest`), the same list in every process.
        store_dir: the store folder (created if missing; refused if it belongs to another hypernetwork).
        batch_size: videos per forward pass.
        show_progress: show a progress bar on stderr.
        report: called with one dict per video (`{"rank", "line", "video", "id", "status", ...}`);
            default: print it as a JSON line.

    Returns:
        This process's `BatchSummary`.

    Raises:
        StoreMismatchError: the store belongs to another hypernetwork revision.
        InvalidArgumentError: a bad launch environment or `batch_size`.

    Example:
        ```python
        summary = internalize_manifest(hn, read_manifest("videos.jsonl"), "v2l-store")
        ```
    """
    from tqdm.auto import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    rank, world_size, _ = launch_context()
    shard = shard_entries(entries, rank, world_size)
    summary = BatchSummary(rank=rank, world_size=world_size)
    report = report or (lambda row: tqdm.write(json.dumps(row), file=sys.stdout))
    with _process_group(world_size) as barrier:
        store = _open_store(hn, store_dir, rank, barrier)
    label = f"internalize [{rank + 1}/{world_size}]" if world_size > 1 else "internalize"
    with tqdm(total=len(shard), desc=label, unit="video", position=rank if world_size > 1 else None,
              disable=not show_progress, dynamic_ncols=True) as progress:  # fmt: skip
        run, pending = _ShardRun(hn, store, summary, report, progress), []
        for entry in shard:
            video = run.prepare(entry)
            if video is not None and all(video != v for _, v in pending):
                pending.append((entry, video))
            if len(pending) >= batch_size:
                run.run(pending)
                pending = []
        if pending:
            run.run(pending)
    return summary


def run_manifest(args: argparse.Namespace) -> int:
    """Run `v2l internalize --manifest FILE --store DIR` (in one process, or in each process of a launch).

    Args:
        args: parsed `v2l internalize` arguments: `manifest`, `store`, `videos` (must be empty), `out`
            (must be unset), `batch_size`, `hypernetwork`, `dtype`.

    Returns:
        0 when every video of this process's shard has its adapter, 1 otherwise (after a summary line).

    Raises:
        InvalidArgumentError: `--manifest` without `--store` (or the reverse), or mixed with videos or `--out`.

    Example:
        ```python
        from transformers_v2l.cli import build_parser

        run_manifest(build_parser().parse_args(["internalize", "--manifest", "videos.jsonl", "--store", "v2l-store"]))
        ```
    """
    from ..cli_args import check_writable, stderr_line
    from ..cli_internalize import check_hypernetwork_location, load_hypernetwork

    if not args.manifest or not args.store:
        raise InvalidArgumentError(
            "--manifest and --store go together: `v2l internalize --manifest videos.jsonl --store DIR`."
        )
    if args.videos or args.out:
        raise InvalidArgumentError("give either videos with --out, or --manifest with --store, not both.")
    check_writable(args.store, "--store")
    entries = read_manifest(args.manifest)
    check_hypernetwork_location(args.hypernetwork)
    rank, world_size, local_rank = launch_context()
    hn = load_hypernetwork(args)
    import torch

    if torch.cuda.is_available():
        hn.to(f"cuda:{local_rank % torch.cuda.device_count()}")
    summary = internalize_manifest(hn, entries, args.store, batch_size=args.batch_size,
                                   show_progress=not getattr(args, "no_progress", False))  # fmt: skip
    where = f" (process {rank + 1} of {world_size}: {len(shard_entries(entries, rank, world_size))} of {len(entries)} videos)"
    line = (f"{len(summary.internalized)} internalized, {len(summary.skipped)} already in the store, "
            f"{len(summary.failed)} failed, {len(summary.rejected)} rejected{where if world_size > 1 else ''}; "
            f"store {args.store}")  # fmt: skip
    stderr_line("internalize", line)
    return 0 if summary.ok else 1
