"""What a decoded video is and which of its frames are sampled: `VideoMetadata`, `FrameTimeline` and SmolVLM2's rule.

`transformers_v2l.video_io` decodes; this module holds the pure parts it shares with the processor
and the long-video planner, which need no decoder.

Time comes from the frames' presentation timestamps; a container's declared frame count and rate
are only hints. When the timestamps agree with a constant rate (every frame within 1.5 frame
intervals of `index / fps`, which holds for ordinary files and for files with the odd dropped frame),
the video is sampled exactly as SmolVLM2 samples it: by index, with `duration = frames / fps` and
timestamps `index / fps`. Otherwise (frames skipped for seconds, variable rates that drift) the same
rule runs on the timestamps themselves: the sampled instants are spread over the real duration and
each takes the frame on screen at that instant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = [
    "FrameTimeline",
    "VideoMetadata",
    "check_sampling_arguments",
    "sample_frame_indices",
    "sample_frame_times",
]

REGULAR_TOLERANCE = 1.5  # frame intervals a timestamp may stray from `index / fps` in a constant-rate video


@dataclass
class VideoMetadata:
    """What was decoded and how it was sampled.

    `total_num_frames`, `duration` and `frame_indices` describe the *clip*: the whole video, or the
    span/chunk that was asked for, exactly as if that span had been cut into its own file. The
    clip starts at frame `start_frame` of the file.

    Args:
        source: Path of the file, or `<bytes>`, `<file object>`, `<array>`, `<PIL images>`.
        sha256: SHA-256 of the file bytes (or of the array bytes for arrays and PIL images).
        total_num_frames: Frames in the clip.
        fps: Average native frame rate of the clip (`total_num_frames / duration`).
        duration: Clip duration in seconds, from the frames' presentation timestamps.
        width: Native frame width (of the first frame; later frames of another size are resized to it).
        height: Native frame height.
        frame_indices: Sampled frames, relative to the clip start (decode order).
        codec: FFmpeg codec name, `None` for arrays.
        start_frame: Index in the file of the clip's first frame.
        frame_timestamps: Seconds of the sampled frames from the clip start, read from their presentation
            timestamps, when these do not follow a constant rate; `None` when they do (then `index / fps`).
        start_timestamp: Seconds from the start of the file to the clip's first frame, when the
            timestamps do not follow a constant rate; `None` when they do (then `start_frame / fps`).

    Example:
        ```python
        frames, meta = load_video("clip.mp4")
        meta.fps, meta.frame_indices, meta.timestamps
        ```
    """

    source: str
    sha256: str | None
    total_num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    frame_indices: list[int]
    codec: str | None = None
    start_frame: int = 0
    frame_timestamps: list[float] | None = None
    start_timestamp: float | None = None

    @property
    def timestamps(self) -> list[float]:
        """Seconds of the sampled frames from the clip start (`frame_timestamps`, else `index / fps`)."""
        if self.frame_timestamps is not None:
            return list(self.frame_timestamps)
        return [index / self.fps for index in self.frame_indices]

    @property
    def start_time(self) -> float:
        """Seconds from the start of the file to the start of the clip."""
        return self.start_timestamp if self.start_timestamp is not None else self.start_frame / self.fps

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dictionary, with `timestamps` and `start_time` included.

        Returns:
            The fields plus `timestamps` and `start_time`.

        Example:
            ```python
            json.dumps(meta.to_dict())
            ```
        """
        return {**asdict(self), "timestamps": self.timestamps, "start_time": self.start_time}


def check_sampling_arguments(
    num_frames: Any, target_fps: Any, skip_secs: Any, what: str = "num_frames"
) -> None:
    """Refuse sampling settings that would otherwise be silently changed.

    Args:
        num_frames: Maximum frames to sample: an integer >= 1.
        target_fps: Frames sampled per second: a finite number > 0.
        skip_secs: Seconds skipped at each end of long videos: a finite number >= 0.
        what: The name `num_frames` goes by in the caller's signature, for the message.

    Raises:
        InvalidArgumentError: naming the argument, its value and what is allowed.

    Example:
        ```python
        check_sampling_arguments(12, 1.0, 1.0)  # fine
        check_sampling_arguments(0, 1.0, 1.0)  # InvalidArgumentError: num_frames must be an integer >= 1, got 0
        ```
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, Integral) or num_frames < 1:
        raise InvalidArgumentError(f"{what} must be an integer >= 1, got {num_frames!r}.")
    check_number("target_fps", target_fps, positive=True)
    check_number("skip_secs", skip_secs, positive=False)


def check_number(name: str, value: Any, *, positive: bool) -> float:
    """`value` as a float if it is a finite real number `> 0` (`positive`) or `>= 0`; else `InvalidArgumentError`.

    Args:
        name: The argument's name, for the message.
        value: The value to check.
        positive: Require `> 0` rather than `>= 0`.

    Returns:
        The value as a `float`.

    Example:
        ```python
        check_number("target_fps", 2, positive=True)  # 2.0
        ```
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        allowed = "> 0" if positive else ">= 0"
        raise InvalidArgumentError(f"{name} must be a finite number {allowed}, got {value!r}.")
    return float(value)


#: A frame-sampling rule: `(total_num_frames, fps, *, num_frames, target_fps, skip_secs) -> indices`.
Sampler = Callable[..., list[int]]


def sample_frame_indices(
    total_num_frames: int, fps: float, *, num_frames: int, target_fps: float = 1.0, skip_secs: float = 1.0
) -> list[int]:
    """SmolVLM2's frame sampling rule (`SmolVLMVideoProcessor.sample_frames`), reproduced exactly.

    `n = max(1, min(round(target_fps * duration), num_frames))` frames spread with `linspace` over
    the video; when the video is longer than `2 * skip_secs + num_frames * target_fps` seconds,
    `skip_secs` are dropped at each end first.

    Args:
        total_num_frames: Frames in the video (or clip).
        fps: Native frame rate; `duration = total_num_frames / fps`.
        num_frames: Maximum number of frames to sample.
        target_fps: Frames to sample per second of video.
        skip_secs: Seconds skipped at each end of long videos.

    Returns:
        Sorted, unique frame indices.

    Raises:
        InvalidArgumentError: an argument out of range (see `check_sampling_arguments`).

    Example:
        ```python
        sample_frame_indices(64, 4.0, num_frames=12)  # [4, 9, 14, ..., 54, 60]
        ```
    """
    check_sampling_arguments(num_frames, target_fps, skip_secs)
    if (
        isinstance(total_num_frames, bool)
        or not isinstance(total_num_frames, Integral)
        or total_num_frames < 1
    ):
        raise InvalidArgumentError(f"total_num_frames must be an integer >= 1, got {total_num_frames!r}.")
    fps = check_number("fps", fps, positive=True)
    duration = total_num_frames / fps
    desired = max(1, min(round(target_fps * duration), num_frames))
    start, end = 0, total_num_frames - 1
    if skip_secs > 0 and duration - 2 * skip_secs > num_frames * target_fps:
        start, end = int(skip_secs * fps), int(total_num_frames - skip_secs * fps)
    start, end = max(0, start), min(end, total_num_frames - 1)
    if start >= end:
        start, end = 0, total_num_frames - 1
    return np.unique(np.linspace(start, end, desired, dtype=int)).tolist()


def sample_frame_times(
    times: Any, duration: float, *, num_frames: int, target_fps: float = 1.0, skip_secs: float = 1.0
) -> list[int]:
    """SmolVLM2's rule on timestamps: instants spread over the real duration, each taking the frame on screen.

    `n = max(1, min(round(target_fps * duration), num_frames))` instants are spread with `linspace`
    from the first to the last frame's timestamp (from `skip_secs` to `duration - skip_secs` when the
    video is longer than `2 * skip_secs + num_frames * target_fps` seconds); each instant takes the
    last frame shown at or before it. A frame on screen at several instants is taken once.

    Args:
        times: Presentation time of every frame in seconds, increasing, the first at 0.
        duration: Seconds from the first frame to the end of the last one.
        num_frames: Maximum number of frames to sample.
        target_fps: Instants to sample per second of video.
        skip_secs: Seconds skipped at each end of long videos.

    Returns:
        Sorted, unique frame indices.

    Example:
        ```python
        sample_frame_times([0.0, 0.5, 9.0, 9.5], 10.0, num_frames=12)  # [0, 1, 2, 3]
        ```
    """
    check_sampling_arguments(num_frames, target_fps, skip_secs)
    times = np.asarray(times, dtype=np.float64)  # [N] seconds
    if times.ndim != 1 or times.size == 0:
        raise InvalidArgumentError(f"times must be a non-empty 1-D sequence, got shape {list(times.shape)}.")
    desired = max(1, min(round(target_fps * duration), num_frames))
    first, last = 0.0, float(times[-1])
    if skip_secs > 0 and duration - 2 * skip_secs > num_frames * target_fps:
        first, last = max(first, skip_secs), min(last, duration - skip_secs)
    if first >= last:
        first, last = 0.0, float(times[-1])
    instants = np.linspace(first, last, desired)
    indices = np.searchsorted(times, instants + 1e-9, side="right") - 1  # the frame on screen at each instant
    return np.unique(np.clip(indices, 0, times.size - 1)).tolist()


@dataclass(frozen=True)
class FrameTimeline:
    """When each frame of a video is shown: a constant rate, or presentation timestamps.

    Args:
        count: Number of frames.
        fps: The constant rate (`times is None`), or the average rate `count / end`.
        times: `[count]` seconds of each frame from the first, increasing; `None` for a constant rate.
        end: Seconds from the first frame to the end of the last one (the duration).

    Example:
        ```python
        FrameTimeline.constant(64, 4.0).duration(0, 64)  # 16.0
        ```
    """

    count: int
    fps: float
    times: np.ndarray | None
    end: float

    @classmethod
    def constant(cls, count: int, fps: float) -> FrameTimeline:
        """A constant-rate timeline: frame `i` at `i / fps`.

        Args:
            count: Number of frames.
            fps: Frame rate.

        Returns:
            The timeline.

        Example:
            ```python
            FrameTimeline.constant(10, 5.0).end  # 2.0
            ```
        """
        return cls(count, fps, None, count / fps)

    @classmethod
    def from_timestamps(cls, times: np.ndarray, fps: float, last_duration: float | None) -> FrameTimeline:
        """The timeline of frames at `times`: constant-rate when they keep to `fps`, else timestamped.

        Args:
            times: `[count]` sorted presentation times in seconds (any origin).
            fps: The nominal rate (the container's or the measured average).
            last_duration: How long the last frame is shown (a packet duration), if known.

        Returns:
            `FrameTimeline.constant(count, fps)` when every timestamp is within 1.5 frame intervals of
            `index / fps` (or when the timestamps are not increasing or not finite, so cannot be
            right); otherwise a timeline that keeps `times` (shifted to start at 0).

        Example:
            ```python
            FrameTimeline.from_timestamps(np.array([0.0, 0.1, 5.0]), 10.0, 0.1).end  # 5.1
            ```
        """
        count = len(times)
        times = np.asarray(times, np.float64) - float(times[0])  # [count]
        gaps = np.diff(times)  # [count - 1]
        if count < 2 or not np.isfinite(times).all() or (gaps <= 0).any():
            return cls.constant(count, fps)  # nothing to learn from, or timestamps that cannot be right
        if np.abs(times - np.arange(count) / fps).max() <= REGULAR_TOLERANCE / fps:
            return cls.constant(count, fps)
        shown = last_duration if last_duration and last_duration > 0 else float(gaps.min())
        end = float(times[-1]) + shown
        return cls(count, count / end, times, end)

    def time(self, index: int) -> float:
        """Seconds from the first frame to frame `index`.

        Args:
            index: A frame index (`index == count` gives the end of the video).

        Returns:
            The time in seconds.

        Example:
            ```python
            timeline.time(0)  # 0.0
            ```
        """
        if self.times is None:
            return index / self.fps
        return float(self.times[index]) if index < self.count else self.end

    def duration(self, first: int, stop: int) -> float:
        """Seconds from frame `first` to the end of frame `stop - 1`.

        Args:
            first: First frame of the span.
            stop: One past its last frame.

        Returns:
            The span's duration (`(stop - first) / fps` for a constant rate).

        Example:
            ```python
            FrameTimeline.constant(64, 4.0).duration(8, 16)  # 2.0
            ```
        """
        if self.times is None:
            return (stop - first) / self.fps
        return self.time(stop) - self.time(first)

    def frames_between(self, start: float | None, end: float | None) -> tuple[int, int]:
        """Frames `[first, stop)` shown from `start` (inclusive) to `end` (exclusive) seconds.

        Args:
            start: Seconds, or `None` for the beginning.
            end: Seconds, or `None` for the end.

        Returns:
            `(first, stop)`; `first >= stop` when no frame starts in the span.

        Example:
            ```python
            FrameTimeline.constant(250, 25.0).frames_between(2.0, 6.0)  # (50, 150)
            ```
        """
        if self.times is None:
            first = 0 if start is None else max(0, math.ceil(start * self.fps - 1e-6))
            stop = self.count if end is None else min(self.count, math.ceil(end * self.fps - 1e-6))
            return first, stop
        first = 0 if start is None else int(np.searchsorted(self.times, start - 1e-6, side="left"))
        stop = self.count if end is None else int(np.searchsorted(self.times, end - 1e-6, side="left"))
        return first, stop

    def sample(
        self,
        first: int,
        stop: int,
        *,
        num_frames: int,
        target_fps: float,
        skip_secs: float,
        sampler: Sampler | None = None,
    ) -> tuple[list[int], list[float] | None]:
        """A sampling rule over frames `[first, stop)`: `(indices from first, their seconds from frame first)`.

        A constant-rate timeline uses `sampler` (default: SmolVLM2's `sample_frame_indices`); a timeline
        with real timestamps uses SmolVLM2's rule on time (`sample_frame_times`).

        Args:
            first: First frame of the clip.
            stop: One past its last frame.
            num_frames: Maximum frames to sample.
            target_fps: Frames sampled per second.
            skip_secs: Seconds skipped at each end of long clips.
            sampler: A VLM family's rule with `sample_frame_indices`' signature.

        Returns:
            The sampled indices relative to `first`, and their timestamps relative to frame `first`
            (`None` for a constant rate, where they are `index / fps`).

        Example:
            ```python
            FrameTimeline.constant(64, 4.0).sample(0, 64, num_frames=12, target_fps=1, skip_secs=1)
            ```
        """
        settings = {"num_frames": num_frames, "target_fps": target_fps, "skip_secs": skip_secs}
        if self.times is None:
            return (sampler or sample_frame_indices)(stop - first, self.fps, **settings), None
        times = self.times[first:stop] - self.times[first]  # [stop - first]
        indices = sample_frame_times(times, self.duration(first, stop), **settings)
        return indices, [float(times[i]) for i in indices]

    def chunk_bounds(self, chunk_seconds: float | None, num_chunks: int | None) -> list[int]:
        """Frame indices where consecutive chunks start, plus `count`: chunks of `chunk_seconds` or `num_chunks` equal ones.

        Args:
            chunk_seconds: Chunk length in seconds (the last may be shorter).
            num_chunks: Alternatively, the number of equal chunks.

        Returns:
            Increasing bounds `[0, ..., count]`; chunk `k` holds frames `[bounds[k], bounds[k + 1])`.
            With timestamps, a span holding no frame (a long skip) makes no chunk.

        Example:
            ```python
            FrameTimeline.constant(901, 30.0).chunk_bounds(10.0, None)  # [0, 300, 600, 900, 901]
            ```
        """
        if self.times is None:
            if chunk_seconds is not None:
                size = max(1, round(chunk_seconds * self.fps))
                return [*range(0, self.count, size), self.count]
            return np.unique(np.linspace(0, self.count, num_chunks + 1).round().astype(int)).tolist()
        width = chunk_seconds if chunk_seconds is not None else self.end / num_chunks
        slots = np.floor((self.times + 1e-6) / width)  # [count] the chunk each frame falls in
        changes = np.flatnonzero(np.diff(slots)) + 1
        return [0, *changes.tolist(), self.count]
