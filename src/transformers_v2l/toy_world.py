"""A small, seeded world of synthetic videos with captions and questions: the tiny-world recipe's data.

Every clip shows one to three shapes (circle, square, triangle, cross) in one of six colors, of varying
size and position, on a varying dark background. One or two objects do something, one after the
other, so order matters: move left, right, up or down, appear, disappear, or turn another color.
Each clip has a ground-truth caption built from a few templates and short question and answer pairs
about color, shape, direction, event, count, and which object changed first.

The test split holds out four color and shape pairs (for example a red triangle) that never appear in
the train and validation splits, so test scores measure composition, not memory.

Clips are written as real `.mp4` files (MPEG-4 part 2 through PyAV) at 2 fps, 16 frames over 8 s, so
SmolVLM2's 1 fps sampling rule picks 8 of them, and listed in JSONL manifests in the Frames2LoRA
format (`id, video_path, task_type, prompt, target_text, dataset, split, metadata`).

Example:
    ```python
    from transformers_v2l.toy_world import generate_world, make_clip

    clip = make_clip(7)  # in memory: frames [16, 64, 64, 3] uint8, caption, questions
    print(clip.caption, clip.qa[0])
    manifests = generate_world("data/tiny_world", num_train=2000, num_validation=200, num_test=200)
    ```
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CAPTION_PROMPT",
    "CAPTION_STYLES",
    "COLORS",
    "DIRECTIONS",
    "FPS",
    "FRAME_SIZE",
    "HELD_OUT_PAIRS",
    "NUM_FRAMES",
    "SHAPES",
    "SPLITS",
    "ToyClip",
    "WorldEvent",
    "WorldObject",
    "corpus",
    "generate_world",
    "grid_targets",
    "make_clip",
    "read_manifest",
    "render_clip",
    "sample_clip",
    "write_video",
]

#: RGB of each object color.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (50, 95, 240),
    "yellow": (240, 220, 40),
    "purple": (165, 60, 210),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "cross")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: Color and shape pairs that only the test split shows (each color and shape is still seen in training).
HELD_OUT_PAIRS = frozenset(
    {("red", "triangle"), ("green", "cross"), ("blue", "circle"), ("yellow", "square")}
)
SPLITS = ("train", "validation", "test")
NUM_FRAMES = 16  # frames per clip
FPS = 2  # so a clip lasts 8 s and SmolVLM2's 1 fps rule samples 8 frames
FRAME_SIZE = 64  # square frames, in pixels
CAPTION_PROMPT = "Describe the video."
#: Caption styles (prompt per style): the whole video, only its objects, only its events in order.
CAPTION_STYLES = {
    "video": CAPTION_PROMPT,
    "objects": "Describe the objects.",
    "events": "Describe what happens.",
}
NUMBER_WORDS = ("zero", "one", "two", "three")
EVENT_KINDS = ("move", "appear", "disappear", "recolor")
# frames [start, end) in which an event unfolds: one event mid-clip, or two in sequence
_EVENT_WINDOWS = {1: [(4, 12)], 2: [(1, 8), (9, 16)]}
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}


@dataclass
class WorldObject:
    """One shape in a clip.

    Args:
        color: a key of `COLORS` (its color at the start).
        shape: one of `SHAPES`.
        size: radius-like size in pixels.
        x: center column at the start, in pixels.
        y: center row at the start, in pixels.
    """

    color: str
    shape: str
    size: float
    x: float
    y: float

    @property
    def phrase(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass
class WorldEvent:
    """Something one object does during a window of frames.

    Args:
        obj: index of the object in `ToyClip.objects`.
        kind: `move`, `appear`, `disappear` or `recolor`.
        value: the direction of a move, or the new color of a recolor.
        start: first frame of the window.
        end: frame after the last of the window.
        distance: pixels travelled by a move.
    """

    obj: int
    kind: str
    value: str | None
    start: int
    end: int
    distance: float = 0.0

    def verb(self) -> str:
        """`moves left`, `appears`, `disappears` or `turns blue`."""
        return {
            "move": f"moves {self.value}",
            "appear": "appears",
            "disappear": "disappears",
            "recolor": f"turns {self.value}",
        }[self.kind]


@dataclass
class ToyClip:
    """A generated clip: its scene, text and, once rendered, its frames.

    Args:
        id: a stable identifier such as `test-00012`.
        seed: the seed the clip was drawn from.
        split: `train`, `validation` or `test`.
        objects: the objects, in the order the caption names them.
        events: one or two events, in time order.
        background: parameters of the background.
        caption: the ground-truth caption.
        qa: question and answer pairs, each `{"kind", "question", "answer"}`.
        frames: `[NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3]` uint8, or `None` until rendered.
    """

    id: str
    seed: int
    split: str
    objects: list[WorldObject]
    events: list[WorldEvent]
    background: dict[str, Any]
    caption: str
    qa: list[dict[str, str]]
    frames: np.ndarray | None = field(default=None, repr=False)

    def style_caption(self, style: str) -> str:
        """The caption in one of `CAPTION_STYLES`: `video` (the caption), `objects` or `events`."""
        if style == "video":
            return self.caption
        if style == "objects":
            names = [f"a {o.phrase}" for o in self.objects]
            text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            return text[0].upper() + text[1:] + "."
        if style == "events":
            clauses = [f"the {self.objects[e.obj].shape} {e.verb()}" for e in self.events]
            text = ", then ".join(clauses)
            return text[0].upper() + text[1:] + "."
        raise ValueError(f"Unknown caption style {style!r}; choose from {sorted(CAPTION_STYLES)}.")

    def metadata(self) -> dict[str, Any]:
        """A JSON-serializable description of the scene (no frames)."""
        return {
            "seed": self.seed,
            "objects": [asdict(o) for o in self.objects],
            "events": [asdict(e) for e in self.events],
            "background": self.background,
            "num_objects": len(self.objects),
            "num_events": len(self.events),
            "held_out_pairs": sorted(f"{c} {s}" for c, s in _pairs(self) if (c, s) in HELD_OUT_PAIRS),
        }


# ---- sampling -------------------------------------------------------------------------------
def _pairs(clip: ToyClip) -> set[tuple[str, str]]:
    """Every color and shape pair the clip shows, including colors objects turn into."""
    pairs = {(o.color, o.shape) for o in clip.objects}
    pairs |= {(e.value, clip.objects[e.obj].shape) for e in clip.events if e.kind == "recolor"}
    return pairs


def _trajectory(
    obj: WorldObject, events: list[WorldEvent], index: int
) -> list[tuple[float, float, bool, str]]:
    """Per frame `(x, y, visible, color)` of object `index`."""
    x, y, visible, color = obj.x, obj.y, True, obj.color
    own = [e for e in events if e.obj == index]
    if any(e.kind == "appear" for e in own):
        visible = False
    states = []
    for t in range(NUM_FRAMES):
        fx, fy, fvisible, fcolor = x, y, visible, color
        for e in own:
            progress = min(max((t - e.start + 1) / (e.end - e.start), 0.0), 1.0)
            mid = t >= (e.start + e.end) // 2
            if e.kind == "move":
                dx, dy = DIRECTIONS[e.value]
                fx, fy = x + dx * e.distance * progress, y + dy * e.distance * progress
            elif e.kind == "appear":
                fvisible = mid
            elif e.kind == "disappear":
                fvisible = fvisible and not mid
            elif e.kind == "recolor" and mid:
                fcolor = e.value
        states.append((fx, fy, fvisible, fcolor))
    return states


def _fits(objects: list[WorldObject], events: list[WorldEvent]) -> bool:
    """Objects stay inside the frame and never overlap."""
    tracks = [_trajectory(o, events, i) for i, o in enumerate(objects)]
    margin = 2
    for obj, track in zip(objects, tracks):
        for x, y, _, _ in track:
            if not (obj.size + margin <= x <= FRAME_SIZE - obj.size - margin):
                return False
            if not (obj.size + margin <= y <= FRAME_SIZE - obj.size - margin):
                return False
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            gap = objects[i].size + objects[j].size + 3
            for a, b in zip(tracks[i], tracks[j]):
                if abs(a[0] - b[0]) < gap and abs(a[1] - b[1]) < gap:
                    return False
    return True


def _caption(objects: list[WorldObject], events: list[WorldEvent], variant: int) -> str:
    acting = [e.obj for e in events]
    clauses = [f"a {objects[e.obj].phrase} {e.verb()}" for e in events]
    if len(clauses) == 1:
        text = clauses[0][0].upper() + clauses[0][1:] + "."
    elif variant % 2 == 0:
        text = f"{clauses[0][0].upper()}{clauses[0][1:]}, then {clauses[1]}."
    else:
        text = f"First {clauses[0]}, then {clauses[1]}."
    still = [objects[i] for i in range(len(objects)) if i not in acting]
    for obj in still:
        text += f" A {obj.phrase} stays still." if variant < 2 else f" A {obj.phrase} does not move."
    return text


def _questions(
    objects: list[WorldObject], events: list[WorldEvent], rng: np.random.Generator
) -> list[dict[str, str]]:
    qa = [{"kind": "count", "question": "How many objects are there?", "answer": NUMBER_WORDS[len(objects)]}]
    by_obj = {e.obj: e for e in events}
    for i, obj in enumerate(objects):
        event = by_obj.get(i)
        if event is not None and event.kind == "recolor":
            qa.append(
                {"kind": "color", "question": f"What color does the {obj.shape} turn?", "answer": event.value}
            )
        else:
            qa.append({"kind": "color", "question": f"What color is the {obj.shape}?", "answer": obj.color})
            qa.append(
                {"kind": "shape", "question": f"What shape is the {obj.color} object?", "answer": obj.shape}
            )
        if event is not None and event.kind == "move":
            qa.append(
                {
                    "kind": "direction",
                    "question": f"Which way does the {obj.shape} move?",
                    "answer": event.value,
                }
            )
        verb = event.verb() if event is not None else "stays still"
        qa.append({"kind": "event", "question": f"What does the {obj.shape} do?", "answer": verb})
    if len(events) == 2:
        first, second = objects[events[0].obj].shape, objects[events[1].obj].shape
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        qa.append({"kind": "order", "question": f"Which changes first, the {a} or the {b}?", "answer": first})
    return qa


def _allowed(clip_pairs: set[tuple[str, str]], split: str) -> bool:
    held = clip_pairs & HELD_OUT_PAIRS
    return bool(held) if split == "test" else not held


def sample_clip(seed: int, split: str = "train", index: int | None = None) -> ToyClip:
    """Draw one clip's scene and text (not its frames) from a seed.

    Args:
        seed: any integer; the same seed and split always give the same clip.
        split: `train` and `validation` never show a held-out color and shape pair; `test` always does.
        index: used only to name the clip (`{split}-{index:05d}`); defaults to `seed`.

    Returns:
        A `ToyClip` with `frames=None` (see `render_clip` and `make_clip`).

    Example:
        ```python
        clip = sample_clip(3, "test")
        clip.caption  # 'A blue circle moves left.'
        ```
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 20260604])
    for _ in range(1000):
        num_objects = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
        num_events = 1 if num_objects == 1 else int(rng.choice([1, 2], p=[0.4, 0.6]))
        colors = [str(c) for c in rng.choice(list(COLORS), size=num_objects, replace=False)]
        shapes = [str(s) for s in rng.choice(SHAPES, size=num_objects, replace=False)]
        actors = [int(a) for a in rng.choice(num_objects, size=num_events, replace=False)]
        plan = []  # (object, kind, value) in time order
        for obj_index in actors:
            kind = str(rng.choice(EVENT_KINDS, p=[0.55, 0.15, 0.15, 0.15]))
            value = None
            if kind == "move":
                value = str(rng.choice(list(DIRECTIONS)))
            elif kind == "recolor":
                used = set(colors) | {v for _, k, v in plan if k == "recolor"}
                value = str(rng.choice([c for c in COLORS if c not in used]))
            plan.append((obj_index, kind, value))
        pairs = set(zip(colors, shapes)) | {(v, shapes[o]) for o, k, v in plan if k == "recolor"}
        if not _allowed(pairs, split):
            continue
        for _ in range(100):  # place the objects
            objects = [
                WorldObject(
                    c, s, float(rng.uniform(7.5, 11.5)), float(rng.uniform(8, 56)), float(rng.uniform(8, 56))
                )
                for c, s in zip(colors, shapes)
            ]
            events = [
                WorldEvent(o, k, v, start, end, float(rng.uniform(16, 24)))
                for (o, k, v), (start, end) in zip(plan, _EVENT_WINDOWS[num_events])
            ]
            if _fits(objects, events):
                break
        else:
            continue
        clip = ToyClip(
            id=f"{split}-{seed if index is None else index:05d}",
            seed=seed,
            split=split,
            objects=objects,
            events=events,
            background={
                "base": [int(v) for v in rng.integers(0, 45, size=3)],
                "gradient": [int(v) for v in rng.integers(-25, 26, size=3)],
                "vertical": bool(rng.random() < 0.5),
                "noise": float(rng.uniform(0, 5)),
                "noise_seed": int(rng.integers(0, 2**31)),
            },
            caption="",
            qa=[],
        )
        clip.caption = _caption(objects, events, int(rng.integers(0, 4)))
        clip.qa = _questions(objects, events, rng)
        return clip
    raise RuntimeError(
        f"Could not sample a valid clip for seed {seed} in split {split!r}."
    )  # pragma: no cover


# ---- rendering ------------------------------------------------------------------------------
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


# ---- files ----------------------------------------------------------------------------------
def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = FPS) -> Path:
    """Encode RGB frames as an MPEG-4 `.mp4` with PyAV, atomically (a temp file, then a rename).

    Args:
        frames: `[T, H, W, 3]` uint8 with even `H` and `W`.
        path: the output file.
        fps: frames per second written in the container.

    Returns:
        The path written.
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


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def manifest_rows(
    clip: ToyClip, video_path: str, caption_styles: tuple[str, ...] = ("video",)
) -> list[dict[str, Any]]:
    """The manifest rows of one clip: its captions, then each question, in the Frames2LoRA format."""
    meta = clip.metadata()
    rows = []
    for style in caption_styles:
        rows.append(
            {
                "id": f"{clip.id}-caption" + ("" if style == "video" else f"-{style}"),
                "video_path": video_path,
                "task_type": "caption",
                "prompt": CAPTION_STYLES[style],
                "target_text": clip.style_caption(style),
                "dataset": "tiny_world",
                "split": clip.split,
                "metadata": {**meta, "clip_id": clip.id, "caption_style": style},
            }
        )
    for k, qa in enumerate(clip.qa):
        rows.append(
            {
                "id": f"{clip.id}-qa{k}",
                "video_path": video_path,
                "task_type": "qa",
                "prompt": qa["question"],
                "target_text": qa["answer"],
                "dataset": "tiny_world",
                "split": clip.split,
                "metadata": {"clip_id": clip.id, "qa_kind": qa["kind"], "seed": clip.seed},
            }
        )
    return rows


def generate_world(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 2000,
    num_validation: int = 200,
    num_test: int = 200,
    seed: int = 0,
    caption_styles: tuple[str, ...] = ("video",),
) -> dict[str, Path]:
    """Write every clip as an `.mp4` and one JSONL manifest per split.

    Clip `i` of a split is drawn from seed `seed * 1_000_003 + i`, so splits are disjoint and the
    output only depends on the arguments. Files that already exist are kept.

    Args:
        out_dir: folder that receives `videos/{split}/*.mp4` and `{split}.jsonl`.
        num_train: clips in the train split.
        num_validation: clips in the validation split.
        num_test: clips in the test split (each shows a held-out color and shape pair).
        seed: world seed.
        caption_styles: which of `CAPTION_STYLES` get a caption row per clip (`video` always first).

    Returns:
        `{split: manifest path}`.

    Example:
        ```python
        manifests = generate_world("data/tiny_world", num_train=100, num_validation=20, num_test=20)
        rows = read_manifest(manifests["test"])
        ```
    """
    out = Path(out_dir)
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    manifests = {}
    for split, count in counts.items():
        rows = []
        for i in range(count):
            clip = sample_clip(seed * 1_000_003 + i, split, index=i)
            relative = Path("videos") / split / f"{clip.id}.mp4"
            if not (out / relative).exists():
                write_video(render_clip(clip), out / relative)
            rows.extend(manifest_rows(clip, str(relative), caption_styles))
        path = out / f"{split}.jsonl"
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
        manifests[split] = path
    return manifests


def read_manifest(path: str | os.PathLike, *, resolve_paths: bool = True) -> list[dict[str, Any]]:
    """Read a JSONL manifest; relative `video_path`s are resolved against the manifest's folder.

    Args:
        path: a `.jsonl` file from `generate_world`.
        resolve_paths: make `video_path` absolute.

    Returns:
        The rows as dictionaries.
    """
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if resolve_paths:
        for row in rows:
            if not os.path.isabs(row["video_path"]):
                row["video_path"] = str(path.parent / row["video_path"])
    return rows


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


def corpus(caption_styles: tuple[str, ...] = ("video",)) -> list[str]:
    """Every word and phrase the world's text can contain, for training a tokenizer.

    Args:
        caption_styles: the caption styles in use (their prompts and phrasing are added).

    Returns:
        Lines of text.
    """
    extra = any(style != "video" for style in caption_styles)
    prompts = [CAPTION_STYLES[s] for s in CAPTION_STYLES if s in caption_styles or s == "video"]
    lines = [*prompts, "How many objects are there?", "stays still", "does not move", "First", "then"]
    for color in COLORS:
        for shape in SHAPES:
            lines += [
                f"A {color} {shape} moves left, then a {color} {shape} appears.",
                f"What color is the {shape}? What color does the {shape} turn? turns {color}",
                f"What shape is the {color} object? Which way does the {shape} move? What does the {shape} do?",
                f"Which changes first, the {shape} or the {shape}? {color} {shape}",
            ]
            if extra:
                lines.append(
                    f"A {color} {shape}, a {color} {shape} and a {color} {shape}. The {shape} turns {color}."
                )
    lines += [f"moves {d}" for d in DIRECTIONS] + ["appears disappears", " ".join(NUMBER_WORDS)]
    return lines
