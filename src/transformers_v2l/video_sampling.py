"""What a decoded video is and which of its frames are sampled: `VideoMetadata` and SmolVLM2's rule.

`transformers_v2l.video_io` decodes; this module holds the pure parts it shares with the processor
and the long-video planner, which need no decoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["VideoMetadata", "sample_frame_indices"]


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
        fps: Average native frame rate of the video.
        duration: Clip duration in seconds, `total_num_frames / fps`.
        width: Native frame width.
        height: Native frame height.
        frame_indices: Sampled frames, relative to the clip start (decode order).
        codec: FFmpeg codec name, `None` for arrays.
        start_frame: Index in the file of the clip's first frame.

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

    @property
    def timestamps(self) -> list[float]:
        """Seconds of the sampled frames from the clip start (`index / fps`)."""
        return [index / self.fps for index in self.frame_indices]

    @property
    def start_time(self) -> float:
        """Seconds from the start of the file to the start of the clip."""
        return self.start_frame / self.fps

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

    Example:
        ```python
        sample_frame_indices(64, 4.0, num_frames=12)  # [4, 9, 14, ..., 54, 60]
        ```
    """
    if total_num_frames < 1:
        raise ValueError(f"total_num_frames must be >= 1, got {total_num_frames}.")
    duration = total_num_frames / fps
    desired = max(1, min(round(target_fps * duration), num_frames))
    start, end = 0, total_num_frames - 1
    if skip_secs > 0 and duration - 2 * skip_secs > num_frames * target_fps:
        start, end = int(skip_secs * fps), int(total_num_frames - skip_secs * fps)
    start, end = max(0, start), min(end, total_num_frames - 1)
    if start >= end:
        start, end = 0, total_num_frames - 1
    return np.unique(np.linspace(start, end, desired, dtype=int)).tolist()
