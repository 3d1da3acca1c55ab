"""Evaluate a Video2LoRA hypernetwork the way the paper does.

* `benchmarks`: readers for the nine benchmarks, into one `datasets` schema;
* `runner`: both conditions (video in context, generated adapter), batched and resumable;
* `metrics`: token F1 and exact match (also a local `evaluate` metric);
* `judge`: an LLM judge over any OpenAI-compatible endpoint, cached on disk;
* `statistics`: paired bootstrap CIs and the non-inferiority / equivalence decisions;
* `report`: the paper-style markdown tables and plots.

Optional dependencies (`datasets`, `evaluate`, `matplotlib`, `requests`) are imported only where
they are used; install them with `pip install 'transformers-v2l[evaluation]'`.
"""

from .benchmarks import BENCHMARKS, PROMPT_TEMPLATES, benchmark_features, load_benchmark
from .judge import RUBRIC_VERSION, JudgeCache, Judgment, LLMJudge, parse_judge_reply, rescale_score
from .metrics import exact_match_score, mean_token_f1, normalize_answer, token_f1_metric_path, token_f1_score
from .report import EvaluationReport, ResultRow, evaluate_outputs, render_markdown, score_outputs
from .runner import CONDITIONS, Video2LoraModel, load_outputs, run_generation
from .statistics import (
    MARGINS,
    PairedBootstrapResult,
    equivalent,
    macro_paired_bootstrap,
    non_inferior,
    paired_bootstrap,
)

__all__ = [
    "BENCHMARKS",
    "CONDITIONS",
    "MARGINS",
    "PROMPT_TEMPLATES",
    "RUBRIC_VERSION",
    "EvaluationReport",
    "JudgeCache",
    "Judgment",
    "LLMJudge",
    "PairedBootstrapResult",
    "ResultRow",
    "Video2LoraModel",
    "benchmark_features",
    "equivalent",
    "evaluate_outputs",
    "exact_match_score",
    "load_benchmark",
    "load_outputs",
    "macro_paired_bootstrap",
    "mean_token_f1",
    "non_inferior",
    "normalize_answer",
    "paired_bootstrap",
    "parse_judge_reply",
    "render_markdown",
    "rescale_score",
    "run_generation",
    "score_outputs",
    "token_f1_metric_path",
    "token_f1_score",
]
