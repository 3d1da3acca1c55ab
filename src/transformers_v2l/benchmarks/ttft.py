"""Query time to first token: video in context, KV cache, Video2LoRA (unmerged and merged), plain model.

All conditions run in one process on the same models, interleaved (see `common.interleaved`):

| condition            | what one sample is                                                                   |
|----------------------|--------------------------------------------------------------------------------------|
| `video_in_context`   | processor (frames given as arrays) + prefill of video + question + first token        |
| `internalize`        | `hn.internalize(video)`: processor + one encoder pass + the hypernetwork              |
| `kv_query`           | the question on top of the cached video prefix, first token (cache cropped back after) |
| `kv_cache_build`     | (optional) processor + prefill of the video prefix alone, keeping the KV cache         |
| `plain`              | the plain model, text-only question, first token                                      |
| `plain_frozen_lm_head` | the same with `lm_head.weight.requires_grad=False` (GUIDE.md section 3's CPU trap)  |
| `v2l_unmerged`       | the question with the adapter injected by forward hooks (`inject_lora`)               |
| `v2l_merged`         | the question with the adapter merged into the weights (`GeneratedLora.merge_into`)    |
| `merge` / `unmerge`  | the one-time cost of merging an adapter, and of restoring the weights                 |
| `answer_api`         | `hn.answer(adapter, question, max_new_tokens=1)`, the public path                     |
| `plain_generate`     | `vlm.generate(max_new_tokens=1)` on the same text-only prompt                         |

Text-only conditions compute the last position's logits only (`logits_to_keep=1`), as `generate` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..injection import inject_lora, stack_adapters
from .common import (
    interleaved,
    log_progress,
    machine_info,
    new_figure,
    ratios,
    save_figure,
    set_threads,
    timed,
    write_json,
)
from .models import (
    BENCH_QUESTION,
    BenchSetup,
    build_setup,
    first_token,
    model_tensors,
    question_suffix_length,
    random_video,
)

__all__ = ["ALL_QUERY_CONDITIONS", "QUERY_CONDITIONS", "measure_query_conditions", "plot_ttft", "run_ttft"]

QUERY_CONDITIONS = (
    "video_in_context",
    "internalize",
    "kv_query",
    "plain",
    "plain_frozen_lm_head",
    "v2l_unmerged",
    "v2l_merged",
    "merge",
    "unmerge",
    "answer_api",
    "plain_generate",
)
#: `kv_cache_build` (a prefill of the video prefix alone) is left out by default: it is the video-in-context
#: prefill minus the question's tokens, and `video_in_context` keeps its cache for `kv_query` already.
ALL_QUERY_CONDITIONS = (*QUERY_CONDITIONS, "kv_cache_build")


@torch.no_grad()
def measure_query_conditions(
    setup: BenchSetup,
    *,
    num_frames: int = 12,
    longest_edge: int | None = None,
    question: str = BENCH_QUESTION,
    conditions: tuple[str, ...] | list[str] = QUERY_CONDITIONS,
    repeats: int = 5,
    warmup: int = 1,
    log=None,
) -> dict[str, Any]:
    """Measure query-time conditions in one process, interleaved.

    Args:
        setup: models from `build_setup`.
        num_frames: frames of the (random, 720p) video.
        longest_edge: frame resize target; defaults to the processor's.
        question: the question asked.
        conditions: a subset of `ALL_QUERY_CONDITIONS` (default `QUERY_CONDITIONS`).
        repeats: timed rounds (median reported).
        warmup: untimed rounds.
        log: optional progress callable.

    Returns:
        `{"stats": {condition: summary}, "tokens": {...}, "settings": {...}}`; medians are in seconds.

    Example:
        ```python
        result = measure_query_conditions(build_setup("256m"), conditions=["plain", "v2l_merged"])
        result["stats"]["v2l_merged"]["median"] / result["stats"]["plain"]["median"]
        ```
    """
    hn, vlm, processor = setup.hypernet, setup.vlm, setup.processor
    longest_edge = longest_edge or processor.longest_edge
    video = random_video(num_frames)
    settings = {"num_frames": num_frames, "longest_edge": longest_edge}
    adapter = hn.internalize(video, **settings)
    lora_A, lora_B, scaling = stack_adapters([adapter])
    query = dict(processor.query_inputs([question]))
    video_inputs = processor.video_in_context_inputs(video, question, **settings)
    video_inputs.pop("video_metadata", None)
    suffix_len = question_suffix_length(processor, question)
    prefix = {
        k: (v[:, :-suffix_len] if k in ("input_ids", "attention_mask") else v)
        for k, v in video_inputs.items()
    }
    # one unpadded row: no mask needed on top of the cache (Qwen2.5-VL in transformers 5.24 cannot take the full
    # cache + question mask after a video prefix: its 3-D positions would cover the whole mask, not the question)
    suffix = {"input_ids": video_inputs["input_ids"][:, -suffix_len:]}
    prefix_len = prefix["input_ids"].shape[1]
    cache: dict[str, Any] = {}

    def video_in_context():
        inputs = processor.video_in_context_inputs(video, question, **settings)
        inputs.pop("video_metadata", None)
        out = vlm(**model_tensors(inputs, vlm), use_cache=True, logits_to_keep=1)
        out.logits[:, -1].argmax(-1)  # the first token
        out.cache.crop(-suffix_len)  # untimed use below: the KV cache of the video prefix
        cache["kv"] = out.cache

    def kv_cache_build():
        inputs = processor.video_in_context_inputs(video, question, **settings)
        inputs.pop("video_metadata", None)
        inputs = {
            k: (v[:, :-suffix_len] if k in ("input_ids", "attention_mask") else v) for k, v in inputs.items()
        }
        cache["kv"] = vlm(**model_tensors(inputs, vlm), use_cache=True, logits_to_keep=1).cache

    def kv_query():
        if "kv" not in cache:
            video_in_context()
        kv = cache["kv"]
        elapsed = timed(lambda: first_token(vlm, suffix, cache=kv))
        kv.crop(-suffix_len)  # drop the question again: the cache holds the video prefix only
        return elapsed

    def plain_frozen_lm_head():
        head = vlm.get_output_embeddings().weight
        state = head.requires_grad
        head.requires_grad_(False)
        try:
            return timed(lambda: first_token(vlm, query))
        finally:
            head.requires_grad_(state)

    def v2l_unmerged():
        with inject_lora(hn.family, lora_A, lora_B, scaling):
            first_token(vlm, query)

    def v2l_merged():
        with adapter.merge_into(vlm):
            return timed(lambda: first_token(vlm, query))

    def merge():
        handle = None

        def do_merge():
            nonlocal handle
            handle = adapter.merge_into(vlm)

        elapsed = timed(do_merge)
        handle.unmerge()
        return elapsed

    def unmerge():
        handle = adapter.merge_into(vlm)
        return timed(handle.unmerge)

    table = {
        "video_in_context": video_in_context,
        "internalize": lambda: hn.internalize(video, **settings),
        "kv_cache_build": kv_cache_build,
        "kv_query": kv_query,
        "plain": lambda: first_token(vlm, query),
        "plain_frozen_lm_head": plain_frozen_lm_head,
        "v2l_unmerged": v2l_unmerged,
        "v2l_merged": v2l_merged,
        "merge": merge,
        "unmerge": unmerge,
        "answer_api": lambda: hn.answer(adapter, question, max_new_tokens=1),
        "plain_generate": lambda: vlm.generate(**query, max_new_tokens=1, do_sample=False),
    }
    unknown = sorted(set(conditions) - set(table))
    if unknown:
        raise ValueError(f"Unknown conditions {unknown}; choose from {list(table)}.")
    stats = interleaved({c: table[c] for c in conditions}, repeats=repeats, warmup=warmup, progress=log)
    tokens = {
        "video_in_context": int(video_inputs["input_ids"].shape[1]),
        "video_tokens": int(num_frames * setup.tokens_per_frame),
        "kv_cached_prefix": int(prefix_len),
        "kv_query_new": int(suffix_len),
        "query_text_only": int(query["input_ids"].shape[1]),
    }
    return {
        "stats": stats,
        "tokens": tokens,
        "settings": {**settings, "question": question, "adapter_rank": adapter.rank, "repeats": repeats},
        "adapter_mib": adapter.nbytes / 2**20,
    }


def _ratios(stats: dict[str, Any]) -> dict[str, float]:
    pairs = {
        "v2l_merged_over_plain": ("v2l_merged", "plain"),
        "v2l_unmerged_over_plain": ("v2l_unmerged", "plain"),
        "plain_frozen_lm_head_over_plain": ("plain_frozen_lm_head", "plain"),
        "answer_api_over_plain_generate": ("answer_api", "plain_generate"),
        "internalize_over_video_in_context": ("internalize", "video_in_context"),
        "video_in_context_over_v2l_merged": ("video_in_context", "v2l_merged"),
        "kv_query_over_plain": ("kv_query", "plain"),
        "kv_cache_build_over_video_in_context": ("kv_cache_build", "video_in_context"),
    }
    return {name: ratios(stats, a, b) for name, (a, b) in pairs.items() if a in stats and b in stats}


def plot_ttft(results: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of median query TTFT per condition (log scale), one panel per resolution.

    Args:
        results: the dictionary `run_ttft` returns (and writes as JSON).
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        import json
        from pathlib import Path

        results = json.loads(Path("benchmarks/results/ttft_500m.json").read_text())
        plot_ttft(results, "ttft.png")
        ```
    """
    runs = results["runs"]
    fig, axes = new_figure(len(runs), width=6.0)
    shown = ("video_in_context", "kv_query", "plain", "v2l_unmerged", "v2l_merged", "plain_frozen_lm_head")
    for ax, run in zip(axes, runs):
        names = [c for c in shown if c in run["stats"]]
        values = [run["stats"][c]["median"] for c in names]
        ax.bar(
            range(len(names)), values, color=["#888", "#c84", "#48c", "#8a4", "#2a6", "#c44"][: len(names)]
        )
        ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("median time to first token (s)")
        ax.set_title(
            f"{results['preset']}, {run['settings']['num_frames']} frames, {run['settings']['longest_edge']} px"
        )
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
    return save_figure(fig, path)


def run_ttft(
    preset: str = "500m",
    *,
    resolutions: tuple[int, ...] = (384, 512),
    num_frames: int = 12,
    repeats: int = 5,
    warmup: int = 1,
    out_dir: str | Path = "benchmarks/results",
    setup: BenchSetup | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark 1 (query TTFT) at each resolution; writes `ttft_<preset>.json` and `.png`.

    Args:
        preset: `"256m"` or `"500m"` (real shapes, random weights).
        resolutions: `longest_edge` values (frames are then squared to the processor's 512 px tile).
        num_frames: frames per video.
        repeats: timed rounds per condition.
        warmup: untimed rounds.
        out_dir: result folder.
        setup: reuse models (for tests); built from `preset` otherwise.
        verbose: log progress to stderr.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_ttft("500m", resolutions=(384,), out_dir="benchmarks/results")
        ```
    """
    set_threads()
    setup = setup or build_setup(preset)
    runs = []
    with log_progress(f"ttft {setup.preset}", verbose) as log:
        for edge in resolutions:
            log(f"{num_frames} frames at {edge} px")
            run = measure_query_conditions(
                setup, num_frames=num_frames, longest_edge=edge, repeats=repeats, warmup=warmup, log=log
            )
            run["ratios"] = _ratios(run["stats"])
            runs.append(run)
    results = {"benchmark": "ttft", "preset": setup.preset, "machine": machine_info(), "runs": runs}
    out_dir = Path(out_dir)
    write_json(out_dir / f"ttft_{setup.preset}.json", results)
    plot_ttft(results, out_dir / f"ttft_{setup.preset}.png")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resolutions", type=int, nargs="+", default=[384, 512])
    parser.add_argument("--frames", type=int, default=12)
