"""Smoke tests of the benchmarks, the diagnostics and chunked internalization, on the tiny model.

Performance claims live in the benchmark JSON files, never here: these tests check that every benchmark
function runs end to end and computes what it says, at tiny scale.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from fixtures.videos import write_video
from transformers_v2l.benchmarks import (
    amortized,
    batched,
    common,
    diagnostics,
    internalization,
    long_video,
    models,
    sweep,
    token_load,
    ttft,
)
from transformers_v2l.long_video import compose_chunks, internalize_chunked, iter_chunk_adapters, plan_chunks
from transformers_v2l.lora import GeneratedLora
from transformers_v2l.video_sampling import sample_frame_indices


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, especially on a shared, oversubscribed machine."""
    previous, variable = torch.get_num_threads(), os.environ.get("V2L_BENCH_THREADS")
    os.environ["V2L_BENCH_THREADS"] = "1"  # what the benchmark functions use
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    if variable is None:
        os.environ.pop("V2L_BENCH_THREADS")
    else:
        os.environ["V2L_BENCH_THREADS"] = variable


@pytest.fixture(scope="module")
def setup():
    return models.build_setup(tiny=True, dtype=torch.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12 s synthetic clip at 10 fps."""
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", 120, size=(48, 64), fps=10)


# ---- common ------------------------------------------------------------------------------------------
def test_interleaved_rotates_and_uses_reported_times():
    calls = []
    stats = common.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or 0.25}, repeats=5, warmup=1
    )
    assert calls[:4] == ["a", "b", "b", "a"]  # order rotates every round
    assert stats["a"]["n"] == stats["b"]["n"] == 5
    assert stats["b"]["median"] == 0.25 and stats["b"]["samples"] == [0.25] * 5
    assert stats["a"]["cpu"]["n"] == 5
    sample = common.timed(lambda: sum(range(10000)))
    assert isinstance(sample, float) and sample.cpu >= 0


def test_result_files_are_written_atomically(tmp_path):
    path = common.write_json(tmp_path / "sub" / "r.json", {"x": np.float32(1.5), "d": torch.bfloat16})
    assert json.loads(path.read_text()) == {"x": 1.5, "d": "torch.bfloat16"}
    fig, axes = common.new_figure(1)
    axes[0].plot([0, 1], [0, 1])
    png = common.save_figure(fig, tmp_path / "sub" / "r.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["r.json", "r.png"]
    info = common.machine_info()
    assert {"cpu", "loadavg", "torch_threads"} <= set(info)


def test_run_isolated_reports_memory_and_enforces_the_cap(tmp_path):
    ok = common.run_isolated("builtins:dict", {"answer": 42}, memory_cap_gib=4.0)  # stdlib only: starts fast
    assert ok["status"] == "ok" and ok["result"]["answer"] == 42 and ok["peak_rss_gib"] > 0
    hog = tmp_path / "hog.py"
    hog.write_text("import time\nblock = b'x' * (400 * 2**20)\ntime.sleep(30)\n")
    capped = common.run_isolated("runpy:run_path", {"path_name": str(hog)}, memory_cap_gib=0.2, poll_s=0.02)
    assert capped["status"] == "memory_cap" and capped["result"] is None and capped["wall_s"] < 25


# ---- chunked internalization ----------------------------------------------------------------------------
def test_chunked_internalization_equals_composed_chunk_adapters(setup):
    hn = setup.hypernet
    video = models.random_video(30, 48, 64)  # arrays count as 1 fps: chunks of 12, 12 and 6 frames
    adapter = internalize_chunked(hn, video, chunk_frames=12, show_progress=False)
    parts = [hn.internalize(video[i : i + 12], num_frames=12) for i in (0, 12, 24)]
    reference = GeneratedLora.compose(parts)
    assert adapter.rank == 3 * parts[0].rank
    for module in adapter.target_modules:
        torch.testing.assert_close(adapter.lora_A[module], reference.lora_A[module], rtol=0, atol=0)
        torch.testing.assert_close(adapter.lora_B[module], reference.lora_B[module], rtol=0, atol=0)
    assert adapter.metadata["composition"]["num_chunks"] == 3
    assert [c["start_frame"] for c in adapter.metadata["chunks"]] == [0, 12, 24]
    batched_run = internalize_chunked(hn, video, chunk_frames=12, batch_size=2, show_progress=False)
    torch.testing.assert_close(batched_run.delta_weight("down_proj"), reference.delta_weight("down_proj"))
    mean = internalize_chunked(hn, video, chunk_frames=12, reduction="mean", show_progress=False)
    torch.testing.assert_close(mean.delta_weight("down_proj"), reference.delta_weight("down_proj") / 3)
    with pytest.raises(ValueError, match="reduction"):
        compose_chunks(parts, reduction="max")


def test_chunked_internalization_streams_a_file(setup, clip):
    chunks = list(iter_chunk_adapters(setup.hypernet, str(clip), chunk_frames=4, chunks=3))
    starts = [a.metadata["start_frame"] for a in chunks]
    assert starts == [0, 40, 80]
    assert all(len(a.metadata["frame_indices"]) == 4 for a in chunks)


def test_plan_chunks_spreads_frames_over_the_film():
    plan = plan_chunks(596.46, 1024, 12)
    assert plan["chunks"] == 86
    chunk_frames = round(596.46 * 24 / 86)  # frames of one chunk at 24 fps
    assert (
        len(sample_frame_indices(chunk_frames, 24.0, num_frames=12, target_fps=plan["fps"], skip_secs=0))
        == 12
    )
    with pytest.raises(ValueError):
        plan_chunks(0, 10)


# ---- benchmarks at tiny scale ---------------------------------------------------------------------------------
def test_query_conditions_and_amortized(setup, tmp_path):
    names = ["video_in_context", "internalize", "kv_query", "kv_cache_build", "plain", "v2l_unmerged",
             "v2l_merged", "merge"]  # fmt: skip
    result = ttft.measure_query_conditions(setup, num_frames=2, conditions=names, repeats=1, warmup=0)
    assert set(result["stats"]) == set(names)
    tokens = result["tokens"]
    assert tokens["video_in_context"] > tokens["kv_cached_prefix"] > 0
    assert tokens["video_in_context"] == tokens["kv_cached_prefix"] + tokens["kv_query_new"]
    out = amortized.run_amortized(measurement=result, setup=setup, out_dir=tmp_path, verbose=False)
    assert (tmp_path / "amortized_tiny.json").exists() and (tmp_path / "amortized_tiny.png").exists()
    assert out["amortized"]["questions"] == [1, 5, 10, 15]


def test_internalization_stages(setup, tmp_path):
    out = internalization.run_internalization(
        setup=setup, num_frames=2, longest_edge=64, repeats=1, warmup=0, out_dir=tmp_path, verbose=False
    )
    assert (tmp_path / "internalization_tiny.json").exists() and (
        tmp_path / "internalization_tiny.png"
    ).exists()
    ratios, medians = out["ratios"], out["medians"]
    assert set(internalization.INTERNALIZATION_STAGES) <= set(medians)
    assert ratios["floor"] == pytest.approx(
        (medians["extract_features"] + medians["input_projection"]) / medians["video_in_context"]
    )
    assert (
        out["tokens"]["internalization"] > 0
        and out["settings"]["num_layers"] == setup.vlm.config.text_config.num_hidden_layers
    )


def test_internalization_with_a_narrower_input_projection(tmp_path):
    setup = models.build_setup(tiny=True, dtype=torch.float32, hypernet_kwargs={"input_expansion": 2})
    hidden = setup.vlm.config.text_config.hidden_size
    assert setup.hypernet.input_projection.gate_proj.out_features == 2 * hidden
    out = internalization.run_internalization(
        setup=setup, num_frames=2, longest_edge=64, repeats=1, warmup=0, out_dir=tmp_path, verbose=False
    )
    assert out["settings"]["input_expansion"] == 2
    assert (tmp_path / "internalization_tiny_x2.json").exists()
    # the paper-architecture result keeps its own file
    assert not (tmp_path / "internalization_tiny.json").exists()


def test_amortized_arithmetic():
    stats = {k: {"median": v} for k, v in {"video_in_context": 10.0, "internalize": 11.0, "kv_cache_build": 10.0,
                                           "kv_query": 0.2, "v2l_merged": 0.1, "merge": 0.5}.items()}  # fmt: skip
    curve = amortized.amortized_ttft(stats, (1, 10))
    assert curve["video_in_context"] == [10.0, 10.0]
    assert curve["kv_cache"] == [pytest.approx(10.2), pytest.approx(1.2)]
    assert curve["video2lora_merged"] == [pytest.approx(11.6), pytest.approx(1.25)]
    assert curve["speedup_vs_video_in_context"][1] == pytest.approx(8.0)


def test_batched_conditions(setup):
    result = batched.measure_batched(
        setup,
        batch=3,
        new_tokens=2,
        conditions=["per_row", "shared_merged", "peft_mixed"],
        repeats=1,
        warmup=0,
    )
    assert set(result["throughput_tokens_per_s"]) == {"per_row", "shared_merged", "peft_mixed"}
    assert result["ratios"]["per_row_over_shared_merged"]["wall"] > 0


def test_per_row_answers_match_peft_mixed_batch(setup):
    """The per-row hooks compute what PEFT's `adapter_names` batch computes (same adapters, same logits)."""
    from transformers_v2l.injection import inject_lora, stack_adapters

    adapters = batched.make_adapters(setup, 2)
    query = dict(setup.processor.query_inputs(["What happens?", "Which color?"]))
    peft_model, names = batched._peft_model(setup, adapters)
    with torch.no_grad():
        expected = peft_model(**query, adapter_names=names).logits
        with inject_lora(setup.hypernet.family, *stack_adapters(adapters)):
            got = setup.vlm(**query).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_token_load_condition_in_process():
    result = token_load.measure_condition("v2l_merged", num_frames=2, tiny=True)
    assert result["input_tokens"] == result["context_tokens"] > 0
    assert set(result["rss_gib"]) == {"setup", "prepare", "answer"}
    video = token_load.measure_condition("video_in_context", num_frames=2, tiny=True)
    assert video["input_tokens"] > result["input_tokens"]


def test_sweep_cell_and_tiles():
    assert [sweep.tile_size(px) for px in (224, 384, 512, 1000)] == [256, 384, 512, 1024]
    cell = sweep.measure_cell(2, 64, repeats=1, warmup=0, tiny=True)
    assert cell["video_tokens"] == 2 * cell["tokens_per_frame"]
    assert cell["token_reduction"] > 1 and cell["ttft_speedup"] > 0


def test_long_video_runs_in_process(clip):
    chunked = long_video.chunked_run(str(clip), total_frames=8, chunk_frames=4, longest_edge=64, tiny=True)
    assert chunked["chunks"] == 2 and chunked["frames"] == 8
    assert [t["frames"] for t in chunked["trace"]] == [4, 8]
    assert chunked["composed_rank"] == 2 * 8
    direct = long_video.direct_run(str(clip), 6, longest_edge=64, tiny=True)
    assert direct["frames"] == 6 and not direct["exceeds_positions"]
    fit = long_video._linear_fit([1, 2, 3], [2, 4, 6])
    assert fit["slope"] == pytest.approx(2) and fit["r2"] == pytest.approx(1)


# ---- diagnostics ---------------------------------------------------------------------------------------------
def test_frobenius_profile_matches_dense_update(setup):
    adapter = batched.make_adapters(setup, 1)[0]
    profile = diagnostics.frobenius_profile(adapter)["down_proj"]
    dense = adapter.delta_weight("down_proj").double().flatten(1).norm(dim=1)
    np.testing.assert_allclose(profile, dense.tolist(), rtol=1e-5)


def test_rank_ablation_and_layer_removal(setup, tmp_path):
    hn = setup.hypernet
    adapters = batched.make_adapters(setup, 2)
    prompt, refs = "What happens in the video?", ["a red circle moves"]

    def score(i, adapter):
        return diagnostics.teacher_forced_score(hn, adapter, prompt, refs)

    ablation = diagnostics.rank_direction_ablation(adapters[:1], score, budgets=(1, 8, 64), seeds=(0, 1))
    assert ablation["budgets"] == [1, 8]  # 64 exceeds the rank
    assert set(ablation["curves"]) == {"top", "bottom", "random", "remove_top"}
    assert ablation["curves"]["top"][-1] == pytest.approx(ablation["full"])  # k = R keeps everything
    assert ablation["curves"]["remove_top"][-1] == pytest.approx(ablation["zero"])  # k = R removes everything
    assert math.isfinite(ablation["zero"])
    consistency = diagnostics.rank_order_consistency(adapters)
    assert sum(consistency["top_frequency"]) == pytest.approx(1.0)
    removal = diagnostics.layer_removal(adapters[:1], score)
    assert len(removal["effect"]) == adapters[0].num_layers == len(removal["frobenius"]["down_proj"])
    diagnostics.plot_rank_ablation(ablation, tmp_path / "c.png")
    diagnostics.plot_layer_removal(removal, tmp_path / "d.png")
    assert (tmp_path / "c.png").exists() and (tmp_path / "d.png").exists()


def test_bench_cli_parses():
    import argparse

    from transformers_v2l.benchmarks.cli import add_bench_subparser

    parser = argparse.ArgumentParser()
    add_bench_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "sweep", "--frames", "8", "12", "--resolutions", "384"])
    assert args.benchmark == "sweep" and args.frames == [8, 12] and args.resolutions == [384]
    assert callable(args.func)


def test_sweep_refuses_a_family_without_a_tile_setting_before_any_work():
    from transformers_v2l.benchmarks.sweep import run_sweep
    from transformers_v2l.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"llava-ov-0\.5b.*has no such tile"):
        run_sweep("llava-ov-0.5b", frames=(8,), resolutions=(384,))
