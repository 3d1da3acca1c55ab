"""The `v2l serve --engine vllm` options and errors (no heavy imports, so `v2l serve --help` stays instant).

`vllm_bridge.py` holds the bridge itself; this module declares and checks its command-line options.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import InvalidArgumentError
from .errors import OverloadedError, ServingError

__all__ = ["VLLM_API_KEY_ENV", "VLLM_LORA_RANKS", "VllmAdapterError", "VllmOptions", "VllmUnavailableError",
           "add_vllm_arguments", "vllm_max_lora_rank", "vllm_options"]  # fmt: skip

#: The environment variable holding vLLM's API key (its `--api-key`), when `--vllm-api-key` is not given.
VLLM_API_KEY_ENV = "V2L_VLLM_API_KEY"
#: The values vLLM accepts for `--max-lora-rank` (vllm/config/lora.py).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that serves adapters of rank `rank`.

    Args:
        rank: the adapters' rank (`r` in their `adapter_config.json`).

    Returns:
        One of `VLLM_LORA_RANKS`.

    Raises:
        InvalidArgumentError: `rank` is above vLLM's largest allowed value.

    Example:
        ```python
        vllm_max_lora_rank(24)  # 32
        ```
    """
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise InvalidArgumentError(
        f"Adapters of rank {rank} are above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})."
    )


class VllmUnavailableError(OverloadedError):
    """vLLM cannot be reached (down or restarting): HTTP 503 with `Retry-After`.

    Args:
        message: what failed.
        retry_after: seconds the client should wait.
        status_code: 503.

    Example:
        ```python
        raise VllmUnavailableError("vLLM at http://127.0.0.1:8001 cannot be reached.", retry_after=5)
        ```
    """

    code = "vllm_unavailable"


class VllmAdapterError(ServingError):
    """vLLM refused to register a video's adapter (HTTP 502); the message has vLLM's reason and the fix.

    Args:
        message: vLLM's reason and what to change.
        status_code: overrides the class's HTTP status.
        code: overrides the class's error code.
        param: the request field at fault, if any.

    Example:
        ```python
        raise VllmAdapterError("vLLM refused adapter vid-...: LoRA rank 16 is greater than max_lora_rank 8.")
        ```
    """

    status_code = 502
    code = "vllm_adapter_refused"


@dataclass
class VllmOptions:
    """How to reach the vLLM server that answers for `v2l serve --engine vllm`.

    Args:
        url: vLLM's base URL, for example `http://127.0.0.1:8001` (without `/v1`).
        model: vLLM's name for the base model (its `--served-model-name`); `None` takes the first base
            model vLLM lists.
        api_key: vLLM's API key (its `--api-key`), if it has one.
        store_path: the store folder as vLLM's machines see it (a shared file system mounted elsewhere);
            `None` when vLLM reads the same path as this server.
        watch_interval: seconds between checks that vLLM is up and holds every adapter.
        timeout: seconds to wait for vLLM's next bytes of an answer.

    Example:
        ```python
        VllmOptions(url="http://127.0.0.1:8001", model="base")
        ```
    """

    url: str
    model: str | None = None
    api_key: str | None = None
    store_path: str | None = None
    watch_interval: float = 2.0
    timeout: float = 600.0


def add_vllm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--engine` and the `--vllm-*` options to the `v2l serve` parser.

    Args:
        parser: the `serve` parser.

    Example:
        ```python
        add_vllm_arguments(serve_parser)
        ```
    """
    group = parser.add_argument_group("engine")
    group.add_argument("--engine", choices=["builtin", "vllm"], default="builtin",
                       help="Who answers: this process's continuous-batching engine (builtin), or a vLLM server "
                       "(--vllm-url) that gets every adapter registered under its video id (default builtin).")  # fmt: skip
    group.add_argument(
        "--vllm-url", help="vLLM's base URL, for example http://127.0.0.1:8001 (--engine vllm)."
    )
    group.add_argument(
        "--vllm-model", help="vLLM's name for the base model (default: the first one it lists)."
    )
    group.add_argument(
        "--vllm-api-key", help=f"vLLM's API key, if it was started with one (default: ${VLLM_API_KEY_ENV})."
    )
    group.add_argument("--vllm-store-path", help="The store folder as vLLM sees it, when vLLM runs on other machines "
                       "with the store on a shared file system (default: the --store path).")  # fmt: skip


def vllm_options(args: argparse.Namespace) -> VllmOptions | None:
    """Check the engine options before any model loads; the `VllmOptions` for `--engine vllm`, else `None`.

    Args:
        args: the parsed `v2l serve` arguments.

    Returns:
        The options, or `None` for the builtin engine.

    Raises:
        InvalidArgumentError: `--engine vllm` without a usable `--vllm-url`, `--vllm-*` options with the
            builtin engine, or `--merge-adapter` with vLLM.

    Example:
        ```python
        options = vllm_options(args)
        ```
    """
    engine = getattr(args, "engine", "builtin")
    given = [
        name
        for name in ("vllm_url", "vllm_model", "vllm_api_key", "vllm_store_path")
        if getattr(args, name, None)
    ]
    if engine != "vllm":
        if given:
            raise InvalidArgumentError(f"--{given[0].replace('_', '-')} needs --engine vllm.")
        return None
    url = (args.vllm_url or "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(
            f"--engine vllm needs --vllm-url http://HOST:PORT (vLLM's address), got {args.vllm_url!r}."
        )
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if getattr(args, "merge_adapter", None):
        raise InvalidArgumentError(
            "--merge-adapter serves one adapter from this process; it does not apply to --engine vllm."
        )
    api_key = args.vllm_api_key or os.environ.get(VLLM_API_KEY_ENV) or None
    return VllmOptions(url=url, model=args.vllm_model, api_key=api_key, store_path=args.vllm_store_path)
