"""Atomic file writes: a temporary file in the target folder, fsync, then `os.replace`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "make_readable"]

_UMASK = os.umask(0o022)  # read once at import: os.umask can only be read by setting it
os.umask(_UMASK)


def make_readable(path: str | os.PathLike) -> None:
    """Give a `mkstemp` file (mode 0600) the permissions a plain `open()` would have given it.

    Args:
        path: the file.

    Example:
        ```python
        fd, tmp = tempfile.mkstemp(dir="out")
        make_readable(tmp)  # 0644 under the usual umask
        ```
    """
    os.chmod(path, 0o666 & ~_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    The caller writes the whole file to the yielded path (for example with `savefig`). If the
    block raises, the temporary file is removed and `path` is left as it was.

    Args:
        path: the final file; its folder is created.

    Returns:
        A context manager that yields the temporary `Path` to write.

    Example:
        ```python
        with atomic_path("report/plot.png") as tmp:
            fig.savefig(tmp, format="png")
        ```
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", suffix=target.suffix or ".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        make_readable(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically.

    Args:
        path: the file; its folder is created.
        text: the content.

    Example:
        ```python
        atomic_write_text("out/report.md", markdown)
        ```
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
