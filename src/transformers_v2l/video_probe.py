"""Opening and probing video files for `video_io`: sources, containers, streams and the frame timeline.

A *probe* demuxes the video stream once without decoding (milliseconds even for long files). It
counts the non-empty packets, which is the number of frames (container headers lie: AVI placeholders
for skipped frames, truncated files, Matroska/WebM and raw streams with no count), and reads every
frame's presentation timestamp, from which duration and sampling times follow
(`video_sampling.FrameTimeline`). The declared frame count and rate are only hints.

Only local files, bytes and file objects are read: a URL is refused with a typed error, and FFmpeg
may open nothing but local files (so a playlist inside a file cannot make it reach the network).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import EmptyVideoError, InvalidArgumentError, VideoDecodeError
from .video_sampling import FrameTimeline, VideoMetadata

logger = logging.getLogger("transformers_v2l.video_io")

__all__ = ["DEFAULT_UNKNOWN_FPS", "check_video_source", "probe_video"]

DEFAULT_UNKNOWN_FPS = 24.0  # a decoded stream with no timing information at all (SmolVLM's fallback)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OPEN_OPTIONS = {"protocol_whitelist": "file"}  # FFmpeg opens local files only, whatever a file refers to

# First bytes of containers we can name in error messages (offset, magic, name).
_SIGNATURES = [
    (4, b"ftyp", "MP4/MOV"),
    (0, b"RIFF", "AVI/RIFF"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"GIF8", "GIF"),
    (0, b"OggS", "Ogg"),
    (0, b"\x00\x00\x01\xba", "MPEG-PS"),
]


def _import_av():
    try:
        import av
    except ImportError as error:  # a core dependency, so only a broken install gets here
        raise ImportError(
            "Video decoding needs PyAV (`pip install av`), which could not be imported."
        ) from error
    return av


def _check_path(name: str) -> None:
    if _URL.match(name) and not os.path.exists(name):
        raise VideoDecodeError(
            f"Cannot read video {name!r}: it is a URL, and transformers-v2l reads only local files (the "
            "decoder never uses the network). Download the file first, then pass its local path."
        )
    if not os.path.exists(name):
        raise VideoDecodeError(
            f"Cannot read video {name!r}: the file does not exist (looked for "
            f"{os.path.abspath(name)}). Check the path and the current directory."
        )
    if os.path.isdir(name):
        raise VideoDecodeError(
            f"Cannot read video {name!r}: it is a directory, not a file. Pass the video files inside it, one path each."
        )


def check_video_source(source: Any) -> None:
    """Refuse a video source that cannot be read, without decoding it (cheap: for checking inputs up front).

    Args:
        source: A path, `bytes` or a binary file object (arrays and PIL images always pass).

    Raises:
        VideoDecodeError: a URL, a missing file, a directory, or an empty file.

    Example:
        ```python
        for path in paths:  # before loading any model
            check_video_source(path)
        ```
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        _check_path(name)
        if os.path.getsize(name) == 0:
            raise VideoDecodeError(
                f"Cannot read video {name!r}: the file is empty (0 bytes), probably an interrupted download "
                "or copy. Download or export it again."
            )
    elif isinstance(source, (bytes, bytearray, memoryview)) and len(source) == 0:
        raise VideoDecodeError("Cannot read video <bytes>: no bytes were given.")


class FileSource:
    """A video in a file, bytes or a file object, reopened for each pass.

    Args:
        source: A path, `bytes` or a binary file object.
        compute_sha256: Hash the bytes (one extra read) for `VideoMetadata.sha256`.

    Example:
        ```python
        with FileSource("clip.mp4", compute_sha256=False).open() as container:
            ...
        ```
    """

    def __init__(self, source: Any, compute_sha256: bool):
        self.fileobj = None
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            _check_path(self.name)
            self.path = self.name
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self.name, self.path, self.fileobj = "<bytes>", None, io.BytesIO(bytes(source))
        elif hasattr(source, "read"):
            self.name, self.path = str(getattr(source, "name", "<file object>")), None
            self.fileobj = source if _seekable(source) else io.BytesIO(source.read())
        elif isinstance(source, (list, tuple)) and not source:
            raise InvalidArgumentError("A list of frames must hold at least one frame; got an empty list.")
        else:
            raise InvalidArgumentError(
                f"Cannot read a video from a {type(source).__name__}: pass a local path, bytes, a binary file "
                "object, a [T, H, W, C] or [T, C, H, W] array or tensor, or a list of frames."
            )
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
        """The first `size` bytes.

        Args:
            size: How many bytes.

        Returns:
            The bytes (fewer for a shorter file).

        Example:
            ```python
            source.head(4)
            ```
        """
        if self.path is not None:
            with open(self.path, "rb") as handle:
                return handle.read(size)
        self.fileobj.seek(self.offset)
        return self.fileobj.read(size)

    def open(self):
        """Open the container for reading (container metadata that is not UTF-8 is kept, with replacements).

        Returns:
            A PyAV input container (a context manager).

        Raises:
            VideoDecodeError: FFmpeg cannot open it; the message says what the file seems to be.

        Example:
            ```python
            with source.open() as container:
                print(container.format.name)
            ```
        """
        av = _import_av()
        options = {"metadata_errors": "replace", "container_options": dict(_OPEN_OPTIONS)}
        if self.fileobj is not None:
            self.fileobj.seek(self.offset)
        try:
            if self.path is not None:  # "file:" so that FFmpeg never reads a name as a protocol
                return av.open("file:" + os.path.abspath(self.path), mode="r", **options)
            return av.open(self.fileobj, mode="r", **options)
        except av.error.FFmpegError as error:
            raise VideoDecodeError(self._describe_open_error(error)) from error

    def _describe_open_error(self, error: Exception) -> str:
        head = self.head(377)
        if not head:
            return (
                f"Cannot read video {self.name!r}: the file is empty (0 bytes), probably an interrupted "
                "download or copy. Download or export it again."
            )
        kind = next((name for off, magic, name in _SIGNATURES if head[off : off + len(magic)] == magic), None)
        if kind is None and len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
            kind = "MPEG-TS"  # 188-byte packets, each starting with 0x47
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
    for trim in range(4):  # the cut may split a multi-byte character
        try:
            text = head[: 64 - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(c.isprintable() or c in "\t\r\n" for c in text)
    return False


def _seekable(fileobj) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def video_stream(container, name: str):
    """The first decodable video stream that is not an attached picture (cover art).

    Args:
        container: An open PyAV input container.
        name: The source's name, for messages.

    Returns:
        The PyAV video stream.

    Raises:
        EmptyVideoError: no video stream (for example an audio file).
        VideoDecodeError: video streams whose codec FFmpeg does not know (a damaged header).

    Example:
        ```python
        stream = video_stream(container, "clip.mp4")
        ```
    """
    av = _import_av()
    attached = getattr(getattr(av.stream, "Disposition", None), "attached_pic", 0)
    streams = [s for s in container.streams.video if not (attached and s.disposition & attached)]
    decodable = [s for s in streams if s.codec_context is not None]
    if decodable:
        return decodable[0]
    found = ", ".join(f"{s.type}/{_codec_name(s)}" for s in container.streams) or "none"
    if streams:
        raise VideoDecodeError(
            f"Cannot read video {name!r}: its video stream is in a format FFmpeg cannot decode (streams found: "
            f"{found}); the file is probably damaged. Download or export it again."
        )
    raise EmptyVideoError(f"Video {name!r} has no video stream (streams found: {found}).")


def demux_packets(container, stream, name: str) -> Iterator:
    """The packets of `stream`, in file order; a demuxing error ends them with a warning.

    Args:
        container: An open PyAV input container.
        stream: The stream to read.
        name: The source's name, for the warning.

    Returns:
        An iterator of PyAV packets (the last ones are empty flush packets).

    Example:
        ```python
        frames = sum(1 for packet in demux_packets(container, stream, "clip.mp4") if packet.size)
        ```
    """
    av = _import_av()
    count, restarts = 0, 0
    while True:
        try:
            for packet in container.demux(stream):
                count += bool(packet.size)
                yield packet
            return
        except IndexError:  # PyAV: a stream that appeared mid-file (MPEG-TS); demuxing again skips it
            restarts += 1
            if restarts <= 16:
                continue
            error = "streams keep appearing mid-file"
        except av.error.FFmpegError as failure:
            error = failure
        warnings.warn(f"Video {name!r}: demuxing stopped after {count} frames ({error}).", stacklevel=4)
        return


def _codec_name(stream) -> str:
    context = stream.codec_context
    return getattr(context, "name", None) or "unknown codec"


def _rate(value) -> float | None:
    try:
        rate = float(value) if value is not None else None
    except (TypeError, ZeroDivisionError, OverflowError):
        return None
    return rate if rate is not None and math.isfinite(rate) and rate > 0 else None


# ---- probing ------------------------------------------------------------------------------------


def probe_video(source: Any) -> VideoMetadata:
    """Count the frames and read the duration, frame rate and size of a video file without decoding it.

    Args:
        source: A path, `bytes` or a binary file object.

    Returns:
        `VideoMetadata` of the whole video with no sampled frames (`sha256` is not computed).
        `duration` comes from the frames' presentation timestamps.

    Raises:
        VideoDecodeError: the file is missing, is not a video, or is damaged beyond reading.
        EmptyVideoError: the file has no video stream or no frame data.

    Example:
        ```python
        probe_video("clip.mp4").duration
        ```
    """
    return probe(FileSource(source, compute_sha256=False))[0]


def _demux_timestamps(container, stream, name: str) -> tuple[int, list, float | None]:
    """`(frames, [pts in stream ticks or None per frame], seconds the last frame is shown or None)`."""
    count, stamps, last = 0, [], (None, None)
    for packet in demux_packets(container, stream, name):
        if not packet.size:
            continue
        count += 1
        stamp = packet.pts if packet.pts is not None else packet.dts
        stamps.append(stamp)
        if stamp is not None and (last[0] is None or stamp >= last[0]):
            last = (stamp, packet.duration)
    base = _rate(stream.time_base)
    shown = last[1] * base if base and last[1] else None
    return count, stamps, shown


def probe(src: FileSource) -> tuple[VideoMetadata, FrameTimeline]:
    """Probe an opened source: its metadata (no sampled frames) and its frame timeline.

    Args:
        src: The source.

    Returns:
        `(VideoMetadata, FrameTimeline)` of the whole video.

    Raises:
        VideoDecodeError: the file cannot be opened or its video stream cannot be decoded.
        EmptyVideoError: no video stream or no frame data.

    Example:
        ```python
        meta, timeline = probe(FileSource("clip.mp4", compute_sha256=False))
        ```
    """
    with src.open() as container:
        stream = video_stream(container, src.name)
        count, stamps, shown = _demux_timestamps(container, stream, src.name)
        if count == 0:
            raise EmptyVideoError(f"Video {src.name!r} has a video stream but no frame data.")
        base = _rate(stream.time_base)
        times = None
        if base and all(stamp is not None for stamp in stamps):
            times = (
                np.sort(np.asarray(stamps, dtype=np.float64)) * base
            )  # [count] seconds, presentation order
        span = float(times[-1] - times[0]) if times is not None else None
        fps = _frame_rate(stream, count, span)
        timeline = FrameTimeline.constant(count, fps)
        if times is not None:
            timeline = FrameTimeline.from_timestamps(times, fps, shown)
        _check_length(stream, timeline, src.name)
        codec = stream.codec_context
        width, height = int(codec.width or 0), int(codec.height or 0)
        meta = VideoMetadata(
            src.name, src.sha256, count, timeline.fps, timeline.end, width, height, [], _codec_name(stream)
        )
        return meta, timeline


def _check_length(stream, timeline: FrameTimeline, name: str) -> None:
    """Warn when fewer frames are present than the header lists and their timestamps end early."""
    header, count = int(stream.frames or 0), timeline.count
    if not header or header == count:
        return
    rate = _rate(stream.average_rate) or timeline.fps
    declared = header / rate
    if count >= header - max(1, header // 100) or (
        timeline.times is not None and timeline.end >= 0.99 * declared
    ):
        logger.info(
            "Video %r: the header lists %d frames (%.1f s); %d frames are present over %.1f s.",
            *(name, header, declared, count, timeline.end),
        )
        return
    warnings.warn(
        f"Video {name!r}: the header lists {header} frames ({declared:.1f} s) but only {count} could be "
        f"read ({timeline.end:.1f} s); the file is probably truncated.",
        stacklevel=5,
    )


def _frame_rate(stream, count: int, span: float | None) -> float:
    """The nominal rate: the container's average when it indexes frames, else measured, else guessed."""
    average = _rate(stream.average_rate)
    if stream.frames and average:  # indexed container (MP4, AVI): the rate `transformers` uses
        return average
    measured = (count - 1) / span if span else None
    if measured and average and abs(measured - average) <= 0.01 * average:
        return average  # constant rate: keep the exact nominal value
    if measured and math.isfinite(measured):
        return measured
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if _rate(rate):
            return _rate(rate)
    return DEFAULT_UNKNOWN_FPS
