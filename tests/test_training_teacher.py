"""The teacher job: sharded, atomic, resumable after a real SIGKILL, and split across processes."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from test_training_utils import (
    PYTHON,
    corrupt_row,
    one_torch_thread,  # noqa: F401 (module-wide fixture)
    real_rows,
    subprocess_env,
    toy_world_rows,
    write_manifest,
)
from transformers_v2l.training.cli import main as training_cli
from transformers_v2l.training.teacher import load_teacher_dataset

pytest.importorskip("datasets")
yaml = pytest.importorskip("yaml")

KILL_SCRIPT = """
import os, signal, sys
import transformers_v2l.training.data as data
from transformers_v2l.training.cli import main

calls, original = [0], data.load_example_video
def load_then_die(example, processor=None, num_frames=12):
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):  # in the middle of a shard: kill -9, no cleanup of any kind
        os.kill(os.getpid(), signal.SIGKILL)
    return original(example, processor, num_frames)
data.load_example_video = load_then_die
main(["teacher", sys.argv[1]])
"""


@pytest.fixture(scope="module")
def teacher_config(tmp_path_factory, tiny_vlm_path, real_clip):
    root = tmp_path_factory.mktemp("teacher-data")
    real = next(r for r in real_rows(real_clip) if "carphone" in r["id"])
    real["metadata"] = {"scenes": [[0.0, 1.5], [1.5, 2.5], [2.5, 4.0]]}  # the span sampler draws from these
    rows = [*toy_world_rows(root, count=4), real, corrupt_row(root)]
    manifest = write_manifest(root, rows)
    return {"base_model": str(tiny_vlm_path), "data": str(manifest), "spans_per_video": 2, "shard_size": 3,
            "batch_size": 2, "max_new_tokens": 6, "top_k": 3, "num_frames": 4, "longest_edge": 64,
            "dtype": "float32", "seed": 0}  # fmt: skip


def _write_config(path, config, output_dir):
    path.write_text(yaml.safe_dump({**config, "output_dir": str(output_dir)}))
    return path


def test_killed_teacher_job_resumes_and_has_every_example_once(tmp_path, teacher_config, capsys):
    clean = tmp_path / "clean"
    assert training_cli(["teacher", str(_write_config(tmp_path / "clean.yaml", teacher_config, clean))]) == 0
    reference = load_teacher_dataset(clean, include_errors=True)
    assert len(reference) == 12  # 6 examples x 2 spans
    config = json.loads((clean / "teacher_config.json").read_text())
    assert config["num_shards"] == 4 and config["top_k"] == 3

    out = tmp_path / "killed"
    config_path = _write_config(tmp_path / "killed.yaml", teacher_config, out)
    killed = subprocess.run([PYTHON, "-c", KILL_SCRIPT, str(config_path), "8"], env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    shards = sorted(p.name for p in out.glob("shard-*.parquet"))
    assert shards == ["shard-00000-of-00004.parquet", "shard-00001-of-00004.parquet"]  # shard 2 was in flight
    with pytest.raises(FileNotFoundError, match="not finished"):
        load_teacher_dataset(out)

    capsys.readouterr()
    assert training_cli(["teacher", str(config_path)]) == 0  # the rerun
    assert "(2 shards written now)" in capsys.readouterr().out
    resumed = load_teacher_dataset(out, include_errors=True)
    ids = resumed["id"]
    assert len(ids) == len(set(ids)) == 12 and ids == reference["id"]
    assert resumed["target_token_ids"] == reference["target_token_ids"]
    assert resumed["teacher_topk_ids"] == reference["teacher_topk_ids"]
    for got, want in zip(resumed["teacher_topk_logprobs"], reference["teacher_topk_logprobs"]):
        assert (got is None and want is None) or torch.allclose(
            torch.tensor(got), torch.tensor(want), atol=1e-4
        )
    assert not list(out.glob(".*tmp"))  # the shard in flight left no file behind

    errors = [row for row in resumed if row["error"] is not None]
    assert {row["id"] for row in errors} == {"corrupt#span0", "corrupt#span1"}
    good = load_teacher_dataset(out)
    assert len(good) == 10 and all(row["target_token_ids"] for row in good)
    row = good[0]
    assert (
        len(row["teacher_topk_ids"]) == len(row["target_token_ids"]) and len(row["teacher_topk_ids"][0]) == 3
    )
    spans = {
        (r["start"], r["end"], json.loads(r["metadata"])["span_kind"])
        for r in good
        if r["id"].startswith("real-")
    }
    assert len(spans) == 2 and all(
        kind in {"single_scene", "multi_scene", "full_video"} for *_, kind in spans
    )


def test_teacher_settings_must_match_on_rerun(tmp_path, teacher_config):
    out = tmp_path / "job"
    rows = [json.loads(line) for line in Path(teacher_config["data"]).read_text().splitlines()][:1]
    data_root = str(Path(teacher_config["data"]).parent)
    small = {
        **teacher_config,
        "data": str(write_manifest(tmp_path, rows)),
        "data_root": data_root,
        "spans_per_video": 1,
    }
    config_path = _write_config(tmp_path / "job.yaml", small, out)
    assert training_cli(["teacher", str(config_path)]) == 0
    with pytest.raises(ValueError, match=r"different settings \(\['max_new_tokens'\]\)"):
        training_cli(["teacher", str(config_path), "--max_new_tokens", "7"])


def test_processes_split_the_shards(tmp_path, teacher_config, tiny_vlm_path):
    from transformers import SmolVLMForConditionalGeneration

    from transformers_v2l.processing_video2lora import Video2LoraProcessor
    from transformers_v2l.training.data import load_manifest
    from transformers_v2l.training.teacher import TeacherSettings, generate_teacher_targets

    vlm = SmolVLMForConditionalGeneration.from_pretrained(tiny_vlm_path).eval()
    processor = Video2LoraProcessor.from_pretrained(tiny_vlm_path)
    rows = load_manifest(teacher_config["data"])[:4]
    settings = TeacherSettings(shard_size=1, batch_size=1, max_new_tokens=2, num_frames=4, longest_edge=64)
    written = [
        [p.name[:11] for p in generate_teacher_targets(vlm, processor, rows, tmp_path, settings, process_index=rank,
                                                       num_processes=2, show_progress=False)]
        for rank in (0, 1)
    ]  # fmt: skip
    assert written == [["shard-00000", "shard-00002"], ["shard-00001", "shard-00003"]]
    assert load_teacher_dataset(tmp_path)["id"] == [r["id"] for r in rows]


def test_teacher_under_accelerate_launch_with_two_processes(tmp_path, teacher_config):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "launched"
    config_path = _write_config(tmp_path / "launched.yaml", teacher_config, out)
    command = [PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
               "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
               "-m", "transformers_v2l.training.cli", "teacher", str(config_path)]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "12 examples (2 shards written now)" in result.stdout  # rank 0's count: shards 0 and 2
    assert len(load_teacher_dataset(out, include_errors=True)) == 12
