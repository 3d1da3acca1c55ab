"""`v2l bench ...`: run the speed-and-scale benchmarks and write JSON + PNG results.

v2l bench ttft --preset 500m
v2l bench amortized --preset 500m
v2l bench internalization --preset 500m
v2l bench internalization --preset 500m --input-expansion 2
v2l bench tokens --preset 500m
v2l bench sweep --preset 500m --frames 8 12 24 48 128 --resolutions 224 384 512
v2l bench batched --preset 500m
v2l bench long-video --video bbb.mp4 --total-frames 1024
v2l bench serve --preset 256m
v2l bench all --preset 500m
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["BENCHMARKS", "add_bench_subparser", "estimate_memory_gib", "run_bench"]

BENCHMARKS = (
    "ttft",
    "amortized",
    "internalization",
    "tokens",
    "sweep",
    "batched",
    "long-video",
    "serve",
    "all",
)


def add_bench_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the `bench` subcommand to the `v2l` parser.

    Args:
        subparsers: the object returned by `ArgumentParser.add_subparsers`.

    Returns:
        The `bench` parser.

    Example:
        ```python
        parser = argparse.ArgumentParser(prog="v2l")
        add_bench_subparser(parser.add_subparsers())
        args = parser.parse_args(["bench", "ttft", "--preset", "256m"])
        ```
    """
    from ..cli_args import non_negative_int, positive_float, positive_int

    parser = subparsers.add_parser(
        "bench",
        help="Speed and scale benchmarks (real checkpoint shapes, random weights, CPU).",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("benchmark", choices=BENCHMARKS, help="Which benchmark to run.")
    parser.add_argument(
        "--preset",
        default="500m",
        help="A real checkpoint's shape, random weights (default 500m; `transformers_v2l.testing.presets()` lists them).",
    )
    parser.add_argument(
        "--out-dir", default="benchmarks/results", help="Folder for the JSON and PNG results."
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=5, help="Timed rounds per condition (median reported)."
    )
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="Untimed warm-up rounds.")
    parser.add_argument(
        "--frames",
        type=positive_int,
        nargs="+",
        help="Frame count(s): ttft/amortized/internalization/tokens use the first.",
    )
    parser.add_argument(
        "--resolutions", type=positive_int, nargs="+", help="Resolutions in px (ttft, sweep)."
    )
    parser.add_argument("--batch", type=positive_int, default=8, help="batched: questions per batch.")
    parser.add_argument(
        "--new-tokens", type=positive_int, default=16, help="batched: tokens generated per answer."
    )
    parser.add_argument(
        "--video", help="long-video: the long video (default: fetch Big Buck Bunny, see docs)."
    )
    parser.add_argument(
        "--total-frames", type=positive_int, default=1024, help="long-video: frames of the chunked run."
    )
    parser.add_argument("--chunk-frames", type=positive_int, default=12, help="long-video: frames per chunk.")
    parser.add_argument("--direct-frames", type=positive_int, nargs="*", default=[12, 24, 48, 96, 192],
                        help="long-video: frame counts of the direct single passes.")  # fmt: skip
    parser.add_argument(
        "--memory-cap-gib", type=positive_float, default=10.0, help="Kill a subprocess above this RSS."
    )
    parser.add_argument(
        "--input-expansion",
        type=positive_int,
        help="Hypernetwork input projection width as a multiple of the VLM hidden size (default: the paper's 4).",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress output.")
    parser.set_defaults(func=run_bench)
    return parser


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark named by `args.benchmark`; print the key ratios as JSON.

    Args:
        args: the parsed `v2l bench` arguments.

    Returns:
        The exit code (0).

    Raises:
        MissingDependencyError: the `benchmarks` extra is not installed (checked before any work).

    Example:
        ```python
        from transformers_v2l.cli import build_parser

        run_bench(build_parser().parse_args(["bench", "ttft", "--preset", "256m", "--repeats", "5"]))
        ```
    """
    from ..errors import require
    from . import amortized, batched, internalization, long_video, sweep, token_load, ttft
    from .models import build_setup

    name, out_dir, verbose = args.benchmark, Path(args.out_dir), not args.quiet
    require("matplotlib", "benchmarks", f"v2l bench {name}")  # before any work: every benchmark plots
    if name in ("tokens", "sweep", "long-video", "all"):
        require("psutil", "benchmarks", f"v2l bench {name}")  # peak memory of the subprocesses
    _check_arguments(args)
    frames = args.frames or None
    timing = {"repeats": args.repeats, "warmup": args.warmup, "out_dir": out_dir, "verbose": verbose}
    summary = {}
    setup = None
    if name in ("ttft", "amortized", "internalization", "batched", "all"):
        expansion = getattr(args, "input_expansion", None)
        setup = build_setup(
            args.preset, hypernet_kwargs={"input_expansion": expansion} if expansion else None
        )
    if name in ("ttft", "all"):
        result = ttft.run_ttft(args.preset, resolutions=tuple(args.resolutions or (384, 512)),
                               num_frames=frames[0] if frames else 12, setup=setup, **timing)  # fmt: skip
        summary["ttft"] = [run["ratios"] for run in result["runs"]]
        if name == "all":
            amortized.run_amortized(args.preset, setup=setup, measurement=result["runs"][0], **timing)
    if name == "amortized":
        result = amortized.run_amortized(
            args.preset, num_frames=frames[0] if frames else 12, setup=setup, **timing
        )
        summary["amortized"] = result["amortized"]
    if name in ("internalization", "all"):
        result = internalization.run_internalization(
            args.preset, num_frames=frames[0] if frames else 12, setup=setup, **timing
        )
        summary["internalization"] = result["ratios"]
    if name in ("batched", "all"):
        result = batched.run_batched(
            args.preset, batch=args.batch, new_tokens=args.new_tokens, setup=setup, **timing
        )
        summary["batched"] = result["ratios"]
    setup = None  # free the models before the subprocess benchmarks
    # `v2l serve` in subprocesses against in-process answering (transformers_v2l.serving.bench)
    if name == "serve":
        from ..serving.bench import run_serve_bench

        result = run_serve_bench(args.preset, repeats=args.repeats, warmup=args.warmup,
                                 new_tokens=args.new_tokens, out_dir=out_dir, verbose=verbose)  # fmt: skip
        summary["serve"] = {"ttft": result["ttft"]["ratio_http_over_in_process"],
                            **{k: v for k, v in result["throughput"].items() if k.startswith("per_row_over")}}  # fmt: skip
    if name in ("tokens", "all"):
        result = token_load.run_token_load(args.preset, num_frames=frames[0] if frames else 12, out_dir=out_dir,
                                           memory_cap_gib=args.memory_cap_gib, verbose=verbose)  # fmt: skip
        summary["tokens"] = result["token_reduction_vs_video_in_context"]
    if name in ("sweep", "all"):
        result = sweep.run_sweep(args.preset, frames=tuple(frames or (8, 12, 24, 48, 128)),
                                 resolutions=tuple(args.resolutions or (224, 384, 512)),
                                 memory_cap_gib=args.memory_cap_gib, **timing)  # fmt: skip
        summary["sweep"] = [
            {"frames": c["frames"], "px": c["px"], "status": c.get("status"),
             "speedup": c["result"]["ttft_speedup"] if c.get("result") else None}
            for c in result["cells"]
        ]  # fmt: skip
    if name in ("long-video", "all"):
        video = args.video or str(long_video.big_buck_bunny())
        result = long_video.run_long_video(
            video, args.preset, total_frames=args.total_frames, chunk_frames=args.chunk_frames,
            direct_frames=tuple(args.direct_frames), memory_cap_gib=args.memory_cap_gib, out_dir=out_dir,
            verbose=verbose,
        )  # fmt: skip
        chunked = (result.get("chunked") or {}).get("result") or {}
        summary["long_video"] = {"chunked_peak_rss_gib": chunked.get("peak_rss_gib"),
                                 "chunked_fit": result.get("chunked_fit"),
                                 "direct": [(d["frames"], d["status"], d["peak_rss_gib"]) for d in result["direct"]]}  # fmt: skip
    print(json.dumps(summary, indent=2, default=str))
    return 0


# the clip the in-process benchmarks build: `models.random_video`'s default 720p uint8 frames
_CLIP_BYTES_PER_FRAME = 720 * 1280 * 3
_IN_PROCESS = ("ttft", "amortized", "internalization", "tokens", "all")  # one clip of `--frames[0]` frames


def estimate_memory_gib(preset: str, num_frames: int, longest_edge: int, *, dtype_bytes: int = 2) -> float:
    """A lower bound of the memory one clip of `num_frames` frames needs in a benchmark, from the preset's shapes.

    The sum of what is certainly held at once: the decoded clip (`random_video`'s 720p uint8 frames),
    the processor's float32 pixels (3 x side x side per frame), and the hidden states of every decoder
    layer that the hypernetwork reads (tokens per frame x frames x (layers + 1) x hidden size x
    `dtype_bytes`). Weights, attention and other activations come on top.

    Args:
        preset: a key of `transformers_v2l.testing.presets()`.
        num_frames: frames of the clip.
        longest_edge: the frame resize target in pixels.
        dtype_bytes: bytes per element of the model's activations (2 for the benchmarks' bfloat16).

    Returns:
        The estimate in GiB.

    Example:
        ```python
        estimate_memory_gib("500m", 12, 384)  # about 0.1
        ```
    """
    from types import SimpleNamespace

    from ..testing import presets

    family = presets()[preset]
    shapes = family.presets[preset]
    config = SimpleNamespace(
        **{key: value for key, value in shapes.items() if key not in ("vision", "text")},
        vision_config=SimpleNamespace(**shapes["vision"]), text_config=SimpleNamespace(**shapes["text"]),
    )  # fmt: skip
    vision = family.vision_settings_for(config)  # the family's own pixel rules, from the preset's shapes
    tokens = family.tokens_per_frame(SimpleNamespace(vision=vision, longest_edge=longest_edge))
    side = max(vision.get("max_image_size") or vision.get("image_size") or 0, longest_edge)
    text = shapes["text"]
    clip = num_frames * _CLIP_BYTES_PER_FRAME
    pixels = num_frames * 3 * side * side * 4
    features = num_frames * tokens * (text["num_hidden_layers"] + 1) * text["hidden_size"] * dtype_bytes
    return (clip + pixels + features) / 2**30


def _available_gib() -> float | None:
    """Memory available to a new allocation (psutil, else /proc/meminfo), or `None` if unknown."""
    try:
        import psutil

        return psutil.virtual_memory().available / 2**30
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 2**30
    except (OSError, ValueError):
        pass
    return None


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse an unknown preset, an unwritable `--out-dir` and a clip that cannot fit in memory, before any model."""
    from ..cli_args import check_writable
    from ..errors import InvalidArgumentError
    from ..testing import presets

    if args.preset not in presets():
        raise InvalidArgumentError(
            f"--preset {args.preset!r} is not a preset; choose one of {sorted(presets())}."
        )
    check_writable(args.out_dir, "--out-dir")
    if args.benchmark not in _IN_PROCESS:
        return  # the sweep and long-video cells run in subprocesses under --memory-cap-gib
    frames = args.frames[0] if args.frames else 12
    edge = max(args.resolutions or (384, 512)) if args.benchmark in ("ttft", "all") else 384
    needed, available = estimate_memory_gib(args.preset, frames, edge), _available_gib()
    if available is not None and needed > available:
        raise InvalidArgumentError(
            f"--frames {frames} needs at least {needed:,.1f} GiB for one {args.preset} clip at {edge} px (the frames, "
            f"their pixels and every layer's hidden states), and this machine has {available:,.1f} GiB available. "
            f"Use fewer frames (each costs about {needed / frames * 1024:,.0f} MiB)."
        )


def main(argv: list[str] | None = None) -> int:
    """Run `v2l bench` standalone: `python -m transformers_v2l.benchmarks.cli ttft`."""
    parser = argparse.ArgumentParser(prog="v2l")
    add_bench_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
