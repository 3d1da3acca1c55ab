"""The `v2l` command: internalize videos, ask adapters, share them, and run the library's jobs.

Every subcommand is a thin layer over the Python API. Arguments and input files are checked before
any model is loaded; a bad input ends in one line on stderr (`v2l <command>: ...`) and a non-zero
exit code, while an unexpected exception keeps its traceback. Only the subcommand that runs is
imported, so `v2l --help` and `v2l <command> --help` never import torch, transformers or peft.
Subcommands that need optional extras (training, evaluation, benchmarks) say which extra to install.
Run under `accelerate launch -m transformers_v2l.cli train ...` for multi-process training.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import re
import sys
import warnings
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from . import __version__
from .cli_args import Video2LoraArgumentParser, check_new_folder, positive_int, stderr_line
from .cli_internalize import run_internalize, toy_world_note
from .errors import InvalidArgumentError, Video2LoraError

__all__ = ["EXTERNAL_SUBCOMMANDS", "add_convert_subparser", "build_parser", "main"]

# subcommand -> (module, function that adds its parser); modules keep heavy imports inside their run functions
EXTERNAL_SUBCOMMANDS = {
    "teacher": ("transformers_v2l.training.cli", "add_teacher_subparser"),
    "train": ("transformers_v2l.training.cli", "add_train_subparser"),
    "eval": ("transformers_v2l.evaluation.cli", "add_eval_subparser"),
    "bench": ("transformers_v2l.benchmarks.cli", "add_bench_subparser"),
    "demo": ("transformers_v2l.demo", "add_demo_subparser"),
    "serve": ("transformers_v2l.serving.cli", "add_serve_subparser"),
}
# what `v2l --help` lists for a subcommand whose module is not imported (tests check it matches the module's)
_SUMMARIES = {
    "teacher": "Generate teacher targets with the frozen VLM (resumable, sharded, multi-process).",
    "train": "Train a hypernetwork (single process, or under `accelerate launch`).",
    "eval": "Evaluate a hypernetwork against the video-in-context base model on a benchmark.",
    "bench": "Speed and scale benchmarks (real checkpoint shapes, random weights, CPU).",
    "demo": "Offline demo: internalize a generated clip and compare answers with the base model.",
    "serve": "OpenAI-compatible server: upload videos, ask them questions with zero visual tokens.",
}
_EXTRAS = {
    "teacher": "training",
    "train": "training",
    "eval": "evaluation",
    "bench": "benchmarks",
    "serve": "serve",
}


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hypernetwork",
        help="Hypernetwork folder or Hub repo (default: the embedded tiny-world model, which knows only "
        "toy-world clips; for real videos see `v2l convert`).",
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="dtype of the base VLM.")


def _run_internalize(args) -> int:
    if args.manifest is None and args.store is None:  # videos into adapter folders
        if not args.videos or not args.out:
            raise InvalidArgumentError("give videos and --out (`v2l internalize clip.mp4 --out clip-adapter`), "
                                       "or --manifest and --store (`v2l internalize --manifest videos.jsonl --store DIR`).")  # fmt: skip
        return run_internalize(args)
    from .serving.batch import run_manifest  # a collection into a `v2l serve` store

    return run_manifest(args)


def _run_ask(args) -> int:
    from .cli_internalize import check_adapter_location, check_hypernetwork_location, load_hypernetwork

    check_adapter_location(args.adapter)  # a URL, a typo or an unreachable Hub: said now, in a second or two
    check_hypernetwork_location(args.hypernetwork)
    from .lora import GeneratedLora

    adapter = GeneratedLora.from_pretrained(args.adapter)  # small: before the model, whose load takes seconds
    if args.hypernetwork is None:
        from .toy_world import toy_world_frame_size

        width, height = adapter.metadata.get("width"), adapter.metadata.get("height")
        if width and height and not toy_world_frame_size(width, height):
            stderr_line("ask", toy_world_note([f"the video of {args.adapter} ({width}x{height} px)"]))
    hypernet = load_hypernetwork(args)
    answers = hypernet.answer(adapter, list(args.questions), max_new_tokens=args.max_new_tokens)
    for question, answer in zip(args.questions, answers):
        print(f"Q: {question}\nA: {answer}\n")
    return 0


def _run_push(args) -> int:
    import shlex

    from .hub import push_adapter_to_hub

    folder = Path(args.adapter)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{args.adapter} is not an adapter folder (nothing at {folder.expanduser().absolute()}): `v2l push` "
            "uploads a folder written by `v2l internalize` or `save_pretrained`."
        )
    from .lora import GeneratedLora

    adapter = GeneratedLora.from_pretrained(folder)
    command = ["v2l", "push", args.adapter, args.repo_id]
    command += ["--base-model-id", args.base_model_id] if args.base_model_id else []
    command += ["--private"] if args.private else []
    if args.commit_message != "Upload Video2LoRA adapter":
        command += ["--commit-message", args.commit_message]
    info = push_adapter_to_hub(
        adapter,
        args.repo_id,
        base_model_id=args.base_model_id,
        private=args.private or None,
        commit_message=args.commit_message,
        retry=f"`{shlex.join(command)}`",
        local_description=f"The local adapter folder {args.adapter} was not changed.",
    )
    print(f"Pushed to {info.repo_url} at revision {info.oid}")
    return 0


def _run_convert(args) -> int:
    check_new_folder(args.out, "output folder", marker="config.json", overwrite=args.overwrite)
    from .frames2lora import run_convert

    return run_convert(args)


def add_convert_subparser(subparsers) -> argparse.ArgumentParser:
    """Add `v2l convert <.pt path or repo> <out dir> [--filename] [--base-model] [--revision] [--overwrite]`.

    The parser lives here, not in `frames2lora` (which imports torch), so that `v2l convert --help` is
    instant; running it calls `transformers_v2l.frames2lora.run_convert`.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `convert` parser (its `func` checks `out`, then runs `run_convert`).

    Example:
        ```python
        parser = argparse.ArgumentParser(prog="v2l")
        add_convert_subparser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["convert", "model.pt", "converted"])
        ```
    """
    parser = subparsers.add_parser(
        "convert",
        help="Convert an authors' Frames2LoRA .pt checkpoint into a safetensors hypernetwork folder.",
        description="Read a Frames2LoRA .pt safely (no pickled code runs) and save it as config.json + "
        "model.safetensors, loadable with Video2LoraHypernetwork.from_pretrained.",
    )
    parser.add_argument("source", help="A .pt file, a folder holding one, or a Hub repo id.")
    parser.add_argument("out", help="Output folder (new or empty; see --overwrite).")
    parser.add_argument(
        "--filename", help="File inside the folder or Hub repo (needed when there are several)."
    )
    parser.add_argument(
        "--base-model",
        help="Base VLM (Hub id or local path): its config.json is checked against the checkpoint, and it is "
        "recorded as base_model_name_or_path instead of the name stored in the file.",
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit).")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace a hypernetwork already saved in the output folder."
    )
    parser.set_defaults(func=_run_convert)
    return parser


def _add_core_subcommands(subparsers) -> None:
    parser = subparsers.add_parser("internalize", help="Turn videos into LoRA adapters (PEFT folders).")
    parser.add_argument(
        "videos", nargs="*", help="Video files (local paths; checked before the model loads)."
    )
    parser.add_argument(
        "--out",
        help="Adapter folder for one video; for several, a folder with one subfolder per video, named after "
        "the file (a, a-2, ... when names repeat).",
    )
    parser.add_argument("--manifest", help="Instead of videos: a JSONL file, one {\"video\": PATH} per line, "
                        "internalized into --store (resumable; sharded under `accelerate launch`).")  # fmt: skip
    parser.add_argument("--store", help="With --manifest: the `v2l serve` store folder the adapters go to.")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="Videos per forward pass.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace adapters already saved where the new ones go."
    )
    _add_model_arguments(parser)
    parser.set_defaults(func=_run_internalize)

    parser = subparsers.add_parser(
        "ask", help="Answer questions from a saved adapter, with no video in context."
    )
    parser.add_argument("adapter", help="Adapter folder or Hub repo.")
    parser.add_argument("questions", nargs="+")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64)
    _add_model_arguments(parser)
    parser.set_defaults(func=_run_ask)

    parser = subparsers.add_parser("push", help="Upload a saved adapter to the Hugging Face Hub.")
    parser.add_argument("adapter", help="Adapter folder.")
    parser.add_argument("repo_id", help="Hub repository, `namespace/name` (created if missing).")
    parser.add_argument(
        "--base-model-id",
        help="Hub id of the base model, recorded in the pushed adapter_config.json and card; needed when "
        "the adapter's base model was loaded from a local folder.",
    )
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--commit-message", default="Upload Video2LoRA adapter")
    parser.set_defaults(func=_run_push)

    add_convert_subparser(subparsers)


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `v2l` argument parser.

    Args:
        commands: the subcommands of `EXTERNAL_SUBCOMMANDS` whose modules are imported and whose full
            parsers are added; the others are only listed (with their one-line help), and running one
            of them builds its parser then. `None` (the default) adds every full parser (for the docs).
            `main` passes only the subcommand it runs, so nothing else is imported.

    Returns:
        An `argparse.ArgumentParser`; each subcommand sets `func`, which runs it. A subcommand whose
        optional extra is missing is still listed; running it prints which extra to install.

    Example:
        ```python
        args = build_parser().parse_args(["ask", "clip-adapter", "What happens?"])
        args.func(args)
        ```
    """
    parser = Video2LoraArgumentParser(prog="v2l", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s (transformers-v2l) {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_core_subcommands(subparsers)
    for name, (module_name, function) in EXTERNAL_SUBCOMMANDS.items():
        if commands is not None and name not in commands:
            _add_listed_subcommand(subparsers, name)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # an optional extra is missing: the command says which one
            _add_unavailable_subcommand(subparsers, name, error)
            continue
        getattr(module, function)(subparsers)
        subparsers.choices[name].prog = f"v2l {name}"
    return parser


def _add_listed_subcommand(subparsers, name: str) -> None:
    """List `name` in `v2l --help` without importing its module; running it builds its real parser."""
    parser = subparsers.add_parser(name, help=_SUMMARIES[name], add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args) -> int:
        real = build_parser([name]).parse_args(_optional_config([name, *args.rest]))
        return real.func(real)

    parser.set_defaults(func=run)


def _add_unavailable_subcommand(subparsers, name: str, error: ImportError) -> None:
    extra = _EXTRAS.get(name, "dev")
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a bad input or environment, printed as one line (anything else is a bug: traceback)."""
    errors: list[type[BaseException]] = [Video2LoraError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                         PermissionError]  # fmt: skip
    hub = sys.modules.get("huggingface_hub.errors")  # only if something already imported it
    if hub is not None:
        errors += [hub.HfHubHTTPError, hub.EntryNotFoundError]  # no such repo, revision or file; refused; 5xx
    return tuple(errors)


@contextlib.contextmanager
def _cli_warnings(command: str) -> Iterator[None]:
    """For this CLI run only: warnings as one line each, without the developer-facing ones or long repeats.

    FutureWarnings (deprecations inside the libraries we call) and transformers' notice that it falls
    back to torchvision for video decoding (we decode videos ourselves) are dropped. Every other
    warning, and each warning the library logs (unless logging was configured, as `v2l serve` does),
    is printed as `v2l <command>: warning: <message>`, without the source line. Of warnings that
    differ only in their numbers (one per damaged frame, say) the first two are shown, then a line
    saying that more are hidden.
    """
    seen: dict[str, int] = {}

    def show(message, category=None, filename=None, lineno=None, file=None, line=None) -> None:
        kind = re.sub(r"\d+", "#", str(message))
        seen[kind] = count = seen.get(kind, 0) + 1
        if count <= 2:
            stderr_line(command, f"warning: {message}")
        elif count == 3:
            stderr_line(command, "warning: more warnings like the one above are not shown.")

    class OneLine(logging.Handler):  # the library's own logged warnings, in the same form
        def emit(self, record: logging.LogRecord) -> None:
            if not logging.getLogger().handlers:  # else the configured handlers print it
                show(record.getMessage())

    library = logging.getLogger("transformers_v2l")
    handler = OneLine(logging.WARNING)
    library.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings(
                "ignore", message=r"(?s).*Falling back to `torchvision`", category=UserWarning
            )
            warnings.showwarning = show
            yield
    finally:
        library.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `v2l` console script.

    Args:
        argv: the arguments after `v2l`; defaults to `sys.argv[1:]`.

    Returns:
        The exit code: 0 on success, 1 for an input the command refused or that failed (the message is
        one line on stderr), 2 for arguments argparse refused, 130 when interrupted.

    Example:
        ```python
        main(["internalize", "clip.mp4", "--out", "clip-adapter"])  # same as `v2l internalize clip.mp4 --out clip-adapter`
        ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    args = build_parser([command] if command else ()).parse_args(_optional_config(argv))
    with _cli_warnings(args.command):
        try:
            return int(args.func(args) or 0)
        except _user_errors() as error:  # typed errors already say what to do: no traceback
            stderr_line(args.command, f"{type(error).__name__}: {error}")
            return 1
        except KeyboardInterrupt:
            stderr_line(args.command, "interrupted.")
            return 130


if __name__ == "__main__":
    sys.exit(main())
