"""Atomic writes with the permissions of a plain write, shared by the library's writers.

`tempfile.mkstemp` creates files with mode 0600 and `tempfile.mkdtemp` folders with mode 0700,
whatever the umask, so a file or folder renamed into place from them would be private to its owner.
`set_plain_permissions` gives them what `open(path, "w")` or `mkdir` would have given instead, and
`atomic_write_text` uses it. The module imports nothing heavy, so any writer can use it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "current_umask", "plain_mode", "set_plain_permissions"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux reports it in `/proc/self/status`; elsewhere it is read by setting it and setting it back
    at once (`os.umask` has no read-only form), under a lock.

    Returns:
        The umask, for example `0o022`.

    Example:
        ```python
        oct(current_umask())  # '0o22' on most systems
        ```
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def plain_mode(target: str | os.PathLike, *, folder: bool = False) -> int:
    """The permission bits a plain write would give `target`.

    An existing `target` keeps its own permissions (as when a file is rewritten in place); a new
    file gets `0o666 & ~umask` and a new folder `0o777 & ~umask`, as `open()` and `mkdir` give them.

    Args:
        target: the final file or folder.
        folder: whether `target` is a folder.

    Returns:
        The permission bits (`0o777` at most), for example `0o644` for a new file under umask 022.

    Example:
        ```python
        oct(plain_mode("out/report.json"))  # '0o644' for a new file under umask 022
        ```
    """
    with contextlib.suppress(FileNotFoundError):
        existing = os.stat(target)
        if stat.S_ISDIR(existing.st_mode) == folder:
            return stat.S_IMODE(existing.st_mode) & 0o777
    return (0o777 if folder else 0o666) & ~current_umask()


def set_plain_permissions(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give a temporary file or folder, about to be renamed to `target`, the permissions of a plain write.

    Call it between `mkstemp`/`mkdtemp` and `os.replace`/`os.rename`. Bits other than the
    permissions (for example the setgid bit a folder inherits from its parent) are kept.

    Args:
        tmp: the temporary file or folder (mode 0600 or 0700 from `tempfile`).
        target: the path it will be renamed to.

    Example:
        ```python
        fd, tmp = tempfile.mkstemp(dir="out")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        set_plain_permissions(tmp, "out/report.md")  # 0644 under umask 022, not 0600
        os.replace(tmp, "out/report.md")
        ```
    """
    current = os.stat(tmp).st_mode
    mode = plain_mode(target, folder=stat.S_ISDIR(current))
    os.chmod(tmp, (stat.S_IMODE(current) & ~0o777) | mode)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace`.

    Readers see either the old file or the complete new one, never a partial write. The file gets
    the permissions a plain write would give it (see `plain_mode`).

    Args:
        path: the destination file; its folder is created if needed.
        text: the content (UTF-8).

    Returns:
        The destination path.

    Example:
        ```python
        atomic_write_text("run/state.json", json.dumps(state))
        ```
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path` atomically.

    The caller writes the whole file to the yielded path (for example with `savefig`). The file is
    fsynced and gets the permissions of a plain write; if the block raises, the temporary file is
    removed and `path` is left as it was.

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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        set_plain_permissions(tmp, target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
