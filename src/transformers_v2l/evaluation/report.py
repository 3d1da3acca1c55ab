"""From runner outputs to the paper's tables: scores, paired statistics, markdown and plots.

`evaluate_outputs` scores every output (token F1, and the LLM judge when one is given), pairs the
two conditions by example id, and computes for each benchmark the paired bootstrap CI of
Δ = V2L − Base with the NI/Eq decisions (`statistics.py`). Benchmarks with subsets (VDC's caption
styles, CaReBench's subsets) get an aggregate row, the unweighted mean of their subsets as in
the paper's tables 1 and 4, plus a per-subset breakdown as in tables 2 and 3. Each table ends
with an "Average" row, the unweighted mean over its benchmarks, bootstrapped stratified by
subset. Examples whose judgment failed (or that only one condition has) are left out of that
metric's pairs and counted in the table's `n` column and the notes.

Files written (each atomically): `report.md`, `results.json`, `scores.jsonl`, and per metric
`distributions_<metric>.png` (score histograms, base vs V2L) and `differences_<metric>.png`
(per-example paired differences with Δ, the CI and the margins).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import require
from ..training.utils import atomic_path, atomic_write_text
from .benchmarks import BENCHMARKS
from .metrics import token_f1_score
from .runner import load_outputs
from .statistics import MARGINS, PairedBootstrapResult, macro_paired_bootstrap

__all__ = ["EvaluationReport", "ResultRow", "evaluate_outputs", "render_markdown", "score_outputs"]

_METRIC_TITLES = {"judge": "LLM judge", "token_f1": "Token F1"}
_TASK_TITLES = {"caption": "Captioning", "qa": "Question answering"}


@dataclass
class ResultRow:
    """One line of a results table.

    Attributes:
        metric (`str`): "judge" or "token_f1".
        task (`str`): "caption" or "qa".
        benchmark (`str`): Benchmark key ("average" for the Average row).
        name (`str`): Display name, as in the paper.
        subset (`str` or `None`): The subset for breakdown rows; `None` for benchmark rows.
        result ([`PairedBootstrapResult`]): Means, Δ, CI and decisions.
        excluded (`int`): Examples left out (failed judgment or missing condition).

    Example:
        ```python
        >>> row = ResultRow(metric="token_f1", task="qa", benchmark="nextqa", name="NExT-QA", subset=None,
        ...                 result=paired_bootstrap([0.2, 0.4, 0.6], [0.3, 0.5, 0.7]))
        >>> print(render_markdown([row]))
        ```
    """

    metric: str
    task: str
    benchmark: str
    name: str
    subset: str | None
    result: PairedBootstrapResult
    excluded: int = 0

    def to_dict(self) -> dict:
        """JSON-serializable dictionary.

        Returns:
            `dict`: The fields, with `result` as `PairedBootstrapResult.to_dict()`.

        Example:
            ```python
            >>> json.dumps([row.to_dict() for row in report.rows])
            ```
        """
        return {k: v for k, v in self.__dict__.items() if k != "result"} | {"result": self.result.to_dict()}


@dataclass
class EvaluationReport:
    """Everything `evaluate_outputs` computed and wrote.

    Attributes:
        rows (`list[ResultRow]`): Benchmark, subset and average rows of every metric.
        markdown (`str`): The report text.
        files (`dict[str, Path]`): What was written, by kind.

    Example:
        ```python
        >>> report = evaluate_outputs("runs/vdc/outputs.jsonl", "runs/vdc", plots=False)
        >>> report.files["report"].read_text() == report.markdown
        True
        ```
    """

    rows: list[ResultRow]
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


def score_outputs(records: Sequence[dict], *, judge=None, judge_workers: int = 1) -> list[dict]:
    """Add `scores` (`token_f1`, and `judge` when a judge is given) to each runner record.

    Args:
        records (`Sequence[dict]`): Runner records (see `runner.py`).
        judge ([`LLMJudge`], *optional*): Scores each output against its references.
        judge_workers (`int`, *optional*, defaults to 1): Concurrent judge requests.

    Returns:
        `list[dict]`: Copies of the records with `scores` and, on judge failure, `judge_error`.

    Example:
        ```python
        >>> scored = score_outputs(load_outputs("runs/vdc/outputs.jsonl"))
        >>> scored[0]["scores"]["token_f1"]
        ```
    """
    scored = [dict(r) for r in records]
    for record in scored:
        record["scores"] = {"token_f1": token_f1_score(record["output"], record["references"])}
    if judge is not None:
        items = [
            {
                "task": r["task"],
                "prompt": r["prompt"],
                "candidate": r["output"],
                "references": r["references"],
            }
            for r in scored
        ]
        for record, judgment in zip(scored, judge.judge_many(items, num_workers=judge_workers)):
            record["scores"]["judge"] = judgment.score
            if judgment.error:
                record["judge_error"] = judgment.error
    return scored


def _pairs(scored: Sequence[dict], metric: str):
    """{(benchmark, task, subset): (base scores, v2l scores, excluded)}, paired by example id."""
    by_key: dict[tuple, dict[str, dict[str, float | None]]] = defaultdict(lambda: defaultdict(dict))
    for r in scored:
        key = (r.get("benchmark") or "generic", r["task"], r.get("subset") or "default")
        by_key[key][str(r["id"])][r["condition"]] = r["scores"].get(metric)
    out = {}
    for key, examples in by_key.items():
        base, v2l = [], []
        for example_id in sorted(examples):
            pair = examples[example_id]
            if pair.get("base") is not None and pair.get("v2l") is not None:
                base.append(pair["base"])
                v2l.append(pair["v2l"])
        out[key] = (base, v2l, len(examples) - len(base))
    return out


def _order(bench: str) -> tuple:
    return (list(BENCHMARKS).index(bench) if bench in BENCHMARKS else len(BENCHMARKS), bench)


def _rows_for_metric(scored, metric: str, *, n_resamples: int, seed: int) -> list[ResultRow]:
    opts = {"n_resamples": n_resamples, "seed": seed, "margin": MARGINS[metric]}
    pairs = {k: v for k, v in _pairs(scored, metric).items() if v[0]}
    rows: list[ResultRow] = []
    per_task: dict[str, list[list[tuple]]] = defaultdict(list)
    for bench, task in sorted({k[:2] for k in pairs}, key=lambda bt: (_order(bt[0]), bt[1])):
        info = BENCHMARKS.get(bench)
        name = info.name if info else bench
        subsets = sorted(
            (k[2] for k in pairs if k[:2] == (bench, task)),
            key=lambda s: (info.subsets.index(s) if info and s in info.subsets else 99, s),
        )
        groups = [pairs[(bench, task, s)] for s in subsets]
        if len(subsets) > 1:
            name = f"{name} (aggregate)"
            for subset, group in zip(subsets, groups):
                result = macro_paired_bootstrap([group[:2]], **opts)
                rows.append(ResultRow(metric, task, bench, name, subset, result, group[2]))
        result = macro_paired_bootstrap([g[:2] for g in groups], **opts)
        rows.append(ResultRow(metric, task, bench, name, None, result, sum(g[2] for g in groups)))
        per_task[task].append(groups)
    for task, benches in per_task.items():
        if len(benches) < 2:
            continue
        groups = [g[:2] for gs in benches for g in gs]
        weights = [1 / (len(benches) * len(gs)) for gs in benches for _ in gs]
        result = macro_paired_bootstrap(groups, weights=weights, **opts)
        excluded = sum(g[2] for gs in benches for g in gs)
        rows.append(ResultRow(metric, task, "average", "Average", None, result, excluded))
    return rows


def _yes(flag: bool | None) -> str:
    return "Y" if flag else "–"


def render_markdown(
    rows: Sequence[ResultRow], *, title: str = "Video2LoRA evaluation", notes: Sequence[str] = ()
) -> str:
    """Markdown tables in the shape of the paper's tables 1-4 (and 2-3 for subsets).

    Args:
        rows (`Sequence[ResultRow]`): From [`evaluate_outputs`].
        title (`str`, *optional*): The top heading.
        notes (`Sequence[str]`, *optional*): Extra bullet points under the tables.

    Returns:
        `str`: The report.

    Example:
        ```python
        >>> report = evaluate_outputs("runs/vdc/outputs.jsonl", "runs/vdc", plots=False)
        >>> print(render_markdown(report.rows, title="VDC, 100 videos"))
        ```
    """
    lines = [f"# {title}", ""]
    for metric in ("judge", "token_f1"):
        for task in ("caption", "qa"):
            table = [r for r in rows if r.metric == metric and r.task == task and r.subset is None]
            if not table:
                continue
            lines += [f"## {_METRIC_TITLES[metric]}: {_TASK_TITLES[task]}", ""]
            lines += [
                "| Benchmark | Base | V2L | Δ | CI | Eq | NI | n |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for r in table:
                res = r.result
                name = f"**{r.name}**" if r.benchmark == "average" else r.name
                lines.append(
                    f"| {name} | {res.base:.3f} | {res.v2l:.3f} | {res.delta:+.3f} | "
                    f"[{res.ci_low:+.3f}, {res.ci_high:+.3f}] | {_yes(res.equivalent)} | "
                    f"{_yes(res.non_inferior)} | {res.n} |"
                )
            lines.append("")
        breakdowns = dict.fromkeys((r.benchmark, r.task) for r in rows if r.metric == metric and r.subset)
        for bench, task in breakdowns:
            subset_rows = [
                r for r in rows if r.metric == metric and (r.benchmark, r.task) == (bench, task) and r.subset
            ]
            lines += [
                f"### {subset_rows[0].name.replace(' (aggregate)', '')} by subset ({_METRIC_TITLES[metric]})",
                "",
            ]
            lines += ["| Subset | Base | V2L (Δ) | n |", "|---|---|---|---|"]
            for r in subset_rows:
                label = r.subset.replace("_", " ").capitalize()
                res = r.result
                lines.append(f"| {label} | {res.base:.3f} | {res.v2l:.3f} ({res.delta:+.3f}) | {res.n} |")
            lines.append("")
    example = rows[0].result if rows else None
    lines += ["## How to read this", ""]
    lines.append(
        "- Base: the frozen model with the video in context. V2L: the same model with the generated "
        "adapter and no visual tokens. Δ = V2L − Base on the same examples."
    )
    if example is not None:
        lines.append(
            f"- CI: {example.confidence:.0%} paired bootstrap percentile interval of Δ "
            f"({example.n_resamples} resamples, seed {example.seed})."
        )
    lines.append(
        f"- NI (non-inferiority): CI lower bound > −δ. Eq (equivalence): CI inside (−δ, +δ). "
        f"δ = {MARGINS['token_f1']} for token F1, {MARGINS['judge']} for the judge score rescaled to [0, 1]."
    )
    lines.append("- Aggregate and Average rows are unweighted means of their subsets or benchmarks.")
    excluded = sum(r.excluded for r in rows if r.subset is None and r.benchmark != "average")
    if excluded:
        lines.append(
            f"- {excluded} example/metric pair(s) were left out (failed judgment or a missing condition)."
        )
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _plot(rows: Sequence[ResultRow], scored: Sequence[dict], metric: str, out_dir: Path) -> dict[str, Path]:
    require("matplotlib", "evaluation", "Plotting the report")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = [(r, _pairs(scored, metric)) for r in rows if r.metric == metric and r.benchmark != "average"]
    panels = []
    for row, pairs in groups:
        if row.subset is None and any(
            (r.benchmark, r.task) == (row.benchmark, row.task) and r.subset for r, _ in groups
        ):
            continue  # aggregate rows are drawn through their subsets
        keys = [k for k in pairs if k[:2] == (row.benchmark, row.task) and row.subset in (None, k[2])]
        base = np.concatenate([pairs[k][0] for k in keys]) if keys else np.array([])
        v2l = np.concatenate([pairs[k][1] for k in keys]) if keys else np.array([])
        label = row.name.replace(" (aggregate)", "") + (f": {row.subset}" if row.subset else "")
        panels.append((label, row.result, np.asarray(base, float), np.asarray(v2l, float)))
    files = {}
    if not panels:
        return files
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    title = _METRIC_TITLES[metric]
    bins = np.linspace(0, 1, 21)
    for kind in ("distributions", "differences"):
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
        for ax, (label, res, base, v2l) in zip(axes.flat, panels):
            if kind == "distributions":
                ax.hist(base, bins=bins, alpha=0.6, label=f"Base ({res.base:.3f})", color="tab:blue")
                ax.hist(v2l, bins=bins, alpha=0.6, label=f"V2L ({res.v2l:.3f})", color="tab:orange")
                ax.set_xlabel(title)
            else:
                ax.hist(v2l - base, bins=np.linspace(-1, 1, 41), color="tab:gray", alpha=0.8)
                ci_label = f"{res.confidence:.0%} CI of Δ"
                ax.axvspan(res.ci_low, res.ci_high, color="tab:green", alpha=0.3, label=ci_label, zorder=0)
                ax.axvline(res.delta, color="tab:green", label=f"Δ = {res.delta:+.3f}")
                for sign in (-1, 1):
                    margin_label = f"±δ = {MARGINS[metric]}" if sign > 0 else None
                    ax.axvline(
                        sign * MARGINS[metric],
                        color="tab:red",
                        linestyle="--",
                        linewidth=1,
                        label=margin_label,
                    )
                ax.set_xlabel(f"V2L − Base ({title})")
            ax.set_title(label, fontsize=10)
            ax.set_ylabel("examples")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        fig.suptitle(f"{title}: {'score distributions' if kind == 'distributions' else 'paired differences'}")
        fig.tight_layout()
        path = out_dir / f"{kind}_{metric}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        files[f"{kind}_{metric}"] = path
    return files


def evaluate_outputs(
    outputs: str | os.PathLike | Sequence[dict],
    out_dir: str | os.PathLike,
    *,
    judge=None,
    judge_workers: int = 1,
    n_resamples: int = 10_000,
    seed: int = 0,
    plots: bool = True,
    title: str = "Video2LoRA evaluation",
) -> EvaluationReport:
    """Score runner outputs and write the report: tables, JSON results, scores and plots.

    Args:
        outputs (`str`, `os.PathLike` or `Sequence[dict]`): The runner's JSONL file or its records.
        out_dir (`str` or `os.PathLike`): Folder for `report.md`, `results.json`, `scores.jsonl`
            and the PNG plots.
        judge ([`LLMJudge`], *optional*): Adds the judge metric; without it only token F1.
        judge_workers (`int`, *optional*, defaults to 1): Concurrent judge requests.
        n_resamples (`int`, *optional*, defaults to 10000): Bootstrap resamples.
        seed (`int`, *optional*, defaults to 0): Bootstrap seed.
        plots (`bool`, *optional*, defaults to True): Write the PNG plots (needs matplotlib).
        title (`str`, *optional*): Report heading.

    Returns:
        [`EvaluationReport`]: The rows, the markdown and the written files.

    Example:
        ```python
        >>> report = evaluate_outputs("runs/vdc/outputs.jsonl", "runs/vdc", judge=judge)
        >>> print(report.markdown)
        ```
    """
    if plots:
        require("matplotlib", "evaluation", "Plotting the report")  # fail before any work is done
    records = load_outputs(outputs) if isinstance(outputs, (str, os.PathLike)) else list(outputs)
    if not records:
        raise ValueError("No runner outputs to evaluate.")
    out = Path(out_dir)
    scored = score_outputs(records, judge=judge, judge_workers=judge_workers)
    metrics = (["judge"] if judge is not None else []) + ["token_f1"]
    rows = [row for m in metrics for row in _rows_for_metric(scored, m, n_resamples=n_resamples, seed=seed)]
    if not rows:
        raise ValueError("No example has outputs for both conditions: run both `base` and `v2l` first.")
    failures = sum(1 for r in scored if r.get("judge_error"))
    notes = (
        [f"{failures} judgment(s) failed (timeouts, server errors or malformed replies)."] if failures else []
    )
    markdown = render_markdown(rows, title=title, notes=notes)
    files = {"report": out / "report.md", "results": out / "results.json", "scores": out / "scores.jsonl"}
    atomic_write_text(files["results"], json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
    atomic_write_text(files["scores"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored))
    if plots:
        for metric in metrics:
            files.update(_plot(rows, scored, metric, out))
        images = [f"![{name}]({path.name})" for name, path in files.items() if path.suffix == ".png"]
        markdown += "\n## Plots\n\n" + "\n\n".join(images) + "\n"
    atomic_write_text(files["report"], markdown)
    return EvaluationReport(rows=rows, markdown=markdown, files=files)
