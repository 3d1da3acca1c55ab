"""A second, independent renderer of the toy world: the same objects, events and text, drawn differently.

`render_clip` draws the world one way: hard-edged masks, sizes 7.5 to 11.5 px, moves of 16 to 24 px
in fixed event windows, linear-gradient backgrounds, 16 frames. A model that only memorized those
pixels fails on clips drawn any other way. This module samples and draws the same world through a
separate code path, so that robustness can be measured:

* objects are rasterized from signed distances on a 4x supersampled grid (anti-aliased edges), with
  slightly different proportions and a small per-clip color jitter;
* sizes from 6.5 to 13 px, moves of 12 to 28 px, event windows of random start and length;
* other dark backgrounds: vignettes, stripes, soft blotches, flat, each with its own noise;
* 14 to 20 frames at 2 fps (7 to 10 s), so the 1 fps sampling rule picks 7 or 8 frames.

Captions and questions use the world's own templates, so references mean exactly what they mean for
`render_clip`'s clips. Every event is placed so that the sampled frames show it (an appearing object
is missing in at least one sampled frame and present in a later one; the first of two events
finishes before the second starts, with a sampled frame in between).

Example:
    ```python
    from transformers_v2l.toy_world import generate_shifted_world, sample_shifted_clip

    clip = sample_shifted_clip(3)  # frames [T, 64, 64, 3] uint8 with T in 14..20
    manifest = generate_shifted_world("data/tiny_world_shifted", num_clips=200)
    ```
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..video_sampling import sample_frame_indices
from .manifest import _atomic_write_text, manifest_rows
from .render import write_video
from .scene import (
    COLORS,
    DIRECTIONS,
    EVENT_KINDS,
    FPS,
    FRAME_SIZE,
    HELD_OUT_PAIRS,
    SHAPES,
    ToyClip,
    WorldEvent,
    WorldObject,
    _caption,
    _questions,
)

__all__ = ["SHIFTED_FRAME_COUNTS", "generate_shifted_world", "render_shifted_clip", "sample_shifted_clip"]

#: Frame counts of shifted clips (at `FPS`): 7 to 10 s, around the world's 16 frames.
SHIFTED_FRAME_COUNTS = (14, 15, 16, 17, 18, 19, 20)
_SUPERSAMPLE = 4
_SIZE_RANGE = (6.5, 13.0)
_DISTANCE_RANGE = (12.0, 28.0)
_BACKGROUNDS = ("vignette", "stripes", "blotches", "flat")


# ---- timing ----------------------------------------------------------------------------------
def _sampled(num_frames: int) -> list[int]:
    """The frames the 1 fps rule (at most 8 frames) samples from a clip of `num_frames` frames."""
    return sample_frame_indices(num_frames, float(FPS), num_frames=8)


def _windows(rng: np.random.Generator, num_frames: int, count: int) -> list[tuple[int, int]] | None:
    """`count` event windows `[start, end)` in time order, each visible in the sampled frames.

    The change of each event (its midpoint) falls strictly between two sampled frames, and the first
    event ends before the second starts with a sampled frame in between; `None` if the draw fails.
    """
    seen = _sampled(num_frames)
    windows, earliest = [], 1
    for k in range(count):
        length = int(rng.integers(5, 10))
        latest = num_frames - length if k == count - 1 else (num_frames - length) // 2
        if latest < earliest:
            return None
        start = int(rng.integers(earliest, latest + 1))
        end = start + length
        mid = (start + end) // 2
        if not any(f < mid for f in seen) or not any(f >= mid for f in seen):
            return None
        windows.append((start, end))
        between = [f for f in seen if f >= end]
        if k < count - 1:
            if not between:
                return None
            earliest = between[0] + 1  # the next event starts after a sampled frame that shows this one done
    return windows


def _track(obj: WorldObject, own: list[WorldEvent], num_frames: int) -> list[tuple[float, float, bool, str]]:
    """Per frame `(x, y, visible, color)`: moves at constant speed inside their window (own code path)."""
    states = []
    visible_at_start = not any(e.kind == "appear" for e in own)
    for t in range(num_frames):
        x, y, visible, color = obj.x, obj.y, visible_at_start, obj.color
        for event in own:
            if event.kind == "move":
                fraction = np.clip((t + 0.5 - event.start) / (event.end - event.start), 0.0, 1.0)
                dx, dy = DIRECTIONS[str(event.value)]
                x, y = x + dx * event.distance * fraction, y + dy * event.distance * fraction
            else:
                changed = t >= (event.start + event.end) // 2
                if event.kind == "appear":
                    visible = changed
                elif event.kind == "disappear":
                    visible = visible and not changed
                elif event.kind == "recolor" and changed:
                    color = str(event.value)
        states.append((float(x), float(y), visible, color))
    return states


def _layout_ok(objects: list[WorldObject], tracks: list[list[tuple]]) -> bool:
    """Every object stays inside the frame and keeps a gap to every other object in every frame."""
    for obj, track in zip(objects, tracks):
        for x, y, _, _ in track:
            if not (obj.size + 1.5 <= x <= FRAME_SIZE - obj.size - 1.5):
                return False
            if not (obj.size + 1.5 <= y <= FRAME_SIZE - obj.size - 1.5):
                return False
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            reach = objects[i].size + objects[j].size + 3.0
            for a, b in zip(tracks[i], tracks[j]):
                if max(abs(a[0] - b[0]), abs(a[1] - b[1])) < reach:
                    return False
    return True


# ---- sampling --------------------------------------------------------------------------------
def sample_shifted_clip(seed: int, *, held_out: bool = True, render: bool = True) -> ToyClip:
    """Draw (and render) one clip of the shifted distribution.

    Args:
        seed: any integer; the same seed always gives the same clip.
        held_out: like the test split, show at least one of `HELD_OUT_PAIRS`; `False` shows none.
        render: also draw the frames (`clip.frames`).

    Returns:
        A `ToyClip` whose `id` is `shifted-{seed:05d}`, split `shifted`, and whose `background` holds
        the renderer's settings (`kind`, colors, `num_frames`, `jitter`).

    Example:
        ```python
        clip = sample_shifted_clip(0)
        clip.caption, clip.frames.shape  # e.g. ('A blue circle moves up.', (17, 64, 64, 3))
        ```
    """
    rng = np.random.default_rng([seed, 77, 20261203])
    for _ in range(2000):
        num_frames = int(rng.choice(SHIFTED_FRAME_COUNTS))
        num_objects = int(rng.choice([1, 2, 3], p=[0.25, 0.4, 0.35]))
        num_events = 1 if num_objects == 1 else int(rng.choice([1, 2], p=[0.35, 0.65]))
        colors = [str(c) for c in rng.permutation(list(COLORS))[:num_objects]]
        shapes = [str(s) for s in rng.permutation(list(SHAPES))[:num_objects]]
        actors = [int(a) for a in rng.permutation(num_objects)[:num_events]]
        plan, recolors = [], set(colors)
        for index in actors:
            kind = str(rng.choice(EVENT_KINDS, p=[0.5, 0.17, 0.17, 0.16]))
            value = str(rng.choice(list(DIRECTIONS))) if kind == "move" else None
            if kind == "recolor":
                value = str(rng.choice(sorted(set(COLORS) - recolors)))
                recolors.add(value)
            plan.append((index, kind, value))
        pairs = set(zip(colors, shapes)) | {(v, shapes[o]) for o, k, v in plan if k == "recolor"}
        if bool(pairs & HELD_OUT_PAIRS) != held_out:
            continue
        windows = _windows(rng, num_frames, num_events)
        if windows is None:
            continue
        objects = [
            WorldObject(
                c, s, float(rng.uniform(*_SIZE_RANGE)), float(rng.uniform(6, 58)), float(rng.uniform(6, 58))
            )
            for c, s in zip(colors, shapes)
        ]
        events = [
            WorldEvent(o, k, v, start, end, float(rng.uniform(*_DISTANCE_RANGE)) if k == "move" else 0.0)
            for (o, k, v), (start, end) in zip(plan, windows)
        ]
        tracks = [_track(obj, [e for e in events if e.obj == i], num_frames) for i, obj in enumerate(objects)]
        if not _layout_ok(objects, tracks):
            continue
        background = {
            "kind": str(rng.choice(_BACKGROUNDS)),
            "base": [int(v) for v in rng.integers(0, 40, size=3)],
            "accent": [int(v) for v in rng.integers(0, 40, size=3)],
            "noise": float(rng.uniform(0, 6)),
            "noise_seed": int(rng.integers(0, 2**31)),
            "num_frames": num_frames,
            "jitter": [int(v) for v in rng.integers(-12, 13, size=3)],
        }
        clip = ToyClip(f"shifted-{seed:05d}", seed, "shifted", objects, events, background, "", [])
        clip.caption = _caption(objects, events, int(rng.integers(0, 4)))
        clip.qa = _questions(objects, events, rng)
        if render:
            clip.frames = render_shifted_clip(clip)
        return clip
    raise RuntimeError(f"Could not sample a shifted clip for seed {seed}.")  # pragma: no cover


# ---- drawing ---------------------------------------------------------------------------------
def _shifted_background(params: dict, size: int) -> np.ndarray:
    """A dark `[size, size, 3]` float background of one of four kinds."""
    rng = np.random.default_rng(params["noise_seed"])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(coords, coords)  # column, row in [0, 1]
    base, accent = np.array(params["base"], np.float32), np.array(params["accent"], np.float32)
    kind = params["kind"]
    if kind == "vignette":
        weight = np.clip(1.0 - 1.6 * ((u - 0.5) ** 2 + (v - 0.5) ** 2), 0.0, 1.0)
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.15, 0.4)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * (u * np.cos(angle) + v * np.sin(angle)) / period)
    elif kind == "blotches":
        weight = np.zeros_like(u)
        for cx, cy, radius in rng.uniform([0, 0, 0.1], [1, 1, 0.35], size=(4, 3)):
            weight += np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * radius**2))
        weight = weight / max(float(weight.max()), 1e-6)
    else:
        weight = np.zeros_like(u)
    image = base[None, None, :] + weight[..., None] * accent[None, None, :]
    image = image + rng.normal(0.0, params["noise"], size=image.shape)
    return np.clip(image, 0, 75).astype(np.float32)


def _coverage(shape: str, x: float, y: float, size: float, frame: int) -> np.ndarray:
    """Fraction `[frame, frame]` of each pixel the shape covers, from signed distances at 4x4 subpixels."""
    sub = (np.arange(frame * _SUPERSAMPLE, dtype=np.float32) + 0.5) / _SUPERSAMPLE
    px, py = np.meshgrid(sub - x, sub - y)  # offsets of every subpixel from the center
    if shape == "circle":
        inside = np.hypot(px, py) <= size
    elif shape == "square":
        inside = np.maximum(np.abs(px), np.abs(py)) <= 0.82 * size
    elif shape == "triangle":  # apex up: three half-planes
        apex, base = -1.05 * size, 0.75 * size
        slope = 1.15 * size / (base - apex)  # half width per pixel of height
        inside = (py <= base) & (np.abs(px) <= (py - apex) * slope)
    elif shape == "cross":
        arm = 0.33 * size
        inside = (np.minimum(np.abs(px), np.abs(py)) <= arm) & (np.maximum(np.abs(px), np.abs(py)) <= size)
    else:
        raise ValueError(f"Unknown shape {shape!r}.")
    blocks = inside.reshape(frame, _SUPERSAMPLE, frame, _SUPERSAMPLE)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def render_shifted_clip(clip: ToyClip) -> np.ndarray:
    """Draw a shifted clip's frames: anti-aliased shapes over its background.

    Args:
        clip: a clip from `sample_shifted_clip` (its `background` holds the renderer's settings).

    Returns:
        `[num_frames, FRAME_SIZE, FRAME_SIZE, 3]` uint8 RGB frames.

    Example:
        ```python
        frames = render_shifted_clip(sample_shifted_clip(5, render=False))
        ```
    """
    params = clip.background
    num_frames, jitter = int(params["num_frames"]), np.array(params["jitter"], np.float32)
    background = _shifted_background(params, FRAME_SIZE)
    tracks = [
        _track(o, [e for e in clip.events if e.obj == i], num_frames) for i, o in enumerate(clip.objects)
    ]
    frames = np.empty((num_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for t in range(num_frames):
        image = background.copy()
        for obj, track in zip(clip.objects, tracks):
            x, y, visible, color = track[t]
            if not visible:
                continue
            alpha = _coverage(obj.shape, x, y, obj.size, FRAME_SIZE)[..., None]  # [H, W, 1]
            paint = np.clip(np.array(COLORS[color], np.float32) + jitter, 0, 255)
            image = image * (1 - alpha) + paint * alpha
        frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return frames


def generate_shifted_world(out_dir: str | os.PathLike, *, num_clips: int = 200, seed: int = 0) -> Path:
    """Write shifted clips as `.mp4` files and one JSONL manifest (`shifted.jsonl`) in the world's format.

    Clip `i` is drawn from seed `seed * 1_000_003 + i` and shows a held-out color and shape pair, like
    the test split. Files that already exist are kept.

    Args:
        out_dir: folder that receives `videos/shifted/*.mp4` and `shifted.jsonl`.
        num_clips: how many clips.
        seed: the set's seed.

    Returns:
        The manifest's path.

    Example:
        ```python
        rows = read_manifest(generate_shifted_world("data/shifted", num_clips=20))
        ```
    """
    out = Path(out_dir)
    rows = []
    for i in range(num_clips):
        clip = sample_shifted_clip(seed * 1_000_003 + i, render=False)
        clip.id = f"shifted-{i:05d}"
        relative = Path("videos") / "shifted" / f"{clip.id}.mp4"
        if not (out / relative).exists():
            write_video(render_shifted_clip(clip), out / relative, FPS)
        rows.extend(manifest_rows(clip, str(relative)))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "shifted.jsonl"
    _atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path
