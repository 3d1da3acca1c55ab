"""Long video: chunked internalization of a whole film in bounded memory, against the direct single pass.

* `chunked`: `internalize_chunked`'s streaming path over the film, `total_frames` frames in chunks of
  `chunk_frames`. One run records, after every chunk, the elapsed time, the frames done and the resident
  set size, so the time-versus-frames curve (linearity) and the memory bound come from the same run. The
  composed adapter is then merged and asked one question.
* `direct`: one encoder pass and one hypernetwork pass over all frames at once, for increasing frame counts,
  each in a fresh subprocess with a memory cap; the first count that hits the cap is recorded, and so is the
  frame count past which the prompt exceeds the text model's `max_position_embeddings` (the positions it
  was trained on: beyond them a direct pass degenerates even with enough memory).

Both run in subprocesses (`common.run_isolated`), so peak RSS is each run's own.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import require
from .common import log_progress, machine_info, new_figure, run_isolated, save_figure, write_json

__all__ = ["big_buck_bunny", "chunked_run", "direct_run", "plot_long_video", "run_long_video"]


MOVIEPY_SDIST = "moviepy==2.2.1"
_BBB_MEMBER = "docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip"


def big_buck_bunny(cache_dir: str | os.PathLike | None = None) -> Path:
    """The full Big Buck Bunny film (596 s, 1280x720 h264), from moviepy's source distribution on PyPI.

    Downloads the sdist once with `pip download --no-deps --no-binary moviepy` and extracts `bbb.mp4`.

    Args:
        cache_dir: where to keep it (default `$V2L_BENCH_CACHE` or `~/.cache/transformers-v2l/bench-assets`).

    Returns:
        The path of `bbb.mp4`.

    Example:
        ```python
        result = run_long_video(str(big_buck_bunny()), "500m")
        ```
    """
    import subprocess
    import sys
    import tarfile
    import zipfile

    root = Path(
        cache_dir or os.environ.get("V2L_BENCH_CACHE", "~/.cache/transformers-v2l/bench-assets")
    ).expanduser()
    target = root / "bbb.mp4"
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    sdist = next(root.glob("moviepy-*.tar.gz"), None)
    if sdist is None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            "moviepy",
            MOVIEPY_SDIST,
            "-d",
            str(root),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        sdist = next(root.glob("moviepy-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(_BBB_MEMBER))
        with zipfile.ZipFile(tar.extractfile(member)) as archive:
            name = next(n for n in archive.namelist() if n.endswith("resources/bbb.mp4"))
            tmp = target.with_suffix(".part")
            with archive.open(name) as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            os.replace(tmp, target)
    return target


class _RssSampler:
    """Peak resident set size of this process, sampled by a thread."""

    def __init__(self, period: float = 0.05):
        psutil = require("psutil", "benchmarks", "Measuring peak memory")
        self._proc = psutil.Process(os.getpid())
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(period)

    def now(self) -> int:
        return self._proc.memory_info().rss

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def chunked_run(
    video: str,
    total_frames: int = 1024,
    chunk_frames: int = 12,
    preset: str = "500m",
    longest_edge: int = 384,
    batch_size: int = 1,
    tiny: bool = False,
    trace_path: str | None = None,
) -> dict[str, Any]:
    """Internalize `video` chunk by chunk and record time and memory after every chunk.

    Args:
        video: path of the video file.
        total_frames: frames over the whole video (`plan_chunks` spreads them).
        chunk_frames: frames per chunk (the trained count).
        preset: real SmolVLM2 shape.
        longest_edge: frame resize target.
        batch_size: chunks per encoder pass.
        tiny: use the tiny test model (smoke tests).
        trace_path: if given, the trace so far is rewritten there (atomically) after every chunk.

    Returns:
        `{"chunks", "fps", "trace": [{"chunk", "frames", "seconds", "rss_gib"}], "peak_rss_gib", ...}`.

    Example:
        ```python
        result = run_isolated(
            "transformers_v2l.benchmarks.long_video:chunked_run", {"video": "film.mp4", "total_frames": 256}
        )
        ```
    """
    import torch

    from ..long_video import compose_chunks, iter_chunk_adapters, plan_chunks
    from ..video_io import probe_video
    from .common import set_threads
    from .models import BENCH_QUESTION, build_setup, first_token

    set_threads()
    with _RssSampler() as rss:
        setup = build_setup(
            preset, tiny=tiny, dtype=torch.float32 if tiny else torch.bfloat16, longest_edge=longest_edge
        )
        hn = setup.hypernet
        meta = probe_video(video)
        plan = plan_chunks(meta.duration, total_frames, chunk_frames)
        after_setup = rss.now()
        trace = []
        adapters = []
        start = time.perf_counter()
        frames = 0
        parts = iter_chunk_adapters(
            hn, video, chunk_frames=chunk_frames, chunks=plan["chunks"], fps=plan["fps"], batch_size=batch_size,
            longest_edge=longest_edge,
        )  # fmt: skip
        for index, adapter in enumerate(parts):
            adapters.append(adapter)
            frames += len(adapter.metadata.get("frame_indices", []))
            trace.append({"chunk": index + 1, "frames": frames, "seconds": time.perf_counter() - start,
                          "rss_gib": rss.now() / 2**30})  # fmt: skip
            if trace_path:
                write_json(
                    trace_path, {"chunks": plan["chunks"], "peak_rss_gib": rss.peak / 2**30, "trace": trace}
                )
        internalize_seconds = time.perf_counter() - start
        composed = compose_chunks(adapters, chunk_frames=chunk_frames)
        del adapters
        compose_seconds = time.perf_counter() - start - internalize_seconds
        query = dict(setup.processor.query_inputs([BENCH_QUESTION]))
        with torch.no_grad():
            merge_start = time.perf_counter()
            handle = composed.merge_into(setup.vlm)
            merge_seconds = time.perf_counter() - merge_start
            first_token(setup.vlm, query)  # warm-up
            answer_start = time.perf_counter()
            first_token(setup.vlm, query)
            answer_seconds = time.perf_counter() - answer_start
            handle.unmerge()
    return {
        "video": str(video),
        "video_duration_s": meta.duration,
        "total_frames_requested": total_frames,
        "frames": frames,
        "chunks": plan["chunks"],
        "fps": plan["fps"],
        "chunk_frames": chunk_frames,
        "longest_edge": longest_edge,
        "tokens_per_frame": setup.tokens_per_frame,
        "trace": trace,
        "internalize_seconds": internalize_seconds,
        "compose_seconds": compose_seconds,
        "composed_rank": composed.rank,
        "composed_mib": composed.nbytes / 2**20,
        "merge_seconds": merge_seconds,
        "answer_ttft_merged_seconds": answer_seconds,
        "rss_after_setup_gib": after_setup / 2**30,
        "peak_rss_gib": rss.peak / 2**30,
    }


def direct_run(
    video: str, num_frames: int, preset: str = "500m", longest_edge: int = 384, tiny: bool = False
) -> dict[str, Any]:
    """Internalize `num_frames` frames of `video` in one encoder pass and one hypernetwork pass.

    Args:
        video: path of the video file.
        num_frames: frames sampled over the whole video.
        preset: real SmolVLM2 shape.
        longest_edge: frame resize target.
        tiny: use the tiny test model (smoke tests).

    Returns:
        `{"frames", "sequence_length", "seconds", "peak_rss_gib", "exceeds_positions"}`.

    Example:
        ```python
        result = run_isolated("transformers_v2l.benchmarks.long_video:direct_run", {"video": "film.mp4", "num_frames": 48})
        ```
    """
    import torch

    from ..video_io import load_video, probe_video
    from .common import set_threads
    from .models import build_setup

    set_threads()
    with _RssSampler() as rss:
        setup = build_setup(
            preset, tiny=tiny, dtype=torch.float32 if tiny else torch.bfloat16, longest_edge=longest_edge
        )
        hn = setup.hypernet
        meta = probe_video(video)
        fps = (num_frames + 0.5) / meta.duration
        after_setup = rss.now()
        start = time.perf_counter()
        frames, meta = load_video(
            video, num_frames=num_frames, target_fps=fps, skip_secs=0.0, compute_sha256=False
        )
        inputs = setup.processor.internalization_inputs(
            [(frames, meta)], num_frames=num_frames, longest_edge=longest_edge
        )
        inputs.pop("video_metadata")
        del frames
        length = int(inputs["input_ids"].shape[1])
        with torch.no_grad():
            features, mask = hn.extract_features(**inputs)
            del inputs
            output = hn(context_features=features, context_attention_mask=mask)
        seconds = time.perf_counter() - start
        del features, output
    max_positions = setup.vlm.config.text_config.max_position_embeddings
    return {
        "frames": len(meta.frame_indices),
        "sequence_length": length,
        "max_position_embeddings": max_positions,
        "exceeds_positions": length > max_positions,
        "seconds": seconds,
        "rss_after_setup_gib": after_setup / 2**30,
        "peak_rss_gib": rss.peak / 2**30,
    }


def _linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    import numpy as np

    slope, intercept = np.polyfit(xs, ys, 1)
    predicted = np.polyval([slope, intercept], xs)
    residual = float(((np.asarray(ys) - predicted) ** 2).sum())
    total = float(((np.asarray(ys) - np.mean(ys)) ** 2).sum()) or 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": 1.0 - residual / total}


def plot_long_video(results: dict[str, Any], path: str | Path) -> Path:
    """Two panels: time against frames (chunked trace and direct passes), and peak RSS against frames.

    Args:
        results: the dictionary `run_long_video` returns (and writes as JSON).
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        import json
        from pathlib import Path

        results = json.loads(Path("benchmarks/results/long_video_500m.json").read_text())
        plot_long_video(results, "long_video.png")
        ```
    """
    fig, (ax_time, ax_rss) = new_figure(2, width=5.5)
    chunked = results.get("chunked", {}).get("result")
    if chunked:
        trace = chunked["trace"]
        ax_time.plot(
            [t["frames"] for t in trace], [t["seconds"] for t in trace], label="chunked (cumulative)"
        )
        ax_rss.plot(
            [t["frames"] for t in trace],
            [t["rss_gib"] for t in trace],
            label="chunked (RSS after each chunk)",
        )
        ax_rss.axhline(
            chunked["peak_rss_gib"],
            ls=":",
            color="C0",
            label=f"chunked peak {chunked['peak_rss_gib']:.2f} GiB",
        )
    direct = [d for d in results.get("direct", []) if d.get("result")]
    if direct:
        ax_time.plot(
            [d["result"]["frames"] for d in direct],
            [d["result"]["seconds"] for d in direct],
            "s-",
            label="direct single pass",
        )
        ax_rss.plot(
            [d["result"]["frames"] for d in direct],
            [d["result"]["peak_rss_gib"] for d in direct],
            "s-",
            label="direct peak",
        )
    for d in results.get("direct", []):
        if d.get("status") == "memory_cap":
            ax_rss.plot(
                [d["frames"]],
                [d["peak_rss_gib"]],
                "rx",
                ms=10,
                label=f"direct {d['frames']} frames: killed at cap",
            )
    cap = results["settings"]["memory_cap_gib"]
    ax_rss.axhline(cap, color="red", lw=0.8, label=f"cap {cap} GiB")
    ax_time.set_xlabel("frames")
    ax_time.set_ylabel("seconds")
    ax_rss.set_xlabel("frames")
    ax_rss.set_ylabel("resident set size (GiB)")
    for ax in (ax_time, ax_rss):
        ax.legend(fontsize=7)
    threads = results.get("settings", {}).get("threads", results["machine"].get("torch_threads"))
    fig.suptitle(f"{results['preset']}: long-video internalization (CPU, {threads} thread(s))")
    return save_figure(fig, path)


def run_long_video(
    video: str,
    preset: str = "500m",
    *,
    total_frames: int = 1024,
    chunk_frames: int = 12,
    longest_edge: int = 384,
    direct_frames: tuple[int, ...] = (12, 24, 48, 96, 192),
    memory_cap_gib: float = 10.0,
    skip_chunked: bool = False,
    out_dir: str | Path = "benchmarks/results",
    tiny: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark 6 (long video); writes `long_video_<preset>.json` and `.png`.

    Args:
        video: path of a long video (the full Big Buck Bunny film, see docs/performance.md).
        preset: `"256m"` or `"500m"`.
        total_frames: frames for the chunked run.
        chunk_frames: frames per chunk.
        longest_edge: frame resize target.
        direct_frames: frame counts for direct single passes, in increasing order (stops at the first cap).
        memory_cap_gib: resident-set cap of every subprocess.
        skip_chunked: only run the direct passes.
        out_dir: result folder.
        tiny: use the tiny test model (smoke tests).
        verbose: log progress.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_long_video("bbb.mp4", total_frames=1024)
        ```
    """
    name = "tiny" if tiny else preset
    out_dir = Path(out_dir)
    results: dict[str, Any] = {
        "benchmark": "long_video",
        "preset": name,
        "machine": machine_info(),
        "settings": {"video": str(video), "total_frames": total_frames, "chunk_frames": chunk_frames,
                     "longest_edge": longest_edge, "memory_cap_gib": memory_cap_gib,
                     "threads": int(os.environ.get("V2L_BENCH_THREADS", "2"))},
        "direct": [],
    }  # fmt: skip
    common = {"video": str(video), "preset": preset, "longest_edge": longest_edge, "tiny": tiny}
    with log_progress(f"long-video {name}", verbose) as log:
        for count in direct_frames:
            row = run_isolated(
                f"{__name__}:direct_run", {**common, "num_frames": count}, memory_cap_gib=memory_cap_gib
            )
            results["direct"].append({"frames": count, **row})
            log(f"direct {count} frames: {row['status']}, peak {row['peak_rss_gib']} GiB, {row['wall_s']} s")
            write_json(out_dir / f"long_video_{name}.json", results)
            if row["status"] != "ok":
                break
        if not skip_chunked:
            kwargs = {**common, "total_frames": total_frames, "chunk_frames": chunk_frames,
                      "trace_path": str(out_dir / f"long_video_{name}.trace.json")}  # fmt: skip
            row = run_isolated(
                f"{__name__}:chunked_run", kwargs, memory_cap_gib=memory_cap_gib, timeout_s=4 * 3600
            )
            results["chunked"] = row
            log(
                f"chunked {total_frames} frames: {row['status']}, peak {row['peak_rss_gib']} GiB, {row['wall_s']} s"
            )
            if row.get("result"):
                trace = row["result"]["trace"]
                results["chunked_fit"] = _linear_fit(
                    [t["frames"] for t in trace], [t["seconds"] for t in trace]
                )
                marks = {}
                for mark in (128, 256, 512, 1024):
                    done = [t for t in trace if t["frames"] >= mark]
                    if done:
                        marks[str(mark)] = {"frames": done[0]["frames"], "seconds": done[0]["seconds"]}
                results["chunked_checkpoints"] = marks
    ok = [d["result"] for d in results["direct"] if d.get("result")]
    if len(ok) >= 2:
        fit = _linear_fit([d["frames"] for d in ok], [d["peak_rss_gib"] for d in ok])
        results["direct_memory_fit"] = fit
        results["direct_predicted_frames_at_cap"] = (
            (memory_cap_gib - fit["intercept"]) / fit["slope"] if fit["slope"] > 0 else None
        )
    if ok:
        per_frame = ok[-1]["sequence_length"] / ok[-1]["frames"]
        results["direct_frames_exceeding_positions"] = int(ok[-1]["max_position_embeddings"] / per_frame) + 1
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    write_json(out_dir / f"long_video_{name}.json", results)
    plot_long_video(results, out_dir / f"long_video_{name}.png")
    return results
