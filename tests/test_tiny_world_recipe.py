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


@needs_assets
@pytest.mark.parametrize(
    ("qa_format", "reader"), [("direct", "adapter"), ("dialog", "frozen"), ("dialog", "adapter")]
)
def test_a_0_1_recipe_protocol_becomes_the_processor_answer_setting(tmp_path, capsys, qa_format, reader):
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    recipe_json = json.loads((model_dir / "recipe.json").read_text())
    (model_dir / "recipe.json").write_text(
        json.dumps({**recipe_json, "qa_format": qa_format, "dialog_reader": reader})
    )
    answer = load_default_hypernetwork(model_dir).processor.answer
    assert answer["protocol"] == ("recall" if qa_format == "dialog" else "direct")
    assert qa_format == "direct" or answer["reader"] == reader
    args = argparse.Namespace(
        seed=2, num_questions=2, max_new_tokens=8, model_dir=str(model_dir), save_video=None
    )
    assert run_demo(args) == 0
    out = capsys.readouterr().out
    assert out.count("ground truth") == 2 and out.count("time to first token") == 4


@needs_assets
def test_recall_protocol_answers_the_turn_after_the_recalled_caption(tmp_path):
    from transformers_v2l.toy_world import CAPTION_PROMPT, dialog_prompt, make_clip, write_video

    hn = load_default_hypernetwork()
    assert hn.processor.answer["protocol"] == "recall" and hn.processor.answer["reader"] == "frozen"
    clip = make_clip(4, "test")
    path = str(write_video(clip.frames, tmp_path / "clip.mp4"))
    adapter = hn.internalize(path)
    questions = [item["question"] for item in clip.qa[:2]]
    caption = hn.answer(adapter, CAPTION_PROMPT, max_new_tokens=48)  # the recall prompt is asked directly
    eot = hn.family.end_of_turn_token
    expected = hn.answer_plain(
        [dialog_prompt(caption, q, end_of_turn_token=eot) for q in questions], max_new_tokens=8
    )
    assert hn.answer(adapter, questions, max_new_tokens=8) == expected  # the frozen model reads the caption


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


def test_text_only_dialog_tasks_score_the_answer_and_never_see_the_video(recipe):
    from transformers_v2l.toy_world import dialog_prompt

    cfg = recipe.PRESETS["smoke"]
    tokenizer = recipe.build_tokenizer(cfg)
    prefix = recipe.video_prompt_text(list(range(0, 16, 2)), 2.0, 8.0, 2)
    packer = recipe.PackedTasks(tokenizer, prefix, "dialog")
    caption, question = "A red square moves left.", "What color is the square?"
    ids, labels = packer.text_segment(question, caption, "red")
    assert tokenizer.decode(ids) == recipe.chat(
        dialog_prompt(caption, question, end_of_turn_token="<end_of_utterance>"), "red"
    )
    assert tokenizer.decode([t for t, label in zip(ids, labels) if label != -100]) == " red<end_of_utterance>"
    batch = packer.batch([[("Describe the video.", caption)]], [[(question, caption, "red")]])
    text = slice(batch["input_ids"].shape[1] - len(ids), None)  # the text-only segment comes last
    assert batch["position_ids"][0, text].tolist() == list(range(len(ids)))
    assert not batch["attention_mask"][0, 0, text, : len(packer.prefix_ids)].any()  # no video prefix


@needs_assets
def test_cli_defaults_to_the_embedded_model_and_its_protocol(tmp_path, capsys):
    from transformers_v2l.cli import main
    from transformers_v2l.toy_world import make_clip, write_video

    clip = make_clip(5, "test")
    video = write_video(clip.frames, tmp_path / "clip.mp4")
    assert main(["internalize", str(video), "--out", str(tmp_path / "adapter")]) == 0
    assert (
        main(["ask", str(tmp_path / "adapter"), "How many objects are there?", "--max-new-tokens", "4"]) == 0
    )
    assert "Q: How many objects are there?" in capsys.readouterr().out


@needs_assets
def test_recipe_defaults_are_the_shipped_model(recipe):
    from dataclasses import asdict

    shipped = json.loads((DEFAULT_MODEL_DIR / "recipe.json").read_text())
    assert asdict(recipe.RecipeConfig()) == shipped  # `train.py` with no --set reproduces the shipped files
