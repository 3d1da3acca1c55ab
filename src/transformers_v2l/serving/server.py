"""What one `v2l serve` process holds: settings, the store, the adapter cache, the engine and the worker.

`ServerState` wires them together; `app.create_app` exposes it over HTTP.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from . import model_access
from .answering import AnswerPlanner
from .cache import AdapterCache
from .engine import ServingEngine
from .internalizer import InternalizationWorker
from .metrics import ServingMetrics
from .settings import ServeSettings
from .store import VideoStore

logger = logging.getLogger(__name__)

__all__ = ["ServerState", "bind_socket"]


def _served_name(hn, settings: ServeSettings) -> str:
    """The base model's public name: its Hub id, or a local folder's name (never the server's path)."""
    if settings.served_model_name:
        return settings.served_model_name
    name = str(model_access.base_model_name(hn) or "base")
    if os.path.isabs(name) or name.count("/") > 1 or os.path.isdir(name):
        parts = Path(name).parts
        return "v2l-tiny-world" if parts[-2:] == ("tiny_world", "base") else parts[-1]  # the embedded model
    return name


class ServerState:
    """The store, adapter cache, engine and internalization worker of one server, started and stopped together.

    Args:
        hn: the `Video2LoraHypernetwork` to serve.
        settings: the `ServeSettings`.

    Raises:
        StoreMismatchError: the store belongs to another hypernetwork.

    Example:
        ```python
        state = ServerState(load_default_hypernetwork(), ServeSettings(store="v2l-store")).start()
        state.stop()
        ```
    """

    def __init__(self, hn, settings: ServeSettings):
        self.hn, self.settings = hn, settings
        self.started = time.time()
        self.base_name = _served_name(hn, settings)
        if self.base_name.startswith("vid-"):
            raise ValueError(f"The served model name {self.base_name!r} must not look like a video id.")
        self.revision = model_access.hypernetwork_fingerprint(hn)
        self.store = VideoStore(settings.store, revision=self.revision, base_model=self.base_name)
        self.metrics = ServingMetrics()
        self.cache = AdapterCache(self._load_adapter, max_mb=settings.adapter_cache_mb)
        self.engine = ServingEngine(hn, max_batch=settings.max_batch, max_waiting=settings.max_waiting,
                                    metrics=self.metrics)  # fmt: skip
        self.planner = AnswerPlanner(hn, self.engine, self.store)
        self.worker = InternalizationWorker(hn, self.store, self.cache, self.metrics,
                                            max_queued=settings.max_queued_videos, on_ready=self.planner.describe)  # fmt: skip
        self.uploads_in_progress = 0
        self._register_gauges()

    def _load_adapter(self, video: str):
        from ..lora import GeneratedLora

        adapter = GeneratedLora.from_pretrained(self.store.adapter_path(video))
        self.hn.check_adapter(adapter)
        return adapter

    def _register_gauges(self) -> None:
        gauge = self.metrics.gauge
        gauge(
            "v2l_engine_waiting_requests",
            "Chat requests waiting for a batch row.",
            lambda: self.engine.num_waiting,
        )
        gauge(
            "v2l_engine_running_requests",
            "Chat requests in the running batch.",
            lambda: self.engine.num_running,
        )
        gauge(
            "v2l_internalization_queue_length",
            "Videos waiting to be internalized.",
            lambda: self.worker.num_queued,
        )
        gauge(
            "v2l_internalization_in_progress",
            "Videos being internalized.",
            lambda: int(self.worker.current is not None),
        )
        gauge("v2l_uploads_in_progress", "Uploads being received.", lambda: self.uploads_in_progress)
        gauge("v2l_adapters_cached", "Adapters held in memory.", lambda: len(self.cache))
        gauge(
            "v2l_adapter_cache_bytes", "Bytes of adapter tensors held in memory.", lambda: self.cache.nbytes
        )
        gauge("v2l_adapter_cache_capacity_bytes", "The adapter cache's budget.", lambda: self.cache.max_bytes)

    def start(self) -> ServerState:
        """Start the engine and the worker (which queues every unfinished job of the store).

        Returns:
            The state.

        Example:
            ```python
            state.start()
            ```
        """
        for video in self.store.unfinished():
            self.store.update(video, status="queued")
        self._start_answering()
        self.worker.start()
        return self

    def stop(self) -> None:
        """Stop the worker (after its current job) and the engine.

        Example:
            ```python
            state.stop()
            ```
        """
        self.worker.stop()
        self._stop_answering()

    def _start_answering(self) -> None:
        self.engine.start()

    def _stop_answering(self) -> None:
        self.engine.stop()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0 picks a free one).

    Args:
        host: the address.
        port: the port.

    Returns:
        The bound socket.

    Example:
        ```python
        sock = bind_socket("127.0.0.1", 0)
        sock.getsockname()[1]  # the port
        ```
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
