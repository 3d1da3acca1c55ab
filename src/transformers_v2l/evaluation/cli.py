"""`v2l eval`: read a benchmark, generate both conditions, score them and write the report.

```bash
v2l eval --benchmark vdc --annotations VDC_1k.jsonl --videos vdc/videos \
    --hypernetwork my-org/video2lora-smolvlm2-500m --out runs/vdc \
    --judge-url http://127.0.0.1:8000 --judge-model Qwen/Qwen3-30B-A3B
```

Outputs land in `--out`: `outputs.jsonl` (resumable generations), `report.md`, `results.json`,
`scores.jsonl` and the PNG plots; judge replies are cached under `--out/judge-cache` unless
`--judge-cache` says otherwise. Run the same command again to resume after a crash.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_eval_subparser", "run_eval"]


def add_eval_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the `eval` subcommand to the `v2l` parser.

    Args:
        subparsers: The object returned by `ArgumentParser.add_subparsers`.

    Returns:
        `argparse.ArgumentParser`: The `eval` parser (its `func` default is [`run_eval`]).

    Example:
        ```python
        parser = argparse.ArgumentParser(prog="v2l")
        add_eval_subparser(parser.add_subparsers())
        args = parser.parse_args(["eval", "--benchmark", "nextqa", "--annotations", "val.csv",
                                  "--videos", "videos", "--out", "out"])
        ```
    """
    from ..cli_args import non_negative_int, positive_int
    from .benchmarks import BENCHMARKS

    parser = subparsers.add_parser(
        "eval",
        help="Evaluate a hypernetwork against the video-in-context base model on a benchmark.",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS), help="Benchmark reader.")
    parser.add_argument("--annotations", required=True, nargs="+", help="Annotation file(s) or folder.")
    parser.add_argument("--videos", required=True, help="Folder of the benchmark's videos.")
    parser.add_argument(
        "--hypernetwork", help="Hypernetwork folder or Hub repo (default: the embedded tiny-world model)."
    )
    parser.add_argument("--out", required=True, help="Output folder.")
    parser.add_argument(
        "--judge-url", help="OpenAI-compatible server root for the LLM judge (omit: token F1 only)."
    )
    parser.add_argument("--judge-model", help="Model name to request from the judge server.")
    parser.add_argument("--judge-cache", help="Judge cache folder (default: OUT/judge-cache).")
    parser.add_argument("--judge-workers", type=positive_int, default=1, help="Concurrent judge requests.")
    parser.add_argument("--limit", type=positive_int, help="Evaluate only the first N sampled examples.")
    parser.add_argument(
        "--sample-size",
        type=positive_int,
        help="Examples per benchmark or subset (reader default: 500; 100 videos for VidCapBench).",
    )
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--max-new-tokens", type=positive_int, default=128)
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="Seed of the sampling and the bootstrap."
    )
    parser.add_argument("--n-resamples", type=positive_int, default=10_000, help="Bootstrap resamples.")
    parser.add_argument("--missing-videos", choices=["error", "skip"], default="error")
    parser.add_argument("--no-plots", action="store_true", help="Skip the PNG plots.")
    parser.set_defaults(func=run_eval)
    return parser


def _load_model(args):
    from ..modeling_video2lora import Video2LoraHypernetwork

    if args.hypernetwork is None:
        from ..demo import load_default_hypernetwork

        return load_default_hypernetwork()
    return Video2LoraHypernetwork.from_pretrained(args.hypernetwork)


def run_eval(args: argparse.Namespace, *, model=None) -> int:
    """Run `v2l eval`.

    Args:
        args (`argparse.Namespace`): Parsed `eval` arguments.
        model ([`Video2LoraModel`], *optional*): Use this model instead of loading
            `--hypernetwork` (tests and notebooks).

    Returns:
        `int`: The exit code (0 on success).

    Raises:
        MissingDependencyError: a package of the `evaluation` extra that this run needs is missing
            (checked before any work).

    Example:
        ```python
        from transformers_v2l.cli import build_parser

        args = build_parser().parse_args(["eval", "--benchmark", "nextqa", "--annotations", "val.csv",
                                          "--videos", "videos", "--out", "out", "--limit", "20"])
        run_eval(args)
        ```
    """
    from ..cli_args import check_writable
    from ..errors import require
    from .benchmarks import load_benchmark
    from .judge import LLMJudge
    from .report import evaluate_outputs
    from .runner import run_generation

    if bool(args.judge_url) != bool(args.judge_model):
        raise SystemExit("v2l eval: give both --judge-url and --judge-model, or neither.")
    check_writable(args.out, "--out")  # the report is written after hours of generation: check now
    if args.hypernetwork is not None and model is None:
        from ..cli_internalize import check_hypernetwork_location

        check_hypernetwork_location(args.hypernetwork)
    # fail before hours of generation, not after: every optional package this run will need
    require("datasets", "evaluation", "v2l eval")
    if not args.no_plots:
        require("matplotlib", "evaluation", "The plots of v2l eval (or pass --no-plots)")
    if args.judge_url:
        require("requests", "evaluation", "The LLM judge of v2l eval")
    reader_kwargs = {"seed": args.seed, "missing_videos": args.missing_videos}
    if args.sample_size is not None:
        reader_kwargs["sample_size"] = args.sample_size
    annotations = args.annotations[0] if len(args.annotations) == 1 else args.annotations
    dataset = load_benchmark(args.benchmark, annotations, args.videos, **reader_kwargs)
    if args.limit is not None:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    out = Path(args.out)
    model = model if model is not None else _load_model(args)
    settings = {"hypernetwork": args.hypernetwork, "benchmark": args.benchmark}
    outputs = run_generation(
        model,
        dataset,
        out / "outputs.jsonl",
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        settings=settings,
        progress=True,
    )
    judge = None
    if args.judge_url:
        cache = args.judge_cache or out / "judge-cache"
        judge = LLMJudge(args.judge_url, args.judge_model, cache_dir=cache)
    report = evaluate_outputs(
        outputs,
        out,
        judge=judge,
        judge_workers=args.judge_workers,
        n_resamples=args.n_resamples,
        seed=args.seed,
        plots=not args.no_plots,
        title=f"Video2LoRA evaluation: {args.benchmark}",
    )
    print(report.markdown)
    print(f"Wrote {', '.join(str(p) for p in report.files.values())}")
    return 0
