"""`v2l serve`: an OpenAI-compatible server for Video2LoRA (the `serve` extra: FastAPI, uvicorn, python-multipart).

Upload a video once (`POST /v1/videos`); it is internalized in the background into a LoRA adapter, and
`POST /v1/chat/completions` with `"model": "<video id>"` answers from that adapter with zero visual
tokens. Requests for different videos decode together in one continuously batched engine, one adapter
per batch row. See docs/serving.md.

Example:
    ```python
    from transformers_v2l.demo import load_default_hypernetwork
    from transformers_v2l.serving import serve_in_background

    with serve_in_background(load_default_hypernetwork(), store="v2l-store") as url:
        print(url)  # http://127.0.0.1:<port>
    ```
"""

from __future__ import annotations

import importlib

__all__ = ["AdapterCache", "ServeSettings", "ServerState", "ServingEngine", "VideoStore", "create_app",
           "serve_in_background"]  # fmt: skip

_LOCATIONS = {
    "AdapterCache": ".cache",
    "ServeSettings": ".settings",
    "ServerState": ".server",
    "ServingEngine": ".engine",
    "VideoStore": ".store",
    "create_app": ".app",
    "serve_in_background": ".app",
}


_NEEDS_SERVE_EXTRA = {"create_app", "serve_in_background"}


def __getattr__(name: str):
    if name in _NEEDS_SERVE_EXTRA:  # the HTTP side: name the extra instead of failing on an import
        from ..errors import require

        for package in ("fastapi", "uvicorn", "python_multipart"):
            require(package, "serve", f"transformers_v2l.serving.{name}")
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
