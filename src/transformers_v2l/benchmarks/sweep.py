"""Frame and resolution sweep of query TTFT and answer-time token reduction (the paper's figure 3).

For each `(frames, px)` cell, a fresh subprocess (memory-capped, see `common.run_isolated`) builds the
models and times, interleaved: the video in context (prefill + first token), Video2LoRA with a merged
adapter (question only) and the plain model. Inputs are preprocessed once per cell, so these are
model-side times.

Resolution: SmolVLM2 squares every frame to a `max_image_size` tile (512 px, 64 tokens per frame) whatever
the resize target, so with its stock settings `longest_edge` changes pixels but not compute. To sweep
compute as the paper's figure 3 does, the tile itself is set to `px`, rounded up to a multiple of
`patch_size * scale_factor` (64 px for SmolVLM2 256M/500M: 224 -> 256), giving
`(tile / patch)^2 / scale^2` tokens per frame: 16 at 256 px, 36 at 384 px, 64 at 512 px.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .common import log_progress, machine_info, new_figure, run_isolated, save_figure, write_json

__all__ = ["measure_cell", "plot_sweep", "run_sweep", "tile_size"]


def tile_size(px: int, patch_size: int = 16, scale_factor: int = 4) -> int:
    """The vision-tower tile for a requested resolution: `px` rounded up to a multiple of `patch * scale`.

    Args:
        px: the requested resolution in pixels.
        patch_size: the vision tower's patch size.
        scale_factor: the connector's pixel-shuffle factor.

    Returns:
        The tile size in pixels (at least `patch_size * scale_factor`).

    Example:
        ```python
        tile_size(224), tile_size(384), tile_size(512)  # (256, 384, 512)
        ```
    """
    step = patch_size * scale_factor
    return max(step, math.ceil(px / step) * step)


def measure_cell(
    num_frames: int, px: int, preset: str = "500m", repeats: int = 5, warmup: int = 1, tiny: bool = False
) -> dict[str, Any]:
    """Time one sweep cell in this process (meant for a fresh subprocess).

    Args:
        num_frames: frames per video.
        px: requested resolution; the tile is `tile_size(px)`.
        preset: real SmolVLM2 shape.
        repeats: timed rounds.
        warmup: untimed rounds.
        tiny: use the tiny test model (smoke tests).

    Returns:
        `{"frames", "px", "tile", "tokens_per_frame", "video_tokens", "tokens": {...}, "stats": {...}}`.

    Example:
        ```python
        cell = run_isolated("transformers_v2l.benchmarks.sweep:measure_cell", {"num_frames": 24, "px": 384})
        ```
    """
    import torch

    from .batched import make_adapters
    from .common import interleaved, set_threads, timed
    from .models import BENCH_QUESTION, build_setup, first_token, random_video

    set_threads()
    if tiny:  # the tiny model's vision tower has one fixed 64 px tile
        setup = build_setup(preset, tiny=True, dtype=torch.float32)
        tile = setup.processor.vision["max_image_size"]
    else:
        tile = tile_size(px)
        setup = build_setup(preset, vision={"max_image_size": tile}, longest_edge=tile)
    processor, vlm = setup.processor, setup.vlm
    video = random_video(num_frames, 360, 640)
    inputs = processor.video_in_context_inputs(
        video, BENCH_QUESTION, num_frames=num_frames, longest_edge=tile
    )
    inputs.pop("video_metadata", None)
    query = dict(processor.query_inputs([BENCH_QUESTION]))
    adapter = make_adapters(setup, 1)[0]

    def v2l_merged():
        with adapter.merge_into(vlm):
            return timed(lambda: first_token(vlm, query))

    conditions = {
        "video_in_context": lambda: first_token(vlm, inputs),
        "v2l_merged": v2l_merged,
        "plain": lambda: first_token(vlm, query),
    }
    with torch.no_grad():
        stats = interleaved(conditions, repeats=repeats, warmup=warmup)
    tokens = {"video_in_context": int(inputs["input_ids"].shape[1]), "v2l": int(query["input_ids"].shape[1])}
    return {
        "frames": num_frames,
        "px": px,
        "tile": tile,
        "tokens_per_frame": setup.tokens_per_frame,
        "video_tokens": num_frames * setup.tokens_per_frame,
        "tokens": tokens,
        "token_reduction": tokens["video_in_context"] / tokens["v2l"],
        "stats": stats,
        "ttft_speedup": stats["video_in_context"]["median"] / stats["v2l_merged"]["median"],
        "v2l_over_plain": stats["v2l_merged"]["median"] / stats["plain"]["median"],
    }


def plot_sweep(results: dict[str, Any], path: str | Path) -> Path:
    """Three panels like the paper's figure 3: TTFT of both methods, TTFT speedup, token reduction.

    Args:
        results: the dictionary `run_sweep` returns (and writes as JSON).
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        import json
        from pathlib import Path

        results = json.loads(Path("benchmarks/results/sweep_500m.json").read_text())
        plot_sweep(results, "sweep.png")
        ```
    """
    fig, (ax_t, ax_s, ax_r) = new_figure(3, width=4.6)
    cells = [c for c in results["cells"] if c.get("result")]
    for px in sorted({c["px"] for c in cells}):
        row = sorted((c for c in cells if c["px"] == px), key=lambda c: c["frames"])
        frames = [c["frames"] for c in row]
        res = [c["result"] for c in row]
        tile = res[0]["tile"]
        ax_t.plot(
            frames,
            [r["stats"]["video_in_context"]["median"] for r in res],
            marker="o",
            label=f"in context {tile} px",
        )
        ax_t.plot(
            frames,
            [r["stats"]["v2l_merged"]["median"] for r in res],
            marker="s",
            ls="--",
            label=f"Video2LoRA {tile} px",
        )
        ax_s.plot(frames, [r["ttft_speedup"] for r in res], marker="o", label=f"{tile} px")
        ax_r.plot(frames, [r["token_reduction"] for r in res], marker="o", label=f"{tile} px")
    for ax, label in (
        (ax_t, "query TTFT (s)"),
        (ax_s, "TTFT speedup (x)"),
        (ax_r, "input-token reduction (x)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{results['preset']}: frame and resolution sweep (CPU, 2 threads)")
    return save_figure(fig, path)


def run_sweep(
    preset: str = "500m",
    *,
    frames: tuple[int, ...] = (8, 12, 24, 48, 128),
    resolutions: tuple[int, ...] = (224, 384, 512),
    repeats: int = 5,
    warmup: int = 1,
    memory_cap_gib: float = 10.0,
    out_dir: str | Path = "benchmarks/results",
    tiny: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Benchmark 4 (frame and resolution sweep); writes `sweep_<preset>.json` and `.png`.

    Cells run in increasing cost order per resolution; once a cell hits the memory cap, larger frame
    counts at that resolution are recorded as skipped. The JSON is rewritten after every cell.

    Args:
        preset: `"256m"` or `"500m"`.
        frames: frame counts.
        resolutions: requested resolutions in px (see `tile_size`).
        repeats: timed rounds per cell.
        warmup: untimed rounds per cell.
        memory_cap_gib: a cell above this resident set size is killed and recorded.
        out_dir: result folder.
        tiny: use the tiny test model (smoke tests).
        verbose: log progress.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_sweep("500m", frames=(8, 12, 24), resolutions=(384, 512))
        ```
    """
    from ..errors import InvalidArgumentError
    from ..testing import family_of_preset

    if not tiny and "max_image_size" not in family_of_preset(preset).defaults.vision:
        raise InvalidArgumentError(
            f"v2l bench sweep varies the vision tower's square tile (the `max_image_size` pixel setting); preset "
            f"{preset!r} ({family_of_preset(preset).name}) has no such tile (its frames are sized another way). Use "
            "`v2l bench ttft --frames ...`."
        )
    name = "tiny" if tiny else preset
    out_dir = Path(out_dir)
    results: dict[str, Any] = {
        "benchmark": "sweep",
        "preset": name,
        "machine": machine_info(),
        "settings": {"frames": list(frames), "resolutions": list(resolutions), "repeats": repeats,
                     "memory_cap_gib": memory_cap_gib},
        "cells": [],
    }  # fmt: skip
    with log_progress(f"sweep {name}", verbose) as log:
        for px in resolutions:
            capped = False
            for count in sorted(frames):
                cell: dict[str, Any] = {"frames": count, "px": px}
                if capped:
                    cell["status"] = "skipped_after_memory_cap"
                else:
                    kwargs = {"num_frames": count, "px": px, "preset": preset, "repeats": repeats,
                              "warmup": warmup, "tiny": tiny}  # fmt: skip
                    row = run_isolated(f"{__name__}:measure_cell", kwargs, memory_cap_gib=memory_cap_gib)
                    cell.update(row)
                    capped = row["status"] == "memory_cap"
                    speed = row["result"]["ttft_speedup"] if row.get("result") else None
                    log(
                        f"{count} frames at {px} px: {row['status']}, peak {row['peak_rss_gib']} GiB, speedup {speed}"
                    )
                results["cells"].append(cell)
                results["machine"]["loadavg_end"] = list(os.getloadavg())
                write_json(out_dir / f"sweep_{name}.json", results)
    plot_sweep(results, out_dir / f"sweep_{name}.png")
    return results
