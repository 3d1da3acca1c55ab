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


@pytest.mark.parametrize(
    ("setting", "words"),
    [("family=qwen2_5_vl", "trains the families ['llava_onevision', 'smolvlm'], not 'qwen2_5_vl'"),
     ("nope=1", "RecipeConfig has no field 'nope'"), ("base_steps=x", "base_steps takes int values")],
)  # fmt: skip
def test_bad_recipe_settings_stop_before_any_work(recipe, tmp_path, capsys, setting, words):
    with pytest.raises(SystemExit) as stopped:
        recipe.main(["--work-dir", str(tmp_path / "run"), "--set", setting])
    assert stopped.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", ["smolvlm", "llava_onevision"])
def test_base_training_lowers_the_loss(recipe, tmp_path, family):
    argv = ["--work-dir", str(tmp_path), "--preset", "smoke", "--steps", "world", "base",
            "--set", f"family={family}", "num_train=24", "num_validation=4", "num_test=4", "base_steps=30", "base_batch=4", "threads=1"]  # fmt: skip
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
def test_demo_accuracy_scores_what_the_demo_prints(capsys):
    from transformers_v2l.demo import demo_accuracy
    from transformers_v2l.evaluation import exact_match_score

    args = argparse.Namespace(seed=1, num_questions=2, max_new_tokens=16, model_dir=None, save_video=None)
    run_demo(args)
    printed = capsys.readouterr().out
    result = demo_accuracy(
        load_default_hypernetwork(), [1, 2], num_questions=2, max_new_tokens=16, progress=False
    )
    rows = [q for q in result["questions"] if q["seed"] == 1]
    assert len(rows) == 2 and len(result["questions"]) == 4
    for row in rows:  # the same question, ground truth and answers as the demo of that seed
        assert f"Q: {row['question']}" in printed
        assert f"ground truth          : {row['truth']}" in printed
        assert f"base, video in context: {row['base']}" in printed
        assert f"Video2LoRA, no video  : {row['v2l']}" in printed
        assert row["v2l_right"] == exact_match_score(row["v2l"], row["truth"])
    summary = result["summary"]
    assert summary["v2l"]["right"] == sum(q["v2l_right"] for q in result["questions"])
    assert summary["base"]["exact_match"] == summary["base"]["right"] / 4
    assert f"   Video2LoRA: {result['captions'][0]['v2l']}" in printed


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


@needs_assets
def test_recall_protocol_with_the_video_in_context(tmp_path):
    from transformers_v2l.toy_world import CAPTION_PROMPT, dialog_prompt, make_clip, write_video

    hn = load_default_hypernetwork()
    clip = make_clip(4, "test")
    path = str(write_video(clip.frames, tmp_path / "clip.mp4"))
    questions = [item["question"] for item in clip.qa[:2]]
    caption = hn.answer_with_video(
        path, CAPTION_PROMPT, max_new_tokens=48
    )  # the recall prompt is asked directly
    eot = hn.family.end_of_turn_token
    hn.processor.answer = {"protocol": "direct"}  # the same turns, written out as the recipe trained them
    expected = hn.answer_with_video(
        path, [dialog_prompt(caption, q, end_of_turn_token=eot) for q in questions], max_new_tokens=8
    )
    assert expected[0] != hn.answer_with_video(path, questions[0], max_new_tokens=8)  # the protocol matters
    hn = load_default_hypernetwork()
    assert hn.answer_with_video(path, questions, max_new_tokens=8) == expected


def test_dialog_format_asks_after_the_caption_turn(recipe):
    meta = {"clip_id": "c0"}
    rows = [
        {"id": "c0-caption", "task_type": "caption", "prompt": "Describe the video.", "target_text": "A red square.", "metadata": meta},
        {"id": "c0-qa0", "task_type": "qa", "prompt": "What color is the square?", "target_text": "red", "metadata": meta},
    ]  # fmt: skip
    tasks = recipe.clip_tasks(rows, "dialog", lambda caption, question: f"<{caption}|{question}>")["c0"]
    assert tasks == [
        ("Describe the video.", "A red square."),
        ("<A red square.|What color is the square?>", "red"),
    ]
    with pytest.raises(ValueError, match="qa_format"):
        recipe.clip_tasks(rows, "chain")
    with pytest.raises(ValueError, match="dialog prompt"):
        recipe.clip_tasks(rows, "dialog")


def test_a_dialog_turn_renders_as_the_conversation(recipe, family_recipe):
    from prompts import dialog_turn

    from transformers_v2l.toy_world import CAPTION_PROMPT, dialog_prompt

    _, prompts, _, _ = family_recipe
    processor, family = prompts.processor, prompts.family
    caption, question = "A red square moves left.", "What color is the square?"
    conversation = [{"role": "user", "content": CAPTION_PROMPT}, {"role": "assistant", "content": caption},
                    {"role": "user", "content": question}]  # fmt: skip
    text = dialog_turn(processor, caption, question)
    assert processor.chat_text([{"role": "user", "content": text}]) == processor.chat_text(conversation)
    assert prompts.video_prompt(text) == processor.video_text(
        prompts.metadata, prompts.reference_pixels, conversation
    )
    if family.name == "smolvlm":  # the text 0.1 trained the shipped model on
        assert text == dialog_prompt(caption, question, end_of_turn_token="<end_of_utterance>")


@pytest.fixture(scope="module", params=["smolvlm", "llava_onevision"])
def family_recipe(recipe, request, tmp_path_factory):
    """A four-clip world and an untrained base of one family: `(work, prompts, model, rows)`."""
    from dataclasses import replace

    work = tmp_path_factory.mktemp(request.param)
    cfg = replace(recipe.PRESETS["smoke"], family=request.param, num_train=4, num_validation=2, num_test=2)
    manifests = recipe.build_world(work, cfg)
    model, tokenizer = recipe.build_base_model(cfg)
    model.eval()
    path = recipe.save_base(cfg, model, tokenizer, work / "base")
    rows = recipe.toy_world.read_manifest(manifests["train"])
    return work, recipe.recipe_prompts(work, cfg, path), model, rows


def test_base_model_has_the_recipe_sizes(recipe, family_recipe):
    from transformers_v2l.families import family_class

    _, prompts, model, _ = family_recipe
    cfg = recipe.PRESETS["smoke"]
    text, vision = model.config.text_config, model.config.vision_config
    assert (
        text.hidden_size,
        text.num_hidden_layers,
        text.num_attention_heads,
        text.max_position_embeddings,
    ) == (cfg.text_hidden, cfg.text_layers, cfg.text_heads, 1024)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size) == (
        cfg.vision_hidden,
        cfg.vision_layers,
        64,
    )
    assert model.get_input_embeddings().weight is not model.get_output_embeddings().weight  # untied
    assert prompts.family.model_types == family_class(model.config.model_type).model_types


def test_recipe_prompts_are_the_processors_token_for_token(recipe, family_recipe):
    work, prompts, _, rows = family_recipe
    data = recipe.load_frames(work, "train")
    caption = next(r for r in rows if r["task_type"] == "caption")
    from world_data import cached_video_loader

    video = cached_video_loader(work, "train")(caption)
    packer = recipe.PackedTasks(prompts, "dialog")
    question = "What color is the square?"
    seg_ids, seg_labels = packer.segment(question, "red")
    expected = prompts.processor.video_inputs(
        [video], [question], add_generation_prompt=True, padding_side="left"
    )  # what `answer_with_video` tokenizes
    prompt_ids = expected["input_ids"][0].tolist()
    assert packer.prefix_ids + seg_ids == prompt_ids + prompts.answer_ids("red")
    assert [t for t, label in zip(seg_ids, seg_labels) if label != -100] == prompts.answer_ids("red")
    pixels = prompts.pixels(data["frames"][list(data["ids"]).index(caption["metadata"]["clip_id"])])
    for key, value in pixels.items():
        assert torch.equal(value, expected[key][0]), key  # pixel for pixel
    text = prompts.processor.query_inputs([question])["input_ids"][0].tolist()  # what `answer` tokenizes
    assert prompts.tokenizer(prompts.text_prompt(question), add_special_tokens=False)["input_ids"] == text


def test_packed_loss_is_the_sum_over_separate_sequences(recipe, family_recipe):
    work, prompts, model, rows = family_recipe
    data = recipe.load_frames(work, "train")
    tasks = recipe.clip_tasks(rows, "dialog", prompts.dialog)
    by_clip = recipe.text_only_questions(rows)
    ids = [str(i) for i in data["ids"][:2]]
    clip_tasks, text_tasks = [tasks[i][:3] for i in ids], [by_clip[i][:2] for i in ids]
    inputs = recipe.PackedTasks(prompts, "dialog").batch(clip_tasks, text_tasks)
    clips = [prompts.pixels(data["frames"][j]) for j in range(2)]

    def summed_nll(logits, labels):  # [B, S, V], [B, S]
        logprobs = torch.log_softmax(logits[:, :-1].float(), -1)
        labels = labels[:, 1:]
        picked = logprobs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return -(picked * (labels != -100)).sum()

    def alone(prompt: str, answer: str, pixels: dict | None):
        prompt_ids = prompts.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target = prompts.answer_ids(answer)
        labels = torch.tensor([[-100] * len(prompt_ids) + target])
        video = prompts.batch_pixels([pixels]) if pixels else {}
        return summed_nll(model(input_ids=torch.tensor([prompt_ids + target]), **video).logits, labels)

    with torch.no_grad():
        packed = summed_nll(model(**prompts.batch_pixels(clips), **inputs).logits, inputs["labels"])
        separate = sum(
            alone(prompts.video_prompt(q), a, clips[j]) for j in range(2) for q, a in clip_tasks[j]
        ) + sum(
            alone(prompts.text_prompt(prompts.dialog(d, q)), a, None)
            for j in range(2)
            for q, d, a in text_tasks[j]
        )
    torch.testing.assert_close(packed, separate, rtol=1e-4, atol=1e-3)


def test_text_only_dialog_tasks_score_the_answer_and_never_see_the_video(recipe, family_recipe):
    _, prompts, _, _ = family_recipe
    packer = recipe.PackedTasks(prompts, "dialog")
    caption, question = "A red square moves left.", "What color is the square?"
    ids, labels = packer.text_segment(question, caption, "red")
    prompt = prompts.tokenizer(
        prompts.text_prompt(prompts.dialog(caption, question)), add_special_tokens=False
    )
    assert ids == prompt["input_ids"] + prompts.answer_ids("red")
    assert [t for t, label in zip(ids, labels) if label != -100] == prompts.answer_ids("red")
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
    assert asdict(recipe.RecipeConfig()) == {"family": "smolvlm", **shipped}  # 0.1 wrote no family: SmolVLM2
