"""Video decoding for Video2LoRA: PyAV decoding and the public API (probing in `video_probe`, sampling in `video_sampling`).

The pipeline is the one SmolVLM2 uses, with a decoder that survives real footage:

1. A *probe* (`video_probe`) demuxes the video stream once without decoding and reads every frame's
   presentation timestamp. The number of non-empty packets is the number of frames; the timestamps
   give the duration. Container headers are only hints: they lie (AVI placeholders for skipped
   frames, truncated files, Matroska/WebM and raw streams with no count).
2. SmolVLM2's sampling rule picks frames (`video_sampling.FrameTimeline.sample`): by index, exactly
   as SmolVLM2 does, when the timestamps follow a constant rate (ordinary files); on the timestamps
   themselves when they do not (a file that skips frames for seconds).
3. A *decode* pass walks the stream in order and converts only the sampled frames to RGB; it stops
   after the last one. Frames are never all held in memory.

Frame indices are positions in decode (presentation) order. A packet that fails to decode is skipped
with a warning and the next decodable frame stands in for it. Frames are decoded at full resolution
(which the official processor's pixels need) unless a frame has more than `max_pixels` pixels
(default 4096 x 4096, so everything up to 4K/DCI is exact); larger frames are shrunk by FFmpeg (area
filter) to fit, which is not bit-exact with the official path. A frame whose size differs from the
first frame's (the size changes mid-stream) is resized by FFmpeg to the first frame's size (after
that cap), so `frames` is always one `[T, H, W, 3]` array; the processor resizes every frame anyway.

Frame rate, in order of preference: the stream's average rate when the container indexes its frames
(MP4, AVI: what `transformers` uses); otherwise the rate measured from packet timestamps (Matroska,
WebM, variable frame rate); otherwise FFmpeg's guess (raw streams without timestamps); otherwise 24 fps,
SmolVLM's own fallback. When the timestamps stray from that rate by more than 1.5 frames, the
timestamps win and `fps` is the average `frames / duration`.

Frames given as arrays, tensors or images (`video_frames`: `[T, H, W, C]` or `[T, C, H, W]`, grey,
RGB or RGBA composited onto white, uint8 or floats in [0, 1]) carry no timing: they are taken as 1 frame
per second (`DEFAULT_ARRAY_FPS`) unless `video_fps` says otherwise, so that a list of pre-sampled
frames keeps all its frames (at most `num_frames`) and gets timestamps 00:00, 00:01, ...

Only local files, bytes and file objects are read; a URL is refused (download it first).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from numbers import Integral
from typing import Any

import numpy as np

from .errors import EmptyVideoError, InvalidArgumentError, VideoDecodeError
from .video_frames import frames_from_memory, is_frame_sequence
from .video_probe import (
    DEFAULT_UNKNOWN_FPS,
    FileSource,
    _import_av,
    check_video_source,
    demux_packets,
    probe,
    probe_video,
)
from .video_probe import video_stream as _video_stream
from .video_sampling import FrameTimeline, Sampler, VideoMetadata, check_number, check_sampling_arguments

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ARRAY_FPS",
    "DEFAULT_UNKNOWN_FPS",
    "MAX_DECODE_PIXELS",
    "check_video_source",
    "is_single_video",
    "iter_video_chunks",
    "load_video",
    "probe_video",
]

DEFAULT_ARRAY_FPS = 1.0  # frames given as arrays / PIL images: one frame per second
MAX_DECODE_PIXELS = 4096 * 4096  # larger frames are shrunk at decode time (not bit-exact)


# ---- decoding -----------------------------------------------------------------------------------


class _Converter:
    """Frames to `[H, W, 3]` uint8 RGB, all at the first frame's size (capped at `max_pixels`)."""

    def __init__(self, max_pixels: int, name: str):
        self.max_pixels, self.name = max_pixels, name
        self.native: tuple[int, int] | None = None  # (width, height) of the first frame
        self.size: tuple[int, int] | None = None  # (width, height) of every output frame
        self.resized_other = False

    def see(self, frame) -> None:
        """Note the first decoded frame's size (whether or not it is sampled)."""
        if self.native is None:
            width, height = frame.width, frame.height
            self.native = self.size = (width, height)
            if width * height > self.max_pixels:
                scale = math.sqrt(self.max_pixels / (width * height))
                self.size = (max(1, int(width * scale)), max(1, int(height * scale)))
                message = "Video %r: %dx%d frames exceed max_pixels=%d; decoded at %dx%d (not bit-exact)."
                logger.warning(message, self.name, width, height, self.max_pixels, *self.size)

    def __call__(self, frame) -> np.ndarray:
        if (frame.width, frame.height) == self.size:
            return frame.to_ndarray(format="rgb24")
        if (frame.width, frame.height) != self.native and not self.resized_other:
            self.resized_other = True
            warnings.warn(
                f"Video {self.name!r}: the frame size changes mid-stream ({self.native[0]}x{self.native[1]} to "
                f"{frame.width}x{frame.height}); frames are resized to the first frame's size.",
                stacklevel=5,
            )
        width, height = self.size
        return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()


def _decoded_frames(src: FileSource, converter: _Converter) -> Iterator[tuple[int, Any]]:
    """`(index, frame)` in decode order; an undecodable packet uses up one index (with a warning)."""
    av = _import_av()
    with src.open() as container:
        stream = _video_stream(container, src.name)
        index = 0
        for packet in demux_packets(container, stream, src.name):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                if packet.size:
                    warnings.warn(
                        f"Video {src.name!r}: skipped undecodable frame {index} ({error}); "
                        "using the next decodable frame.",
                        stacklevel=4,
                    )
                    index += 1
                continue
            for frame in frames:
                converter.see(frame)
                yield index, frame
                index += 1


def _decode_targets(
    src: FileSource, targets: Sequence[int], converter: _Converter
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(target, frame)` for each sorted target frame index, in one sequential decode pass.

    A packet that fails to decode uses up one frame index and the next decodable frame stands in
    for it. Targets past the end of the decodable stream get the last decoded frame.
    """
    av = _import_av()
    pending = list(targets)[::-1]  # a stack: smallest target last
    index, last = 0, None
    frames = _decoded_frames(src, converter)
    try:
        for index, frame in frames:
            rgb = None
            while pending and pending[-1] <= index:
                try:
                    rgb = converter(frame) if rgb is None else rgb
                except av.error.FFmpegError as error:  # a frame FFmpeg cannot convert: the next one stands in
                    warnings.warn(
                        f"Video {src.name!r}: cannot convert frame {index} ({error}).", stacklevel=3
                    )
                    break
                yield pending.pop(), rgb
            last = frame
            if not pending:
                return
    finally:
        frames.close()
    if last is None:
        raise EmptyVideoError(
            f"Video {src.name!r}: no frame could be decoded; the file is probably damaged. Download or export it again."
        )
    warnings.warn(
        f"Video {src.name!r} ended after {index + 1} decodable frames, before frame {pending[-1]}; "
        "using the last decodable frame.",
        stacklevel=3,
    )
    try:
        rgb = converter(last)
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            f"Video {src.name!r}: cannot convert its last frame to RGB ({error})."
        ) from error
    while pending:
        yield pending.pop(), rgb


# ---- clips --------------------------------------------------------------------------------------


def _check_settings(num_frames, target_fps, skip_secs, video_fps, max_pixels, what="num_frames") -> None:
    check_sampling_arguments(num_frames, target_fps, skip_secs, what=what)
    if video_fps is not None:
        check_number("video_fps", video_fps, positive=True)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, Integral) or max_pixels < 1:
        raise InvalidArgumentError(f"max_pixels must be an integer >= 1, got {max_pixels!r}.")


def _open_video(source: Any, video_fps: float | None, compute_sha256: bool):
    """`(metadata of the whole video, its timeline, frames array or None, file source or None)`."""
    if is_frame_sequence(source):
        frames, name = frames_from_memory(source)
        sha = hashlib.sha256(frames.tobytes()).hexdigest() if compute_sha256 else None
        timeline = FrameTimeline.constant(len(frames), float(video_fps or DEFAULT_ARRAY_FPS))
        total, height, width = frames.shape[:3]
        meta = VideoMetadata(name, sha, total, timeline.fps, timeline.end, width, height, [])
        return meta, timeline, frames, None
    src = FileSource(source, compute_sha256)
    meta, timeline = probe(src)
    if video_fps is not None:  # the caller's rate replaces the timestamps
        timeline = FrameTimeline.constant(timeline.count, float(video_fps))
        meta = replace(meta, fps=timeline.fps, duration=timeline.end)
    return meta, timeline, None, src


def _clip(
    base: VideoMetadata, timeline: FrameTimeline, first: int, stop: int, sampling: dict
) -> VideoMetadata:
    indices, times = timeline.sample(first, stop, **sampling)
    duration = timeline.duration(first, stop)
    irregular = timeline.times is not None
    return replace(
        base,
        total_num_frames=stop - first,
        fps=timeline.fps if not irregular else (stop - first) / duration,
        duration=duration,
        frame_indices=indices,
        start_frame=first,
        frame_timestamps=times,
        start_timestamp=timeline.time(first) if irregular else None,
    )


def _iter_clips(
    source: Any,
    spans: Callable[[VideoMetadata, FrameTimeline], list[tuple[int, int]]],
    sampling: dict,
    video_fps: float | None,
    max_pixels: int,
    compute_sha256: bool,
) -> Iterator[tuple[np.ndarray, VideoMetadata]]:
    """Yield `(frames, metadata)` for each `(first, stop)` frame span of `spans(...)`, decoding once."""
    base, timeline, array, src = _open_video(source, video_fps, compute_sha256)
    clips = [_clip(base, timeline, first, stop, sampling) for first, stop in spans(base, timeline)]
    if array is not None:
        for meta in clips:
            yield array[[meta.start_frame + i for i in meta.frame_indices]], meta
        return
    targets = sorted({meta.start_frame + i for meta in clips for i in meta.frame_indices})
    converter = _Converter(max_pixels, src.name)
    decoded = _decode_targets(src, targets, converter)
    cache: dict[int, np.ndarray] = {}
    try:
        for meta in clips:
            wanted = [meta.start_frame + i for i in meta.frame_indices]
            while any(index not in cache for index in wanted):
                index, frame = next(decoded)
                cache[index] = frame
            if converter.native is not None and (meta.width, meta.height) != converter.native:
                meta = replace(meta, width=converter.native[0], height=converter.native[1])
            yield np.stack([cache[index] for index in wanted]), meta  # [t, H, W, 3] uint8
            cache = {index: frame for index, frame in cache.items() if index > wanted[-1]}
    finally:
        decoded.close()  # closes the container even when the caller stops early


# ---- public API ---------------------------------------------------------------------------------


def is_single_video(videos: Any) -> bool:
    """Whether `videos` is one video rather than a list of videos.

    Args:
        videos: what a user passed as `videos`: a path, bytes, a file object, a `[T, H, W, C]` or
            `[T, C, H, W]` array or tensor, a list of frames (PIL images, `[H, W, C]` arrays), a
            `(frames, VideoMetadata)` pair, or a list of these.

    Returns:
        `True` for one video, `False` for a list of videos.

    Example:
        ```python
        is_single_video("clip.mp4")  # True
        is_single_video(["a.mp4", "b.mp4"])  # False
        ```
    """
    if isinstance(videos, (str, os.PathLike, bytes, bytearray)) or hasattr(videos, "read"):
        return True
    if isinstance(videos, np.ndarray) or type(videos).__name__ == "Tensor":  # numpy or torch, no torch import
        return videos.ndim == 4
    if isinstance(videos, tuple) and len(videos) == 2 and isinstance(videos[1], VideoMetadata):
        return True
    return isinstance(videos, Sequence) and is_frame_sequence(videos)


def load_video(
    source: Any,
    *,
    num_frames: int = 12,
    target_fps: float = 1.0,
    skip_secs: float = 1.0,
    start: float | None = None,
    end: float | None = None,
    video_fps: float | None = None,
    max_pixels: int = MAX_DECODE_PIXELS,
    compute_sha256: bool = True,
    sampler: Sampler | None = None,
) -> tuple[np.ndarray, VideoMetadata]:
    """Decode the frames SmolVLM2 samples from a video, and describe them.

    Args:
        source: A local path, `bytes`, a binary file object, a `[T, H, W, C]` or `[T, C, H, W]` numpy
            array or torch tensor (uint8, or floats in [0, 1]; C = 1, 3 or 4), or a list of frames
            (PIL images or `[H, W, C]` arrays). URLs are refused: download the file first.
        num_frames: Maximum number of frames to sample (an integer >= 1).
        target_fps: Frames sampled per second of video (SmolVLM2: 1; > 0).
        skip_secs: Seconds skipped at each end of long videos (SmolVLM2: 1; >= 0).
        start: Start of the span to sample from, in seconds (default: the beginning).
        end: End of the span (exclusive), in seconds (default: the end).
        video_fps: Native frame rate to assume (replaces the file's timestamps); defaults to the file's
            timing, or 1 fps for arrays.
        max_pixels: Frames with more pixels are shrunk at decode time (see the module docstring).
        compute_sha256: Hash the file (one extra read) for `metadata.sha256`.
        sampler: A VLM family's frame-sampling rule (`Video2LoraFamily.sample_frame_indices`); default
            SmolVLM2's. Files with irregular timestamps use SmolVLM2's rule on time.

    Returns:
        `(frames, metadata)`: `frames` is a `[T, H, W, 3]` uint8 array of the sampled frames, all of
        the first frame's size; `metadata.frame_indices` and `metadata.timestamps` record what was used.

    Raises:
        InvalidArgumentError: a sampling argument out of range (checked before anything is read).
        VideoDecodeError: a URL, a missing file, not a video, or damaged beyond reading.
        EmptyVideoError: the file has no video stream (audio only) or no decodable frame.

    Example:
        ```python
        frames, meta = load_video("clip.mp4", num_frames=12)
        frames.shape, meta.frame_indices, meta.timestamps
        ```
    """
    _check_settings(num_frames, target_fps, skip_secs, video_fps, max_pixels)
    for name, value in (("start", start), ("end", end)):
        if value is not None:
            check_number(name, value, positive=False)

    def span(meta: VideoMetadata, timeline: FrameTimeline) -> list[tuple[int, int]]:
        first, stop = timeline.frames_between(start, end)
        if stop <= first:
            raise VideoDecodeError(
                f"Video {meta.source!r}: the span start={start}, end={end} holds no frame "
                f"(the video has {timeline.count} frames, {timeline.end:.3f} s)."
            )
        return [(first, stop)]

    sampling = {
        "num_frames": num_frames,
        "target_fps": target_fps,
        "skip_secs": skip_secs,
        "sampler": sampler,
    }
    clips = _iter_clips(source, span, sampling, video_fps, max_pixels, compute_sha256)
    try:
        return next(clips)
    finally:
        clips.close()


def iter_video_chunks(
    source: Any,
    *,
    chunk_seconds: float | None = None,
    num_chunks: int | None = None,
    frames_per_chunk: int = 12,
    target_fps: float = 1.0,
    skip_secs: float = 1.0,
    video_fps: float | None = None,
    max_pixels: int = MAX_DECODE_PIXELS,
    compute_sha256: bool = True,
    sampler: Sampler | None = None,
) -> Iterator[tuple[np.ndarray, VideoMetadata]]:
    """Split a (long) video into consecutive temporal chunks and sample each like a video of its own.

    The file is decoded once, front to back; only one chunk's frames are held at a time. Each chunk
    is sampled with SmolVLM2's rule over its own span (`frames_per_chunk`, `target_fps`,
    `skip_secs`), so its metadata and prompt are those of a clip cut from the film. Chunk bounds are
    times (from the frames' timestamps), so a file that skips frames is chunked by its real length.

    Args:
        source: Anything `load_video` accepts.
        chunk_seconds: Chunk length in seconds (the last chunk may be shorter).
        num_chunks: Alternatively, the number of equal chunks.
        frames_per_chunk: Maximum frames sampled per chunk.
        target_fps: Frames sampled per second within a chunk.
        skip_secs: Seconds skipped at each end of a long chunk (pass 0 to tile the film edge to edge).
        video_fps: Native frame rate to assume (see `load_video`).
        max_pixels: Frames with more pixels are shrunk at decode time.
        compute_sha256: Hash the file for `metadata.sha256`.
        sampler: A VLM family's frame-sampling rule (see `load_video`).

    Returns:
        An iterator of `(frames [t, H, W, 3] uint8, VideoMetadata)`, one per chunk, in order;
        `metadata.start_frame` and `metadata.start_time` locate the chunk in the file.

    Raises:
        InvalidArgumentError: not exactly one of `chunk_seconds`/`num_chunks`, or an argument out of
            range (checked when called, before anything is read).

    Example:
        ```python
        for frames, meta in iter_video_chunks("film.mp4", chunk_seconds=60):
            print(meta.start_time, frames.shape)
        ```
    """
    if (chunk_seconds is None) == (num_chunks is None):
        raise InvalidArgumentError("iter_video_chunks() needs exactly one of chunk_seconds or num_chunks.")
    if chunk_seconds is not None:
        check_number("chunk_seconds", chunk_seconds, positive=True)
    elif isinstance(num_chunks, bool) or not isinstance(num_chunks, Integral) or num_chunks < 1:
        raise InvalidArgumentError(f"num_chunks must be an integer >= 1, got {num_chunks!r}.")
    _check_settings(frames_per_chunk, target_fps, skip_secs, video_fps, max_pixels, what="frames_per_chunk")

    def spans(meta: VideoMetadata, timeline: FrameTimeline) -> list[tuple[int, int]]:
        bounds = timeline.chunk_bounds(chunk_seconds, num_chunks)
        return list(itertools.pairwise(bounds))

    sampling = {
        "num_frames": frames_per_chunk,
        "target_fps": target_fps,
        "skip_secs": skip_secs,
        "sampler": sampler,
    }
    return _iter_clips(source, spans, sampling, video_fps, max_pixels, compute_sha256)
