"""Manifests, `datasets` inputs, path resolution and the span sampler."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from test_training_utils import write_manifest
from transformers_v2l.training.data import (
    SpanSampler,
    Video2LoraDataset,
    expand_spans,
    load_examples,
    load_manifest,
    parse_scenes,
)

ROW = {"id": "a", "video_path": "videos/a.mp4", "task_type": "caption", "prompt": "Describe the video.",
       "target_text": "A cat.", "dataset": "finevideo", "split": "train", "metadata": {"duration": 30.0}}  # fmt: skip
SCENES = [{"start": 0.0, "end": 5.0}, {"start": 5.0, "end": 12.0}, {"start": 12.0, "end": 20.0},
          {"start": 20.0, "end": 30.0}]  # fmt: skip


def test_manifest_resolves_relative_paths_against_its_folder_or_data_root(tmp_path):
    rows = [ROW, {**ROW, "id": "b", "video_path": "/abs/b.mp4", "split": "validation"}]
    path = write_manifest(tmp_path, rows)
    examples = load_manifest(path)
    assert examples[0]["video_path"] == str(tmp_path / "videos/a.mp4")
    assert examples[1]["video_path"] == "/abs/b.mp4"
    assert load_manifest(path, data_root="/data")[0]["video_path"] == "/data/videos/a.mp4"
    assert [e["id"] for e in load_manifest(path, split="validation")] == ["b"]
    assert examples[0]["start"] is None and examples[0]["metadata"] == {"duration": 30.0}


def test_manifest_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({"id": "x", "video_path": "v.mp4"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl line 2 .*\['prompt'\]"):
        load_manifest(path)
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    with pytest.raises(ValueError, match="line 2: the id 'a' appears twice"):
        load_manifest(path)
    path.write_text(json.dumps({**ROW, "start": 5, "end": 2}) + "\n")
    with pytest.raises(ValueError, match="must be after its start"):
        load_manifest(path)


def test_spans_come_from_columns_or_metadata_and_accept_timestamps(tmp_path):
    rows = [
        {**ROW, "start": 1.5, "end": 4},
        {**ROW, "id": "b", "metadata": {"start": "00:01:02.5", "end": "1:10"}},
    ]
    examples = load_manifest(write_manifest(tmp_path, rows))
    assert (examples[0]["start"], examples[0]["end"]) == (1.5, 4.0)
    assert (examples[1]["start"], examples[1]["end"]) == (62.5, 70.0)


def test_datasets_dataset_with_the_same_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [
        {**ROW, "metadata": json.dumps(ROW["metadata"])},
        {**ROW, "id": "b", "metadata": "{}", "split": "test"},
    ]
    dataset = datasets.Dataset.from_list(rows)
    wrapped = load_examples(dataset, data_root=tmp_path, split="train")
    assert isinstance(wrapped, Video2LoraDataset) and len(wrapped) == 1
    assert wrapped[0]["video_path"] == str(tmp_path / "videos/a.mp4")
    assert wrapped[0]["metadata"] == {"duration": 30.0}
    dataset.save_to_disk(str(tmp_path / "saved"))
    assert len(load_examples(tmp_path / "saved", data_root="/data")) == 2


def test_parse_scenes_reads_authors_and_finevideo_layouts():
    assert parse_scenes({"scenes": [{"start": 0, "end": 4.5}, [4.5, 9], [9, 9]]}) == [(0.0, 4.5), (4.5, 9.0)]
    finevideo = {"content_metadata": {"scenes": [
        {"sceneId": 2, "timestamps": {"start_timestamp": "00:00:10.000", "end_timestamp": "00:00:20.500"}},
        {"sceneId": 1, "timestamps": {"start_timestamp": "00:00:00.000", "end_timestamp": "00:00:10.000"}},
    ]}}  # fmt: skip
    assert parse_scenes(finevideo) == [(0.0, 10.0), (10.0, 20.5)]
    assert parse_scenes({}) == []


def test_span_sampler_mix_is_60_30_10_and_spans_are_scene_aligned():
    sampler = SpanSampler(seed=0)
    example = {**ROW, "metadata": {"scenes": SCENES}}
    bounds = {s["start"] for s in SCENES} | {s["end"] for s in SCENES}
    kinds = Counter()
    for draw in range(3000):
        start, end, kind = sampler.sample(example, draw)
        kinds[kind] += 1
        if kind == "full_video":
            assert start is None and end is None
        else:
            assert start in bounds and end in bounds and end > start
            joined = sum(1 for s in SCENES if start <= s["start"] and s["end"] <= end)
            assert joined == 1 if kind == "single_scene" else 2 <= joined <= 4
    shares = {k: v / 3000 for k, v in kinds.items()}
    assert shares["single_scene"] == pytest.approx(0.6, abs=0.03)
    assert shares["multi_scene"] == pytest.approx(0.3, abs=0.03)
    assert shares["full_video"] == pytest.approx(0.1, abs=0.02)


def test_span_sampler_is_deterministic_and_falls_back_without_scenes():
    example = {**ROW, "metadata": {"scenes": SCENES}}
    draws = [SpanSampler(seed=3).sample(example, d) for d in range(20)]
    assert draws == [SpanSampler(seed=3).sample(example, d) for d in range(20)]
    assert draws != [SpanSampler(seed=4).sample(example, d) for d in range(20)]
    assert {SpanSampler(seed=0).sample(ROW, d) for d in range(50)} == {(None, None, "full_video")}
    one_scene = {**ROW, "metadata": {"scenes": SCENES[:1]}}
    kinds = {SpanSampler(seed=0).sample(one_scene, d)[2] for d in range(100)}
    assert kinds == {"single_scene", "full_video"}
    with pytest.raises(ValueError, match="mix"):
        SpanSampler(mix=(1.0, -1.0, 0.0))


def test_expand_spans_keeps_explicit_spans_and_names_draws():
    examples = [{**ROW, "metadata": {"scenes": SCENES}}, {**ROW, "id": "fixed", "start": 1.0, "end": 2.0}]
    rows = expand_spans(examples, SpanSampler(seed=0), spans_per_video=3)
    assert [r["id"] for r in rows] == ["a#span0", "a#span1", "a#span2", "fixed"]
    assert all("span_kind" in r["metadata"] for r in rows[:3])
    assert rows[3] is examples[1]
