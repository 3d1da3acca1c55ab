"""`v2l bench ...`: run the speed-and-scale benchmarks and write JSON + PNG results.

v2l bench ttft --preset 500m
v2l bench amortized --preset 500m
v2l bench internalization --preset 500m
v2l bench internalization --preset 500m --input-expansion 2
v2l bench tokens --preset 500m
v2l bench sweep --preset 500m --frames 8 12 24 48 128 --resolutions 224 384 512
v2l bench batched --preset 500m
v2l bench long-video --video bbb.mp4 --total-frames 1024
v2l bench all --preset 500m
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["BENCHMARKS", "add_bench_subparser", "run_bench"]

BENCHMARKS = ("ttft", "amortized", "internalization", "tokens", "sweep", "batched", "long-video", "all")


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
        "--repeats", type=int, default=5, help="Timed rounds per condition (median reported)."
    )
    parser.add_argument("--warmup", type=int, default=1, help="Untimed warm-up rounds.")
    parser.add_argument(
        "--frames",
        type=int,
        nargs="+",
        help="Frame count(s): ttft/amortized/internalization/tokens use the first.",
    )
    parser.add_argument("--resolutions", type=int, nargs="+", help="Resolutions in px (ttft, sweep).")
    parser.add_argument("--batch", type=int, default=8, help="batched: questions per batch.")
    parser.add_argument("--new-tokens", type=int, default=16, help="batched: tokens generated per answer.")
    parser.add_argument(
        "--video", help="long-video: the long video (default: fetch Big Buck Bunny, see docs)."
    )
    parser.add_argument(
        "--total-frames", type=int, default=1024, help="long-video: frames of the chunked run."
    )
    parser.add_argument("--chunk-frames", type=int, default=12, help="long-video: frames per chunk.")
    parser.add_argument("--direct-frames", type=int, nargs="*", default=[12, 24, 48, 96, 192],
                        help="long-video: frame counts of the direct single passes.")  # fmt: skip
    parser.add_argument(
        "--memory-cap-gib", type=float, default=10.0, help="Kill a subprocess above this RSS."
    )
    parser.add_argument(
        "--input-expansion",
        type=int,
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


def main(argv: list[str] | None = None) -> int:
    """Run `v2l bench` standalone: `python -m transformers_v2l.benchmarks.cli ttft`."""
    parser = argparse.ArgumentParser(prog="v2l")
    add_bench_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
