"""`v2l internalize`, and the input checks it shares with `v2l ask`: everything is checked before the model loads.

Order of work for `v2l internalize a.mp4 b.mp4 --out adapters`:

1. the output folders: one per video, distinct names (`a`, `a-2`, ... when file names repeat), none
   that already holds something unless `--overwrite`, and a parent that can be written;
2. every video is probed (`video_io.probe_video`: it exists, is a video, has frames), and all bad
   files are listed at once;
3. the hypernetwork's location (a folder, or a reachable or cached Hub repo; an adapter folder is
   named as such);
4. with the embedded tiny-world model, a note when a video does not look like a toy-world clip;
5. the model loads (quietly), then each batch is internalized and its adapters saved at once. A file
   that fails now is reported and the others go on; the exit code is then 1, with a summary line.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .cli_args import check_new_folder, check_writable, stderr_line
from .errors import HubUnavailableError, InvalidArgumentError, Video2LoraError

__all__ = [
    "adapter_folders",
    "check_adapter_location",
    "check_hypernetwork_location",
    "load_hypernetwork",
    "run_internalize",
    "toy_world_note",
]

_ADAPTER_FILE = "adapter_config.json"
_CONVERT_EXAMPLE = (
    "convert one of the authors' released Frames2LoRA checkpoints with `v2l convert CHECKPOINT OUT` (the "
    "Frames2LoRA page of the docs names them), then pass `--hypernetwork OUT`"
)


# ---- where things are ---------------------------------------------------------------------------------
def adapter_folders(videos: Sequence[str], out: str, *, overwrite: bool) -> list[Path]:
    """The folder each video's adapter goes to, checked before any work.

    One video: `out` itself. Several: `out/<file name without extension>`, with `-2`, `-3`, ... added
    when names repeat (`qs/a.mp4` and `dup2/a.mp4` give `out/a` and `out/a-2`), so no adapter
    overwrites another.

    Args:
        videos: the video paths, in order.
        out: the `--out` argument.
        overwrite: allow replacing adapters already saved there.

    Returns:
        One folder per video.

    Raises:
        InvalidArgumentError: a video given twice, a folder that already holds something (without
            `overwrite`), a file where a folder must go, or a location that cannot be written.

    Example:
        ```python
        adapter_folders(["qs/a.mp4", "dup2/a.mp4"], "out", overwrite=False)  # [out/a, out/a-2]
        ```
    """
    seen: dict[Path, str] = {}
    for video in videos:
        resolved = Path(video).expanduser().absolute()
        if resolved in seen:
            spelled = "" if seen[resolved] == video else f" (as {seen[resolved]} and {video})"
            raise InvalidArgumentError(f"{video} is given twice{spelled}; give each video once.")
        seen[resolved] = video
    if len(videos) == 1:
        check_new_folder(out, "--out", marker=_ADAPTER_FILE, overwrite=overwrite)
        return [Path(out)]
    check_writable(out, "--out")
    names: list[str] = []
    for video in videos:
        stem = Path(video).stem or "video"
        name, count = stem, 1
        while name in names:
            count += 1
            name = f"{stem}-{count}"
        names.append(name)
    folders = [Path(out) / name for name in names]
    for folder in folders:
        check_new_folder(folder, "adapter folder", marker=_ADAPTER_FILE, overwrite=overwrite, probe=False)
    return folders


def check_adapter_location(name: str) -> None:
    """Refuse an adapter name that cannot be loaded, without importing torch (a Hub lookup fails in about a second).

    Args:
        name: a local adapter folder or a Hub repo id.

    Raises:
        InvalidArgumentError: a hypernetwork folder given as the adapter, or a URL.
        FileNotFoundError: a folder without `adapter_config.json`, or a path that is neither a folder nor a repo id.
        HubUnavailableError: not a local folder, and the Hub cannot be reached nor has it cached.

    Example:
        ```python
        check_adapter_location("out/clip")
        ```
    """
    from .hub_resolve import resolve_repo_files

    folder = Path(name).expanduser()
    if folder.is_dir() and not (folder / _ADAPTER_FILE).exists() and (folder / "config.json").exists():
        raise InvalidArgumentError(
            f"{name} is a hypernetwork folder (config.json), not an adapter: pass the adapter folder first "
            f"and this one as the hypernetwork (`v2l ask ADAPTER QUESTION --hypernetwork {name}`)."
        )
    resolve_repo_files(name, [_ADAPTER_FILE])


def check_hypernetwork_location(name: str | None) -> None:
    """Refuse a `--hypernetwork` that cannot be loaded, before the model loads; `None` (the embedded model) passes.

    Args:
        name: a hypernetwork folder or Hub repo id.

    Raises:
        InvalidArgumentError: an adapter folder (or Hub repo) given as the hypernetwork, or a URL.
        FileNotFoundError: a missing folder, or one without `config.json`.
        HubUnavailableError: not a local folder, and the Hub cannot be reached nor has it cached.

    Example:
        ```python
        check_hypernetwork_location("my-hypernet")
        ```
    """
    if name is None:
        return
    from .hub_resolve import OFFLINE_MODEL_HINT, resolve_repo_files

    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / _ADAPTER_FILE).exists() and not (folder / "config.json").exists():
            raise _adapter_as_hypernetwork(name)
        resolve_repo_files(name, ["config.json"])  # FileNotFoundError naming the missing file
        return
    try:
        resolve_repo_files(name, ["config.json"])
    except HubUnavailableError as error:  # say what works offline
        raise HubUnavailableError(f"{error}{OFFLINE_MODEL_HINT}") from error
    except OSError as error:
        from huggingface_hub.errors import RemoteEntryNotFoundError

        if not isinstance(error, RemoteEntryNotFoundError):
            raise
        try:  # a Hub repository without config.json: an adapter's?
            resolve_repo_files(name, [_ADAPTER_FILE])
        except Exception:
            raise error from None
        raise _adapter_as_hypernetwork(name) from None


def _adapter_as_hypernetwork(name: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"--hypernetwork {name} is an adapter ({_ADAPTER_FILE}), not a hypernetwork. An adapter is what "
        "`v2l internalize` writes and `v2l ask ADAPTER QUESTION` reads; --hypernetwork takes the model that "
        "makes adapters (leave it out for the embedded tiny-world model)."
    )


@contextlib.contextmanager
def _quiet_weight_loading() -> Iterator[None]:
    """No transformers progress bars ("Loading weights") while loading; Hub download bars stay."""
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is None:  # an older transformers: all of its bars, for the duration
        enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if enabled:
                hf_logging.enable_progress_bar()
        return
    previous = set_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))
    try:
        yield
    finally:
        set_hook(previous)


def load_hypernetwork(args: argparse.Namespace) -> Any:
    """Load `--hypernetwork` (default: the embedded tiny-world model) with its base model, without progress bars.

    Args:
        args: parsed arguments with `hypernetwork` and `dtype`.

    Returns:
        A `Video2LoraHypernetwork` with its base VLM and processor loaded.

    Example:
        ```python
        hn = load_hypernetwork(argparse.Namespace(hypernetwork=None, dtype=None))
        ```
    """
    with _quiet_weight_loading():
        if args.hypernetwork is None:
            from .demo import load_default_hypernetwork

            return load_default_hypernetwork()
        import torch

        from .modeling_video2lora import Video2LoraHypernetwork

        kwargs = {"base_model_kwargs": {"dtype": getattr(torch, args.dtype)}} if args.dtype else {}
        hypernet = Video2LoraHypernetwork.from_pretrained(args.hypernetwork, **kwargs)
        hypernet.runtime.ensure_loaded()  # the base model loads now, inside this block
        return hypernet


# ---- the embedded model and real videos -------------------------------------------------------------
#: Printed once by `v2l serve` without `--hypernetwork`: uploads are internalized by the embedded model.
EMBEDDED_MODEL_NOTE = (
    "note: no --hypernetwork given: serving the embedded tiny-world model. It was trained only on the toy world "
    "(a few colored shapes on a dark background), so adapters of real videos describe shapes, not the video. For "
    f"real videos, use a real hypernetwork: {_CONVERT_EXAMPLE}."
)


def toy_world_note(videos: Sequence[str]) -> str:
    """The one note printed when the embedded tiny-world model is used on videos that are not toy-world clips.

    Args:
        videos: how to name the videos (at least one).

    Returns:
        The note, one line.

    Example:
        ```python
        toy_world_note(["cup.mp4"])
        ```
    """
    named = videos[0] if len(videos) == 1 else f"{videos[0]} (and {len(videos) - 1} more)"
    verb = "does" if len(videos) == 1 else "do"
    return (
        f"note: {named} {verb} not look like a toy-world clip. The embedded model was trained only on the toy "
        "world (a few colored shapes on a dark background), so its adapters and answers describe shapes, not "
        f"your video. For real videos, use a real hypernetwork: {_CONVERT_EXAMPLE}."
    )


def _not_toy_world(videos: Sequence[str], metadata: Sequence[Any]) -> list[str]:
    """The videos that do not look like toy-world clips (by size first; small square ones by their frames)."""
    from .toy_world import looks_like_toy_world, toy_world_frame_size
    from .video_io import load_video

    odd = []
    for video, meta in zip(videos, metadata):
        if not toy_world_frame_size(meta.width, meta.height):
            odd.append(video)
            continue
        try:
            frames, _ = load_video(video, num_frames=8, compute_sha256=False)
        except (Video2LoraError, OSError):  # the run reports it
            continue
        if not looks_like_toy_world(frames):
            odd.append(video)
    return odd


# ---- internalize ----------------------------------------------------------------------------------------
def _probe_all(videos: Sequence[str]) -> list[Any]:
    """Probe every video; raise for a bad one, or list every bad one then raise, before any model loads."""
    from .video_io import probe_video

    metadata, failures = [], []
    for video in videos:
        try:
            metadata.append(probe_video(video))
        except (Video2LoraError, OSError) as error:
            failures.append(error)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        for error in failures:
            stderr_line("internalize", f"{type(error).__name__}: {error}")
        raise InvalidArgumentError(
            f"{len(failures)} of {len(videos)} videos cannot be read (listed above); nothing was done. "
            "Fix them or leave them out, and run again."
        )
    return metadata


def _internalize_batch(hypernet: Any, videos: Sequence[str]) -> list[Any]:
    """An adapter or the error, per video: a failed batch is retried one video at a time."""
    try:
        return list(hypernet.internalize(list(videos), batch_size=len(videos), show_progress=False))
    except (Video2LoraError, OSError) as error:
        if len(videos) == 1:
            return [error]
    return [_internalize_batch(hypernet, [video])[0] for video in videos]


def run_internalize(args: argparse.Namespace) -> int:
    """Run `v2l internalize`: check everything, load the model, internalize batch by batch, save each adapter at once.

    Args:
        args: parsed arguments: `videos`, `out`, `batch_size`, `overwrite`, `hypernetwork`, `dtype`.

    Returns:
        0 if every video was internalized; 1 if some failed (their adapters are missing, the others
        are saved), after a summary line.

    Example:
        ```python
        from transformers_v2l.cli import build_parser

        run_internalize(build_parser().parse_args(["internalize", "a.mp4", "b.mp4", "--out", "adapters"]))
        ```
    """
    videos = [str(video) for video in args.videos]
    folders = adapter_folders(videos, args.out, overwrite=args.overwrite)
    metadata = _probe_all(videos)
    check_hypernetwork_location(args.hypernetwork)
    if args.hypernetwork is None:
        odd = _not_toy_world(videos, metadata)
        if odd:
            stderr_line("internalize", toy_world_note(odd))
    hypernet = load_hypernetwork(args)
    saved, failed = 0, []
    try:
        for start in range(0, len(videos), args.batch_size):
            batch = range(start, min(start + args.batch_size, len(videos)))
            for index, result in zip(batch, _internalize_batch(hypernet, [videos[i] for i in batch])):
                if isinstance(result, BaseException):
                    failed.append(videos[index])
                    stderr_line("internalize", f"{videos[index]} failed: {type(result).__name__}: {result}")
                    continue
                result.save_pretrained(folders[index])
                saved += 1
                print(f"{videos[index]} -> {folders[index]} (rank {result.rank}, {result.nbytes / 2**20:.1f} MiB)",
                      flush=True)  # fmt: skip
    except BaseException:
        if saved:  # an interruption or a bug: say what is already safe on disk
            stderr_line("internalize", f"stopped; the {saved} adapter(s) listed above are saved.")
        raise
    if failed:
        stderr_line(
            "internalize",
            f"{saved} of {len(videos)} videos internalized; {len(failed)} failed ({', '.join(failed)}): see above.",
        )
        return 1
    return 0
