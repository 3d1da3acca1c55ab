"""The background internalization worker: queued videos in the store become adapters, one at a time.

The worker runs on its own thread, so answering continues while a video internalizes (the engine's
adapter hooks act only on the engine's thread; the worker sees the plain base model). Its queue is
bounded: when it is full, uploads are refused with 503 and `Retry-After` before their bytes are read.
A job the server was killed in the middle of runs again at the next start, at most `max_attempts`
times, so a video that crashes the process cannot crash it forever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from .errors import OverloadedError
from .metrics import ServingMetrics

logger = logging.getLogger(__name__)

__all__ = ["InternalizationWorker"]


class InternalizationWorker:
    """Internalize queued videos from the store in a background thread and install their adapters.

    Args:
        hn: the `Video2LoraHypernetwork`.
        store: the `VideoStore`.
        cache: the `AdapterCache` that receives each new adapter.
        metrics: where to record outcomes and durations.
        max_queued: most videos waiting; `check_room` raises beyond.
        max_attempts: a job interrupted this many times (the server died during it) is marked failed.
        on_ready: called with `(video, adapter)` once an adapter is installed (for example to recall its
            description); its failures are logged, not fatal.

    Example:
        ```python
        worker = InternalizationWorker(hn, store, cache, metrics).start()
        worker.enqueue(record["id"])
        ```
    """

    def __init__(self, hn, store, cache, metrics: ServingMetrics, *, max_queued: int = 32, max_attempts: int = 3,
                 on_ready: Callable[[str, object], object] | None = None):  # fmt: skip
        self.hn, self.store, self.cache, self.metrics, self.on_ready = hn, store, cache, metrics, on_ready
        self.max_queued, self.max_attempts = max_queued, max_attempts
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: str | None = None

    @property
    def num_queued(self) -> int:
        """Videos waiting to be internalized (not counting the one in progress)."""
        with self._lock:
            return len(self._pending) - (1 if self.current in self._pending else 0)

    def check_room(self) -> None:
        """Raise when the queue is full, before an upload is read.

        Raises:
            OverloadedError: `max_queued` videos are already waiting (HTTP 503 with `Retry-After`).

        Example:
            ```python
            worker.check_room()
            ```
        """
        if self.num_queued >= self.max_queued:
            raise OverloadedError(
                f"{self.num_queued} videos are already waiting to be internalized (limit {self.max_queued}); "
                "retry later.",
                retry_after=10,
                status_code=503,
            )

    def enqueue(self, video: str) -> None:
        """Queue a video of the store (once; queuing it again while pending does nothing).

        Args:
            video: the video id.

        Example:
            ```python
            worker.enqueue(video)
            ```
        """
        with self._lock:
            if video in self._pending:
                return
            self._pending.add(video)
        self._queue.put(video)

    def start(self) -> InternalizationWorker:
        """Queue every unfinished job of the store and start the thread.

        Returns:
            The worker.

        Example:
            ```python
            worker.start()
            ```
        """
        for video in self.store.unfinished():
            self.enqueue(video)
        self._thread = threading.Thread(target=self._run, name="v2l-internalize", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current job (queued jobs stay queued in the store).

        Args:
            timeout: seconds to wait for the current job.

        Example:
            ```python
            worker.stop()
            ```
        """
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while (video := self._queue.get()) is not None:
            self.current = video
            try:
                self._internalize(video)
            except Exception:  # the worker must survive anything a job does
                logger.exception("Internalization of %s failed unexpectedly", video)
            finally:
                with self._lock:
                    self._pending.discard(video)
                self.current = None

    def _internalize(self, video: str) -> None:
        try:
            record = self.store.get(video)
        except KeyError:  # deleted while queued
            return
        if record["status"] in ("ready", "failed"):
            return
        attempts = int(record.get("attempts", 0))
        if attempts >= self.max_attempts:
            self.store.update(video, status="failed", error=f"Internalization was interrupted {attempts} times "
                              "(the server stopped during it); giving up on this video.")  # fmt: skip
            self.metrics.count(
                "v2l_internalizations_total", "Internalizations by outcome.", labels='status="failed"'
            )
            return
        if self.store.update(video, status="processing", attempts=attempts + 1) is None:
            return
        name = record.get("filename") or "upload"
        start = time.perf_counter()
        try:
            adapter = self.hn.internalize(str(self.store.video_path(video)))
        except Exception as error:
            message = f"{type(error).__name__}: {error}".replace(str(self.store.video_path(video)), name)
            self.store.update(video, status="failed", error=message)
            self.metrics.count(
                "v2l_internalizations_total", "Internalizations by outcome.", labels='status="failed"'
            )
            logger.warning("Video %s failed: %s", video, message)
            return
        seconds = time.perf_counter() - start
        adapter.metadata["source"] = name  # the card names the client's file, not the store's path
        adapter.metadata["video_id"] = video
        folder = self.store.upload_path()
        adapter.save_pretrained(folder)
        summary = {"rank": adapter.rank, "num_layers": adapter.num_layers, "target_modules": adapter.target_modules,
                   "nbytes": adapter.nbytes, "internalization_seconds": round(seconds, 3)}  # fmt: skip
        if self.store.install_adapter(video, folder, adapter=summary) is None:
            return  # deleted meanwhile
        self.cache.put(video, adapter)
        self.metrics.internalization.observe(seconds)
        self.metrics.count(
            "v2l_internalizations_total", "Internalizations by outcome.", labels='status="ready"'
        )
        if self.on_ready is not None:
            try:
                self.on_ready(video, adapter)
            except Exception:  # the adapter is ready; the follow-up can run again later
                logger.exception("After internalizing %s", video)
