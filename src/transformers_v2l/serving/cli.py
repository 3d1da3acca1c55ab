"""`v2l serve`: the OpenAI-compatible server (upload a video once, ask it questions at text-only cost).

v2l serve                                   # the embedded tiny-world model on http://127.0.0.1:8000
v2l serve --hypernetwork me/my-hypernet --store /data/v2l-store --api-key "$KEY"
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["add_serve_subparser", "run_serve"]


def add_serve_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `v2l serve` on the CLI's subparsers.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `serve` parser.

    Example:
        ```python
        import argparse

        parser = argparse.ArgumentParser(prog="v2l")
        add_serve_subparser(parser.add_subparsers())
        args = parser.parse_args(["serve", "--port", "8001"])
        ```
    """
    from .settings import API_KEY_ENV, ServeSettings

    defaults = ServeSettings()
    parser = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible server: upload videos, ask them questions with zero visual tokens.",
        description=__doc__.splitlines()[0],
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--hypernetwork", help="Hypernetwork folder or Hub repo (default: the embedded tiny-world model)."
    )
    model.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="dtype of the base VLM.")
    model.add_argument(
        "--served-model-name", help="Name of the base model in /v1/models (default: from its path)."
    )
    model.add_argument("--random-weights", metavar="PRESET",
                       help="Serve a real checkpoint's shape with random weights, a preset of "
                       "`transformers_v2l.testing.presets()` such as 256m (for benchmarks; answers are noise).")  # fmt: skip
    model.add_argument("--merge-adapter", metavar="DIR",
                       help="Merge this adapter into the base weights: the base model then answers from it at the plain "
                       "model's cost (a one-video deployment; uploads are refused while it is merged).")  # fmt: skip
    model.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's).")
    net = parser.add_argument_group("network and security")
    net.add_argument(
        "--host", default=defaults.host, help="Address to bind (default 127.0.0.1: this machine only)."
    )
    net.add_argument(
        "--port", type=int, default=defaults.port, help="TCP port (0 picks a free one and prints it)."
    )
    net.add_argument("--api-key", help=f"Require `Authorization: Bearer KEY` on every route but /health and the page "
                     f"(default: ${API_KEY_ENV}, if set).")  # fmt: skip
    limits = parser.add_argument_group("store and limits")
    limits.add_argument(
        "--store", default=str(defaults.store), help="Store folder for videos, jobs and adapters."
    )
    for name, kind, help_text in (
        ("max_upload_mb", float, "Largest upload, in MB."),
        ("max_duration", float, "Longest video accepted, in seconds."),
        ("adapter_cache_mb", float, "Memory for cached adapters, in MB."),
        ("max_batch", int, "Most requests decoding at once."),
        ("max_waiting", int, "Most chat requests waiting for a batch row (more get 429)."),
        ("max_queued_videos", int, "Most videos waiting to be internalized (more uploads get 503)."),
        ("max_concurrent_uploads", int, "Most uploads received at once (more get 503)."),
        ("default_max_tokens", int, "Answer budget when a request sets no max_tokens."),
        ("max_tokens", int, "Largest max_tokens a request may ask for."),
        ("max_prompt_tokens", int, "Longest prompt accepted, in tokens."),
    ):
        default = getattr(defaults, name)
        limits.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            help=f"{help_text} (default {default:g})",
        )
    from .vllm_options import add_vllm_arguments

    add_vllm_arguments(parser)  # --engine vllm --vllm-url URL (vllm_bridge.py)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=run_serve)
    return parser


def _load_hypernetwork(args):
    import torch

    if args.random_weights:
        from ..benchmarks.models import build_setup
        from ..testing import presets

        if args.random_weights not in presets():
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"--random-weights {args.random_weights!r}: choose one of {sorted(presets())}."
            )
        return build_setup(args.random_weights).hypernet
    if args.hypernetwork is None:
        import sys

        from ..cli_internalize import EMBEDDED_MODEL_NOTE
        from ..demo import load_default_hypernetwork

        print(EMBEDDED_MODEL_NOTE, file=sys.stderr)  # once, before any upload: what this model can answer
        return load_default_hypernetwork()
    from ..modeling_video2lora import Video2LoraHypernetwork

    kwargs = {"base_model_kwargs": {"dtype": getattr(torch, args.dtype)}} if args.dtype else {}
    return Video2LoraHypernetwork.from_pretrained(args.hypernetwork, **kwargs)


def run_serve(args: argparse.Namespace) -> int:
    """Load the model, open the store and serve until interrupted.

    Args:
        args: the parsed `v2l serve` arguments.

    Returns:
        The exit code, 0 after a clean shutdown.

    Raises:
        MissingDependencyError: the `serve` extra is not installed.
        StoreMismatchError: the store belongs to another hypernetwork.

    Example:
        ```python
        from transformers_v2l.cli import build_parser

        run_serve(build_parser().parse_args(["serve", "--port", "0"]))  # serves until Ctrl-C
        ```
    """
    from ..errors import require

    for package in ("fastapi", "uvicorn", "python_multipart"):
        require(package, "serve", "v2l serve")
    from .vllm_options import vllm_options

    vllm = vllm_options(args)  # --engine vllm: checked before torch and the model load
    import torch
    import uvicorn

    from . import model_access
    from .app import create_app
    from .server import ServerState, bind_socket
    from .settings import API_KEY_ENV, ServeSettings

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    hn = _load_hypernetwork(args)
    fields = {name: getattr(args, name) for name in ServeSettings.__dataclass_fields__ if hasattr(args, name)}
    fields["api_key"] = args.api_key or os.environ.get(API_KEY_ENV) or None
    settings = ServeSettings(**fields)
    if args.merge_adapter:
        from ..lora import GeneratedLora

        adapter = GeneratedLora.from_pretrained(args.merge_adapter)
        hn.check_adapter(adapter)
        adapter.merge_into(model_access.base_model(hn))
    if settings.host not in ("127.0.0.1", "::1", "localhost") and not settings.api_key:
        print(f"v2l serve: warning: listening on {settings.host} without an API key (--api-key or ${API_KEY_ENV}).",
              file=sys.stderr)  # fmt: skip
    if vllm is not None:
        from .vllm_bridge import VllmServerState

        state = VllmServerState(hn, settings, vllm)
    else:
        state = ServerState(hn, settings)
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    print(f"v2l serve: {state.base_name} on {url} (store {settings.store}, "
          f"{'API key required' if settings.api_key else 'no API key'})", flush=True)  # fmt: skip
    config = uvicorn.Config(create_app(state), log_level=args.log_level, timeout_graceful_shutdown=5, timeout_keep_alive=75,
                            access_log=args.log_level == "debug")  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])
    return 0
