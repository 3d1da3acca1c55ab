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


# ---- the second, independent renderer ---------------------------------------------------------


def _centroid(frame: np.ndarray, color: tuple[int, int, int]) -> tuple[float, float] | None:
    mask = np.abs(frame.astype(int) - np.array(color)).sum(-1) < 60  # [H, W]
    if mask.sum() < 10:
        return None
    rows, cols = np.nonzero(mask)
    return float(cols.mean()), float(rows.mean())


def test_shifted_clips_are_seeded_held_out_and_near_the_trained_length():
    from transformers_v2l.video_sampling import sample_frame_indices

    a, b = toy_world.sample_shifted_clip(4), toy_world.sample_shifted_clip(4)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.caption == b.caption and a.qa == b.qa
    for seed in range(40):
        clip = toy_world.sample_shifted_clip(seed, render=seed < 10)
        assert _pairs(clip) & HELD_OUT_PAIRS
        assert clip.background["num_frames"] in toy_world.SHIFTED_FRAME_COUNTS
        assert len(sample_frame_indices(clip.background["num_frames"], FPS, num_frames=8)) in (7, 8)
        if seed < 10:
            assert clip.frames.shape == (clip.background["num_frames"], FRAME_SIZE, FRAME_SIZE, 3)
    assert not _pairs(toy_world.sample_shifted_clip(1, held_out=False, render=False)) & HELD_OUT_PAIRS


def test_shifted_events_show_in_the_sampled_frames():
    """What the text says happens is visible in the frames the 1 fps rule samples: moves, appearances, order."""
    from transformers_v2l.video_sampling import sample_frame_indices

    checked = set()
    for seed in range(30):
        clip = toy_world.sample_shifted_clip(seed)
        seen = clip.frames[sample_frame_indices(len(clip.frames), FPS, num_frames=8)]
        first = clip.events[0]
        obj = clip.objects[first.obj]
        spots = [_centroid(frame, COLORS[obj.color]) for frame in seen]
        if first.kind == "move":
            (x0, y0), (x1, y1) = spots[0], spots[-1]
            dx, dy = toy_world.DIRECTIONS[first.value]
            assert (x1 - x0) * dx + (y1 - y0) * dy > 8, (seed, spots)
            checked.add("move")
        elif first.kind == "appear":
            assert spots[0] is None and spots[-1] is not None
            checked.add("appear")
        elif first.kind == "disappear":
            assert spots[0] is not None and spots[-1] is None
            checked.add("disappear")
    assert checked == {"move", "appear", "disappear"}


def test_generate_shifted_world_writes_videos_and_a_manifest(tmp_path):
    from transformers_v2l.video_io import load_video

    path = toy_world.generate_shifted_world(tmp_path, num_clips=3, seed=2)
    rows = read_manifest(path)
    assert [r["id"] for r in rows if r["task_type"] == "caption"] == [
        f"shifted-{i:05d}-caption" for i in range(3)
    ]
    frames, meta = load_video(rows[0]["video_path"], num_frames=8)
    assert meta.total_num_frames == rows[0]["metadata"]["background"]["num_frames"]
    assert frames.shape[1:] == (FRAME_SIZE, FRAME_SIZE, 3)
    assert toy_world.generate_shifted_world(tmp_path, num_clips=3, seed=2).read_text() == path.read_text()


# ---- recognizing toy-world clips --------------------------------------------------------------


def test_toy_world_clips_are_recognized_after_encoding(tmp_path):
    from transformers_v2l.video_io import load_video

    for seed in range(6):
        clip = make_clip(seed, "test") if seed % 2 else toy_world.sample_shifted_clip(seed)
        path = toy_world.write_video(clip.frames, tmp_path / f"{seed}.mp4")
        frames, _ = load_video(str(path), num_frames=8)
        assert toy_world.looks_like_toy_world(frames), seed
    assert toy_world.looks_like_toy_world(make_clip(0).frames[0])  # one frame
    assert toy_world.looks_like_toy_world(make_clip(0).frames.transpose(0, 3, 1, 2))  # [T, 3, H, W]


def test_other_pictures_are_not_toy_world_clips():
    rng = np.random.default_rng(0)
    clip = make_clip(1).frames
    assert not toy_world.looks_like_toy_world(np.zeros_like(clip))  # nothing in it
    assert not toy_world.looks_like_toy_world(rng.integers(0, 256, clip.shape, dtype=np.uint8))  # noise
    assert not toy_world.looks_like_toy_world(np.concatenate([clip, clip], axis=2))  # not square
    assert toy_world.toy_world_frame_size(64, 64) and toy_world.toy_world_frame_size(128, 128)
    assert not toy_world.toy_world_frame_size(128, 64) and not toy_world.toy_world_frame_size(256, 256)
    bright = np.clip(clip.astype(int) + 120, 0, 255).astype(np.uint8)
    assert not toy_world.looks_like_toy_world(bright)  # no dark background


@pytest.mark.parametrize("name", ["bikes.mp4", "world.mp4", "a.mp4", "carphone_distorted.mp4"])
def test_real_videos_are_not_toy_world_clips(real_clip, name):
    from PIL import Image

    from transformers_v2l.video_io import load_video

    frames, _ = load_video(str(real_clip(name)), num_frames=8)
    assert not toy_world.looks_like_toy_world(frames)
    square = np.stack([np.asarray(Image.fromarray(f).resize((64, 64))) for f in frames])
    assert not toy_world.looks_like_toy_world(square)  # not even squeezed to the world's frame size


def test_looks_like_toy_world_refuses_what_is_not_uint8_rgb():
    from transformers_v2l.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="uint8"):
        toy_world.looks_like_toy_world(make_clip(0).frames / 255.0)
    with pytest.raises(InvalidArgumentError, match=r"\[T, H, W, 3\]"):
        toy_world.looks_like_toy_world(np.zeros((4, 64, 64), np.uint8))
