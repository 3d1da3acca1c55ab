"""Does a decoded video look like a toy-world clip? The embedded tiny model knows nothing else."""

from __future__ import annotations

from typing import Any

import numpy as np

from .scene import COLORS

__all__ = ["looks_like_toy_world", "toy_world_frame_size"]

_PALETTE = np.array(list(COLORS.values()), np.float32)  # [6, 3]
_DARK = 90  # a background pixel: no channel above this (toy backgrounds stay at or below 75)
_NEAR = 80.0  # an object pixel: this close (RGB distance) to one of the world's colors
_MAX_SIDE = 128


def _as_frames(frames: Any) -> np.ndarray:
    """`[T, H, W, 3]` float32 from an array-like of frames (`[T, H, W, 3]`, `[T, 3, H, W]` or one `[H, W, 3]`)."""
    from ..errors import InvalidArgumentError

    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim == 4 and array.shape[-1] != 3 and array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 1)
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise InvalidArgumentError(
            f"looks_like_toy_world() takes RGB frames [T, H, W, 3] (or [T, 3, H, W]), got shape {array.shape}."
        )
    if array.dtype != np.uint8:
        raise InvalidArgumentError(
            f"looks_like_toy_world() takes uint8 frames as decoded (0-255), got dtype {array.dtype}."
        )
    return array.astype(np.float32)


def _blobs(frame: np.ndarray) -> list[tuple[int, float]]:
    """`(pixels, fill)` per world color present in a frame: its pixel count and bounding-box fill ratio."""
    distance = np.linalg.norm(frame[:, :, None, :] - _PALETTE[None, None], axis=-1)  # [H, W, 6]
    nearest = distance.argmin(-1)
    close = distance.min(-1) <= _NEAR
    found = []
    for color in range(len(_PALETTE)):
        rows, cols = np.nonzero(close & (nearest == color))
        if len(rows) >= 6:
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            found.append((len(rows), len(rows) / box))
    return found


def toy_world_frame_size(width: int, height: int) -> bool:
    """Whether a video's frame size can be a toy-world clip's: square, at most 128 px a side.

    The world's clips are 64 x 64 px; this is the size check of `looks_like_toy_world`, for callers
    that know a video's size but not its frames (an adapter's metadata, for example).

    Args:
        width: frame width in pixels, as decoded.
        height: frame height in pixels.

    Returns:
        `True` for square frames of at most 128 px per side.

    Example:
        ```python
        toy_world_frame_size(64, 64), toy_world_frame_size(640, 360)  # (True, False)
        ```
    """
    return int(width) == int(height) and 0 < int(width) <= _MAX_SIDE


def looks_like_toy_world(frames: Any) -> bool:
    """Whether decoded frames look like a `toy_world` clip, the only kind of video the embedded model knows.

    A toy-world clip (from `render_clip` or the shifted renderer) has small square frames (64 x 64 px)
    that are mostly a dark, smooth background, with one to three compact shapes in the world's six
    colors. Real footage fails at least one of these checks, all of which must hold:

    * square frames of at most 128 px per side (as decoded, before any resizing);
    * at least 60% of the pixels dark (no channel above 90), with a smooth background (mean absolute
      difference of neighbouring dark pixels at most 8);
    * at least 35% of the other pixels within RGB distance 80 of a world color (edges blend into the background);
    * in some frame, a compact patch of a world color (12 px or more, filling at least 35% of its
      bounding box), and in no frame more than four world colors.

    Args:
        frames: decoded RGB frames, uint8, `[T, H, W, 3]` (as `video_io.load_video` returns them),
            `[T, 3, H, W]`, or a single `[H, W, 3]` frame.

    Returns:
        `True` if the frames look like a toy-world clip.

    Raises:
        InvalidArgumentError: `frames` is not uint8 RGB frames.

    Example:
        ```python
        from transformers_v2l.toy_world import looks_like_toy_world, make_clip

        looks_like_toy_world(make_clip(0).frames)  # True
        ```
    """
    video = _as_frames(frames)
    _, height, width, _ = video.shape
    if not toy_world_frame_size(width, height):
        return False
    dark = video.max(-1) <= _DARK  # [T, H, W]
    if dark.mean() < 0.6:
        return False
    pairs = dark[:, :, 1:] & dark[:, :, :-1]
    steps = np.abs(video[:, :, 1:] - video[:, :, :-1]).max(-1)  # [T, H, W - 1]
    if pairs.any() and float(steps[pairs].mean()) > 8.0:
        return False
    bright = video[~dark]  # [N, 3]
    if len(bright) == 0:
        return False
    near = np.linalg.norm(bright[:, None, :] - _PALETTE[None], axis=-1).min(-1) <= _NEAR
    if near.mean() < 0.35:
        return False
    blobs = [_blobs(frame) for frame in video]
    if max(len(found) for found in blobs) > 4:
        return False
    return any(pixels >= 12 and fill >= 0.35 for found in blobs for pixels, fill in found)
