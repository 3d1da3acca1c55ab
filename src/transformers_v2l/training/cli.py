"""`v2l train` and `v2l teacher`: thin command lines over the training API.

Both read a YAML file whose keys are the fields of `Video2LoraScriptArguments` (or
`TeacherScriptArguments`) and `Video2LoraTrainingArguments`; any `--field value` after the file
overrides it. Under `accelerate launch` every process runs the same command and `accelerate`
assigns ranks:

```bash
v2l train examples/training/presets/smolvlm2-500m.yaml --max_steps 100
accelerate launch --num_processes 4 -m transformers_v2l.cli train examples/training/presets/smolvlm2-500m.yaml
```

This module also runs on its own: `python -m transformers_v2l.training.cli train config.yaml`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, require

logger = logging.getLogger(__name__)

__all__ = [
    "TeacherScriptArguments",
    "Video2LoraScriptArguments",
    "add_teacher_subparser",
    "add_train_subparser",
    "main",
    "parse_config",
    "run_teacher",
    "run_train",
]


@dataclass
class Video2LoraScriptArguments:
    """Model and data arguments of `v2l train` (the training recipe is in `Video2LoraTrainingArguments`).

    Example:
        ```python
        script = Video2LoraScriptArguments(
            base_model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct", train_data="data/train.jsonl",
            hypernetwork={"lora_rank": 8},
        )
        ```
    """

    base_model: str | None = field(default=None, metadata={"help": "Hub id or path of the frozen base VLM."})
    """Hub id or path of the frozen base VLM."""
    train_data: str | None = field(
        default=None,
        metadata={"help": "Training examples: a JSONL manifest, a teacher output folder or a dataset."},
    )
    """Training examples: a JSONL manifest, a teacher output folder or a dataset."""
    eval_data: str | None = field(default=None, metadata={"help": "Validation examples (same formats)."})
    """Validation examples (same formats)."""
    data_root: str | None = field(
        default=None, metadata={"help": "Folder relative video paths resolve against."}
    )
    """Folder relative video paths resolve against."""
    train_split: str | None = field(default=None, metadata={"help": "Keep only training rows of this split."})
    """Keep only training rows of this split."""
    eval_split: str | None = field(
        default=None, metadata={"help": "Keep only validation rows of this split."}
    )
    """Keep only validation rows of this split."""
    hypernetwork: dict = field(
        default_factory=dict,
        metadata={"help": "Video2LoraConfig fields of a new hypernetwork (YAML mapping)."},
    )
    """Video2LoraConfig fields of a new hypernetwork (YAML mapping)."""
    init_from: str | None = field(
        default=None, metadata={"help": "Start from this hypernetwork checkpoint instead of a new one."}
    )
    """Start from this hypernetwork checkpoint instead of a new one."""
    base_model_dtype: str = field(
        default="auto",
        metadata={"help": "dtype of the frozen VLM: auto (bfloat16 with --bf16), float32, bfloat16."},
    )
    """dtype of the frozen VLM: auto (bfloat16 with --bf16), float32, bfloat16."""

    def __post_init__(self):
        for name in ("base_model", "train_data"):
            if not getattr(self, name):
                raise InvalidArgumentError(f"v2l train needs `{name}` (in the YAML file or as --{name}).")


@dataclass
class TeacherScriptArguments:
    """Arguments of `v2l teacher`.

    Example:
        ```python
        script = TeacherScriptArguments(
            base_model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct", data="data/train.jsonl",
            output_dir="teacher", batch_size=4,
        )
        ```
    """

    base_model: str | None = field(default=None, metadata={"help": "Hub id or path of the teacher VLM."})
    """Hub id or path of the teacher VLM."""
    data: str | None = field(
        default=None, metadata={"help": "Input examples: a JSONL manifest or a dataset."}
    )
    """Input examples: a JSONL manifest or a dataset."""
    output_dir: str | None = field(default=None, metadata={"help": "Shard folder (resumed if it exists)."})
    """Shard folder (resumed if it exists)."""
    data_root: str | None = field(
        default=None, metadata={"help": "Folder relative video paths resolve against."}
    )
    """Folder relative video paths resolve against."""
    split: str | None = field(default=None, metadata={"help": "Keep only rows of this split."})
    """Keep only rows of this split."""
    spans_per_video: int = field(
        default=1, metadata={"help": "Spans drawn per video without an explicit span."}
    )
    """Spans drawn per video without an explicit span."""
    span_mix: list[float] = field(
        default_factory=lambda: [0.6, 0.3, 0.1],
        metadata={"help": "Weights of single-scene, adjacent multi-scene and full-video spans."},
    )
    """Weights of single-scene, adjacent multi-scene and full-video spans."""
    seed: int = field(default=0, metadata={"help": "Seed of the span sampler."})
    """Seed of the span sampler."""
    shard_size: int = field(default=256, metadata={"help": "Examples per shard (the unit of resumption)."})
    """Examples per shard (the unit of resumption)."""
    batch_size: int = field(default=8, metadata={"help": "Examples per generate call."})
    """Examples per generate call."""
    max_new_tokens: int = field(default=256, metadata={"help": "Generation budget per answer."})
    """Generation budget per answer."""
    top_k: int = field(
        default=0, metadata={"help": "Teacher log-probs stored per token for a KL loss (0: none)."}
    )
    """Teacher log-probs stored per token for a KL loss (0: none)."""
    num_frames: int = field(default=12, metadata={"help": "Frames sampled per span."})
    """Frames sampled per span."""
    longest_edge: int = field(default=384, metadata={"help": "Frame resize target in pixels."})
    """Frame resize target in pixels."""
    dtype: str = field(default="bfloat16", metadata={"help": "dtype of the teacher VLM."})
    """dtype of the teacher VLM."""

    def __post_init__(self):
        for name in ("base_model", "data", "output_dir"):
            if not getattr(self, name):
                raise InvalidArgumentError(f"v2l teacher needs `{name}` (in the YAML file or as --{name}).")


# ---- parsing ---------------------------------------------------------------------------------------
def _read_yaml(path: str | None) -> dict:
    if not path:
        return {}
    yaml = require("yaml", "training", "Reading a training YAML file")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} is not a file (nothing at {Path(path).absolute()}): pass a YAML config file."
        )
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{path} must hold a YAML mapping of argument names to values.")
    return data


def _check_required(command: str, config: dict, overrides: Sequence[str], names: Sequence[str]) -> None:
    """Name every required field that neither the YAML file nor an override gives, before transformers is imported."""
    given = set(config) | {
        word[2:].split("=")[0].replace("-", "_") for word in overrides if word.startswith("--")
    }
    missing = [name for name in names if name not in given]
    if missing:
        named = [f"`{name}`" for name in missing]
        needed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
        raise InvalidArgumentError(
            f"`{command}` is missing {needed}: give a YAML file (see examples/training/presets/) or "
            f"{' '.join(f'--{name} VALUE' for name in missing)}."
        )


def parse_config(dataclass_types: Sequence[type], config: dict, overrides: Sequence[str] = ()) -> tuple:
    """Fill dataclasses from a config mapping, then from `--field value` overrides (TRL-style).

    Args:
        dataclass_types: the argument dataclasses, for example `(Video2LoraScriptArguments, Video2LoraTrainingArguments)`.
        config: values from the YAML file.
        overrides: command-line arguments that take precedence over `config`.

    Returns:
        One instance per dataclass type.

    Example:
        ```python
        script, train = parse_config((Video2LoraScriptArguments, Video2LoraTrainingArguments),
                                     {"base_model": "m", "train_data": "t.jsonl"}, ["--max_steps", "10"])
        ```
    """
    from transformers import HfArgumentParser

    known = {f.name for cls in dataclass_types for f in fields(cls) if f.init}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InvalidArgumentError(
            f"Unknown configuration key(s) {unknown}; see `--help` for the accepted names."
        )
    mappings = {k: v for k, v in config.items() if isinstance(v, (dict, list))}
    parser = HfArgumentParser(dataclass_types)
    parser.set_defaults(**{k: v for k, v in config.items() if k not in mappings})
    namespace, rest = parser.parse_known_args(list(overrides))
    if rest:
        raise InvalidArgumentError(f"Unknown command-line argument(s): {rest}")
    values = vars(namespace)
    for key, value in mappings.items():  # mappings and lists come from YAML as they are
        if f"--{key}" not in overrides:
            values[key] = value
    outputs = []
    for cls in dataclass_types:
        names = {f.name for f in fields(cls) if f.init}
        outputs.append(cls(**{k: v for k, v in values.items() if k in names}))
    return tuple(outputs)


def _dtype(name: str, bf16: bool = False):
    import torch

    if name == "auto":
        return torch.bfloat16 if bf16 else torch.float32
    return getattr(torch, name)


def _load_base(name: str, dtype):
    from transformers import AutoModelForImageTextToText

    from ..processing_video2lora import Video2LoraProcessor

    vlm = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype).eval()
    vlm.requires_grad_(False)
    return vlm, Video2LoraProcessor.from_pretrained(name)


# ---- train -----------------------------------------------------------------------------------------
def build_trainer(script: Video2LoraScriptArguments, args) -> Any:
    """The `Video2LoraTrainer` a `v2l train` configuration describes (base model, hypernetwork, data).

    Args:
        script: model and data arguments.
        args: `Video2LoraTrainingArguments`.

    Returns:
        A ready `Video2LoraTrainer`.
    """
    from transformers import set_seed

    from ..configuration_video2lora import Video2LoraConfig
    from ..modeling_video2lora import Video2LoraHypernetwork
    from .data import load_examples
    from .trainer import Video2LoraTrainer

    vlm, processor = _load_base(script.base_model, _dtype(script.base_model_dtype, args.bf16))
    set_seed(args.seed)  # the same initial hypernetwork on every process and every rerun
    if script.init_from:
        hn = Video2LoraHypernetwork.from_pretrained(script.init_from, base_model=vlm, processor=processor)
    else:
        config = Video2LoraConfig.from_base_model(script.base_model, **script.hypernetwork)
        hn = Video2LoraHypernetwork(config, base_model=vlm, processor=processor)
    train = load_examples(script.train_data, script.data_root, script.train_split)
    evaluation = (
        load_examples(script.eval_data, script.data_root, script.eval_split) if script.eval_data else None
    )
    return Video2LoraTrainer(model=hn, args=args, train_dataset=train, eval_dataset=evaluation)


def add_train_subparser(subparsers) -> argparse.ArgumentParser:
    """Add `train` to the `v2l` subcommands.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `train` parser (its `func` is `run_train`).

    Example:
        ```python
        parser = argparse.ArgumentParser(prog="v2l")
        add_train_subparser(parser.add_subparsers())
        args = parser.parse_args(["train", "config.yaml", "--max_steps", "10"])
        ```
    """
    parser = subparsers.add_parser(
        "train",
        help="Train a hypernetwork (single process, or under `accelerate launch`).",
        description="Train a Video2LoRA hypernetwork from a YAML config; `--field value` overrides any key.",
    )
    parser.add_argument("config", nargs="?", help="YAML file (see examples/training/presets/).")
    parser.add_argument(
        "overrides", nargs=argparse.REMAINDER,
        help="--field value pairs; `--resume_from_checkpoint last` resumes from the newest complete checkpoint.",
    )  # fmt: skip
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    """Run `v2l train`: parse the config, train, and save the final hypernetwork into `output_dir`.

    Args:
        args: parsed `train` arguments: `config` (a YAML file or `None`) and `overrides` (`--field value` pairs).

    Returns:
        The exit code, 0.

    Raises:
        MissingDependencyError: the `training` extra is not installed.

    Example:
        ```python
        run_train(argparse.Namespace(config="config.yaml", overrides=["--max_steps", "10"]))
        ```
    """
    config = _read_yaml(args.config)
    _check_required("train", config, args.overrides or (), ("base_model", "train_data"))
    from ..cli_args import check_writable
    from .trainer import Video2LoraTrainingArguments

    script, training_args = parse_config(
        (Video2LoraScriptArguments, Video2LoraTrainingArguments), config, args.overrides or ()
    )
    if training_args.output_dir:  # before the model loads, not after training
        check_writable(training_args.output_dir, "output_dir")
    trainer = build_trainer(script, training_args)
    resume = training_args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if resume == "last" else resume)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        print(f"Hypernetwork saved to {training_args.output_dir}")
    return 0


# ---- teacher ---------------------------------------------------------------------------------------
def add_teacher_subparser(subparsers) -> argparse.ArgumentParser:
    """Add `teacher` to the `v2l` subcommands.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `teacher` parser (its `func` is `run_teacher`).

    Example:
        ```python
        parser = argparse.ArgumentParser(prog="v2l")
        add_teacher_subparser(parser.add_subparsers())
        args = parser.parse_args(["teacher", "teacher.yaml", "--batch_size", "4"])
        ```
    """
    parser = subparsers.add_parser(
        "teacher",
        help="Generate teacher targets with the frozen VLM (resumable, sharded, multi-process).",
        description="Cache the frozen VLM's answers with the video in context as training targets.",
    )
    parser.add_argument("config", nargs="?", help="YAML file with TeacherScriptArguments fields.")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value pairs.")
    parser.set_defaults(func=run_teacher)
    return parser


def run_teacher(args: argparse.Namespace) -> int:
    """Run `v2l teacher`: draw spans, generate this process's missing shards, and report.

    Args:
        args: parsed `teacher` arguments: `config` (a YAML file or `None`) and `overrides`.

    Returns:
        The exit code, 0.

    Raises:
        MissingDependencyError: the `training` extra is not installed.

    Example:
        ```python
        run_teacher(argparse.Namespace(config="teacher.yaml", overrides=[]))
        ```
    """
    accelerate = require("accelerate", "training", "v2l teacher")
    config = _read_yaml(args.config)
    _check_required("teacher", config, args.overrides or (), ("base_model", "data", "output_dir"))
    from ..cli_args import check_writable
    from .data import SpanSampler, expand_spans, load_examples
    from .teacher import TeacherSettings, generate_teacher_targets

    (script,) = parse_config((TeacherScriptArguments,), config, args.overrides or ())
    check_writable(script.output_dir, "output_dir")
    import torch

    state = accelerate.PartialState(
        cpu=not torch.accelerator.is_available()
    )  # gloo group on CPU-only machines
    vlm, processor = _load_base(script.base_model, _dtype(script.dtype))
    vlm.to(state.device)
    examples = load_examples(script.data, script.data_root, script.split)
    rows = [examples[i] for i in range(len(examples))]
    rows = expand_spans(rows, SpanSampler(tuple(script.span_mix), seed=script.seed), script.spans_per_video)
    settings = TeacherSettings(
        base_model=script.base_model, shard_size=script.shard_size, batch_size=script.batch_size,
        max_new_tokens=script.max_new_tokens, top_k=script.top_k, num_frames=script.num_frames,
        longest_edge=script.longest_edge,
    )  # fmt: skip
    written = generate_teacher_targets(
        vlm, processor, rows, script.output_dir, settings,
        process_index=state.process_index, num_processes=state.num_processes,
        show_progress=state.is_local_main_process,
    )  # fmt: skip
    state.wait_for_everyone()
    if state.is_main_process:
        print(
            f"Teacher targets in {script.output_dir}: {len(rows)} examples ({len(written)} shards written now)."
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m transformers_v2l.training.cli {train,teacher} ...` without the rest of `v2l`.

    Args:
        argv: the arguments; defaults to `sys.argv[1:]`.

    Returns:
        The exit code, 0 on success.

    Example:
        ```python
        main(["train", "config.yaml", "--max_steps", "10"])
        ```
    """
    parser = argparse.ArgumentParser(prog="python -m transformers_v2l.training.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_subparser(subparsers)
    add_teacher_subparser(subparsers)
    from ..cli import _optional_config

    args = parser.parse_args(_optional_config(sys.argv[1:] if argv is None else argv))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
