"""Rendering toy-world clips into frames and `.mp4` files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .scene import (
    COLORS,
    FPS,
    FRAME_SIZE,
    NUM_FRAMES,
    SHAPES,
    ToyClip,
    WorldEvent,
    WorldObject,
    _trajectory,
    sample_clip,
)


def _background(params: dict[str, Any]) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, FRAME_SIZE, dtype=np.float32)
    ramp = ramp[:, None] if params["vertical"] else ramp[None, :]
    image = np.zeros((FRAME_SIZE, FRAME_SIZE, 3), np.float32)
    for c in range(3):
        image[..., c] = params["base"][c] + params["gradient"][c] * ramp
    noise = np.random.default_rng(params["noise_seed"]).normal(0.0, params["noise"], size=image.shape)
    return np.clip(image + noise, 0, 70).astype(np.float32)


def _mask(shape: str, x: float, y: float, size: float) -> np.ndarray:
    rows, cols = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32) + 0.5
    dx, dy = cols - x, rows - y
    if shape == "circle":
        return dx**2 + dy**2 <= size**2
    if shape == "square":
        return (np.abs(dx) <= size * 0.85) & (np.abs(dy) <= size * 0.85)
    if shape == "triangle":  # apex up
        top, bottom = -size, size * 0.8
        within = (dy >= top) & (dy <= bottom)
        half_width = (dy - top) / (bottom - top) * size * 1.1
        return within & (np.abs(dx) <= half_width)
    if shape == "cross":
        arm = size * 0.35
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= size)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= size))
    raise ValueError(f"Unknown shape {shape!r}.")


def render_clip(clip: ToyClip) -> np.ndarray:
    """Draw a clip's frames.

    Args:
        clip: a clip from `sample_clip`.

    Returns:
        `[NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3]` uint8 RGB frames.

    Example:
        ```python
        frames = render_clip(sample_clip(7, "train"))  # (16, 64, 64, 3) uint8
        ```
    """
    background = _background(clip.background)
    tracks = [_trajectory(o, clip.events, i) for i, o in enumerate(clip.objects)]
    frames = np.empty((NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for t in range(NUM_FRAMES):
        image = background.copy()
        for obj, track in zip(clip.objects, tracks):
            x, y, visible, color = track[t]
            if visible:
                image[_mask(obj.shape, x, y, obj.size)] = COLORS[color]
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def make_clip(seed: int, split: str = "test") -> ToyClip:
    """Sample and render one clip in memory (what `v2l demo` shows).

    Args:
        seed: the clip's seed.
        split: which split's rules to follow; `test` clips show a held-out color and shape pair.

    Returns:
        A `ToyClip` with its frames.

    Example:
        ```python
        clip = make_clip(0)
        clip.frames.shape  # (16, 64, 64, 3)
        ```
    """
    clip = sample_clip(seed, split)
    clip.frames = render_clip(clip)
    return clip


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = FPS) -> Path:
    """Encode RGB frames as an MPEG-4 `.mp4` with PyAV, atomically (a temp file, then a rename).

    Args:
        frames: `[T, H, W, 3]` uint8 with even `H` and `W`.
        path: the output file.
        fps: frames per second written in the container.

    Returns:
        The path written.

    Example:
        ```python
        clip = make_clip(0)
        write_video(clip.frames, "clip.mp4")  # 16 frames at 2 fps: an 8 s clip
        ```
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"qscale": "2"}
            stream.codec_context.qmin = 1
            for frame in frames:
                for packet in stream.encode(
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                ):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def grid_targets(metadata: dict[str, Any], frame_indices: list[int], grid: int) -> np.ndarray:
    """What each cell of a `grid x grid` split of each sampled frame shows: colors and shapes present.

    Used as an auxiliary target when training a VLM from scratch on this world (dense supervision
    makes the vision tower learn in minutes instead of hours).

    Args:
        metadata: a clip's `ToyClip.metadata()` (or a manifest row's `metadata`).
        frame_indices: the sampled frames.
        grid: cells per side.

    Returns:
        `[len(frame_indices), grid * grid, len(COLORS) + len(SHAPES)]` float32 multi-hot targets.

    Example:
        ```python
        targets = grid_targets(make_clip(0).metadata(), [0, 2, 4], grid=4)  # (3, 16, 10)
        ```
    """
    objects = [WorldObject(**o) for o in metadata["objects"]]
    events = [WorldEvent(**e) for e in metadata["events"]]
    colors, cell = list(COLORS), FRAME_SIZE / grid
    out = np.zeros((len(frame_indices), grid * grid, len(COLORS) + len(SHAPES)), np.float32)
    for i, obj in enumerate(objects):
        track = _trajectory(obj, events, i)
        for f, t in enumerate(frame_indices):
            x, y, visible, color = track[t]
            if not visible:
                continue
            rows = range(max(0, int((y - obj.size) // cell)), min(grid, int((y + obj.size) // cell) + 1))
            cols = range(max(0, int((x - obj.size) // cell)), min(grid, int((x + obj.size) // cell) + 1))
            for r in rows:
                for c in cols:
                    out[f, r * grid + c, colors.index(color)] = 1.0
                    out[f, r * grid + c, len(COLORS) + SHAPES.index(obj.shape)] = 1.0
    return out
