"""Helpers shared by the training tests (tiny models, manifests of real and synthetic clips), and their own tests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from transformers_v2l.training.utils import atomic_write_text

SRC = str(Path(__file__).resolve().parents[1] / "src")

TINY_HYPERNET = {
    "lora_rank": 4,
    "latent_size": 32,
    "num_latent_queries": 4,
    "num_blocks": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "attention_head_dim": 16,
    "num_frames": 4,
    "longest_edge": 64,
}

REAL_TARGETS = {
    "carphone_distorted.mp4": "A man talks on a phone in a moving car.",
    "bikes.mp4": "Cyclists ride along a busy city street.",
}


def write_manifest(root: Path, rows: list[dict], name: str = "train.jsonl") -> Path:
    """Write rows as a JSONL manifest; returns its path."""
    path = root / name
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def toy_world_rows(root: Path, count: int = 4) -> list[dict]:
    """Caption rows of `count` synthetic tiny-world clips, with paths relative to `root`."""
    from transformers_v2l.toy_world import generate_world, read_manifest

    manifests = generate_world(root, num_train=count, num_validation=0, num_test=0)
    return [
        row for row in read_manifest(manifests["train"], resolve_paths=False) if row["task_type"] == "caption"
    ]


def real_rows(real_clip) -> list[dict]:
    """Rows for two short real clips (absolute paths); `bikes.mp4` gets a scene span."""
    rows = []
    for name, target in REAL_TARGETS.items():
        row = {"id": f"real-{name}", "video_path": str(real_clip(name)), "task_type": "caption",
               "prompt": "Describe the video.", "target_text": target, "dataset": "real", "split": "train",
               "metadata": {}}  # fmt: skip
        if name == "bikes.mp4":
            row["metadata"] = {"scenes": [{"start": 0.0, "end": 4.0}, {"start": 4.0, "end": 10.0}]}
            row["start"], row["end"] = 4.0, 10.0
        rows.append(row)
    return rows


def corrupt_row(root: Path) -> dict:
    """A row whose video is a text file named `.mp4`."""
    path = root / "corrupt.mp4"
    path.write_text("not a video\n" * 50)
    return {"id": "corrupt", "video_path": str(path), "prompt": "Describe the video.", "target_text": "Nothing.",
            "task_type": "caption", "dataset": "real", "split": "train", "metadata": {}}  # fmt: skip


def build_hypernetwork(vlm_path, seed: int = 0, dtype=torch.float32):
    """A fresh tiny hypernetwork with its frozen tiny VLM and processor, seeded."""
    from transformers import SmolVLMForConditionalGeneration

    from transformers_v2l import Video2LoraConfig, Video2LoraHypernetwork
    from transformers_v2l.processing_video2lora import Video2LoraProcessor

    vlm = SmolVLMForConditionalGeneration.from_pretrained(vlm_path, dtype=dtype).eval()
    processor = Video2LoraProcessor.from_pretrained(vlm_path)
    torch.manual_seed(seed)
    config = Video2LoraConfig.from_base_model(vlm_path, **TINY_HYPERNET)
    return Video2LoraHypernetwork(config, base_model=vlm, processor=processor)


def subprocess_env() -> dict:
    """Environment for child processes: offline, quiet, importing this checkout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    return env


PYTHON = sys.executable


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run the tiny models on one intra-op thread, then restore the previous count.

    The tiny models gain nothing from two threads, and on a busy 2-core machine OpenMP's spin-waiting
    made these tests 10-25x slower (6 s with one thread against 153 s with two, same tests, load ~9).
    Import this fixture into a test module to use it there.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---- tests of the helpers ---------------------------------------------------------------------------
def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "state.json", "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary files left


def test_atomic_write_text_keeps_old_file_on_error(tmp_path):
    path = atomic_write_text(tmp_path / "state.json", "old")

    with pytest.raises(TypeError):
        atomic_write_text(path, 123)  # not text: the write fails before the rename
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
