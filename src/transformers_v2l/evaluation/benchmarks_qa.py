"""Readers for the paper's question-answering benchmarks (see `benchmarks.py` for the schema)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._readers import PathOrPaths, RowBuilder, annotation_paths, iter_records, read_records, require_fields

if TYPE_CHECKING:
    import datasets

__all__ = ["read_activitynet_qa", "read_generic", "read_nextqa", "read_plm_sgqa", "read_vidcapbench"]


def read_nextqa(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    extra_references: str | os.PathLike | None = None,
    video_map: str | os.PathLike | None = None,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """NExT-QA open-ended (NExT-OE).

    Format (`test.csv` / `val.csv`): `video,frame_count,width,height,question,answer,qid,type`.
    Extra reference answers come from `add_reference_answer_{split}.json` (`{video: {qid: answer}}`)
    or from an `additional_ref_answer` column (the lmms-eval copy). Videos live in folders named
    by `map_vid_vidorID.json` (`{video: "0000/2440175990"}`); without a map, `<video>.mp4` is
    looked up in `videos`. The two JSON files may also be listed among `annotations` (as
    `v2l eval --annotations test.csv add_reference_answer_test.json map_vid_vidorID.json` does):
    a file whose name contains `map_vid` is the video map, any other `.json` the extra references.

    Args:
        annotations (`str` or list of `str`): The CSV file (and optionally the two JSON files).
        videos (`str`): Root of the NExT-QA videos.
        extra_references (`str`, *optional*): `add_reference_answer_{split}.json`.
        video_map (`str`, *optional*): `map_vid_vidorID.json`.
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "qa").

    Example:
        ```python
        >>> ds = read_nextqa("nextoe/test.csv", "nextqa/videos", video_map="nextqa/map_vid_vidorID.json")
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    out = RowBuilder("nextqa", "qa", videos, missing_videos)
    tables = []
    for path in annotation_paths(annotations):
        if path.suffix.lower() != ".json":
            tables.append(path)
        elif "map_vid" in path.name:
            video_map = video_map or path
        else:
            extra_references = extra_references or path
    extra = read_records(Path(extra_references)) if extra_references else {}
    mapping = read_records(Path(video_map)) if video_map else {}
    for _, rec in iter_records(tables, ["video", "question", "answer", "qid"]):
        vid, qid = str(rec["video"]), str(rec["qid"])
        refs = [rec["answer"], rec.get("additional_ref_answer") or "", extra.get(vid, {}).get(qid, "")]
        refs = list(dict.fromkeys(r.strip() for r in refs if r and r.strip()))
        out.add(f"{vid}_{qid}", out.video(mapping.get(vid, vid)), refs, question=rec["question"])
    return out.dataset(sample_size, seed)


def read_activitynet_qa(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """ActivityNet-QA (Yu et al., 2019).

    Format: `test_q.json` (`[{"video_name", "question_id", "question"}]`) and `test_a.json`
    (`[{"question_id", "answer", "type"}]`), joined on `question_id`. Give the two files (in any
    order) or the folder that holds them. Video files are looked up as `v_<video_name>.mp4` and
    `<video_name>.mp4`.

    Args:
        annotations (`str` or list of `str`): The folder, or the questions and answers files.
        videos (`str`): Folder of ActivityNet videos.
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "qa").

    Example:
        ```python
        >>> ds = read_activitynet_qa("activitynet-qa/dataset", "activitynet/videos")
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    paths = annotation_paths(annotations)
    if len(paths) == 1 and paths[0].is_dir():
        paths = sorted(paths[0].glob("*_q.json")) + sorted(paths[0].glob("*_a.json"))
    questions, answers = [], {}
    for path in paths:
        for rec in read_records(path):
            if "question" in rec:
                questions.append(rec)
            elif "answer" in rec:
                answers[str(rec["question_id"])] = rec["answer"]
    if not questions or not answers:
        raise ValueError(
            f"ActivityNet-QA needs a *_q.json and a *_a.json file; got {[str(p) for p in paths]}."
        )
    out = RowBuilder("activitynet_qa", "qa", videos, missing_videos)
    for rec in questions:
        require_fields(rec, ["video_name", "question_id", "question"], "ActivityNet-QA questions")
        qid = str(rec["question_id"])
        if qid not in answers:
            raise ValueError(f"ActivityNet-QA question {qid} has no answer in the answers file.")
        out.add(qid, out.video(rec["video_name"]), answers[qid], question=rec["question"])
    return out.dataset(sample_size, seed)


def read_plm_sgqa(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """PLM-SGQA (PLM-VideoBench, smart-glasses open-ended QA).

    Format (`sgqa/plm_sgqa_test` as .jsonl or .parquet): `uid, video, question, answer[, domain]`.

    Args:
        annotations (`str` or list of `str`): The annotation file(s).
        videos (`str`): Folder of the SGQA videos.
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "qa").

    Example:
        ```python
        >>> ds = read_plm_sgqa("plm/sgqa/plm_sgqa_test.jsonl", "plm/sgqa/videos")
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    out = RowBuilder("plm_sgqa", "qa", videos, missing_videos)
    for _, rec in iter_records(annotations, ["uid", "video", "question", "answer"]):
        out.add(rec["uid"], out.video(rec["video"]), rec["answer"], question=rec["question"])
    return out.dataset(sample_size, seed)


def read_vidcapbench(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    sample_size: int | None = 100,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """VidCapBench (Chen et al., 2025): several QA pairs per video; sampling draws *videos*.

    Format (`VidCapBench-AE_QA.jsonl`, and `-HE_QA.jsonl` if wanted, as read by the benchmark's
    `eval.py`): one video per line, `{"video_dir": "<file>", "QA_pairs": [{"question", "answer",
    "sub_category", ...}, ...]}`. The paper asks each question of the video directly (QA), on 100
    videos with all their QA pairs.

    Args:
        annotations (`str` or list of `str`): The QA JSONL file(s).
        videos (`str`): Folder of VidCapBench videos.
        sample_size (`int` or `None`, *optional*, defaults to 100): *Videos* kept.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "qa"), all QA pairs of the sampled videos.

    Example:
        ```python
        >>> ds = read_vidcapbench("VidCapBench-AE_QA.jsonl", "vidcapbench/videos")
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    out = RowBuilder("vidcapbench", "qa", videos, missing_videos)
    for path, rec in iter_records(annotations):
        name = rec.get("video_dir", rec.get("video"))
        if name is None or "QA_pairs" not in rec:
            raise ValueError(f"{path}: expected `video_dir` and `QA_pairs`, got {sorted(rec)}.")
        video = out.video(name)
        for i, qa in enumerate(rec["QA_pairs"]):
            out.add(f"{Path(name).stem}#{i}", video, qa["answer"], question=qa["question"])
    return out.dataset(sample_size, seed, unit=lambda r: r["video"])  # sample videos, keep all their pairs


def read_generic(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    sample_size: int | None = None,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """Any benchmark already written in the common schema, as JSONL (or JSON list).

    Each record needs `video` (relative to `videos`), `prompt`, `task` and `references` (or a
    single `reference`); `id`, `start`, `end`, `subset` and `benchmark` are optional. Useful for
    private test sets such as the small world's test split.

    Args:
        annotations (`str` or list of `str`): The JSONL/JSON file(s).
        videos (`str`): Folder of videos.
        sample_size (`int` or `None`, *optional*, defaults to None): Examples kept per subset.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema.

    Example:
        ```python
        >>> ds = read_generic("my_test_split.jsonl", "my_videos", sample_size=None)
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    out = RowBuilder("generic", "caption", videos, missing_videos)  # each record gives its own task
    for path in annotation_paths(annotations):
        for i, rec in enumerate(read_records(path)):
            require_fields(rec, ["video", "prompt", "task"], f"{path} record {i}")
            if rec["task"] not in {"caption", "qa"}:
                raise ValueError(f"{path} record {i}: `task` must be 'caption' or 'qa', got {rec['task']!r}.")
            refs = rec.get("references", rec.get("reference"))
            if refs is None:
                raise ValueError(f"{path} record {i}: needs `references` or `reference`.")
            id_, video = rec.get("id", f"{Path(path).stem}-{i}"), out.video(rec["video"])
            span = {"start": rec.get("start"), "end": rec.get("end")}  # seconds, or None: whole video
            row = out.row(id_, video, refs, task=rec["task"], prompt=rec["prompt"], **span)
            row.update(subset=rec.get("subset", "default"), benchmark=rec.get("benchmark", "generic"))
            out.rows.append(row)
    return out.dataset(sample_size, seed)
