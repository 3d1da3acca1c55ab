"""Internalization against one video-in-context prefill of the same video, stage by stage.

Model side only: the processor outputs of both conditions are prepared once, so decoding and
resizing (the same work for both) are left out. One interleaved run times

* `video_in_context`: the base model's prefill of video and question up to the first token;
* `internalize`: `extract_features` then the hypernetwork forward and the adapter objects;
* its stages, each from the same prepared inputs: `extract_features` (the frozen VLM up to its
  last decoder layer), `input_projection` (the hypernetwork's gated MLP over every layer's
  tokens), `encoder` (the Perceiver encoder) and `decoder_and_head` (the rest of the forward: the
  median of the whole hypernetwork forward minus those of the two stages before it).

`floor` is `(extract_features + input_projection) / video_in_context`: the part of the ratio
that no Perceiver speed-up can remove.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import interleaved, log_progress, machine_info, new_figure, save_figure, set_threads, write_json
from .models import BENCH_QUESTION, BenchSetup, build_setup, first_token, model_tensors, random_video

__all__ = ["INTERNALIZATION_STAGES", "measure_internalization", "plot_internalization", "run_internalization"]

#: The stages of `internalize`, in order.
PAPER_INPUT_EXPANSION = 4  # the released architecture's input projection width, as a multiple of H
INTERNALIZATION_STAGES = ("extract_features", "input_projection", "encoder", "decoder_and_head")


@torch.no_grad()
def measure_internalization(
    setup: BenchSetup,
    *,
    num_frames: int = 12,
    longest_edge: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    log=None,
) -> dict[str, Any]:
    """Time internalization, its stages and one video-in-context prefill in one interleaved run.

    Args:
        setup: models from `build_setup`.
        num_frames: frames of the (random, 720p) video.
        longest_edge: frame resize target; defaults to the processor's.
        repeats: timed rounds (median reported).
        warmup: untimed rounds.
        log: optional progress callable.

    Returns:
        `{"stats": {condition: summary}, "medians": {...}, "ratios": {...}, "tokens": {...}, "settings": {...}}`;
        the ratios divide medians by the `video_in_context` median.

    Example:
        ```python
        result = measure_internalization(build_setup("256m"), repeats=5)
        result["ratios"]["internalize"], result["ratios"]["floor"]
        ```
    """
    hn, vlm, processor = setup.hypernet, setup.vlm, setup.processor
    settings = {"num_frames": num_frames, "longest_edge": longest_edge or processor.longest_edge}
    video = random_video(num_frames)
    prefill_inputs = model_tensors(processor.video_in_context_inputs(video, BENCH_QUESTION, **settings), vlm)
    inputs = model_tensors(processor.internalization_inputs([video], **settings), vlm)
    features, mask = hn.extract_features(**dict(inputs))  # [1, L, S, H], [1, S]
    num_layers, hidden = features.shape[1], features.shape[3]
    rows = features.transpose(0, 1).reshape(num_layers, -1, hidden)  # [N, S, H]
    row_mask = mask.bool().repeat(num_layers, 1)  # [N, S]
    projected = hn.input_projection(rows)  # [N, S, D]

    def internalize():
        out = hn(*hn.extract_features(**dict(inputs)))
        return hn.adapters_from_output(out, [{}])

    conditions = {
        "video_in_context": lambda: first_token(vlm, prefill_inputs),
        "internalize": internalize,
        "extract_features": lambda: hn.extract_features(**dict(inputs)),
        "input_projection": lambda: hn.input_projection(rows),
        "encoder": lambda: hn.encoder(projected, row_mask),
        "hypernetwork_forward": lambda: hn(features, mask),
    }
    stats = interleaved(conditions, repeats=repeats, warmup=warmup, progress=log)
    median = {name: stat["median"] for name, stat in stats.items()}
    median["decoder_and_head"] = max(
        0.0, median["hypernetwork_forward"] - median["input_projection"] - median["encoder"]
    )
    prefill = median["video_in_context"]
    ratios = {name: value / prefill for name, value in median.items() if name != "video_in_context"}
    ratios["floor"] = (median["extract_features"] + median["input_projection"]) / prefill
    return {
        "stats": stats,
        "medians": median,
        "ratios": ratios,
        "tokens": {
            "video_in_context": int(prefill_inputs["input_ids"].shape[1]),
            "internalization": int(inputs["input_ids"].shape[1]),
        },
        "settings": {
            **settings,
            "repeats": repeats,
            "num_layers": num_layers,
            "input_expansion": hn.config.input_expansion,
        },
    }


def plot_internalization(results: dict[str, Any], path: str | Path) -> Path:
    """One bar for the prefill and one stacked bar for internalization's stages, in seconds.

    Args:
        results: the dictionary `run_internalization` returns (and writes as JSON).
        path: the `.png` file to write.

    Returns:
        The path written.

    Example:
        ```python
        import json
        from pathlib import Path

        results = json.loads(Path("benchmarks/results/internalization_500m.json").read_text())
        plot_internalization(results, "internalization.png")
        ```
    """
    fig, axes = new_figure(1, width=6.0, height=2.6)
    ax = axes[0]
    median = results["medians"]
    ax.barh(1, median["video_in_context"], color="#888")
    left = 0.0
    colors = ("#4a7", "#c84", "#48c", "#a6c")
    for stage, color in zip(INTERNALIZATION_STAGES, colors):
        ax.barh(0, median[stage], left=left, color=color, label=stage.replace("_", " "))
        left += median[stage]
    ax.set_yticks([0, 1], ["internalize", "video in context"])
    ax.set_xlabel("seconds (medians)")
    ratio = results["ratios"]["internalize"]
    ax.set_title(f"{results['preset']}: internalize = {ratio:.2f}x one video-in-context prefill (CPU)")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def run_internalization(
    preset: str = "500m",
    *,
    num_frames: int = 12,
    longest_edge: int = 384,
    repeats: int = 5,
    warmup: int = 1,
    out_dir: str | Path = "benchmarks/results",
    setup: BenchSetup | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Internalization against one prefill; writes `internalization_<preset>.json` and `.png`.

    A hypernetwork whose input projection is narrower than the paper's (`setup` built with
    `hypernet_kwargs={"input_expansion": 2}`) writes `internalization_<preset>_x2.*` instead.

    Args:
        preset: `"256m"` or `"500m"`.
        num_frames: frames per video.
        longest_edge: frame resize target.
        repeats: timed rounds per condition.
        warmup: untimed rounds.
        out_dir: result folder.
        setup: reuse models; built from `preset` otherwise.
        verbose: log progress.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_internalization("500m")["ratios"]["internalize"]
        ```
    """
    set_threads()
    setup = setup or build_setup(preset)
    with log_progress(f"internalization {setup.preset}", verbose) as log:
        measurement = measure_internalization(
            setup, num_frames=num_frames, longest_edge=longest_edge, repeats=repeats, warmup=warmup, log=log
        )
    results = {
        "benchmark": "internalization",
        "preset": setup.preset,
        "machine": machine_info(),
        **measurement,
    }
    out_dir = Path(out_dir)
    expansion = setup.hypernet.config.input_expansion
    name = f"internalization_{setup.preset}" + (
        "" if expansion == PAPER_INPUT_EXPANSION else f"_x{expansion}"
    )
    write_json(out_dir / f"{name}.json", results)
    plot_internalization(results, out_dir / f"{name}.png")
    return results
