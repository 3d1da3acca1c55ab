"""DDP with 2 CPU processes (gloo) through `accelerate launch` equals one process with the same global batch, for every family."""

from __future__ import annotations

import socket
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from test_training_utils import (
    PYTHON,
    TINY_HYPERNET,
    corrupt_row,
    one_torch_thread,  # noqa: F401 (module-wide fixture)
    subprocess_env,
    toy_world_rows,
    write_manifest,
)
from transformers_v2l.training.cli import Video2LoraScriptArguments, build_trainer, parse_config
from transformers_v2l.training.trainer import Video2LoraTrainingArguments

STEPS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(tiny_vlm_path, manifest, hypernetwork: dict) -> dict:
    return {"base_model": str(tiny_vlm_path), "train_data": str(manifest), "hypernetwork": hypernetwork,
            "max_steps": STEPS, "learning_rate": 1e-3, "warmup_steps": 0, "logging_steps": 1,
            "save_strategy": "no", "seed": 0, "report_to": "none", "disable_tqdm": True}  # fmt: skip


def test_two_process_ddp_matches_one_process(tmp_path, tiny_vlm_path):
    assert_ddp_matches_one_process(tmp_path, tiny_vlm_path, TINY_HYPERNET)


@pytest.mark.parametrize(("family", "edge"), [("qwen2_5_vl", 112), ("qwen3_vl", 64), ("llava_onevision", 64)])
def test_two_process_ddp_matches_one_process_for_every_family(tmp_path, family, edge):
    """The same check on each other family's tiny model (its own inputs, positions and collation under DDP)."""
    from transformers_v2l.families import family_class

    family_cls = family_class(family)
    model, tokenizer = family_cls.build_tiny_model(seed=0)
    base = family_cls.save_tiny_model(model, tokenizer, tmp_path / f"tiny-{family}")
    assert_ddp_matches_one_process(tmp_path, base, {**TINY_HYPERNET, "num_frames": 4, "longest_edge": edge})


def assert_ddp_matches_one_process(tmp_path, tiny_vlm_path, hypernetwork: dict) -> None:
    """`accelerate launch` with 2 processes of batch 1 trains the same weights as one process of batch 2."""
    pytest.importorskip("accelerate")
    # 4 clips and a corrupt one: over 3 steps of 2 the corrupt clip is drawn, so one rank runs a micro-batch
    # with no valid video (its zero loss keeps DDP's all-reduce in step) while the other rank trains
    rows = [*toy_world_rows(tmp_path, count=4), corrupt_row(tmp_path)]
    manifest = write_manifest(tmp_path, rows)
    config = _config(tiny_vlm_path, manifest, hypernetwork)
    yaml = pytest.importorskip("yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    command = [PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "transformers_v2l.training.cli", "train",
               str(tmp_path / "config.yaml"), "--output_dir", str(tmp_path / "ddp"),
               "--per_device_train_batch_size", "1"]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "Hypernetwork saved to" in result.stdout

    script, args = parse_config(
        (Video2LoraScriptArguments, Video2LoraTrainingArguments), config,
        ["--output_dir", str(tmp_path / "single"), "--per_device_train_batch_size", "2"],
    )  # fmt: skip
    trainer = build_trainer(script, args)
    trainer.train()
    assert trainer.skipped_videos >= 1

    ddp = load_file(tmp_path / "ddp" / "model.safetensors")
    single = {k: v.detach() for k, v in trainer.hypernetwork.state_dict().items()}
    assert set(ddp) == set(single)
    initial = build_trainer(script, args).hypernetwork.state_dict()
    moved = max((single[k] - initial[k]).abs().max().item() for k in single)
    diff = max((ddp[k] - single[k]).abs().max().item() for k in single)
    print(
        f"DDP vs single process after {STEPS} steps: max |weight diff| = {diff:.3g} (weights moved {moved:.3g})"
    )
    assert moved > 1e-3  # training did change the weights
    assert diff <= 1e-5
    assert torch.isfinite(torch.tensor(diff))
