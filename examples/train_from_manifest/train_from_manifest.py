"""Train a new hypernetwork for the embedded tiny-world VLM from a JSONL manifest with `v2l train`.

1. `toy_world.generate_world` writes a few `.mp4` clips and JSONL manifests in the authors' format
   (`id, video_path, task_type, prompt, target_text, ...`): a caption and several questions per clip.
2. The script writes a `v2l train` YAML config (frozen base: the embedded tiny-world VLM; a new
   hypernetwork the size of the shipped one) and runs the command, here in-process through
   `transformers_v2l.cli.main`, which is exactly what `v2l train CONFIG` runs.
3. The trained hypernetwork is loaded with `Video2LoraHypernetwork.from_pretrained` and internalizes
   a held-out test clip; the shipped hypernetwork answers the same question for comparison.

A few steps only show the mechanics: a new hypernetwork generates the zero adapter, and a few steps
leave its adapters close to zero, so the model still answers as if it had seen no video. The shipped
hypernetwork was trained for 1,200 steps of 16 clips (see examples/tiny_world/).

Usage:
    python examples/train_from_manifest/train_from_manifest.py --steps 4 --num-train 8

Writes `OUT_DIR/world/` (clips and manifests), `OUT_DIR/train.yaml`, `OUT_DIR/hypernet/` (the trained
hypernetwork, its checkpoint and sample generations) and `OUT_DIR/summary.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers.utils import logging as hf_logging

from transformers_v2l import Video2LoraHypernetwork
from transformers_v2l.cli import main as v2l
from transformers_v2l.demo import DEFAULT_MODEL_DIR, load_default_hypernetwork
from transformers_v2l.toy_world import CAPTION_PROMPT, generate_world, read_manifest

#: A new hypernetwork with the shipped tiny-world hypernetwork's shape (`Video2LoraConfig` fields).
HYPERNETWORK = {
    "target_modules": ["down_proj"],
    "lora_rank": 8,
    "latent_size": 128,
    "num_latent_queries": 8,
    "num_blocks": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "attention_head_dim": 32,
    "input_expansion": 1,
    "num_frames": 8,
    "longest_edge": 64,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=8, help="Training clips (~9 examples each).")
    parser.add_argument("--num-validation", type=int, default=2, help="Validation clips.")
    parser.add_argument("--steps", type=int, default=4, help="Optimizer steps.")
    parser.add_argument("--batch-size", type=int, default=4, help="Examples per step.")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="World and training seed.")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/train_from_manifest"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1).")
    return parser.parse_args(argv)


def write_config(args: argparse.Namespace, manifests: dict[str, Path]) -> Path:
    """A `v2l train` YAML: `Video2LoraScriptArguments` and `Video2LoraTrainingArguments` fields."""
    config = {
        "base_model": str(DEFAULT_MODEL_DIR / "base"),
        "train_data": str(manifests["train"]),
        "eval_data": str(manifests["validation"]),
        "hypernetwork": HYPERNETWORK,
        "output_dir": str(args.out_dir / "hypernet"),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": args.steps,
        "eval_num_generations": 2,
        "eval_max_new_tokens": 24,
        "save_steps": args.steps,
        "report_to": "none",
        "disable_tqdm": True,
    }
    path = args.out_dir / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def training_log(run_dir: Path, steps: int) -> dict[str, Any]:
    """Losses per step, and the validation loss, from the last checkpoint's `trainer_state.json`."""
    history = json.loads((run_dir / f"checkpoint-{steps}" / "trainer_state.json").read_text())["log_history"]
    return {
        "losses": [entry["loss"] for entry in history if "loss" in entry],
        "eval_loss": next(entry["eval_loss"] for entry in history if "eval_loss" in entry),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)

    counts = {"num_train": args.num_train, "num_validation": args.num_validation, "num_test": 1}
    manifests = generate_world(args.out_dir / "world", **counts, seed=args.seed)
    examples = len(read_manifest(manifests["train"]))
    print(f"Manifest {manifests['train']}: {examples} examples from {args.num_train} clips")
    config = write_config(args, manifests)
    print(f"Running: v2l train {config}\n")
    if v2l(["train", str(config)]) != 0:
        return 1

    run_dir = args.out_dir / "hypernet"
    log = training_log(run_dir, args.steps)
    losses = ", ".join(f"{loss:.3f}" for loss in log["losses"])
    print(f"\nTraining loss per step: {losses}; validation loss: {log['eval_loss']:.3f}")

    test = read_manifest(manifests["test"])[0]
    hn = Video2LoraHypernetwork.from_pretrained(run_dir).eval()  # loads its frozen base from the config
    adapter = hn.internalize(test["video_path"])
    answer = hn.answer(adapter, CAPTION_PROMPT, max_new_tokens=24)
    shipped = load_default_hypernetwork()
    shipped_adapter = shipped.internalize(test["video_path"])
    shipped_answer = shipped.answer(shipped_adapter, CAPTION_PROMPT, max_new_tokens=24)
    print(f"Internalized {Path(test['video_path']).name} with the new hypernetwork: rank {adapter.rank}")
    print(f"Q: {CAPTION_PROMPT}")
    print(f"   ground truth        : {test['target_text']}")
    print(f"   new hypernetwork    : {answer}")
    print(f"   shipped hypernetwork: {shipped_answer}")

    summary = {"config": str(config), "hypernetwork": str(run_dir), **log}
    summary |= {"test_answer": answer, "shipped_answer": shipped_answer}
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
