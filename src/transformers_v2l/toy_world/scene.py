"""The toy world's scenes and text: objects, events, captions, questions, splits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

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
#: Separates the description from the answer in the tiny-world base model's reasoned answers.
ANSWER_MARKER = "Answer:"
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

    Example:
        ```python
        WorldObject(color="red", shape="circle", size=8.0, x=20.0, y=32.0).phrase  # 'red circle'
        ```
    """

    color: str
    shape: str
    size: float
    x: float
    y: float

    @property
    def phrase(self) -> str:
        """`"<color> <shape>"`, for example `"red circle"`."""
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

    Example:
        ```python
        WorldEvent(obj=0, kind="move", value="left", start=4, end=12, distance=16.0).verb()  # 'moves left'
        ```
    """

    obj: int
    kind: str
    value: str | None
    start: int
    end: int
    distance: float = 0.0

    def verb(self) -> str:
        """The event as a verb phrase for captions.

        Returns:
            `moves left`, `appears`, `disappears` or `turns blue`.

        Example:
            ```python
            WorldEvent(obj=0, kind="recolor", value="blue", start=4, end=12).verb()  # 'turns blue'
            ```
        """
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

    Example:
        ```python
        clip = make_clip(0)  # sampled and rendered
        clip.id, clip.caption, clip.qa[0]["question"], clip.frames.shape
        ```
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
        """The caption in one of `CAPTION_STYLES`.

        Args:
            style: `video` (the caption), `objects` (only the objects) or `events` (only the events, in order).

        Returns:
            One sentence.

        Raises:
            ValueError: `style` is not a key of `CAPTION_STYLES`.

        Example:
            ```python
            make_clip(0).style_caption("objects")  # 'A yellow square and a red triangle.'
            ```
        """
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
        """A JSON-serializable description of the scene (no frames).

        Returns:
            `seed`, `objects`, `events`, `background`, `num_objects`, `num_events` and `held_out_pairs`.

        Example:
            ```python
            json.dumps(make_clip(0).metadata())
            ```
        """
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


def corpus(caption_styles: tuple[str, ...] = ("video",), *, answer_marker: bool = False) -> list[str]:
    """Every word and phrase the world's text can contain, for training a tokenizer.

    Args:
        caption_styles: the caption styles in use (their prompts and phrasing are added).
        answer_marker: also add the `Answer:` marker of reasoned answers.

    Returns:
        Lines of text.

    Example:
        ```python
        tokenizer = build_tiny_tokenizer(corpus(("video", "objects")))  # transformers_v2l.testing
        ```
    """
    extra = any(style != "video" for style in caption_styles)
    prompts = [CAPTION_STYLES[s] for s in CAPTION_STYLES if s in caption_styles or s == "video"]
    lines = [*prompts, "How many objects are there?", "stays still", "does not move", "First", "then"]
    if answer_marker:  # reasoned answers: "<description> Answer: <answer>"
        lines += [f"{ANSWER_MARKER} {word}" for word in (*COLORS, *SHAPES, *NUMBER_WORDS)]
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


def reasoned_answer(caption: str, answer: str) -> str:
    """The tiny-world base model's answer format: describe the video, then answer.

    Args:
        caption: the clip's description.
        answer: the short answer.

    Returns:
        `"<caption> Answer: <answer>"`.

    Example:
        ```python
        reasoned_answer("A red circle moves left.", "red")  # 'A red circle moves left. Answer: red'
        ```
    """
    return f"{caption} {ANSWER_MARKER} {answer}"


def dialog_prompt(caption: str, question: str, *, end_of_turn_token: str) -> str:
    """A question as the second user turn, after the caption prompt and a caption of the video.

    Inside the chat format this is the standard two-turn conversation `User: <video> Describe the video.`
    / `Assistant: <caption>` / `User: <question>` / `Assistant:`; a model trained with the tiny world's
    `qa_format="dialog"` answers questions this way, reading its own caption.

    Args:
        caption: the caption the answering model gave to `CAPTION_PROMPT`.
        question: the question.
        end_of_turn_token: the base model family's end of a turn (`hn.family.end_of_turn_token`).

    Returns:
        The user text to pass as the prompt.

    Example:
        ```python
        dialog_prompt("A red circle moves left.", "What color is the circle?", end_of_turn_token=hn.family.end_of_turn_token)
        ```
    """
    end = end_of_turn_token
    return f"{CAPTION_PROMPT}{end}\nAssistant: {caption}{end}\nUser: {question}"


def final_answer(text: str) -> str:
    """The short answer in a reasoned answer: the text after the last `Answer:`, or all of it.

    Args:
        text: a generated answer.

    Returns:
        The answer, stripped.

    Example:
        ```python
        final_answer("A red circle moves left. Answer: red")  # 'red'
        ```
    """
    return text.rpartition(ANSWER_MARKER)[2].strip()
