"""Video decoding for Video2LoRA: PyAV probing and decoding (sampling rule and metadata in `video_sampling`).

The pipeline is the one SmolVLM2 uses, with a decoder that survives real footage:

1. A *probe* demuxes the video stream once without decoding (milliseconds even for long files) and
   counts its non-empty packets. That count is the number of frames: container headers lie (AVI
   placeholders for dropped frames, truncated files, Matroska/WebM and raw streams with no count).
2. SmolVLM2's sampling rule (`sample_frame_indices`) picks frame indices from that count and the
   frame rate.
3. A *decode* pass walks the stream in order and converts only the sampled frames to RGB; it stops
   after the last one. Frames are never all held in memory.

Frame indices are positions in decode (presentation) order, so broken or missing timestamps do not
matter. A packet that fails to decode is skipped with a warning and the next decodable frame stands
in for it. Frames are decoded at full resolution (which the official processor's pixels need) unless
a frame has more than `max_pixels` pixels (default 4096 x 4096, so everything up to 4K/DCI is exact);
larger frames are shrunk by FFmpeg (area filter) to fit, which is not bit-exact with the official path.

Frame rate, in order of preference: the stream's average rate when the container indexes its frames
(MP4, AVI: what `transformers` uses); otherwise the rate measured from packet timestamps (Matroska,
WebM, variable frame rate); otherwise FFmpeg's guess (raw streams without timestamps); otherwise 24 fps,
SmolVLM's own fallback. Frames given as arrays or PIL images carry no timing: they are taken as
1 frame per second (`DEFAULT_ARRAY_FPS`) unless `video_fps` says otherwise, so that a list of
pre-sampled frames keeps all its frames (at most `num_frames`) and gets timestamps 00:00, 00:01, ...
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .errors import EmptyVideoError, VideoDecodeError
from .video_sampling import VideoMetadata, sample_frame_indices

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ARRAY_FPS",
    "DEFAULT_UNKNOWN_FPS",
    "MAX_DECODE_PIXELS",
    "is_single_video",
    "iter_video_chunks",
    "load_video",
    "probe_video",
]

DEFAULT_ARRAY_FPS = 1.0  # frames given as arrays / PIL images: one frame per second
DEFAULT_UNKNOWN_FPS = 24.0  # a decoded stream with no timing information at all (SmolVLM's fallback)
MAX_DECODE_PIXELS = 4096 * 4096  # larger frames are shrunk at decode time (not bit-exact)

# First bytes of containers we can name in error messages (offset, magic, name).
_SIGNATURES = [
    (4, b"ftyp", "MP4/MOV"),
    (0, b"RIFF", "AVI/RIFF"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"GIF8", "GIF"),
    (0, b"OggS", "Ogg"),
    (0, b"\x00\x00\x01\xba", "MPEG-PS"),
]


# ---- sources ------------------------------------------------------------------------------


class _FileSource:
    """A video in a file, bytes or a file object, reopened for each pass."""

    def __init__(self, source: Any, compute_sha256: bool):
        self.fileobj = None
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            if not os.path.exists(self.name):
                raise VideoDecodeError(
                    f"Cannot read video {self.name!r}: the file does not exist (looked for "
                    f"{os.path.abspath(self.name)}). Check the path and the current directory."
                )
            if os.path.isdir(self.name):
                raise VideoDecodeError(
                    f"Cannot read video {self.name!r}: it is a directory, not a file. Pass the video files "
                    "inside it, one path each."
                )
            self.path = self.name
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self.name, self.path, self.fileobj = "<bytes>", None, io.BytesIO(bytes(source))
        elif hasattr(source, "read"):
            self.name, self.path = str(getattr(source, "name", "<file object>")), None
            self.fileobj = source if _seekable(source) else io.BytesIO(source.read())
        else:
            raise TypeError(f"Unsupported video source of type {type(source).__name__}.")
        self.offset = self.fileobj.tell() if self.fileobj is not None else 0
        self.sha256 = self._hash() if compute_sha256 else None

    def _chunks(self) -> Iterator[bytes]:
        if self.path is not None:
            with open(self.path, "rb") as handle:
                yield from iter(lambda: handle.read(1 << 20), b"")
        else:
            self.fileobj.seek(self.offset)
            yield from iter(lambda: self.fileobj.read(1 << 20), b"")

    def _hash(self) -> str:
        digest = hashlib.sha256()
        for chunk in self._chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def head(self, size: int = 16) -> bytes:
        if self.path is not None:
            with open(self.path, "rb") as handle:
                return handle.read(size)
        self.fileobj.seek(self.offset)
        return self.fileobj.read(size)

    def open(self):
        av = _import_av()
        if self.fileobj is not None:
            self.fileobj.seek(self.offset)
        try:
            return av.open(self.path if self.path is not None else self.fileobj, mode="r")
        except av.error.FFmpegError as error:
            raise VideoDecodeError(self._describe_open_error(error)) from error

    def _describe_open_error(self, error: Exception) -> str:
        head = self.head()
        if not head:
            return (
                f"Cannot read video {self.name!r}: the file is empty (0 bytes), probably an interrupted "
                "download or copy. Download or export it again."
            )
        kind = next((name for off, magic, name in _SIGNATURES if head[off : off + len(magic)] == magic), None)
        reason = getattr(error, "strerror", None) or str(error)
        if kind is not None:
            return (
                f"Cannot read video {self.name!r}: it looks like a {kind} file but FFmpeg cannot parse it "
                f"({reason}); it is probably truncated or damaged. Download or export it again."
            )
        looks = ", and its first bytes are text" if _looks_like_text(head) else ""
        return (
            f"Cannot read video {self.name!r}: it is not a video file FFmpeg can read ({reason}){looks}. "
            "Pass a video container such as MP4, MOV, WebM, MKV, AVI or GIF."
        )


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _seekable(fileobj) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _import_av():
    try:
        import av
    except ImportError as error:  # a core dependency, so only a broken install gets here
        raise ImportError(
            "Video decoding needs PyAV (`pip install av`), which could not be imported."
        ) from error
    return av


def _video_stream(container, name: str):
    """The first video stream that is not an attached picture (cover art)."""
    av = _import_av()
    attached = getattr(getattr(av.stream, "Disposition", None), "attached_pic", 0)
    streams = [s for s in container.streams.video if not (attached and s.disposition & attached)]
    if not streams:
        found = ", ".join(f"{s.type}/{s.codec_context.name}" for s in container.streams) or "none"
        raise EmptyVideoError(f"Video {name!r} has no video stream (streams found: {found}).")
    return streams[0]


def _rate(value) -> float | None:
    try:
        rate = float(value) if value is not None else None
    except (TypeError, ZeroDivisionError):
        return None
    return rate if rate is not None and math.isfinite(rate) and rate > 0 else None


# ---- probing ------------------------------------------------------------------------------


def probe_video(source: Any) -> VideoMetadata:
    """Count the frames and read the frame rate and size of a video file without decoding it.

    Args:
        source: A path, `bytes` or a binary file object.

    Returns:
        `VideoMetadata` of the whole video with no sampled frames (`sha256` is not computed).

    Example:
        ```python
        probe_video("clip.mp4").duration
        ```
    """
    return _probe(_FileSource(source, compute_sha256=False))


def _probe(src: _FileSource) -> VideoMetadata:
    av = _import_av()
    with src.open() as container:
        stream = _video_stream(container, src.name)
        count, pts_min, pts_max = 0, None, None
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                count += 1
                if packet.pts is not None:
                    pts_min = packet.pts if pts_min is None else min(pts_min, packet.pts)
                    pts_max = packet.pts if pts_max is None else max(pts_max, packet.pts)
        except av.error.FFmpegError as error:
            warnings.warn(
                f"Video {src.name!r}: demuxing stopped after {count} frames ({error}).", stacklevel=3
            )
        if count == 0:
            raise EmptyVideoError(f"Video {src.name!r} has a video stream but no frame data.")
        header = int(stream.frames or 0)
        if header and count < header - max(1, header // 100):
            warnings.warn(
                f"Video {src.name!r}: the header lists {header} frames but only {count} could be read; "
                "the file is probably truncated.",
                stacklevel=3,
            )
        elif header and header != count:
            logger.info("Video %r: header lists %d frames, %d are present.", src.name, header, count)
        span = None
        if count > 1 and pts_max is not None and pts_max > pts_min and stream.time_base:
            span = float((pts_max - pts_min) * stream.time_base)
        fps, codec = _frame_rate(stream, count, span), stream.codec_context
        return VideoMetadata(
            src.name, src.sha256, count, fps, count / fps, codec.width, codec.height, [], codec.name
        )


def _frame_rate(stream, count: int, span: float | None) -> float:
    average = _rate(stream.average_rate)
    if stream.frames and average:  # indexed container (MP4, AVI): the rate `transformers` uses
        return average
    measured = (count - 1) / span if span else None
    if measured and average and abs(measured - average) <= 0.01 * average:
        return average  # constant rate: keep the exact nominal value
    if measured:
        return measured
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if _rate(rate):
            return _rate(rate)
    return DEFAULT_UNKNOWN_FPS


# ---- decoding -----------------------------------------------------------------------------


def _to_rgb(frame, max_pixels: int, name: str) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB; frames above `max_pixels` are shrunk (aspect kept) by FFmpeg."""
    width, height = frame.width, frame.height
    if width * height <= max_pixels:
        return frame.to_ndarray(format="rgb24")
    scale = math.sqrt(max_pixels / (width * height))
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    message = "Video %r: %dx%d frames exceed max_pixels=%d; decoded at %dx%d (not bit-exact)."
    logger.warning(message, name, width, height, max_pixels, new_w, new_h)
    return frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="AREA").to_ndarray()


def _decode_targets(
    src: _FileSource, targets: Sequence[int], max_pixels: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(target, frame)` for each sorted target frame index, in one sequential decode pass.

    A packet that fails to decode uses up one frame index and the next decodable frame stands in
    for it. Targets past the end of the decodable stream get the last decoded frame.
    """
    av = _import_av()
    pending = list(targets)[::-1]  # a stack: smallest target last
    with src.open() as container:
        stream = _video_stream(container, src.name)
        index, last, failures = 0, None, 0
        packets = container.demux(stream)
        while pending:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                warnings.warn(
                    f"Video {src.name!r}: demuxing stopped at frame {index} ({error}).", stacklevel=3
                )
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                if packet.size:
                    failures += 1
                    warnings.warn(
                        f"Video {src.name!r}: skipped undecodable frame {index} ({error}); "
                        "using the next decodable frame.",
                        stacklevel=3,
                    )
                    index += 1
                continue
            for frame in frames:
                rgb = None
                while pending and pending[-1] <= index:
                    rgb = _to_rgb(frame, max_pixels, src.name) if rgb is None else rgb
                    yield pending.pop(), rgb
                last, index = frame, index + 1
                if not pending:
                    return
    if pending and last is None:
        raise EmptyVideoError(f"Video {src.name!r}: no frame could be decoded ({failures} packets failed).")
    if pending:
        warnings.warn(
            f"Video {src.name!r} ended after {index} decodable frames, before frame {pending[0]}; "
            "using the last decodable frame.",
            stacklevel=3,
        )
        rgb = _to_rgb(last, max_pixels, src.name)
        while pending:
            yield pending.pop(), rgb


# ---- arrays and images --------------------------------------------------------------------


def _is_frame_sequence(source: Any) -> bool:
    if isinstance(source, np.ndarray):
        return True
    if type(source).__module__.startswith("torch"):
        return True
    return isinstance(source, (list, tuple)) and bool(source) and type(source[0]).__module__.startswith("PIL")


def _frames_array(source: Any) -> tuple[np.ndarray, str]:
    """`[T, H, W, 3]` uint8 frames from an array, a tensor or a list of PIL images."""
    if isinstance(source, (list, tuple)):
        array = np.stack([np.asarray(image.convert("RGB")) for image in source])
        name = "<PIL images>"
    else:
        array = source.detach().cpu().numpy() if hasattr(source, "detach") else np.asarray(source)
        name = "<array>"
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or array.shape[0] == 0:
        raise ValueError(
            f"A video array must be a non-empty uint8 [T, H, W, 3] array; got {array.dtype} "
            f"{list(array.shape)}."
        )
    return np.ascontiguousarray(array), name


# ---- public API ---------------------------------------------------------------------------


def _span_frames(
    total: int, fps: float, start: float | None, end: float | None, name: str
) -> tuple[int, int]:
    """Frames `[first, stop)` whose timestamps `i / fps` fall in `[start, end)` seconds."""
    if start is None and end is None:
        return 0, total
    first = 0 if start is None else max(0, math.ceil(start * fps - 1e-6))
    stop = total if end is None else min(total, math.ceil(end * fps - 1e-6))
    if (start is not None and start < 0) or stop <= first:
        raise VideoDecodeError(
            f"Video {name!r}: the span start={start}, end={end} holds no frame "
            f"(the video has {total} frames, {total / fps:.3f} s)."
        )
    return first, stop


def _clip_metadata(base: VideoMetadata, first: int, stop: int, indices: list[int]) -> VideoMetadata:
    count = stop - first
    return replace(
        base, total_num_frames=count, duration=count / base.fps, frame_indices=indices, start_frame=first
    )


def _open_video(source: Any, video_fps: float | None, compute_sha256: bool):
    """`(metadata of the whole video, frames array or None, file source or None)`."""
    if _is_frame_sequence(source):
        frames, name = _frames_array(source)
        sha = hashlib.sha256(frames.tobytes()).hexdigest() if compute_sha256 else None
        fps = float(video_fps or DEFAULT_ARRAY_FPS)
        total, height, width = frames.shape[:3]
        return VideoMetadata(name, sha, total, fps, total / fps, width, height, []), frames, None
    src = _FileSource(source, compute_sha256)
    meta = _probe(src)
    if video_fps:
        meta = replace(meta, fps=float(video_fps), duration=meta.total_num_frames / float(video_fps))
    return meta, None, src


def _iter_clips(source, spans, num_frames, target_fps, skip_secs, video_fps, max_pixels, compute_sha256):
    """Yield `(frames, metadata)` for each `(first, stop)` frame span of `spans(metadata)`, decoding once."""
    base, array, src = _open_video(source, video_fps, compute_sha256)
    clips = []
    for first, stop in spans(base):
        rule = sample_frame_indices(
            stop - first, base.fps, num_frames=num_frames, target_fps=target_fps, skip_secs=skip_secs
        )
        clips.append(_clip_metadata(base, first, stop, rule))
    if array is not None:
        for meta in clips:
            yield array[[meta.start_frame + i for i in meta.frame_indices]], meta
        return
    targets = sorted({meta.start_frame + i for meta in clips for i in meta.frame_indices})
    decoded = _decode_targets(src, targets, max_pixels)
    cache: dict[int, np.ndarray] = {}
    try:
        for meta in clips:
            wanted = [meta.start_frame + i for i in meta.frame_indices]
            while any(index not in cache for index in wanted):
                index, frame = next(decoded)
                cache[index] = frame
            yield np.stack([cache[index] for index in wanted]), meta
            cache = {index: frame for index, frame in cache.items() if index > wanted[-1]}
    finally:
        decoded.close()  # closes the container even when the caller stops early


def is_single_video(videos: Any) -> bool:
    """Whether `videos` is one video rather than a list of videos.

    Args:
        videos: what a user passed as `videos`: a path, bytes, a file object, a `[T, H, W, 3]`
            array or tensor, a list of PIL images, a `(frames, VideoMetadata)` pair, or a list of these.

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
    return isinstance(videos, Sequence) and bool(videos) and type(videos[0]).__module__.startswith("PIL")


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
) -> tuple[np.ndarray, VideoMetadata]:
    """Decode the frames SmolVLM2 samples from a video, and describe them.

    Args:
        source: A path, `bytes`, a binary file object, a `[T, H, W, 3]` uint8 numpy array or torch
            tensor, or a list of PIL images.
        num_frames: Maximum number of frames to sample.
        target_fps: Frames sampled per second of video (SmolVLM2: 1).
        skip_secs: Seconds skipped at each end of long videos (SmolVLM2: 1).
        start: Start of the span to sample from, in seconds (default: the beginning).
        end: End of the span (exclusive), in seconds (default: the end).
        video_fps: Native frame rate to assume; defaults to the file's rate, or 1 fps for arrays.
        max_pixels: Frames with more pixels are shrunk at decode time (see the module docstring).
        compute_sha256: Hash the file (one extra read) for `metadata.sha256`.

    Returns:
        `(frames, metadata)`: `frames` is a `[T, H, W, 3]` uint8 array of the sampled frames.

    Raises:
        VideoDecodeError: the file is missing, is not a video, or is damaged beyond reading.
        EmptyVideoError: the file has no video stream (audio only) or no decodable frame.

    Example:
        ```python
        frames, meta = load_video("clip.mp4", num_frames=12)
        frames.shape, meta.frame_indices, meta.timestamps
        ```
    """

    def span(meta: VideoMetadata):
        return [_span_frames(meta.total_num_frames, meta.fps, start, end, meta.source)]

    settings = (num_frames, target_fps, skip_secs, video_fps, max_pixels, compute_sha256)
    clips = _iter_clips(source, span, *settings)
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
) -> Iterator[tuple[np.ndarray, VideoMetadata]]:
    """Split a (long) video into consecutive temporal chunks and sample each like a video of its own.

    The file is decoded once, front to back; only one chunk's frames are held at a time. Each chunk
    is sampled with SmolVLM2's rule over its own span (`frames_per_chunk`, `target_fps`,
    `skip_secs`), so its metadata and prompt are those of a clip cut from the film.

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

    Returns:
        An iterator of `(frames [t, H, W, 3] uint8, VideoMetadata)`, one per chunk, in order;
        `metadata.start_frame` locates the chunk in the file.

    Example:
        ```python
        for frames, meta in iter_video_chunks("film.mp4", chunk_seconds=60):
            print(meta.start_time, frames.shape)
        ```
    """
    if (chunk_seconds is None) == (num_chunks is None):
        raise ValueError("iter_video_chunks() needs exactly one of chunk_seconds or num_chunks.")
    if (chunk_seconds is not None and chunk_seconds <= 0) or (num_chunks is not None and num_chunks < 1):
        raise ValueError(f"Invalid chunking: chunk_seconds={chunk_seconds}, num_chunks={num_chunks}.")

    def spans(meta: VideoMetadata):
        total = meta.total_num_frames
        if chunk_seconds is not None:
            size = max(1, round(chunk_seconds * meta.fps))
            bounds = [*range(0, total, size), total]
        else:
            bounds = np.unique(np.linspace(0, total, num_chunks + 1).round().astype(int)).tolist()
        return list(itertools.pairwise(bounds))

    settings = (frames_per_chunk, target_fps, skip_secs, video_fps, max_pixels, compute_sha256)
    return _iter_clips(source, spans, *settings)
