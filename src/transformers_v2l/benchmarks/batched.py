"""Batched answering: 8 questions about 8 videos, each with its own adapter, in one batch.

Conditions (one batch of `batch` questions, greedy, exactly `new_tokens` tokens per answer):

| condition        | how                                                                                  |
|------------------|--------------------------------------------------------------------------------------|
| `per_row`        | `hn.answer(adapters, questions)`: every row its own adapter (forward hooks, two bmm)  |
| `shared_hooks`   | `hn.answer(adapter, questions)`: one adapter for the whole batch, same hooks          |
| `shared_merged`  | one adapter merged into the weights (`merge_into`), plain `generate`                  |
| `plain`          | the plain model (no adapter), for reference                                          |
| `peft_mixed`     | PEFT with the adapters loaded by name, `generate(adapter_names=[...])` (a second copy  |
|                  | of the base model; base weights left trainable as loaded, avoiding GUIDE.md's trap)   |

Throughput is generated tokens per second. The adapters come from the hypernetwork run on random
layer-wise features (timing does not depend on their values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import (
    interleaved,
    log_progress,
    machine_info,
    new_figure,
    save_figure,
    set_threads,
    timed,
    write_json,
)
from .common import ratios as common_ratios
from .models import BENCH_QUESTION, BenchSetup, build_setup

__all__ = ["BATCHED_CONDITIONS", "make_adapters", "measure_batched", "plot_batched", "run_batched"]

BATCHED_CONDITIONS = ("per_row", "shared_hooks", "shared_merged", "plain", "peft_mixed")


@torch.no_grad()
def make_adapters(setup: BenchSetup, count: int, *, context_tokens: int = 64, seed: int = 0) -> list:
    """`count` distinct adapters from the hypernetwork applied to random `[count, L, S, H]` features.

    Args:
        setup: models from `build_setup`.
        count: number of adapters.
        context_tokens: `S`, the length of the random feature sequence.
        seed: random seed.

    Returns:
        A list of `GeneratedLora`.

    Example:
        ```python
        adapters = make_adapters(build_setup("256m"), 8)  # one adapter per batch row
        ```
    """
    hn = setup.hypernet
    config = hn.config
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(
        count, config.num_hidden_layers, context_tokens, config.hidden_size, generator=generator
    )
    output = hn(context_features=features.to(hn.dtype))
    return hn.adapters_from_output(output, [{"video": f"random-{i}"} for i in range(count)])


def _peft_model(setup: BenchSetup, adapters: list):
    from peft import get_peft_model, set_peft_model_state_dict

    from ..testing import build_random_vlm

    vlm = setup.vlm
    copy = build_random_vlm(setup.preset, dtype=vlm.dtype) if setup.preset != "tiny" else None
    if copy is None:  # the tiny test model: copy the weights
        import copy as copy_module

        copy = copy_module.deepcopy(vlm)
    copy.config.image_token_id = vlm.config.image_token_id
    copy.generation_config = vlm.generation_config
    states = {name: p.requires_grad for name, p in copy.named_parameters()}
    names = [f"video{i}" for i in range(len(adapters))]
    model = get_peft_model(copy, adapters[0].config, adapter_name=names[0], autocast_adapter_dtype=False)
    for name, adapter in zip(names, adapters):
        if name != names[0]:
            model.add_adapter(name, adapter.config)
        state = {k: v.to(vlm.dtype) for k, v in adapter.to_peft_state_dict().items()}
        set_peft_model_state_dict(model, state, adapter_name=name)
    for name, param in model.base_model.model.named_parameters():  # PEFT froze the base: undo (GUIDE.md 3)
        if "lora_" not in name and name in states:
            param.requires_grad_(states[name])
    return model.eval(), names


@torch.no_grad()
def measure_batched(
    setup: BenchSetup,
    *,
    batch: int = 8,
    new_tokens: int = 16,
    question: str = BENCH_QUESTION,
    conditions: tuple[str, ...] | list[str] = BATCHED_CONDITIONS,
    repeats: int = 5,
    warmup: int = 1,
    log=None,
) -> dict[str, Any]:
    """Time one batch of `batch` questions, each about its own video, under every condition.

    Args:
        setup: models from `build_setup`.
        batch: questions (and adapters) per batch.
        new_tokens: tokens generated per answer (`min_new_tokens = max_new_tokens`).
        question: the question text (each row gets a numbered variant).
        conditions: a subset of `BATCHED_CONDITIONS`.
        repeats: timed rounds.
        warmup: untimed rounds.
        log: optional progress callable.

    Returns:
        `{"stats", "throughput_tokens_per_s", "ratios", "settings"}`.

    Example:
        ```python
        result = measure_batched(build_setup("256m"), conditions=["per_row", "shared_merged"])
        ```
    """
    hn, vlm = setup.hypernet, setup.vlm
    adapters = make_adapters(setup, batch)
    questions = [f"{question} ({i + 1})" for i in range(batch)]
    query = dict(setup.processor.query_inputs(questions))
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

    def shared_merged():
        with adapters[0].merge_into(vlm):  # merging is a one-time cost per adapter: not timed
            return timed(lambda: vlm.generate(**query, **gen))

    table = {
        "per_row": lambda: hn.answer(adapters, questions, **gen),
        "shared_hooks": lambda: hn.answer(adapters[0], questions, **gen),
        "shared_merged": shared_merged,
        "plain": lambda: vlm.generate(**query, **gen),
    }
    if "peft_mixed" in conditions:
        peft_model, names = _peft_model(setup, adapters)
        table["peft_mixed"] = lambda: peft_model.generate(**query, adapter_names=names, **gen)
    stats = interleaved({c: table[c] for c in conditions}, repeats=repeats, warmup=warmup, progress=log)
    tokens = batch * new_tokens
    throughput = {c: tokens / s["median"] for c, s in stats.items()}
    # throughput ratio a / b is the time ratio b / a
    ratios = {
        f"{c}_over_shared_merged": common_ratios(stats, "shared_merged", c)
        for c in stats
        if "shared_merged" in stats and c != "shared_merged"
    }
    if "shared_hooks" in stats and "per_row" in stats:
        ratios["per_row_over_shared_hooks"] = common_ratios(stats, "shared_hooks", "per_row")
    return {
        "stats": stats,
        "throughput_tokens_per_s": throughput,
        "ratios": ratios,
        "settings": {"batch": batch, "new_tokens": new_tokens, "prompt_tokens": int(query["input_ids"].shape[1]),
                     "adapter_rank": adapters[0].rank, "repeats": repeats},
    }  # fmt: skip


def plot_batched(results: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of generated tokens per second per condition.

    Args:
        results: the dictionary `run_batched` returns (and writes as JSON).
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        import json
        from pathlib import Path

        results = json.loads(Path("benchmarks/results/batched_500m.json").read_text())
        plot_batched(results, "batched.png")
        ```
    """
    fig, axes = new_figure(1, width=6.0)
    ax = axes[0]
    throughput = results["throughput_tokens_per_s"]
    names = list(throughput)
    ax.bar(range(len(names)), [throughput[n] for n in names], color="#48c")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("generated tokens per second")
    s = results["settings"]
    ax.set_title(f"{results['preset']}: {s['batch']} questions x {s['new_tokens']} tokens, one batch (CPU)")
    for i, n in enumerate(names):
        ax.text(i, throughput[n], f"{throughput[n]:.1f}", ha="center", va="bottom", fontsize=8)
    return save_figure(fig, path)


def run_batched(
    preset: str = "500m",
    *,
    batch: int = 8,
    new_tokens: int = 16,
    repeats: int = 5,
    warmup: int = 1,
    out_dir: str | Path = "benchmarks/results",
    setup: BenchSetup | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark 5 (batched answering); writes `batched_<preset>.json` and `.png`.

    Args:
        preset: `"256m"` or `"500m"`.
        batch: questions per batch, each about its own video.
        new_tokens: tokens generated per answer.
        repeats: timed rounds.
        warmup: untimed rounds.
        out_dir: result folder.
        setup: reuse models; built from `preset` otherwise.
        verbose: log progress.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_batched("500m", batch=8)
        ```
    """
    set_threads()
    setup = setup or build_setup(preset)
    with log_progress(f"batched {setup.preset}", verbose) as log:
        result = measure_batched(
            setup, batch=batch, new_tokens=new_tokens, repeats=repeats, warmup=warmup, log=log
        )
    results = {"benchmark": "batched", "preset": setup.preset, "machine": machine_info(), **result}
    out_dir = Path(out_dir)
    write_json(out_dir / f"batched_{setup.preset}.json", results)
    plot_batched(results, out_dir / f"batched_{setup.preset}.png")
    return results
