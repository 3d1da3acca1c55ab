"""The `v2l` command: internalize videos, ask adapters, share them, and run the library's jobs.

Every subcommand is a thin layer over the Python API. Subcommands that need optional extras
(training, evaluation, benchmarks) import them only when they run, and say which extra to install.
Run under `accelerate launch -m transformers_v2l.cli train ...` for multi-process training.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import Video2LoraError

__all__ = ["build_parser", "main"]

# subcommand -> (module, function that adds its parser); modules keep heavy imports inside their run functions
EXTERNAL_SUBCOMMANDS = {
    "convert": ("transformers_v2l.frames2lora", "add_convert_subparser"),
    "teacher": ("transformers_v2l.training.cli", "add_teacher_subparser"),
    "train": ("transformers_v2l.training.cli", "add_train_subparser"),
    "eval": ("transformers_v2l.evaluation.cli", "add_eval_subparser"),
    "bench": ("transformers_v2l.benchmarks.cli", "add_bench_subparser"),
    "demo": ("transformers_v2l.demo", "add_demo_subparser"),
}


def _load_hypernetwork(args):
    import torch

    from .modeling_video2lora import Video2LoraHypernetwork

    if args.hypernetwork is None:
        from .demo import load_default_hypernetwork

        return load_default_hypernetwork()
    kwargs = {"base_model_kwargs": {"dtype": getattr(torch, args.dtype)}} if args.dtype else {}
    return Video2LoraHypernetwork.from_pretrained(args.hypernetwork, **kwargs)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hypernetwork",
        help="Hypernetwork folder or Hub repo (default: the embedded tiny-world model).",
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="dtype of the base VLM.")


def _run_internalize(args) -> int:
    from pathlib import Path

    hypernet = _load_hypernetwork(args)
    adapters = hypernet.internalize(list(args.videos), batch_size=args.batch_size, show_progress=True)
    out = Path(args.out)
    for video, adapter in zip(args.videos, adapters):
        target = out if len(args.videos) == 1 else out / Path(video).stem
        adapter.save_pretrained(target)
        print(f"{video} -> {target} (rank {adapter.rank}, {adapter.nbytes / 2**20:.1f} MiB)")
    return 0


def _run_ask(args) -> int:
    from .lora import GeneratedLora

    hypernet = _load_hypernetwork(args)
    adapter = GeneratedLora.from_pretrained(args.adapter)
    protocol = {"qa_format": "direct"}
    if args.hypernetwork is None:  # the embedded model may answer after recalling its caption
        from .demo import answer_protocol

        protocol = answer_protocol()
    if protocol["qa_format"] == "dialog":
        from .demo import recall_then_answer

        caption, answers = recall_then_answer(
            hypernet, list(args.questions), adapter=adapter, reader=protocol["dialog_reader"],
            max_new_tokens=args.max_new_tokens,
        )  # fmt: skip
        print(f"Recalled caption: {caption}\n")
    else:
        answers = hypernet.answer(adapter, list(args.questions), max_new_tokens=args.max_new_tokens)
    for question, answer in zip(args.questions, answers):
        print(f"Q: {question}\nA: {answer}\n")
    return 0


def _run_push(args) -> int:
    from .lora import GeneratedLora

    adapter = GeneratedLora.from_pretrained(args.adapter)
    info = adapter.push_to_hub(args.repo_id, private=args.private, commit_message=args.commit_message)
    print(f"Pushed to {info.repo_url} at revision {info.oid}")
    return 0


def _add_core_subcommands(subparsers) -> None:
    parser = subparsers.add_parser("internalize", help="Turn videos into LoRA adapters (PEFT folders).")
    parser.add_argument("videos", nargs="+", help="Video files.")
    parser.add_argument("--out", required=True, help="Output folder (one subfolder per video for several).")
    parser.add_argument("--batch-size", type=int, default=1)
    _add_model_arguments(parser)
    parser.set_defaults(func=_run_internalize)

    parser = subparsers.add_parser(
        "ask", help="Answer questions from a saved adapter, with no video in context."
    )
    parser.add_argument("adapter", help="Adapter folder or Hub repo.")
    parser.add_argument("questions", nargs="+")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    _add_model_arguments(parser)
    parser.set_defaults(func=_run_ask)

    parser = subparsers.add_parser("push", help="Upload a saved adapter to the Hugging Face Hub.")
    parser.add_argument("adapter", help="Adapter folder.")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--commit-message", default="Upload Video2LoRA adapter")
    parser.set_defaults(func=_run_push)


def build_parser() -> argparse.ArgumentParser:
    """The `v2l` argument parser with every subcommand.

    A subcommand whose optional extra is missing is still listed; running it prints which extra to
    install.

    Returns:
        An `argparse.ArgumentParser`; each subcommand sets `func`, which runs it.

    Example:
        ```python
        args = build_parser().parse_args(["ask", "clip-adapter", "What happens?"])
        args.func(args)
        ```
    """
    parser = argparse.ArgumentParser(prog="v2l", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_core_subcommands(subparsers)
    for name, (module_name, function) in EXTERNAL_SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # an optional extra is missing: the command says which one
            _add_unavailable_subcommand(subparsers, name, error)
            continue
        getattr(module, function)(subparsers)
        subparsers.choices[name].prog = f"v2l {name}"
    return parser


def _add_unavailable_subcommand(subparsers, name: str, error: ImportError) -> None:
    extra = {"teacher": "training", "train": "training", "eval": "evaluation", "bench": "benchmarks"}.get(
        name, "dev"
    )
    message = f"`v2l {name}` needs the `{extra}` extra ({error}). Install it with: pip install 'transformers-v2l[{extra}]'"
    parser = subparsers.add_parser(
        name, help=f"(unavailable: pip install 'transformers-v2l[{extra}]')", add_help=False
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(args) -> int:
        print(message, file=sys.stderr)
        return 2

    parser.set_defaults(func=fail)


# subcommands taking an optional YAML file, then `--field value` overrides
_CONFIG_COMMANDS = ("train", "teacher")


def _optional_config(argv: Sequence[str]) -> list[str]:
    """`train --field value` -> `train "" --field value`: argparse cannot start a remainder with an option."""
    argv = list(argv)
    if len(argv) > 1 and argv[0] in _CONFIG_COMMANDS and argv[1].startswith("--") and argv[1] != "--help":
        argv.insert(1, "")  # no YAML file: every argument after the command is a `--field value` override
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `v2l` console script.

    Args:
        argv: the arguments after `v2l`; defaults to `sys.argv[1:]`.

    Returns:
        The exit code: 0 on success.

    Example:
        ```python
        main(["internalize", "clip.mp4", "--out", "clip-adapter"])  # same as `v2l internalize clip.mp4 --out clip-adapter`
        ```
    """
    args = build_parser().parse_args(_optional_config(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except (Video2LoraError, FileNotFoundError) as error:  # typed errors already say what to do: no traceback
        print(f"v2l {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
