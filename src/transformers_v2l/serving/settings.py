"""The settings of `v2l serve` (kept apart from the server so that `v2l --help` imports nothing heavy)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["API_KEY_ENV", "ServeSettings"]

#: The environment variable that sets the API key when `--api-key` is not given.
API_KEY_ENV = "V2L_API_KEY"


@dataclass
class ServeSettings:
    """The settings of one server (the `v2l serve` options).

    Args:
        store: the store folder.
        host: the address to bind (loopback by default).
        port: the TCP port (0 picks a free one).
        api_key: the bearer token every route but `/health` and the page requires; `None` for none.
        served_model_name: the name of the base model in `/v1/models` and requests.
        max_upload_mb: the upload size cap.
        max_duration: the longest video accepted, in seconds.
        adapter_cache_mb: the in-memory adapter cache's budget.
        max_batch: most requests decoding at once.
        max_waiting: most chat requests waiting for a batch row (more get 429).
        max_queued_videos: most videos waiting to be internalized (more uploads get 503).
        max_concurrent_uploads: most uploads being received at once (more get 503).
        default_max_tokens: the answer budget when a request sets none.
        max_tokens: the largest budget a request may ask for.
        max_prompt_tokens: the longest prompt accepted.

    Example:
        ```python
        settings = ServeSettings(store="v2l-store", port=8000, api_key="secret")
        ```
    """

    store: str | os.PathLike = "v2l-store"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    served_model_name: str | None = None
    max_upload_mb: float = 256.0
    max_duration: float = 600.0
    adapter_cache_mb: float = 512.0
    max_batch: int = 16
    max_waiting: int = 64
    max_queued_videos: int = 32
    max_concurrent_uploads: int = 4
    default_max_tokens: int = 256
    max_tokens: int = 2048
    max_prompt_tokens: int = 4096
