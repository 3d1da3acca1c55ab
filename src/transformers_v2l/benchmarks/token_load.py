"""Answer-time token load and peak memory, one fresh subprocess per condition.

Each condition runs in its own Python process (`common.run_isolated`), so its peak resident set size is
its own. Inside, a sampling thread records the peak RSS of each phase:

* `setup`: building the real-shape models (the same in every condition);
* `prepare`: the one-time work per video (internalization and merging, or the KV-cache prefill);
* `answer`: one question, first token.

Tokens are the answer-time input tokens: the whole prompt for the video in context, the question
only for Video2LoRA and the plain model; the KV-cache query feeds the question's tokens but attends over
the cached video prefix as well (`context_tokens`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import require
from .common import log_progress, machine_info, new_figure, run_isolated, save_figure, write_json

__all__ = ["TOKEN_CONDITIONS", "measure_condition", "plot_token_load", "run_token_load"]

TOKEN_CONDITIONS = ("plain", "video_in_context", "kv_cache", "v2l_unmerged", "v2l_merged")


@contextlib.contextmanager
def _peak_rss(record: dict[str, float], key: str, period: float = 0.01) -> Iterator[None]:
    psutil = require("psutil", "benchmarks", "Measuring peak memory")
    proc = psutil.Process(os.getpid())
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(period)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        record[key] = round(peak[0] / 2**30, 4)


def measure_condition(
    condition: str, preset: str = "500m", num_frames: int = 12, longest_edge: int = 384, tiny: bool = False
) -> dict[str, Any]:
    """Run one condition once (after one warm-up) and report tokens and per-phase peak RSS (GiB).

    Meant to run in a fresh process (`run_isolated`); it builds its own models.

    Args:
        condition: one of `TOKEN_CONDITIONS`.
        preset: real SmolVLM2 shape.
        num_frames: frames per video.
        longest_edge: frame resize target.
        tiny: use the tiny test model (smoke tests).

    Returns:
        `{"condition", "input_tokens", "context_tokens", "rss_gib": {"setup", "prepare", "answer"}}`.

    Example:
        ```python
        run_isolated("transformers_v2l.benchmarks.token_load:measure_condition", {"condition": "v2l_merged"})
        ```
    """
    import torch

    from ..injection import inject_lora, stack_adapters
    from .common import set_threads
    from .models import (
        BENCH_QUESTION,
        build_setup,
        first_token,
        model_tensors,
        question_suffix_length,
        random_video,
    )

    if condition not in TOKEN_CONDITIONS:
        raise ValueError(f"Unknown condition {condition!r}; choose from {TOKEN_CONDITIONS}.")
    set_threads()
    rss: dict[str, float] = {}
    with _peak_rss(rss, "setup"):
        setup = build_setup(preset, tiny=tiny, dtype=torch.float32 if tiny else torch.bfloat16)
    hn, vlm, processor = setup.hypernet, setup.vlm, setup.processor
    video = random_video(num_frames, 72, 128) if tiny else random_video(num_frames)
    settings = {"num_frames": num_frames, "longest_edge": longest_edge}
    query = dict(processor.query_inputs([BENCH_QUESTION]))
    context = int(query["input_ids"].shape[1])
    answer: Any
    with torch.no_grad(), _peak_rss(rss, "prepare"):
        if condition == "video_in_context":
            inputs = processor.video_in_context_inputs(video, BENCH_QUESTION, **settings)
            inputs.pop("video_metadata", None)
            tokens = context = int(inputs["input_ids"].shape[1])

            def answer():
                return first_token(vlm, inputs)
        elif condition == "kv_cache":
            inputs = processor.video_in_context_inputs(video, BENCH_QUESTION, **settings)
            inputs.pop("video_metadata", None)
            suffix = question_suffix_length(processor, BENCH_QUESTION)
            prefix = {
                k: (v[:, :-suffix] if k in ("input_ids", "attention_mask") else v) for k, v in inputs.items()
            }
            cache = vlm(**model_tensors(prefix, vlm), use_cache=True, logits_to_keep=1).cache
            del prefix
            question = {
                "input_ids": inputs["input_ids"][:, -suffix:],
                "attention_mask": inputs["attention_mask"],
            }
            tokens, context = suffix, int(inputs["input_ids"].shape[1])

            def answer():
                first_token(vlm, question, cache=cache)
                cache.crop(-suffix)
        elif condition in ("v2l_unmerged", "v2l_merged"):
            adapter = hn.internalize(video, **settings)
            tokens = context
            if condition == "v2l_merged":
                adapter.merge_into(vlm)

                def answer():
                    return first_token(vlm, query)
            else:
                lora = stack_adapters([adapter])

                def answer():
                    with inject_lora(hn.family, *lora):
                        return first_token(vlm, query)
        else:
            tokens = context

            def answer():
                return first_token(vlm, query)

    with torch.no_grad(), _peak_rss(rss, "answer"):
        start = time.perf_counter()
        answer()
        answer()
        seconds = (time.perf_counter() - start) / 2
    return {
        "condition": condition,
        "input_tokens": tokens,
        "context_tokens": context,
        "rss_gib": rss,
        "answer_seconds": seconds,
    }


def plot_token_load(results: dict[str, Any], path: str | Path) -> Path:
    """Two panels: answer-time input tokens (log) and peak RSS per phase, per condition.

    Args:
        results: the dictionary `run_token_load` returns (and writes as JSON).
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        import json
        from pathlib import Path

        results = json.loads(Path("benchmarks/results/tokens_500m.json").read_text())
        plot_token_load(results, "tokens.png")
        ```
    """
    fig, (ax_tokens, ax_rss) = new_figure(2, width=5.5)
    rows = [r for r in results["conditions"] if r.get("result")]
    names = [r["condition"] for r in rows]
    ax_tokens.bar(range(len(rows)), [r["result"]["input_tokens"] for r in rows], color="#48c")
    ax_tokens.set_yscale("log")
    ax_tokens.set_ylabel("answer-time input tokens")
    for i, r in enumerate(rows):
        ax_tokens.text(
            i,
            r["result"]["input_tokens"],
            str(r["result"]["input_tokens"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    width = 0.27
    for j, phase in enumerate(("setup", "prepare", "answer")):
        values = [r["result"]["rss_gib"][phase] for r in rows]
        ax_rss.bar([i + (j - 1) * width for i in range(len(rows))], values, width, label=phase)
    ax_rss.set_ylabel("peak RSS (GiB)")
    ax_rss.legend(fontsize=8)
    for ax in (ax_tokens, ax_rss):
        ax.set_xticks(range(len(rows)), [n.replace("_", "\n") for n in names], fontsize=8)
    s = results["settings"]
    fig.suptitle(
        f"{results['preset']}, {s['num_frames']} frames, {s['longest_edge']} px: token load and memory"
    )
    return save_figure(fig, path)


def run_token_load(
    preset: str = "500m",
    *,
    num_frames: int = 12,
    longest_edge: int = 384,
    conditions: tuple[str, ...] = TOKEN_CONDITIONS,
    memory_cap_gib: float = 10.0,
    out_dir: str | Path = "benchmarks/results",
    tiny: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark 3 (token load and memory); writes `tokens_<preset>.json` and `.png`.

    Args:
        preset: `"256m"` or `"500m"`.
        num_frames: frames per video.
        longest_edge: frame resize target.
        conditions: a subset of `TOKEN_CONDITIONS`.
        memory_cap_gib: a child above this resident set size is killed and recorded as such.
        out_dir: result folder.
        tiny: use the tiny test model (smoke tests).
        verbose: log progress.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_token_load("500m", num_frames=12)
        ```
    """
    rows = []
    with log_progress(f"tokens {preset}", verbose) as log:
        for condition in conditions:
            kwargs = {"condition": condition, "preset": preset, "num_frames": num_frames,
                      "longest_edge": longest_edge, "tiny": tiny}  # fmt: skip
            row = run_isolated(f"{__name__}:measure_condition", kwargs, memory_cap_gib=memory_cap_gib)
            rows.append({"condition": condition, **row})
            log(f"{condition}: {row['status']}, peak {row['peak_rss_gib']} GiB")
    name = "tiny" if tiny else preset
    ok = {r["condition"]: r["result"] for r in rows if r.get("result")}
    reduction = {}
    if "video_in_context" in ok:
        for c, r in ok.items():
            reduction[c] = ok["video_in_context"]["input_tokens"] / r["input_tokens"]
    results = {
        "benchmark": "tokens",
        "preset": name,
        "machine": machine_info(),
        "settings": {
            "num_frames": num_frames,
            "longest_edge": longest_edge,
            "memory_cap_gib": memory_cap_gib,
        },
        "conditions": rows,
        "token_reduction_vs_video_in_context": reduction,
    }
    out_dir = Path(out_dir)
    write_json(out_dir / f"tokens_{name}.json", results)
    plot_token_load(results, out_dir / f"tokens_{name}.png")
    return results
