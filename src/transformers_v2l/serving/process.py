"""Run `v2l serve` in a child process: start it on a free loopback port, wait until healthy, stop or kill it.

For integration tests and benchmarks, which must talk to a real server over HTTP from another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ServerProcess"]


class ServerProcess:
    """`python -m transformers_v2l.cli serve --port 0 ARGS` in its own process group.

    Args:
        args: more `v2l serve` arguments (for example `["--store", "s", "--api-key", "k"]`).
        env: extra environment variables.
        log_path: where the server's log (stderr) goes; a temporary file by default.

    Example:
        ```python
        with ServerProcess(["--store", "v2l-store"]) as server:
            print(server.url)  # http://127.0.0.1:<port>
        ```
    """

    def __init__(self, args: list[str] | None = None, *, env: dict[str, str] | None = None,
                 log_path: str | os.PathLike | None = None):  # fmt: skip
        self.args = list(args or [])
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._log = None

    def start(self, timeout: float = 180.0) -> ServerProcess:
        """Start the server and wait until `/health` answers.

        Args:
            timeout: seconds to wait.

        Returns:
            The `ServerProcess`, with `url` set.

        Raises:
            RuntimeError: the server exited or did not become healthy in time (with its log's tail).

        Example:
            ```python
            server = ServerProcess(["--store", "s"]).start()
            ```
        """
        if self.log_path is None:
            import tempfile

            self.log_path = Path(tempfile.mkstemp(prefix="v2l-serve-", suffix=".log")[1])
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop/kill)
        command = [sys.executable, "-m", "transformers_v2l.cli", "serve", "--port", "0", *self.args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, env=self.env,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline().decode(errors="replace")  # "v2l serve: NAME on URL (...)"
        if " on http" not in line:
            self.kill()
            raise RuntimeError(f"v2l serve did not start: {line.strip()!r}\n{self.log_tail()}")
        self.url = line.split(" on ", 1)[1].split()[0]
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # drain stdout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"v2l serve exited with {self.process.returncode}.\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return self
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"v2l serve was not healthy after {timeout:g} s.\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log.

        Args:
            lines: how many.

        Returns:
            The text.

        Example:
            ```python
            print(server.log_tail())
            ```
        """
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """Kill the server's process group at once (SIGKILL), as a crash or a power cut would.

        Example:
            ```python
            server.kill()
            ```
        """
        self._signal(signal.SIGKILL, wait=10)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it does not exit in time.

        Args:
            timeout: seconds to wait before killing.

        Example:
            ```python
            server.stop()
            ```
        """
        self._signal(signal.SIGTERM, wait=timeout)
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def _signal(self, sig: int, wait: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                return
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
