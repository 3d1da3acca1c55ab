"""Argument checks for the `v2l` command line, cheap enough to run before any model is loaded.

Everything here uses the standard library only, so that `v2l --help` and a refused argument never
import torch, transformers or peft:

* argparse `type=` functions (`positive_int`, `non_negative_int`, `int_in_range`, `positive_float`)
  that argparse turns into one error line;
* `Video2LoraArgumentParser`, whose errors are one line (`v2l <command>: <what is wrong>`) instead of
  the usage block followed by the error;
* `check_writable` and `check_new_folder`, which refuse an output path before any work is done.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from .errors import InvalidArgumentError

__all__ = [
    "Video2LoraArgumentParser",
    "check_new_folder",
    "check_writable",
    "int_in_range",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "stderr_line",
]


class Video2LoraArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line on stderr and exit code 2.

    argparse prints the whole usage block before the error; for a subcommand with many options the
    error then scrolls away. This parser prints `v2l <command>: <error> (see \\`v2l <command> --help\\`)`.
    Subparsers made with `add_subparsers().add_parser` are of the same class.

    Example:
        ```python
        parser = Video2LoraArgumentParser(prog="v2l")
        parser.add_argument("--batch-size", type=positive_int)
        parser.parse_args(["--batch-size", "0"])  # v2l: argument --batch-size: expected an integer >= 1, got '0' ...
        ```
    """

    def error(self, message: str) -> NoReturn:
        """Print `message` as one line, with where to find the usage, and exit with code 2.

        Args:
            message: argparse's description of the problem.

        Example:
            ```python
            Video2LoraArgumentParser(prog="v2l demo").error("argument --seed: expected an integer >= 0, got '-1'")
            # stderr: v2l demo: argument --seed: expected an integer >= 0, got '-1' (see `v2l demo --help`)
            ```
        """
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Args:
        text: the command-line word.

    Returns:
        The integer.

    Example:
        ```python
        parser.add_argument("--batch-size", type=positive_int, default=1)
        ```
    """
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0.

    Args:
        text: the command-line word.

    Returns:
        The integer.

    Example:
        ```python
        parser.add_argument("--seed", type=non_negative_int, default=0)
        ```
    """
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def int_in_range(low: int, high: int):
    """argparse type factory: an integer from `low` to `high`, both included.

    Args:
        low: the smallest accepted value.
        high: the largest accepted value.

    Returns:
        A function from the command-line word to the integer.

    Example:
        ```python
        parser.add_argument("--num-questions", type=int_in_range(1, 6), default=3)
        ```
    """

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
        return value

    parse.__name__ = f"integer from {low} to {high}"
    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0.

    Args:
        text: the command-line word.

    Returns:
        The number.

    Example:
        ```python
        parser.add_argument("--memory-cap-gib", type=positive_float, default=10.0)
        ```
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Refuse an output path that cannot be written, before any work: checked by creating a folder there.

    The nearest folder that exists (the path itself, or its closest existing parent) must accept a new
    entry: a temporary folder is created in it and removed at once, so read-only file systems,
    missing permissions and pseudo file systems such as `/proc` are all caught as they would be later.

    Args:
        path: the output file or folder (it may not exist yet; missing parents are created later).
        what: how the message names it, for example `"--out"`.

    Returns:
        The absolute path.

    Raises:
        InvalidArgumentError: a file stands where a folder is needed, or nothing can be written there.

    Example:
        ```python
        check_writable("runs/clip-adapter", "--out")
        ```
    """
    target = Path(path).expanduser().absolute()
    folder = target
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        where = "it is" if folder == target else f"{folder} is"
        raise InvalidArgumentError(
            f"{what} {path}: {where} a file, not a folder. Choose a folder path (it is created if missing)."
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".v2l-write-check-", dir=folder))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InvalidArgumentError(
            f"{what} {path}: cannot write in {folder} ({reason}). Choose a folder you can write to."
        ) from None
    return target


def check_new_folder(
    path: str | os.PathLike, what: str, *, marker: str, overwrite: bool, probe: bool = True
) -> Path:
    """Refuse to write into a folder that already holds something, unless `overwrite`, and check it is writable.

    Args:
        path: the folder to be written.
        what: how the message names it, for example `"--out"`.
        marker: a file that shows the folder holds a previous result (for example `adapter_config.json`).
        overwrite: allow replacing the files of a previous result (other files in the folder are kept).
        probe: also check that the location can be written (`check_writable`); `False` when the caller
            already checked a common parent.

    Returns:
        The absolute path.

    Raises:
        InvalidArgumentError: the path is a file, the folder is not empty and `overwrite` is off, or
            nothing can be written there.

    Example:
        ```python
        check_new_folder("clip-adapter", "--out", marker="adapter_config.json", overwrite=False)
        ```
    """
    target = check_writable(path, what) if probe else Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(
            f"{what} {path}: it is a file, not a folder. Choose another name or move the file."
        )
    if target.is_dir() and not overwrite:
        if (target / marker).exists():
            raise InvalidArgumentError(
                f"{what} {path} already holds a result ({marker}); pass --overwrite to replace it, or choose another folder."
            )
        if any(target.iterdir()):
            raise InvalidArgumentError(
                f"{what} {path} is a folder that is not empty; choose a new or empty folder, or pass --overwrite "
                "to write into it (files of the same name are replaced)."
            )
    return target


def stderr_line(command: str, message: object) -> None:
    """Print one line `v2l <command>: <message>` on stderr; newlines and runs of spaces in `message` become one space.

    Args:
        command: the subcommand, for example `"internalize"`.
        message: what to say (an exception is printed as its message).

    Example:
        ```python
        stderr_line("internalize", "2 of 3 videos internalized; 1 failed (listed above).")
        ```
    """
    print(f"v2l {command}: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
