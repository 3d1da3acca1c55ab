"""Adapter diagnostics from the paper's appendices C and D, as library functions with plots.

* Appendix C, rank-direction ablation: keep the top-k, bottom-k or k random rank slices by the norm
  product `||A_r|| * ||B_r||`, or remove the top-k, and score each pruned adapter
  (`rank_direction_ablation`); how stable the rank ordering is across examples (`rank_order_consistency`).
* Appendix D, layer-wise adapter removal: zero one layer's update at a time and report the signed effect
  `S(without l) - S(full)` (`layer_removal`), next to the Frobenius norm `||Delta W_l||_F` of every layer
  (`frobenius_profile`).

Scores come from a callable, so any metric works (token F1 of generated answers, a judge). The paper's
score for appendix D, the best length-normalized teacher-forced log-probability over reference strings
(equations 10 and 11), is `teacher_forced_score`.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..adapter_ops import PRUNE_STRATEGIES
from ..lora import GeneratedLora
from .common import new_figure, save_figure

__all__ = [
    "frobenius_profile",
    "layer_removal",
    "plot_layer_removal",
    "plot_rank_ablation",
    "rank_direction_ablation",
    "rank_order_consistency",
    "teacher_forced_score",
    "zero_layer",
]

#: `score(example_index, adapter_or_None) -> float`; `None` means the zero adapter (the plain model)
Scorer = Callable[[int, GeneratedLora | None], float]


# ---- scores -------------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_forced_score(hn, adapter: GeneratedLora | None, prompt: str, references: Sequence[str]) -> float:
    """The paper's diagnostic score: `max_r (1/|r|) sum_t log P(r_t | r_<t, prompt)` with the adapter active.

    Args:
        hn: a `Video2LoraHypernetwork` (its base model and processor are used).
        adapter: the adapter, or `None` for the plain model.
        prompt: the question or captioning prompt.
        references: candidate reference strings.

    Returns:
        The best length-normalized log-probability (equation 11).

    Example:
        ```python
        teacher_forced_score(hn, adapter, "Describe the video.", ["A bunny wakes up."])
        ```
    """
    from ..injection import inject_lora, stack_adapters

    vlm, tokenizer = hn.vlm, hn.processor.tokenizer
    prompt_ids = hn.processor.query_inputs([prompt])["input_ids"][0]  # [P]
    best = float("-inf")
    for reference in references:
        ref_ids = torch.tensor(tokenizer(reference, add_special_tokens=False)["input_ids"], dtype=torch.long)
        if ref_ids.numel() == 0:
            continue
        ids = torch.cat([prompt_ids, ref_ids])[None]  # [1, P + T]
        context = (
            inject_lora(hn.family, *stack_adapters([adapter]))
            if adapter is not None
            else contextlib.nullcontext()
        )
        with context:
            logits = vlm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # [1, P + T, V]
        logprobs = logits[0, prompt_ids.numel() - 1 : -1].float().log_softmax(-1)  # [T, V]
        score = logprobs.gather(1, ref_ids[:, None]).mean().item()
        best = max(best, score)
    return best


# ---- appendix C ----------------------------------------------------------------------------------------
def rank_direction_ablation(
    adapters: Sequence[GeneratedLora],
    score: Scorer,
    *,
    budgets: Sequence[int] = (1, 2, 4, 8, 16),
    strategies: Sequence[str] = PRUNE_STRATEGIES,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict[str, Any]:
    """Score pruned adapters: top-k, bottom-k, random-k (mean over seeds) and remove-top-k (appendix C).

    Args:
        adapters: one adapter per example.
        score: `score(i, adapter)` for example `i`; called with `None` for the zero adapter.
        budgets: rank budgets `k` (those above an adapter's rank are skipped).
        strategies: a subset of `("top", "bottom", "random", "remove_top")`.
        seeds: seeds averaged for `"random"`.

    Returns:
        `{"budgets", "full", "zero", "curves": {strategy: [mean score per budget]},
        "per_example": {strategy: [[score per example] per budget]}}`; remove-top-k at `k = R` is the zero
        adapter.

    Example:
        ```python
        result = rank_direction_ablation(adapters, lambda i, a: token_f1(answer(a, q[i]), refs[i]))
        plot_rank_ablation(result, "rank_ablation.png")
        ```
    """
    unknown = set(strategies) - set(PRUNE_STRATEGIES)
    if unknown:
        raise ValueError(f"Unknown strategies {sorted(unknown)}; choose from {PRUNE_STRATEGIES}.")
    rank = min(a.rank for a in adapters)
    budgets = [k for k in budgets if 1 <= k <= rank]
    full = [score(i, a) for i, a in enumerate(adapters)]
    zero = [score(i, None) for i in range(len(adapters))]
    per_example: dict[str, list[list[float]]] = {}
    for strategy in strategies:
        rows = []
        for k in budgets:
            values = []
            for i, adapter in enumerate(adapters):
                if strategy == "remove_top" and k >= adapter.rank:
                    values.append(zero[i])
                elif strategy == "random":
                    values.append(
                        statistics.fmean(score(i, adapter.prune(k, strategy="random", seed=s)) for s in seeds)
                    )
                else:
                    values.append(score(i, adapter.prune(k, strategy=strategy)))
            rows.append(values)
        per_example[strategy] = rows
    return {
        "budgets": budgets,
        "rank": rank,
        "full": statistics.fmean(full),
        "zero": statistics.fmean(zero),
        "curves": {s: [statistics.fmean(v) for v in rows] for s, rows in per_example.items()},
        "per_example": per_example,
        "full_per_example": full,
        "zero_per_example": zero,
    }


def rank_order_consistency(adapters: Sequence[GeneratedLora]) -> dict[str, Any]:
    """How often each rank direction scores highest (and lowest) by `||A_r|| * ||B_r||`.

    Every `(example, layer, module)` votes for its top and bottom rank index; the paper found one direction
    on top in all examples.

    Args:
        adapters: one adapter per example, all of the same rank.

    Returns:
        `{"rank", "top_frequency": [R], "bottom_frequency": [R], "most_often_top", "most_often_bottom"}`.

    Example:
        ```python
        rank_order_consistency(hn.internalize(videos))["most_often_top"]
        ```
    """
    rank = adapters[0].rank
    top = torch.zeros(rank)
    bottom = torch.zeros(rank)
    votes = 0
    for adapter in adapters:
        for scores in adapter.rank_scores().values():  # [L, R]
            top += torch.bincount(scores.argmax(1), minlength=rank).float()
            bottom += torch.bincount(scores.argmin(1), minlength=rank).float()
            votes += scores.shape[0]
    top, bottom = top / votes, bottom / votes
    return {
        "rank": rank,
        "top_frequency": top.tolist(),
        "bottom_frequency": bottom.tolist(),
        "most_often_top": int(top.argmax()),
        "most_often_bottom": int(bottom.argmax()),
    }


def plot_rank_ablation(result: dict[str, Any], path: str | Path) -> Path:
    """Score against rank budget per strategy, with the full and zero adapters as lines (figure 6).

    Args:
        result: the dictionary `rank_direction_ablation` returns.
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        plot_rank_ablation(rank_direction_ablation(adapters, score), "rank_ablation.png")
        ```
    """
    fig, axes = new_figure(1, width=5.5)
    ax = axes[0]
    for strategy, values in result["curves"].items():
        ax.plot(result["budgets"], values, marker="o", label=strategy.replace("_", "-") + "-k")
    ax.axhline(result["full"], color="k", ls="--", lw=0.8, label="full adapter")
    ax.axhline(result["zero"], color="gray", ls=":", lw=0.8, label="zero adapter")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank budget k")
    ax.set_ylabel("score")
    ax.set_title("Rank-direction ablation (appendix C)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---- appendix D ----------------------------------------------------------------------------------------
def frobenius_profile(adapter: GeneratedLora) -> dict[str, list[float]]:
    """`||Delta W_l||_F = s ||B_l^T A_l||_F` for every layer and module, without forming `Delta W`.

    Uses `||B^T A||_F^2 = sum((A A^T) * (B B^T))` with the `R x R` Gram matrices.

    Args:
        adapter: a generated adapter.

    Returns:
        `{module: [L floats]}`.

    Example:
        ```python
        frobenius_profile(adapter)["down_proj"][:3]
        ```
    """
    out = {}
    for module in adapter.target_modules:
        a = adapter.lora_A[module].double()  # [L, R, d_in]
        b = adapter.lora_B[module].double()  # [L, R, d_out]
        gram = (a @ a.transpose(1, 2)) * (b @ b.transpose(1, 2))  # [L, R, R]
        out[module] = (abs(adapter.scaling) * gram.sum((1, 2)).clamp_min(0).sqrt()).tolist()
    return out


def zero_layer(adapter: GeneratedLora, layer: int) -> GeneratedLora:
    """The adapter with layer `layer`'s update removed (its `B` zeroed in every module).

    Args:
        adapter: the adapter.
        layer: the decoder layer whose update is removed.

    Returns:
        A copy of the adapter; the other layers are unchanged.

    Example:
        ```python
        without_first = zero_layer(adapter, 0)
        ```
    """
    lora_B = {}
    for module, tensor in adapter.lora_B.items():
        tensor = tensor.clone()
        tensor[layer] = 0
        lora_B[module] = tensor
    return GeneratedLora(
        lora_A=adapter.lora_A,
        lora_B=lora_B,
        scaling=adapter.scaling,
        base_model_name_or_path=adapter.base_model_name_or_path,
        base_model_type=adapter.base_model_type,
        metadata={**adapter.metadata, "removed_layer": layer},
    )


def layer_removal(
    adapters: Sequence[GeneratedLora], score: Scorer, *, layers: Sequence[int] | None = None
) -> dict[str, Any]:
    """Signed effect of removing each layer's update, `S(without l) - S(full)`, averaged over examples.

    Args:
        adapters: one adapter per example.
        score: `score(i, adapter)` for example `i` (for example `teacher_forced_score`).
        layers: layers to remove one at a time (default: all).

    Returns:
        `{"layers", "effect": [mean per layer], "effect_per_example", "full", "frobenius": {module: [mean per layer]}}`.

    Example:
        ```python
        result = layer_removal([adapter], lambda i, a: teacher_forced_score(hn, a, prompt, refs))
        plot_layer_removal(result, "layer_removal.png")
        ```
    """
    layers = list(range(adapters[0].num_layers)) if layers is None else list(layers)
    full = [score(i, a) for i, a in enumerate(adapters)]
    per_example = [
        [score(i, zero_layer(a, layer)) - full[i] for i, a in enumerate(adapters)] for layer in layers
    ]
    profiles = [frobenius_profile(a) for a in adapters]
    frobenius = {
        m: [statistics.fmean(p[m][layer] for p in profiles) for layer in layers]
        for m in adapters[0].target_modules
    }
    return {
        "layers": layers,
        "effect": [statistics.fmean(v) for v in per_example],
        "effect_per_example": per_example,
        "full": statistics.fmean(full),
        "frobenius": frobenius,
    }


def plot_layer_removal(result: dict[str, Any], path: str | Path) -> Path:
    """Two panels like figure 7: signed removal effect per layer, and `||Delta W_l||_F` per layer.

    Args:
        result: the dictionary `layer_removal` returns.
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        plot_layer_removal(layer_removal(adapters, score), "layer_removal.png")
        ```
    """
    fig, (ax_effect, ax_norm) = new_figure(2, width=5.0)
    layers = result["layers"]
    ax_effect.bar(layers, result["effect"], color=["#c44" if e < 0 else "#48c" for e in result["effect"]])
    ax_effect.axhline(0, color="k", lw=0.6)
    ax_effect.set_xlabel("layer")
    ax_effect.set_ylabel("S(without layer) - S(full)")
    ax_effect.set_title("Layer-wise adapter removal")
    for module, values in result["frobenius"].items():
        ax_norm.plot(layers, values, marker=".", label=module)
    ax_norm.set_xlabel("layer")
    ax_norm.set_ylabel("||Delta W||_F")
    ax_norm.set_title("Frobenius norm of the generated update")
    ax_norm.legend(fontsize=8)
    return save_figure(fig, path)
