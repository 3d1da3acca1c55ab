"""Evaluate Video2LoRA against video-in-context answering on a small benchmark, as `v2l eval` does.

1. `toy_world.generate_world` writes a few test clips and their manifest; each row becomes a record of
   the `generic` benchmark format (`id, video, prompt, task, references, subset`).
2. The same frozen model answers every prompt in two conditions: **base** (the video in its context)
   and **V2L** (the video internalized into an adapter, no visual tokens). Generations are appended to
   a resumable `outputs.jsonl`.
3. Token F1 is scored per example, and the report gives each condition's mean, the paired difference
   Δ = V2L − base with a 95% paired bootstrap CI, and the non-inferiority and equivalence decisions.

The script uses the Python API (`load_benchmark`, `run_generation`, `evaluate_outputs`); it prints the
`v2l eval` command that does the same. Run it again with the same arguments and it resumes.

Usage:
    python examples/evaluate_benchmark/evaluate_benchmark.py --num-videos 6

Writes `OUT_DIR/world/`, `OUT_DIR/benchmark.jsonl` and, in `OUT_DIR/eval/`, `outputs.jsonl`,
`scores.jsonl`, `results.json`, `report.md` (and PNG plots unless `--no-plots`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers.utils import logging as hf_logging

from transformers_v2l.demo import load_default_hypernetwork
from transformers_v2l.evaluation import evaluate_outputs, load_benchmark, run_generation
from transformers_v2l.toy_world import generate_world, read_manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-videos", type=int, default=6, help="Test clips (~9 prompts each).")
    parser.add_argument("--seed", type=int, default=0, help="World seed, and seed of the bootstrap.")
    parser.add_argument("--batch-size", type=int, default=8, help="Generation batch (both conditions).")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--n-resamples", type=int, default=10_000, help="Bootstrap resamples.")
    parser.add_argument("--no-plots", action="store_true", help="Skip the PNG plots.")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/evaluate_benchmark"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1).")
    return parser.parse_args(argv)


def write_benchmark(world: Path, manifest: Path, out: Path) -> Path:
    """Turn manifest rows into `generic` benchmark records; videos stay relative to `world`."""
    records = [
        {
            "id": row["id"],
            "video": row["video_path"],
            "prompt": row["prompt"],
            "task": row["task_type"],  # "caption" or "qa"
            "references": [row["target_text"]],
            "subset": row["task_type"],
        }
        for row in read_manifest(manifest, resolve_paths=False)
    ]
    out.write_text("".join(json.dumps(record) + "\n" for record in records))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    world, eval_dir = args.out_dir / "world", args.out_dir / "eval"

    manifests = generate_world(world, num_train=0, num_validation=0, num_test=args.num_videos, seed=args.seed)
    benchmark = write_benchmark(world, manifests["test"], args.out_dir / "benchmark.jsonl")
    print(f"Benchmark {benchmark} from {args.num_videos} clips. The same evaluation on the command line:")
    print(f"  v2l eval --benchmark generic --annotations {benchmark} --videos {world} --out {eval_dir} "
          f"--batch-size {args.batch_size} --max-new-tokens {args.max_new_tokens} --seed {args.seed}\n")  # fmt: skip

    dataset = load_benchmark("generic", str(benchmark), str(world), seed=args.seed)
    hn = load_default_hypernetwork(num_threads=args.threads)
    outputs = run_generation(
        hn,
        dataset,
        eval_dir / "outputs.jsonl",
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    report = evaluate_outputs(
        outputs,
        eval_dir,
        n_resamples=args.n_resamples,
        seed=args.seed,
        plots=not args.no_plots,
        title="Video2LoRA vs video in context: tiny-world test clips",
    )
    print(report.markdown)
    print(f"Wrote {', '.join(str(path) for path in report.files.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
