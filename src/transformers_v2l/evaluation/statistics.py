"""Paired bootstrap confidence intervals and the non-inferiority / equivalence decisions.

The paper (section 4.3) reports, for every benchmark, the mean score of the base model with the
video in context and of Video2LoRA on the *same* examples, the paired difference
Δ = mean(V2L − Base), a 95% paired-bootstrap confidence interval of Δ, and two decisions with a
margin δ (0.05 for token F1, 0.15 for the rescaled judge score):

* **NI (non-inferiority)**: the CI's lower bound is above −δ, so V2L is at most δ worse.
* **Eq (equivalence)**: the whole CI lies inside (−δ, +δ).

Both use the same 95% two-sided percentile CI, as in the paper's tables. (A textbook TOST
equivalence test at α = 0.05 would use a 90% CI; the paper's Eq column is consistent with the
95% CI, e.g. PLM-SGQA token F1 Δ = +0.145 [+0.131, +0.158] is NI but not Eq.) The bounds are
compared strictly, so a bound exactly on the margin fails.

The bootstrap resamples example indices with replacement (the same indices for both conditions,
which is what makes it *paired*), takes the mean difference of each resample, and reads the CI
off the percentiles of those means. It is seeded through `numpy.random.Generator`, so the same
inputs and seed always give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "MARGINS",
    "PairedBootstrapResult",
    "equivalent",
    "macro_paired_bootstrap",
    "non_inferior",
    "paired_bootstrap",
]

#: The paper's margins, by metric name.
MARGINS: dict[str, float] = {"token_f1": 0.05, "judge": 0.15}

_CHUNK = 1000  # resamples drawn at a time, to bound memory for large benchmarks


@dataclass(frozen=True)
class PairedBootstrapResult:
    """The paired comparison of two conditions on the same examples.

    Attributes:
        base (`float`): Mean score of the base condition.
        v2l (`float`): Mean score of the Video2LoRA condition.
        delta (`float`): `v2l - base` (the mean paired difference).
        ci_low (`float`): Lower bound of the percentile confidence interval of `delta`.
        ci_high (`float`): Upper bound of the percentile confidence interval of `delta`.
        n (`int`): Number of paired examples.
        n_resamples (`int`): Number of bootstrap resamples.
        confidence (`float`): Confidence level of the interval (0.95 by default).
        seed (`int`): Seed of the `numpy.random.Generator`.
        margin (`float` or `None`): The NI/Eq margin, when one was given.
        non_inferior (`bool` or `None`): The NI decision, when a margin was given.
        equivalent (`bool` or `None`): The Eq decision, when a margin was given.

    Example:
        ```python
        >>> result = paired_bootstrap([0.2, 0.4, 0.6], [0.3, 0.5, 0.7], margin=0.05)
        >>> result.n, round(result.delta, 3), result.non_inferior
        (3, 0.1, True)
        ```
    """

    base: float
    v2l: float
    delta: float
    ci_low: float
    ci_high: float
    n: int
    n_resamples: int
    confidence: float
    seed: int
    margin: float | None = None
    non_inferior: bool | None = None
    equivalent: bool | None = None

    def to_dict(self) -> dict:
        """Plain-Python dictionary (JSON-serializable).

        Returns:
            `dict`: Every field by name.

        Example:
            ```python
            >>> json.dumps(paired_bootstrap([0.2, 0.4], [0.3, 0.5]).to_dict())
            ```
        """
        return asdict(self)


def non_inferior(ci_low: float, margin: float) -> bool:
    """Non-inferiority: the CI's lower bound lies strictly above `-margin`.

    Args:
        ci_low (`float`): Lower bound of the CI of Δ = V2L − Base.
        margin (`float`): The non-inferiority margin δ > 0.

    Returns:
        `bool`: True when V2L is shown to be at most `margin` worse than the base.

    Example:
        ```python
        >>> non_inferior(-0.104, 0.15), non_inferior(-0.236, 0.15)
        (True, False)
        ```
    """
    if margin <= 0:
        raise ValueError(f"`margin` must be positive, got {margin}.")
    return bool(ci_low > -margin)


def equivalent(ci_low: float, ci_high: float, margin: float) -> bool:
    """Equivalence: the whole CI lies strictly inside `(-margin, +margin)`.

    Args:
        ci_low (`float`): Lower bound of the CI of Δ = V2L − Base.
        ci_high (`float`): Upper bound of the CI of Δ.
        margin (`float`): The equivalence margin δ > 0.

    Returns:
        `bool`: True when the difference is shown to be within ±`margin`.

    Example:
        ```python
        >>> equivalent(-0.019, 0.004, 0.05), equivalent(0.131, 0.158, 0.05)
        (True, False)
        ```
    """
    if ci_low > ci_high:
        raise ValueError(f"`ci_low` ({ci_low}) is above `ci_high` ({ci_high}).")
    return bool(non_inferior(ci_low, margin) and ci_high < margin)


def _check_pairs(base: Sequence[float], v2l: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    base_arr = np.asarray(base, dtype=np.float64)
    v2l_arr = np.asarray(v2l, dtype=np.float64)
    if base_arr.ndim != 1 or v2l_arr.ndim != 1:
        raise ValueError("`base` and `v2l` must be 1-D sequences of per-example scores.")
    if base_arr.shape != v2l_arr.shape:
        raise ValueError(
            f"`base` has {base_arr.size} scores but `v2l` has {v2l_arr.size}; a paired test needs "
            "one score per example in each condition, in the same order."
        )
    if base_arr.size == 0:
        raise ValueError("No paired scores: `base` and `v2l` are empty.")
    if not (np.isfinite(base_arr).all() and np.isfinite(v2l_arr).all()):
        raise ValueError("Scores must be finite numbers (drop failed judgments before the bootstrap).")
    return base_arr, v2l_arr


def _resampled_means(diffs: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        idx = rng.integers(0, diffs.size, size=(stop - start, diffs.size))
        means[start:stop] = diffs[idx].mean(axis=1)
    return means


def _check_options(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"`n_resamples` must be at least 1, got {n_resamples}.")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}.")


def _result(base, v2l, means, n, n_resamples, confidence, seed, margin) -> PairedBootstrapResult:
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    decisions = {}
    if margin is not None:
        decisions = {
            "margin": float(margin),
            "non_inferior": non_inferior(float(low), margin),
            "equivalent": equivalent(float(low), float(high), margin),
        }
    return PairedBootstrapResult(
        base=float(base),
        v2l=float(v2l),
        delta=float(v2l - base),
        ci_low=float(low),
        ci_high=float(high),
        n=int(n),
        n_resamples=int(n_resamples),
        confidence=float(confidence),
        seed=int(seed),
        **decisions,
    )


def paired_bootstrap(
    base: Sequence[float],
    v2l: Sequence[float],
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    margin: float | None = None,
) -> PairedBootstrapResult:
    """Paired bootstrap percentile CI of mean(v2l − base), with optional NI/Eq decisions.

    Args:
        base (`Sequence[float]`): Per-example scores of the base model (video in context).
        v2l (`Sequence[float]`): Per-example scores of Video2LoRA, in the same example order.
        n_resamples (`int`, *optional*, defaults to 10000): Bootstrap resamples.
        confidence (`float`, *optional*, defaults to 0.95): Two-sided confidence level.
        seed (`int`, *optional*, defaults to 0): Seed of `numpy.random.default_rng`.
        margin (`float`, *optional*): NI/Eq margin, e.g. `MARGINS["token_f1"]`. Without it the
            decisions are left as `None`.

    Returns:
        [`PairedBootstrapResult`]: Means, Δ, CI and (with a margin) the decisions.

    Example:
        ```python
        >>> result = paired_bootstrap([0.2, 0.4, 0.6], [0.3, 0.5, 0.7], margin=0.05)
        >>> round(result.delta, 3), round(result.ci_low, 3), round(result.ci_high, 3)
        (0.1, 0.1, 0.1)
        >>> result.non_inferior, result.equivalent
        (True, False)
        ```
    """
    _check_options(n_resamples, confidence)
    base_arr, v2l_arr = _check_pairs(base, v2l)
    rng = np.random.default_rng(seed)
    means = _resampled_means(v2l_arr - base_arr, n_resamples, rng)
    return _result(
        base_arr.mean(), v2l_arr.mean(), means, base_arr.size, n_resamples, confidence, seed, margin
    )


def macro_paired_bootstrap(
    groups: Sequence[tuple[Sequence[float], Sequence[float]]],
    *,
    weights: Sequence[float] | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    margin: float | None = None,
) -> PairedBootstrapResult:
    """Paired bootstrap of a macro average: the unweighted mean of several benchmarks' means.

    This is the "Average" row of the paper's tables (its Base column is the plain mean of the
    benchmark means). Each benchmark is resampled within itself (a stratified bootstrap), and
    each resample's statistic is the mean over benchmarks of the per-benchmark mean difference.

    Args:
        groups (`Sequence[tuple[Sequence[float], Sequence[float]]]`): `(base, v2l)` per-example
            scores of each benchmark.
        weights (`Sequence[float]`, *optional*): Weight of each group's mean (normalized to sum
            to 1). Defaults to equal weights. Nested averages use it, e.g. VDC's five styles
            each weigh 1/5 of VDC's share in an average over benchmarks.
        n_resamples (`int`, *optional*, defaults to 10000): Bootstrap resamples.
        confidence (`float`, *optional*, defaults to 0.95): Two-sided confidence level.
        seed (`int`, *optional*, defaults to 0): Seed of `numpy.random.default_rng`.
        margin (`float`, *optional*): NI/Eq margin.

    Returns:
        [`PairedBootstrapResult`]: Macro means, Δ and CI; `n` is the total number of examples.

    Example:
        ```python
        >>> result = macro_paired_bootstrap([([0.2, 0.4], [0.3, 0.5]), ([0.5, 0.7, 0.9], [0.4, 0.6, 0.8])])
        >>> round(result.base, 3), round(result.v2l, 3), round(result.delta, 3), result.n
        (0.5, 0.5, 0.0, 5)
        ```
    """
    _check_options(n_resamples, confidence)
    if not groups:
        raise ValueError("`groups` is empty: give at least one (base, v2l) pair of score lists.")
    pairs = [_check_pairs(base, v2l) for base, v2l in groups]
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(pairs),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"`weights` must be {len(pairs)} non-negative numbers with a positive sum.")
    w = w / w.sum()
    rng = np.random.default_rng(seed)
    means = np.zeros(n_resamples, dtype=np.float64)
    for weight, (base_arr, v2l_arr) in zip(w, pairs):
        means += weight * _resampled_means(v2l_arr - base_arr, n_resamples, rng)
    base_mean = float(sum(weight * b.mean() for weight, (b, _) in zip(w, pairs)))
    v2l_mean = float(sum(weight * v.mean() for weight, (_, v) in zip(w, pairs)))
    total = sum(b.size for b, _ in pairs)
    return _result(base_mean, v2l_mean, means, total, n_resamples, confidence, seed, margin)
