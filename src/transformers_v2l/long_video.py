"""Chunked internalization of long videos (paper section 5.6), in bounded memory.

A hypernetwork is trained on clips of `processor.num_frames` frames (12 in the paper). A long video is
split into consecutive temporal chunks, each chunk is sampled and internalized like a clip of its own,
and the chunk adapters are composed in rank space (their ranks concatenated, so the composed update is
the sum of the chunk updates, or their mean with `reduction="mean"`).

Memory stays bounded whatever the length: the file is decoded once, front to back, holding one batch of
chunks' frames at a time (`video_io.iter_video_chunks`), and each encoder pass sees one batch of chunks.
Time grows linearly with the number of chunks. A direct single pass over all frames instead grows its
activations with the frame count (the vision tower, the `[L, S, H]` hidden states and the hypernetwork's
input projection over all of them) and leaves the positions the models were trained on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .lora import GeneratedLora

if TYPE_CHECKING:
    from .modeling_video2lora import Video2LoraHypernetwork

__all__ = ["REDUCTIONS", "compose_chunks", "internalize_chunked", "iter_chunk_adapters", "plan_chunks"]

REDUCTIONS = ("sum", "mean")


def plan_chunks(duration: float, total_frames: int, chunk_frames: int = 12) -> dict[str, Any]:
    """Chunk count and sampling rate that spread `total_frames` frames over a video of `duration` seconds.

    Args:
        duration: video length in seconds.
        total_frames: frames wanted over the whole video.
        chunk_frames: frames per chunk.

    Returns:
        `{"chunks": int, "fps": float}` to pass to `internalize_chunked` (each chunk then holds up to
        `chunk_frames` frames, `chunks * chunk_frames >= total_frames`).

    Example:
        ```python
        plan_chunks(596.5, 1024)  # {"chunks": 86, "fps": 1.73...}
        ```
    """
    if duration <= 0 or total_frames < 1 or chunk_frames < 1:
        raise ValueError(
            f"plan_chunks needs positive values, got {duration=}, {total_frames=}, {chunk_frames=}."
        )
    chunks = math.ceil(total_frames / chunk_frames)
    # round(fps * chunk duration) must reach chunk_frames: aim half a frame above it
    fps = (chunk_frames + 0.5) / (duration / chunks)
    return {"chunks": chunks, "fps": fps}


def _chunk_iterator(
    video: Any,
    chunk_frames: int,
    chunks: int | None,
    fps: float,
    skip_secs: float,
    sampler,
):
    from .video_io import iter_video_chunks

    spans = {"num_chunks": chunks} if chunks is not None else {"chunk_seconds": chunk_frames / fps}
    return iter_video_chunks(
        video,
        frames_per_chunk=chunk_frames,
        target_fps=fps,
        skip_secs=skip_secs,
        compute_sha256=False,
        sampler=sampler,
        **spans,
    )


@torch.no_grad()
def iter_chunk_adapters(
    hn: Video2LoraHypernetwork,
    video: Any,
    *,
    chunk_frames: int | None = None,
    chunks: int | None = None,
    fps: float | None = None,
    skip_secs: float = 0.0,
    batch_size: int = 1,
    instruction: str | None = None,
    longest_edge: int | None = None,
) -> Iterator[GeneratedLora]:
    """Internalize a video chunk by chunk, yielding one adapter per chunk, in temporal order.

    Args:
        hn: the hypernetwork (with its base model and processor).
        video: a path, bytes, a file object, a `[T, H, W, 3]` uint8 array or a list of PIL images.
        chunk_frames: frames sampled per chunk; defaults to `hn.processor.num_frames` (the trained count).
        chunks: split into this many equal chunks; by default chunks last `chunk_frames / fps` seconds,
            so every chunk holds `chunk_frames` frames.
        fps: frames sampled per second within a chunk; defaults to the processor's (1 for SmolVLM2;
            arrays and PIL images count as 1 frame per second).
        skip_secs: seconds skipped at each end of every chunk (0 tiles the video edge to edge).
        batch_size: chunks per encoder pass.
        instruction: internalization instruction; defaults to the processor's.
        longest_edge: frame resize target; defaults to the processor's.

    Returns:
        An iterator of `GeneratedLora`, each with the chunk's `VideoMetadata` (`start_frame`, `frame_indices`).

    Example:
        ```python
        for adapter in iter_chunk_adapters(hn, "film.mp4", chunks=4):
            print(adapter.metadata["start_time"])
        ```
    """
    chunk_frames = chunk_frames or hn.processor.num_frames
    fps = fps or hn.processor.fps
    if batch_size < 1 or chunk_frames < 1:
        raise ValueError(f"batch_size and chunk_frames must be >= 1, got {batch_size} and {chunk_frames}.")
    batch: list = []
    source = _chunk_iterator(
        video, chunk_frames, chunks, fps, skip_secs, hn.processor.family_class.sample_frame_indices
    )
    try:
        for item in source:
            batch.append(item)  # (frames [t, H, W, 3] uint8, VideoMetadata)
            if len(batch) == batch_size:
                yield from _internalize_batch(hn, batch, chunk_frames, instruction, longest_edge)
                batch = []
        if batch:
            yield from _internalize_batch(hn, batch, chunk_frames, instruction, longest_edge)
    finally:
        source.close()


def _internalize_batch(hn, batch, chunk_frames, instruction, longest_edge) -> list[GeneratedLora]:
    # `(frames, VideoMetadata)` pairs go through the processor as decoded clips, with no re-sampling
    return hn.internalize_batch(
        batch, instruction=instruction, num_frames=chunk_frames, longest_edge=longest_edge
    )


@torch.no_grad()
def internalize_chunked(
    hn: Video2LoraHypernetwork,
    video: Any,
    *,
    chunk_frames: int | None = None,
    chunks: int | None = None,
    fps: float | None = None,
    skip_secs: float = 0.0,
    batch_size: int = 1,
    reduction: str = "sum",
    instruction: str | None = None,
    longest_edge: int | None = None,
    show_progress: bool | None = None,
) -> GeneratedLora:
    """Internalize a long video chunk by chunk and compose the chunk adapters in rank space.

    The video is decoded once, streaming; memory does not grow with its length, and time grows linearly
    with the number of chunks. `hn.internalize(video, chunk_frames=12)` calls this.

    Args:
        hn: the hypernetwork (with its base model and processor).
        video: a path, bytes, a file object, a `[T, H, W, 3]` uint8 array or a list of PIL images.
        chunk_frames: frames per chunk; defaults to `hn.processor.num_frames` (the count the hypernetwork
            was trained on).
        chunks: number of equal chunks; by default each chunk spans `chunk_frames / fps` seconds.
        fps: frames sampled per second within chunks; defaults to the processor's rate (1 fps).
        skip_secs: seconds skipped at each end of every chunk (default 0: chunks tile the video).
        batch_size: chunks per encoder pass (more is faster on accelerators, and uses more memory).
        reduction: `"sum"` concatenates the chunk ranks as they are (the paper's composition: the update
            is the sum of the chunk updates); `"mean"` scales each chunk by `1 / chunks` (the update is
            their mean, as large as one clip's whatever the length).
        instruction: internalization instruction; defaults to the processor's.
        longest_edge: frame resize target; defaults to the processor's.
        show_progress: show a progress bar over chunks (default: when there is more than one batch).

    Returns:
        One `GeneratedLora` of rank `chunks * R`; `metadata["chunks"]` holds each chunk's provenance and
        `metadata["composition"]` how it was composed.

    Example:
        ```python
        adapter = internalize_chunked(hn, "big_buck_bunny.mp4", chunk_frames=12)
        with adapter.merge_into(hn.vlm):  # a high-rank adapter: merge it for answering
            ...
        ```
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    parts = iter_chunk_adapters(
        hn,
        video,
        chunk_frames=chunk_frames,
        chunks=chunks,
        fps=fps,
        skip_secs=skip_secs,
        batch_size=batch_size,
        instruction=instruction,
        longest_edge=longest_edge,
    )
    total = math.ceil(chunks / batch_size) if chunks else None
    progress = show_progress if show_progress is not None else total is None or total > 1
    adapters = list(
        tqdm(parts, desc="Internalizing chunks", total=chunks, unit="chunk", disable=not progress)
    )
    if not adapters:
        raise ValueError("internalize_chunked() found no frames to internalize.")
    return compose_chunks(adapters, reduction=reduction, chunk_frames=chunk_frames or hn.processor.num_frames)


def compose_chunks(
    adapters: list[GeneratedLora], *, reduction: str = "sum", chunk_frames: int | None = None
) -> GeneratedLora:
    """Compose chunk adapters in rank space (`GeneratedLora.compose`), optionally averaging them.

    Args:
        adapters: the chunk adapters, in temporal order.
        reduction: `"sum"` or `"mean"` (see `internalize_chunked`).
        chunk_frames: recorded in the metadata.

    Returns:
        The composed adapter, with compact metadata (`chunks`: one provenance dict per chunk).

    Example:
        ```python
        film = compose_chunks(list(iter_chunk_adapters(hn, "film.mp4", chunks=4)), reduction="mean")
        film.metadata["composition"]["num_chunks"]  # 4
        ```
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    if reduction == "mean" and len(adapters) > 1:
        weight = 1.0 / len(adapters)
        adapters = [a._replace(lora_A={m: t * weight for m, t in a.lora_A.items()}) for a in adapters]
    composed = GeneratedLora.compose(adapters)
    parts = composed.metadata.pop("composed_from", [])
    composed.metadata["chunks"] = parts
    composed.metadata["composition"] = {
        "method": "rank_concatenation",
        "reduction": reduction,
        "num_chunks": len(adapters),
        "chunk_frames": chunk_frames,
        "frames": sum(len(p.get("frame_indices", [])) for p in parts),
    }
    return composed
