"""An LRU cache of adapters in memory, bounded in megabytes, over the on-disk store.

A chat completion for a video takes its adapter from here; a miss loads the PEFT folder from the store
(`GeneratedLora.from_pretrained`) and checks it against the base model. Least recently used adapters
are dropped when the cache would exceed its budget; requests already decoding keep their own reference,
so dropping an adapter never disturbs a running batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["AdapterCache"]


class AdapterCache:
    """Least-recently-used adapters, at most `max_mb` megabytes of tensors.

    Args:
        load: `load(video_id)` returns the video's `GeneratedLora` (called on a miss, outside the lock).
        max_mb: the budget in MB (2**20 bytes); one adapter larger than the budget is still returned, not kept.

    Example:
        ```python
        cache = AdapterCache(lambda video: GeneratedLora.from_pretrained(store.adapter_path(video)), max_mb=512)
        adapter = cache.get(video)
        ```
    """

    def __init__(self, load: Callable[[str], object], *, max_mb: float = 512.0):
        self.load = load
        self.max_bytes = int(max_mb * 2**20)
        self._items: OrderedDict[str, object] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str):
        """The adapter of a video, from memory or loaded (and then cached).

        Args:
            key: the video id.

        Returns:
            The `GeneratedLora`.

        Example:
            ```python
            adapter = cache.get(video)
            ```
        """
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        adapter = self.load(key)
        self.put(key, adapter)
        return adapter

    def peek(self, key: str):
        """The adapter if it is in memory (a hit), else `None`; never loads.

        Args:
            key: the video id.

        Returns:
            The `GeneratedLora` or `None`.

        Example:
            ```python
            adapter = cache.peek(video) or cache.get(video)
            ```
        """
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]

    def put(self, key: str, adapter) -> None:
        """Cache an adapter (for example one just internalized), dropping the least recently used ones.

        Args:
            key: the video id.
            adapter: the `GeneratedLora`.

        Example:
            ```python
            cache.put(video, adapter)
            ```
        """
        size = adapter.nbytes
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key).nbytes
            if size > self.max_bytes:
                return
            while self._items and self._bytes + size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
            self._items[key] = adapter
            self._bytes += size

    def discard(self, key: str) -> None:
        """Forget a video's adapter (after the video is deleted).

        Args:
            key: the video id.

        Example:
            ```python
            cache.discard(video)
            ```
        """
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key).nbytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        """Bytes of adapter tensors held."""
        return self._bytes
