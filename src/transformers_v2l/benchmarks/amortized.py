"""Amortized time to first token over N questions about one video (the paper's figure 2b).

Per-question cost, setup included, from the medians of one interleaved run (`ttft.measure_query_conditions`):

* video in context: every question pays the whole video prefill, `video_in_context`;
* KV cache: `(kv_cache_build + N * kv_query) / N`, where the cache build is the video-in-context
  prefill itself when `kv_cache_build` was not measured separately (the same prefill with the question's
  ~25 tokens more: an upper bound, within about 1%);
* Video2LoRA: `(internalize + merge + N * v2l_merged) / N` (merged answering; the unmerged
  variant uses `v2l_unmerged` and no merge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import log_progress, machine_info, new_figure, save_figure, set_threads, write_json
from .models import BenchSetup, build_setup
from .ttft import measure_query_conditions

__all__ = ["AMORTIZED_CONDITIONS", "amortized_ttft", "plot_amortized", "run_amortized"]

AMORTIZED_CONDITIONS = ("video_in_context", "internalize", "kv_query", "v2l_merged", "v2l_unmerged", "merge")


def amortized_ttft(
    stats: dict[str, dict[str, Any]], questions: tuple[int, ...] = (1, 5, 10, 15)
) -> dict[str, Any]:
    """Per-question TTFT, setup included, for each number of questions.

    Args:
        stats: `{condition: {"median": seconds}}` with the `AMORTIZED_CONDITIONS`.
        questions: the numbers of questions `N`.

    Returns:
        `{"questions": [...], "video_in_context": [...], "kv_cache": [...], "video2lora_merged": [...],
        "video2lora_unmerged": [...], "speedup_vs_video_in_context": [...], "speedup_vs_kv_cache": [...]}`.

    Example:
        ```python
        amortized_ttft({"video_in_context": {"median": 12.8}, ...}, questions=(1, 5))
        ```
    """
    m = {name: value["median"] for name, value in stats.items()}
    out: dict[str, Any] = {"questions": list(questions)}
    out["video_in_context"] = [m["video_in_context"] for _ in questions]
    build = m.get("kv_cache_build", m["video_in_context"])
    out["kv_cache"] = [(build + n * m["kv_query"]) / n for n in questions]
    out["video2lora_merged"] = [
        (m["internalize"] + m.get("merge", 0.0) + n * m["v2l_merged"]) / n for n in questions
    ]
    if "v2l_unmerged" in m:
        out["video2lora_unmerged"] = [(m["internalize"] + n * m["v2l_unmerged"]) / n for n in questions]
    out["speedup_vs_video_in_context"] = [
        a / b for a, b in zip(out["video_in_context"], out["video2lora_merged"])
    ]
    out["speedup_vs_kv_cache"] = [a / b for a, b in zip(out["kv_cache"], out["video2lora_merged"])]
    return out


def plot_amortized(results: dict[str, Any], path: str | Path) -> Path:
    """Amortized TTFT against the number of questions, one line per method.

    Args:
        results: the dictionary `run_amortized` returns (and writes as JSON).
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        import json
        from pathlib import Path

        results = json.loads(Path("benchmarks/results/amortized_500m.json").read_text())
        plot_amortized(results, "amortized.png")
        ```
    """
    fig, axes = new_figure(1, width=5.5)
    ax = axes[0]
    curve = results["amortized"]
    styles = {
        "video_in_context": "#888",
        "kv_cache": "#c84",
        "video2lora_merged": "#2a6",
        "video2lora_unmerged": "#8a4",
    }
    for name, color in styles.items():
        if name in curve:
            ax.plot(curve["questions"], curve[name], marker="o", color=color, label=name.replace("_", " "))
    ax.set_xlabel("questions per video (N)")
    ax.set_ylabel("amortized time to first token (s)")
    ax.set_yscale("log")
    settings = results["settings"]
    ax.set_title(f"{results['preset']}, {settings['num_frames']} frames, {settings['longest_edge']} px (CPU)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def run_amortized(
    preset: str = "500m",
    *,
    num_frames: int = 12,
    longest_edge: int = 384,
    questions: tuple[int, ...] = (1, 5, 10, 15),
    repeats: int = 5,
    warmup: int = 1,
    out_dir: str | Path = "benchmarks/results",
    setup: BenchSetup | None = None,
    measurement: dict[str, Any] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark 2 (amortized TTFT); writes `amortized_<preset>.json` and `.png`.

    Args:
        preset: `"256m"` or `"500m"`.
        num_frames: frames per video.
        longest_edge: frame resize target.
        questions: numbers of questions per video.
        repeats: timed rounds per condition.
        warmup: untimed rounds.
        out_dir: result folder.
        setup: reuse models; built from `preset` otherwise.
        measurement: reuse a `measure_query_conditions` result that holds the needed conditions
            (`v2l bench all` shares the TTFT run).
        verbose: log progress.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_amortized("500m", questions=(1, 5, 10, 15))
        ```
    """
    set_threads()
    if measurement is None or not set(AMORTIZED_CONDITIONS) <= set(measurement["stats"]):
        setup = setup or build_setup(preset)
        with log_progress(f"amortized {setup.preset}", verbose) as log:
            measurement = measure_query_conditions(
                setup,
                num_frames=num_frames,
                longest_edge=longest_edge,
                conditions=AMORTIZED_CONDITIONS,
                repeats=repeats,
                warmup=warmup,
                log=log,
            )
    name = setup.preset if setup is not None else preset
    results = {
        "benchmark": "amortized",
        "preset": name,
        "machine": machine_info(),
        "settings": measurement["settings"],
        "stats": {k: v for k, v in measurement["stats"].items() if k in AMORTIZED_CONDITIONS},
        "amortized": amortized_ttft(measurement["stats"], questions),
    }
    out_dir = Path(out_dir)
    write_json(out_dir / f"amortized_{name}.json", results)
    plot_amortized(results, out_dir / f"amortized_{name}.png")
    return results
