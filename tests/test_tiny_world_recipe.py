"""The tiny-world recipe, shortened (same code, fewer steps), and the shipped default model.

* A few base-VLM steps on a small world lower the training loss.
* With the shipped base VLM as the frozen model, a short hypernetwork run (teacher job, feature
  cache, `Video2LoraTrainer`) already makes adapters video-specific: on validation clips, the
  clip's own adapter gives a lower caption loss than another clip's adapter.
* `v2l demo` runs offline against the shipped assets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from transformers_v2l.demo import DEFAULT_MODEL_DIR, load_default_hypernetwork, run_demo

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "tiny_world"
HAS_ASSETS = (DEFAULT_MODEL_DIR / "base" / "config.json").exists() and (
    DEFAULT_MODEL_DIR / "hypernet"
).exists()
needs_assets = pytest.mark.skipif(not HAS_ASSETS, reason="the tiny-world assets are not built")


@pytest.fixture(scope="module")
def recipe():
    sys.path.insert(0, str(EXAMPLE_DIR))
    try:
        import train

        yield train
    finally:
        sys.path.remove(str(EXAMPLE_DIR))


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_base_training_lowers_the_loss(recipe, tmp_path):
    argv = ["--work-dir", str(tmp_path), "--preset", "smoke", "--steps", "world", "base",
            "--set", "num_train=24", "num_validation=4", "num_test=4", "base_steps=30", "base_batch=4", "threads=1"]  # fmt: skip
    assert recipe.main(argv) == 0
    losses = json.loads((tmp_path / "base" / "training_losses.json").read_text())
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert (tmp_path / "base" / "model.safetensors").exists()


@needs_assets
def test_short_hypernetwork_run_makes_video_specific_adapters(recipe, tmp_path):
    shutil.copytree(DEFAULT_MODEL_DIR / "base", tmp_path / "base")
    shipped = json.loads((DEFAULT_MODEL_DIR / "recipe.json").read_text())
    argv = ["--work-dir", str(tmp_path), "--steps", "world", "hypernet",
            "--set", "num_train=96", "num_validation=24", "num_test=4", "hn_steps=80", "hn_batch=16", "threads=1",
            f"seed={shipped['seed']}"]  # fmt: skip
    assert recipe.main(argv) == 0
    losses = json.loads((tmp_path / "hypernet" / "validation_losses.json").read_text())
    assert losses["correct"] < losses["wrong"] - 0.05, losses
    assert losses["correct"] < losses["none"], losses


@needs_assets
def test_default_model_internalizes_and_answers(tmp_path):
    from transformers_v2l.toy_world import make_clip, write_video

    hn = load_default_hypernetwork()
    clip = make_clip(3)
    path = write_video(clip.frames, tmp_path / "clip.mp4")
    adapter = hn.internalize(str(path))
    assert adapter.rank == hn.config.effective_rank
    answers = hn.answer(adapter, ["Describe the video.", "How many objects are there?"])
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
    assert hn.answer_with_video(str(path), "How many objects are there?")


@needs_assets
def test_demo_runs_offline(capsys):
    args = argparse.Namespace(seed=0, num_questions=3, max_new_tokens=16, model_dir=None, save_video=None)
    assert run_demo(args) == 0
    out = capsys.readouterr().out
    assert out.count("ground truth") == 3
    assert out.count("time to first token") == 6
    assert "Video2LoRA" in out


def test_dialog_format_asks_after_the_caption_turn(recipe):
    meta = {"clip_id": "c0"}
    rows = [
        {"id": "c0-caption", "task_type": "caption", "prompt": "Describe the video.", "target_text": "A red square.", "metadata": meta},
        {"id": "c0-qa0", "task_type": "qa", "prompt": "What color is the square?", "target_text": "red", "metadata": meta},
    ]  # fmt: skip
    tasks = recipe.clip_tasks(rows, "dialog")["c0"]
    assert tasks[0] == ("Describe the video.", "A red square.")
    prompt, target = tasks[1]
    assert target == "red"
    assert recipe.chat(prompt) == (
        "<|im_start|>User: Describe the video.<end_of_utterance>\nAssistant: A red square.<end_of_utterance>\n"
        "User: What color is the square?<end_of_utterance>\nAssistant:"
    )  # the standard two-turn chat, with the caption as the first answer
    with pytest.raises(ValueError, match="qa_format"):
        recipe.clip_tasks(rows, "chain")
