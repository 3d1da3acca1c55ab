"""`benchmarks/gpu_check.py` (without CUDA it says so and exits 0; on the CPU it runs every check) and `benchmarks/lora_update_dtype.py`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_says_so_and_exits_0():
    result = run()
    assert result.returncode == 0, result.stderr
    assert "CUDA is not available" in result.stdout


def test_the_checks_run_on_the_cpu_with_the_tiny_model():
    result = run("--device", "cpu", "--tiny", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["placement"] == {"hypernetwork": "cpu", "base_model": "cpu"}
    assert report["parity"]["same_greedy_token"] and report["parity"]["adapter_effect_max_abs"] > 0
    assert report["parity"]["hooks_vs_peft_max_abs"] <= 1e-3
    assert set(report["ttft_ratio_vs_plain"]) == {
        "plain_text_only",
        "v2l_unmerged",
        "v2l_merged",
        "video_in_context",
    }
    assert "parity: OK" in result.stderr


def test_lora_update_dtype_benchmark_writes_its_medians(tmp_path):
    script = SCRIPT.parent / "lora_update_dtype.py"
    out = tmp_path / "lora.json"
    args = [
        "--tokens",
        "3",
        "--d-in",
        "16",
        "--d-out",
        "8",
        "--rank",
        "2",
        "--repeats",
        "5",
        "--out",
        str(out),
    ]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["settings"] == {"tokens": 3, "d_in": 16, "d_out": 8, "rank": 2}
    assert set(report["medians"]) == {
        f"{p}_{d}_us" for p in ("prefill", "decode") for d in ("float32", "bfloat16", "module_bfloat16")
    } | {"update_share_of_module_macs"}
    assert report["medians"]["update_share_of_module_macs"] == 2 * (16 + 8) / (16 * 8)
    assert all(value > 0 for value in report["medians"].values())
