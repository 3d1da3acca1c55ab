"""The toy world: determinism, held-out splits, text, rendering and real video files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transformers_v2l import toy_world
from transformers_v2l.toy_world import (
    COLORS,
    FPS,
    FRAME_SIZE,
    HELD_OUT_PAIRS,
    NUM_FRAMES,
    SHAPES,
    generate_world,
    make_clip,
    read_manifest,
    sample_clip,
)


def _pairs(clip) -> set[tuple[str, str]]:
    pairs = {(o.color, o.shape) for o in clip.objects}
    return pairs | {(e.value, clip.objects[e.obj].shape) for e in clip.events if e.kind == "recolor"}


def test_same_seed_same_clip():
    a, b = make_clip(11, "train"), make_clip(11, "train")
    assert a.caption == b.caption and a.qa == b.qa
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.frames.shape == (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3) and a.frames.dtype == np.uint8


def test_different_seeds_and_splits_differ():
    captions = {sample_clip(i, "train").caption for i in range(40)}
    assert len(captions) > 30
    assert sample_clip(3, "train").caption != sample_clip(3, "test").caption or (
        sample_clip(3, "train").objects != sample_clip(3, "test").objects
    )


@pytest.mark.parametrize("split", ["train", "validation"])
def test_train_and_validation_never_show_held_out_pairs(split):
    for seed in range(150):
        assert not _pairs(sample_clip(seed, split)) & HELD_OUT_PAIRS


def test_test_clips_always_show_a_held_out_pair():
    for seed in range(150):
        clip = sample_clip(seed, "test")
        assert _pairs(clip) & HELD_OUT_PAIRS
        assert clip.metadata()["held_out_pairs"]


def test_every_color_and_shape_is_seen_in_training():
    seen = set()
    for seed in range(300):
        seen |= _pairs(sample_clip(seed, "train"))
    assert {c for c, _ in seen} == set(COLORS)
    assert {s for _, s in seen} == set(SHAPES)
    assert seen.isdisjoint(HELD_OUT_PAIRS)


def test_caption_and_questions_follow_the_scene():
    for seed in range(60):
        clip = sample_clip(seed, "train")
        first = clip.events[0]
        assert f"{clip.objects[first.obj].phrase} {first.verb()}" in clip.caption
        kinds = {q["kind"] for q in clip.qa}
        assert {"count", "color", "event"} <= kinds
        count = next(q for q in clip.qa if q["kind"] == "count")
        assert count["answer"] == toy_world.NUMBER_WORDS[len(clip.objects)]
        if len(clip.events) == 2:  # order matters: the answer is the object that acted first
            order = next(q for q in clip.qa if q["kind"] == "order")
            assert order["answer"] == clip.objects[first.obj].shape
            assert clip.caption.index(clip.objects[first.obj].phrase) < clip.caption.index(
                clip.objects[clip.events[1].obj].phrase
            )
        for event in clip.events:
            if event.kind == "move":
                shape = clip.objects[event.obj].shape
                direction = next(q for q in clip.qa if q["question"] == f"Which way does the {shape} move?")
                assert direction["answer"] == event.value


def test_motion_is_rendered():
    """A moving object's color mass moves the way the caption says."""
    for seed in range(200):
        clip = sample_clip(seed, "train")
        if len(clip.objects) == 1 and clip.events[0].kind == "move":
            break
    frames = toy_world.render_clip(clip)
    color = np.array(COLORS[clip.objects[0].color])
    mask = (np.abs(frames.astype(int) - color).sum(-1) < 10).astype(float)  # [T, H, W]
    xs = (mask * np.arange(FRAME_SIZE)[None, None, :]).sum((1, 2)) / mask.sum((1, 2))
    ys = (mask * np.arange(FRAME_SIZE)[None, :, None]).sum((1, 2)) / mask.sum((1, 2))
    dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
    expected = toy_world.DIRECTIONS[clip.events[0].value]
    assert np.sign(round(dx)) == expected[0] and np.sign(round(dy)) == expected[1]


def test_generate_world_writes_real_videos_and_manifests(tmp_path):
    import av

    manifests = generate_world(tmp_path, num_train=3, num_validation=2, num_test=2, seed=5)
    assert set(manifests) == {"train", "validation", "test"}
    rows = read_manifest(manifests["test"])
    assert {r["task_type"] for r in rows} == {"caption", "qa"}
    for row in rows:
        assert set(row) == {
            "id",
            "video_path",
            "task_type",
            "prompt",
            "target_text",
            "dataset",
            "split",
            "metadata",
        }
        assert row["split"] == "test" and row["dataset"] == "tiny_world"
    raw = json.loads(manifests["train"].read_text().splitlines()[0])
    assert not raw["video_path"].startswith("/")  # relative, resolved against the manifest's folder
    with av.open(rows[0]["video_path"]) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == FPS
    assert len(frames) == NUM_FRAMES and frames[0].shape == (FRAME_SIZE, FRAME_SIZE, 3)
    clip = sample_clip(5 * 1_000_003, "test", index=0)
    assert rows[0]["target_text"] == clip.caption
    error = np.abs(np.stack(frames).astype(int) - toy_world.render_clip(clip).astype(int)).mean()
    assert error < 8  # lossy, but faithful
    again = generate_world(tmp_path, num_train=3, num_validation=2, num_test=2, seed=5)
    assert again["test"].read_text() == manifests["test"].read_text()


def test_smolvlm_sampling_rule_picks_eight_frames(tmp_path):
    from transformers_v2l.video_io import load_video

    path = toy_world.write_video(make_clip(1).frames, tmp_path / "clip.mp4")
    frames, meta = load_video(str(path), num_frames=8)
    assert meta.duration == NUM_FRAMES / FPS
    assert meta.frame_indices == [0, 2, 4, 6, 8, 10, 12, 15]
    assert frames.shape == (8, FRAME_SIZE, FRAME_SIZE, 3)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        sample_clip(0, "dev")


def test_caption_styles_and_their_rows(tmp_path):
    clip = sample_clip(5, "train")
    objects = clip.style_caption("objects")
    assert all(o.phrase in objects for o in clip.objects)
    events = clip.style_caption("events")
    shapes = [clip.objects[e.obj].shape for e in clip.events]
    assert events.lower().index(shapes[0]) <= events.lower().rindex(shapes[-1])
    styles = ("video", "objects", "events")
    rows = toy_world.manifest_rows(clip, "clip.mp4", styles)
    captions = [r for r in rows if r["task_type"] == "caption"]
    assert [r["prompt"] for r in captions] == [toy_world.CAPTION_STYLES[s] for s in styles]
    assert captions[0]["id"].endswith("-caption") and captions[0]["target_text"] == clip.caption
    with pytest.raises(ValueError, match="caption style"):
        clip.style_caption("camera")


def test_grid_targets_mark_the_objects_cells():
    clip = make_clip(2, "train")
    targets = toy_world.grid_targets(clip.metadata(), [0, 15], grid=4)
    assert targets.shape == (2, 16, len(COLORS) + len(SHAPES))
    visible_first = [
        o
        for i, o in enumerate(clip.objects)
        if not any(e.obj == i and e.kind == "appear" for e in clip.events)
    ]
    for obj in visible_first:
        cell = int(obj.y // 16) * 4 + int(obj.x // 16)
        assert targets[0, cell, list(COLORS).index(obj.color)] == 1.0
        assert targets[0, cell, len(COLORS) + SHAPES.index(obj.shape)] == 1.0
