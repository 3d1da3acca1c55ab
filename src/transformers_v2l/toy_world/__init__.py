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

from .detect import looks_like_toy_world, toy_world_frame_size
from .manifest import generate_world, manifest_rows, read_manifest
from .render import grid_targets, make_clip, render_clip, write_video
from .scene import (
    ANSWER_MARKER,
    CAPTION_PROMPT,
    CAPTION_STYLES,
    COLORS,
    DIRECTIONS,
    FPS,
    FRAME_SIZE,
    HELD_OUT_PAIRS,
    NUM_FRAMES,
    NUMBER_WORDS,
    SHAPES,
    SPLITS,
    ToyClip,
    WorldEvent,
    WorldObject,
    corpus,
    dialog_prompt,
    final_answer,
    reasoned_answer,
    sample_clip,
)
from .shifted import SHIFTED_FRAME_COUNTS, generate_shifted_world, render_shifted_clip, sample_shifted_clip

__all__ = [
    "ANSWER_MARKER",
    "CAPTION_PROMPT",
    "CAPTION_STYLES",
    "COLORS",
    "DIRECTIONS",
    "FPS",
    "FRAME_SIZE",
    "HELD_OUT_PAIRS",
    "NUMBER_WORDS",
    "NUM_FRAMES",
    "SHAPES",
    "SHIFTED_FRAME_COUNTS",
    "SPLITS",
    "ToyClip",
    "WorldEvent",
    "WorldObject",
    "corpus",
    "dialog_prompt",
    "final_answer",
    "generate_shifted_world",
    "generate_world",
    "grid_targets",
    "looks_like_toy_world",
    "make_clip",
    "manifest_rows",
    "read_manifest",
    "reasoned_answer",
    "render_clip",
    "render_shifted_clip",
    "sample_clip",
    "sample_shifted_clip",
    "toy_world_frame_size",
    "write_video",
]
