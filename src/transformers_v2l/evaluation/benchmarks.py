"""Readers for the paper's nine benchmarks, from their published annotation files.

Every reader takes local annotation file(s) and a folder of videos and returns a
`datasets.Dataset` with one schema (`benchmark_features()`):

| column | type | meaning |
|---|---|---|
| `id` | string | unique example id within the benchmark |
| `video` | string | path of the video file |
| `start`, `end` | float or None | the clip to use, in seconds (None: the whole video) |
| `prompt` | string | the text prompt given to both conditions |
| `references` | list of string | reference caption(s) or answer(s) |
| `task` | string | "caption" or "qa" |
| `subset` | string | caption style or subset ("default" when the benchmark has none) |
| `benchmark` | string | the benchmark's key in `BENCHMARKS` |

Sampling follows the paper (section 4.2): 500 examples per benchmark, or per subset/style for
VDC and CaReBench, drawn without replacement with a fixed seed and kept in file order;
VidCapBench samples 100 *videos* and keeps all their QA pairs. Pass `sample_size=None` for all.

The paper's appendix B (its exact prompts) is missing from our copy, so the prompts are ours, in
the paper's spirit, and all live in `PROMPT_TEMPLATES`. Where a benchmark's published format could
not be confirmed, the reader's docstring says what it assumes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._readers import (
    PathOrPaths,
    RowBuilder,
    annotation_paths,
    as_text,
    benchmark_features,
    check_choices,
    iter_records,
    read_records,
    require_fields,
)
from .benchmarks_qa import read_activitynet_qa, read_generic, read_nextqa, read_plm_sgqa, read_vidcapbench
from .prompts import PROMPT_TEMPLATES

if TYPE_CHECKING:
    import datasets

__all__ = [
    "BENCHMARKS",
    "PROMPT_TEMPLATES",
    "BenchmarkInfo",
    "benchmark_features",
    "load_benchmark",
    "read_activitynet_captions",
    "read_activitynet_qa",
    "read_carebench",
    "read_generic",
    "read_nextqa",
    "read_plm_rcap",
    "read_plm_rdcap",
    "read_plm_sgqa",
    "read_vdc",
    "read_vidcapbench",
]


# ----------------------------------------------------------------------------- captioning


def read_activitynet_captions(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    per_segment: bool = False,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """ActivityNet Captions (Krishna et al., 2017): dense paragraph captions of whole videos.

    Format (`val_1.json`, `val_2.json`): `{video_id: {"duration": s, "timestamps": [[s, e], ...],
    "sentences": [...]}}`. Each video is one example whose reference is its paragraph (the
    sentences in order); give both validation files to get two references per video. With
    `per_segment=True`, each (timestamp, sentence) becomes a clip-captioning example instead.
    Video files are looked up as `<id>.mp4` with and without the `v_` prefix.

    Args:
        annotations (`str` or list of `str`): One or more annotation JSON files.
        videos (`str`): Folder of videos.
        per_segment (`bool`, *optional*, defaults to False): One example per captioned segment.
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept (None: all).
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "caption").

    Example:
        ```python
        >>> ds = read_activitynet_captions("captions/val_1.json", "activitynet/videos")
        >>> ds[0]["references"][0][:40]
        'A young woman is seen standing in a room'
        ```
    """
    out = RowBuilder("activitynet_captions", "caption", videos, missing_videos)
    rows: dict[str, dict] = {}  # by id, so that each file adds its paragraph to the video's example
    paths = annotation_paths(annotations)
    for path in paths:
        data = read_records(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object {{video_id: {{timestamps, sentences}}}}.")
        for vid, entry in data.items():
            require_fields(entry, ["timestamps", "sentences"], f"{path} [{vid}]")
            if not per_segment:  # one example per video; each file adds a reference paragraph
                if vid not in rows:
                    rows[vid] = out.row(vid, out.video(vid), [])
                rows[vid]["references"].append(" ".join(s.strip() for s in entry["sentences"]))
                continue
            video = out.video(vid)  # segments differ between annotators: never merged across files
            prefix = vid if len(paths) == 1 else f"{vid}@{path.stem}"
            for i, ((start, end), sentence) in enumerate(zip(entry["timestamps"], entry["sentences"])):
                key = f"{prefix}#{i}"
                rows[key] = out.row(key, video, sentence, subset="segment", start=start, end=end)
    out.rows = list(rows.values())
    return out.dataset(sample_size, seed)


def read_plm_rcap(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    fps: float = 6.0,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """PLM-RCap (PerceptionLM's PLM-VideoBench, region captioning).

    Format (`rcap/plm_rcap_{val,test}` as .jsonl or .parquet): `uid, video, masklet_id,
    total_frames, caption, start_frame, end_frame`. Frames are converted to seconds with `fps`:
    the benchmark's SA-V videos are the 6 fps release (`videos_fps_6`). PLM's own protocol draws
    the masklet's box on the frames; we do not have the masklet metadata at this stage, so the
    prompt asks about "the main subject" of the clip instead (an assumption).

    Args:
        annotations (`str` or list of `str`): The annotation file(s).
        videos (`str`): Folder of SA-V videos.
        fps (`float`, *optional*, defaults to 6.0): Frame rate of the frame indices.
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "caption").

    Example:
        ```python
        >>> ds = read_plm_rcap("plm/rcap/plm_rcap_test.jsonl", "sav/videos_fps_6")
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    out = RowBuilder("plm_rcap", "caption", videos, missing_videos)
    for _, rec in iter_records(annotations, ["uid", "video", "caption", "start_frame", "end_frame"]):
        start, end = rec["start_frame"] / fps, rec["end_frame"] / fps  # frame indices -> seconds
        out.add(rec["uid"], out.video(rec["video"]), rec["caption"], start=start, end=end)
    return out.dataset(sample_size, seed)


def read_plm_rdcap(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """PLM-RDCap (PLM-VideoBench, region dense captioning) over whole videos.

    Format (`rdcap/plm_rdcap_{val,test}.jsonl` or .parquet): `uid, video, masklet_id,
    total_frames, dense_captions: [{start_frame, end_frame, caption}, ...]`. The reference is the
    dense captions in temporal order, one per line, without frame numbers (our protocol scores
    text, not temporal localization). As for RCap, the prompt names "the main subject" because
    no box is drawn (an assumption).

    Args:
        annotations (`str` or list of `str`): The annotation file(s).
        videos (`str`): Folder of SA-V videos.
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "caption").

    Example:
        ```python
        >>> ds = read_plm_rdcap("plm/rdcap/plm_rdcap_test.jsonl", "sav/videos_fps_6")
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    out = RowBuilder("plm_rdcap", "caption", videos, missing_videos)
    for _, rec in iter_records(annotations, ["uid", "video", "dense_captions"]):
        events = sorted(rec["dense_captions"], key=lambda e: (e.get("start_frame", 0), e.get("end_frame", 0)))
        reference = "\n".join(e["caption"].strip() for e in events)
        out.add(rec["uid"], out.video(rec["video"]), reference)
    return out.dataset(sample_size, seed)


_VDC_STYLES = ("short", "detailed", "camera", "background", "main_object")


def read_vdc(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    styles: Sequence[str] = _VDC_STYLES,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """VDC (AuroraCap's Video Detailed Captions), five caption styles as subsets.

    Format (`VDC_1k.jsonl`): one video per line with `video_id`, `video_name` (file name) and
    `short_caption`, `detailed_caption`, `camera_caption`, `background_caption`,
    `main_object_caption`. A nested `"captions": {"short_caption": ...}` object is accepted too.

    Args:
        annotations (`str` or list of `str`): `VDC_1k.jsonl`.
        videos (`str`): Folder of VDC videos.
        styles (`Sequence[str]`, *optional*): Which styles to read (default: all five).
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept *per style*.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "caption", subset = style).

    Example:
        ```python
        >>> ds = read_vdc("vdc/VDC_1k.jsonl", "vdc/videos", styles=["camera"])
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    check_choices("VDC style", styles, _VDC_STYLES)
    out = RowBuilder("vdc", "caption", videos, missing_videos)
    for path, rec in iter_records(annotations):
        captions = {**rec, **rec.get("captions", {})}
        vid = rec.get("video_id", rec.get("video_name"))
        if vid is None:
            raise ValueError(f"{path}: VDC record without `video_id` or `video_name`: {sorted(rec)}")
        video = out.video(rec.get("video_name") or vid)
        out.add_subsets(vid, video, [(style, captions.get(f"{style}_caption")) for style in styles])
    return out.dataset(sample_size, seed)


_CAREBENCH_SUBSETS = ("caption", "events", "objects", "spatial_caption", "temporal_caption")


def read_carebench(
    annotations: PathOrPaths,
    videos: str | os.PathLike,
    *,
    subsets: Sequence[str] = _CAREBENCH_SUBSETS,
    sample_size: int | None = 500,
    seed: int = 0,
    missing_videos: str = "error",
) -> datasets.Dataset:
    """CaReBench (Xu et al., 2025), five subsets: caption, events, objects, spatial and temporal captions.

    Assumed format (`json/metadata.json` of `MCG-NJU/CaReBench`; the CaReBench code reads `idx`,
    `video`, `caption`, `events` and `objects` from it, and the paper describes separate spatial
    and temporal captions, which we read from `spatial_caption` and `temporal_caption`): a list of
    `{"idx", "video", "caption", "spatial_caption", "temporal_caption", "events", "objects"}`.
    `events` and `objects` may be lists (of strings or of objects with a text field); they become
    one line per item. A subset whose field is absent from a record skips that record.

    Args:
        annotations (`str` or list of `str`): `metadata.json`.
        videos (`str`): Folder of CaReBench videos.
        subsets (`Sequence[str]`, *optional*): Which subsets to read (default: all five).
        sample_size (`int` or `None`, *optional*, defaults to 500): Examples kept *per subset*.
        seed (`int`, *optional*, defaults to 0): Sampling seed.
        missing_videos (`str`, *optional*, defaults to "error"): "error", "skip" or "keep".

    Returns:
        `datasets.Dataset`: Rows in the common schema (task "caption").

    Example:
        ```python
        >>> ds = read_carebench("carebench/json/metadata.json", "carebench/videos")
        >>> ds.column_names
        ['id', 'video', 'start', 'end', 'prompt', 'references', 'task', 'subset', 'benchmark']
        ```
    """
    check_choices("CaReBench subset", subsets, _CAREBENCH_SUBSETS)
    out = RowBuilder("carebench", "caption", videos, missing_videos)
    for _, rec in iter_records(annotations, ["video"]):
        vid = rec.get("idx", Path(rec["video"]).stem)
        out.add_subsets(vid, out.video(rec["video"]), [(s, rec.get(s)) for s in subsets], text=as_text)
    return out.dataset(sample_size, seed)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class BenchmarkInfo:
    """A benchmark's reader and how the report names it.

    Attributes:
        name (`str`): Display name, as in the paper's tables.
        task (`str`): "caption" or "qa".
        reader (`Callable`): The reader function.
        subsets (`tuple[str, ...]`): Subsets or styles ("default" when none).

    Example:
        ```python
        >>> BENCHMARKS["vdc"].name, BENCHMARKS["vdc"].task, BENCHMARKS["vdc"].subsets[:2]
        ('VDC', 'caption', ('short', 'detailed'))
        ```
    """

    name: str
    task: str
    reader: Callable
    subsets: tuple[str, ...] = ("default",)


BENCHMARKS: dict[str, BenchmarkInfo] = {
    "activitynet_captions": BenchmarkInfo("ActivityNet Captions", "caption", read_activitynet_captions),
    "plm_rdcap": BenchmarkInfo("PLM-RDCap", "caption", read_plm_rdcap),
    "plm_rcap": BenchmarkInfo("PLM-RCap", "caption", read_plm_rcap),
    "vdc": BenchmarkInfo("VDC", "caption", read_vdc, _VDC_STYLES),
    "carebench": BenchmarkInfo("CaReBench", "caption", read_carebench, _CAREBENCH_SUBSETS),
    "nextqa": BenchmarkInfo("NExT-QA (open)", "qa", read_nextqa),
    "activitynet_qa": BenchmarkInfo("ActivityNet-QA", "qa", read_activitynet_qa),
    "plm_sgqa": BenchmarkInfo("PLM-SGQA", "qa", read_plm_sgqa),
    "vidcapbench": BenchmarkInfo("VidCapBench", "qa", read_vidcapbench),
    "generic": BenchmarkInfo("Custom", "caption", read_generic),
}


def load_benchmark(name: str, annotations, videos, **kwargs):
    """Read a benchmark by its key in `BENCHMARKS`.

    Args:
        name (`str`): e.g. "vdc", "nextqa", "generic".
        annotations (`str` or list of `str`): Annotation file(s) or folder, as the reader expects.
        videos (`str`): Folder of videos.
        **kwargs: Passed to the reader (`sample_size`, `seed`, `missing_videos`, ...).

    Returns:
        `datasets.Dataset`: Rows in the common schema.

    Example:
        ```python
        >>> ds = load_benchmark("vdc", "VDC_1k.jsonl", "vdc/videos", seed=0)
        >>> sorted(set(ds["subset"]))
        ['background', 'camera', 'detailed', 'main_object', 'short']
        ```
    """
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}.")
    return BENCHMARKS[name].reader(annotations, videos, **kwargs)
