"""Each benchmark reader against a small sample file in that benchmark's published format."""

import json
from pathlib import Path

import pytest

pytest.importorskip("datasets")

from transformers_v2l.evaluation.benchmarks import (
    BENCHMARKS,
    PROMPT_TEMPLATES,
    benchmark_features,
    load_benchmark,
    read_activitynet_captions,
    read_activitynet_qa,
    read_carebench,
    read_generic,
    read_nextqa,
    read_plm_rcap,
    read_plm_rdcap,
    read_plm_sgqa,
    read_vdc,
    read_vidcapbench,
)

DATA = Path(__file__).parent / "data" / "benchmarks"


def make_videos(root: Path, names) -> Path:
    """Empty placeholder files: the readers only check that the videos exist."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def check_schema(ds, benchmark, task):
    assert ds.features == benchmark_features()
    assert set(ds["benchmark"]) == {benchmark}
    assert set(ds["task"]) == {task}
    assert len(set(ds["id"])) == len(ds)
    for row in ds:
        assert Path(row["video"]).is_file()
        assert row["references"] and all(isinstance(r, str) and r for r in row["references"])
        assert row["prompt"]


def test_activitynet_captions_paragraphs_and_two_reference_sets(tmp_path):
    videos = make_videos(tmp_path, ["v_QOlSCBRmfWY.mp4", "v_ehGHCYKzyZ8.mp4", "nwznKOuZM7w.mkv"])
    ds = read_activitynet_captions(
        [DATA / "activitynet_captions/val_1.json", DATA / "activitynet_captions/val_2.json"], videos
    )
    check_schema(ds, "activitynet_captions", "caption")
    rows = {r["id"]: r for r in ds}
    assert len(rows) == 3
    dance = rows["v_QOlSCBRmfWY"]
    assert dance["references"][0].startswith(
        "A young woman is seen standing in a room and leads into her dancing. The girl"
    )
    assert dance["references"][1] == "A woman performs a dance routine in her living room."
    assert dance["start"] is None and dance["end"] is None
    assert dance["prompt"] == PROMPT_TEMPLATES[("activitynet_captions", "default")]
    assert rows["v_nwznKOuZM7w"]["video"].endswith("nwznKOuZM7w.mkv")  # found without the v_ prefix
    segments = read_activitynet_captions(DATA / "activitynet_captions/val_1.json", videos, per_segment=True)
    assert len(segments) == 6
    first = segments[0]
    assert (first["id"], first["start"], first["end"], first["subset"]) == (
        "v_QOlSCBRmfWY#0",
        0.83,
        19.86,
        "segment",
    )


def test_plm_rcap_converts_frames_to_seconds(tmp_path):
    videos = make_videos(tmp_path, ["sav_017599.mp4", "sav_023411.mp4"])
    ds = read_plm_rcap(DATA / "plm_rcap/plm_rcap_test.jsonl", videos)
    check_schema(ds, "plm_rcap", "caption")
    assert ds[0]["start"] == pytest.approx(30 / 6) and ds[0]["end"] == pytest.approx(72 / 6)
    assert ds[2]["references"] == ["A cyclist rides down the hill and stops at the bottom."]
    assert read_plm_rcap(DATA / "plm_rcap/plm_rcap_test.jsonl", videos, fps=30.0)[0][
        "start"
    ] == pytest.approx(1.0)


def test_plm_rdcap_orders_dense_captions(tmp_path):
    videos = make_videos(tmp_path, ["sav_017599.mp4", "sav_023411.mp4"])
    ds = read_plm_rdcap(DATA / "plm_rdcap/plm_rdcap_test.jsonl", videos)
    check_schema(ds, "plm_rdcap", "caption")
    assert ds[0]["references"] == ["The dog is out of view.\nThe dog runs toward the camera."]


def test_plm_sgqa(tmp_path):
    videos = make_videos(tmp_path, ["sgqa_0001.mp4", "sgqa_0002.mp4"])
    ds = read_plm_sgqa(DATA / "plm_sgqa/plm_sgqa_test.jsonl", videos)
    check_schema(ds, "plm_sgqa", "qa")
    assert ds[0]["prompt"] == PROMPT_TEMPLATES[("plm_sgqa", "default")].format(
        question="What am I holding in my left hand?"
    )
    assert ds[0]["references"] == ["A blue coffee mug."]


def test_vdc_five_styles_flat_and_nested(tmp_path):
    videos = make_videos(tmp_path, ["mixkit-1.mp4", "pexels-2.mp4", "panda-3.mp4"])
    ds = read_vdc(DATA / "vdc/VDC_1k.jsonl", videos)
    check_schema(ds, "vdc", "caption")
    assert len(ds) == 15
    assert sorted(set(ds["subset"])) == sorted(BENCHMARKS["vdc"].subsets)
    row = ds.filter(lambda r: r["id"] == "panda-3:camera")[0]
    assert row["references"] == ["A fixed wide shot."]
    assert row["prompt"] == PROMPT_TEMPLATES[("vdc", "camera")]
    assert len(read_vdc(DATA / "vdc/VDC_1k.jsonl", videos, styles=["short"])) == 3
    with pytest.raises(ValueError, match="Unknown VDC style"):
        read_vdc(DATA / "vdc/VDC_1k.jsonl", videos, styles=["funny"])


def test_carebench_five_subsets(tmp_path):
    videos = make_videos(tmp_path, ["0.mp4", "1.mp4"])
    ds = read_carebench(DATA / "carebench/json/metadata.json", videos)
    check_schema(ds, "carebench", "caption")
    assert len(ds) == 10
    rows = {r["id"]: r for r in ds}
    assert rows["0:events"]["references"] == [
        "The woman walks the dog.\nShe stops to talk to a neighbor.\nShe continues walking."
    ]
    assert rows["1:objects"]["references"] == ["two kids\nsandcastle"]
    assert rows["1:spatial_caption"]["subset"] == "spatial_caption"


def test_nextqa_open_ended_with_extra_references_and_video_map(tmp_path):
    videos = make_videos(tmp_path, ["0000/4924794333.mp4", "0001/3747890905.mp4", "0001/2744507539.mp4"])
    ds = read_nextqa(
        DATA / "nextqa/test.csv",
        videos,
        extra_references=DATA / "nextqa/add_reference_answer_test.json",
        video_map=DATA / "nextqa/map_vid_vidorID.json",
    )
    check_schema(ds, "nextqa", "qa")
    rows = {r["id"]: r for r in ds}
    assert rows["3747890905_8"]["references"] == ["uses the spoon", "scrape with spoon"]
    assert rows["4924794333_4"]["references"] == ["no"]
    assert rows["4924794333_4"]["video"].endswith("0000/4924794333.mp4")
    assert "is the baby old enough to converse" in rows["4924794333_4"]["prompt"]
    # the same, with the JSON files listed among the annotations (the `v2l eval` way)
    listed = [
        DATA / "nextqa" / name
        for name in ("test.csv", "add_reference_answer_test.json", "map_vid_vidorID.json")
    ]
    assert read_nextqa(listed, videos).to_list() == ds.to_list()


def test_activitynet_qa_joins_questions_and_answers(tmp_path):
    videos = make_videos(tmp_path, ["v_JDg--pjY5gg.mp4", "v_Lf_7RurLgp0.mp4"])
    from_folder = read_activitynet_qa(DATA / "activitynet_qa", videos)
    from_files = read_activitynet_qa(
        [DATA / "activitynet_qa/test_a.json", DATA / "activitynet_qa/test_q.json"], videos
    )
    assert from_folder.to_list() == from_files.to_list()
    check_schema(from_folder, "activitynet_qa", "qa")
    rows = {r["id"]: r for r in from_folder}
    assert rows["v_Lf_7RurLgp0_0"]["references"] == ["red"]


def test_vidcapbench_samples_videos_and_keeps_all_their_pairs(tmp_path):
    videos = make_videos(tmp_path, ["Tarsier_20.mp4", "UGC_104.mp4", "Youtube_7.mp4"])
    ds = read_vidcapbench(DATA / "vidcapbench/VidCapBench-AE_QA.jsonl", videos)
    check_schema(ds, "vidcapbench", "qa")
    assert len(ds) == 6
    two = read_vidcapbench(DATA / "vidcapbench/VidCapBench-AE_QA.jsonl", videos, sample_size=2, seed=0)
    per_video = {}
    for row in two:
        per_video.setdefault(row["video"], []).append(row["id"])
    assert len(per_video) == 2
    full = {"Tarsier_20.mp4": 3, "UGC_104.mp4": 2, "Youtube_7.mp4": 1}
    assert all(len(ids) == full[Path(video).name] for video, ids in per_video.items())


def test_generic_reader(tmp_path):
    videos = make_videos(tmp_path, ["clip_a.mp4", "clip_b.mp4"])
    ds = read_generic(DATA / "generic/test.jsonl", videos)
    assert ds.features == benchmark_features()
    assert ds["task"] == ["caption", "qa", "caption"]
    assert ds[1]["references"] == ["red"]
    assert (ds[2]["start"], ds[2]["end"]) == (0.5, 2.0)


def test_sampling_is_seeded_per_subset_and_keeps_file_order(tmp_path):
    rows = [
        {
            "video_id": f"v{i}",
            "video_name": f"v{i}.mp4",
            "short_caption": f"caption {i}",
            "camera_caption": f"cam {i}",
        }
        for i in range(40)
    ]
    path = tmp_path / "VDC_1k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    videos = make_videos(tmp_path / "videos", [f"v{i}.mp4" for i in range(40)])
    first = read_vdc(path, videos, sample_size=10, seed=3)
    assert first.to_list() == read_vdc(path, videos, sample_size=10, seed=3).to_list()
    assert first.to_list() != read_vdc(path, videos, sample_size=10, seed=4).to_list()
    for style in ("short", "camera"):
        ids = [int(r["id"].split(":")[0][1:]) for r in first if r["subset"] == style]
        assert len(ids) == 10 and ids == sorted(ids)
    assert len(read_vdc(path, videos, sample_size=None)) == 80


def test_missing_videos_policies(tmp_path):
    videos = make_videos(tmp_path, ["sgqa_0001.mp4"])
    with pytest.raises(FileNotFoundError, match="1 video"):
        read_plm_sgqa(DATA / "plm_sgqa/plm_sgqa_test.jsonl", videos)
    assert len(read_plm_sgqa(DATA / "plm_sgqa/plm_sgqa_test.jsonl", videos, missing_videos="skip")) == 1
    kept = read_plm_sgqa(DATA / "plm_sgqa/plm_sgqa_test.jsonl", videos, missing_videos="keep")
    assert kept[1]["video"] == str(videos / "sgqa_0002.mp4")


def test_bad_annotations_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"uid": 1, "video": "x.mp4"}\n')
    with pytest.raises(ValueError, match=r"missing field\(s\) \['question', 'answer'\]"):
        read_plm_sgqa(bad, tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"uid": 1,\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl:1 is not valid JSON"):
        read_plm_sgqa(broken, tmp_path)
    with pytest.raises(ValueError, match="Unknown benchmark"):
        load_benchmark("kinetics", bad, tmp_path)


def test_every_benchmark_is_registered_with_its_prompts():
    paper = {
        "activitynet_captions",
        "plm_rdcap",
        "plm_rcap",
        "vdc",
        "carebench",
        "nextqa",
        "activitynet_qa",
        "plm_sgqa",
        "vidcapbench",
    }
    assert paper <= set(BENCHMARKS)
    for key, info in BENCHMARKS.items():
        if key != "generic":
            assert all((key, s) in PROMPT_TEMPLATES for s in info.subsets), key
