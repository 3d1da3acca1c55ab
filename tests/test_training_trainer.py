"""End to end: a tiny run on real and synthetic clips learns, skips a corrupt video, evaluates, and saves."""

from __future__ import annotations

import json

import pytest
import torch

from test_training_utils import (
    build_hypernetwork,
    corrupt_row,
    one_torch_thread,  # noqa: F401 (module-wide fixture)
    real_rows,
    toy_world_rows,
    write_manifest,
)
from transformers_v2l.training import Video2LoraTrainer, Video2LoraTrainingArguments, load_manifest
from transformers_v2l.training.collator import Video2LoraDataCollator


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, real_clip):
    root = tmp_path_factory.mktemp("train-data")
    rows = toy_world_rows(root, count=4) + real_rows(real_clip) + [corrupt_row(root)]
    return write_manifest(root, rows)


def _args(output_dir, **kwargs):
    defaults = {"per_device_train_batch_size": 2, "learning_rate": 1e-2, "logging_steps": 1, "save_strategy": "no",
                "disable_tqdm": True, "seed": 0, "report_to": "none"}  # fmt: skip
    return Video2LoraTrainingArguments(output_dir=str(output_dir), **{**defaults, **kwargs})


def test_tiny_run_learns_skips_corrupt_videos_evaluates_and_saves(tmp_path, tiny_vlm_path, manifest):
    examples = load_manifest(manifest)
    assert len(examples) == 7 and sum("real-" in e["id"] for e in examples) == 2
    hn = build_hypernetwork(tiny_vlm_path)
    args = _args(tmp_path / "run", max_steps=16, learning_rate=2e-2, eval_strategy="steps", eval_steps=16, eval_num_generations=2,
                 eval_max_new_tokens=8, per_device_eval_batch_size=2, warmup_steps=0.1)  # fmt: skip
    trainer = Video2LoraTrainer(model=hn, args=args, train_dataset=examples, eval_dataset=examples[:3])
    trainer.train()

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 16
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print(f"training loss {first:.3f} -> {last:.3f}")
    assert last < first - 0.2, losses
    assert trainer.skipped_videos >= 1  # the corrupt clip comes around at least once in 16 steps of 2

    evaluation = [h for h in trainer.state.log_history if "eval_loss" in h][-1]
    assert evaluation["eval_tokens"] > 0 and evaluation["eval_skipped_videos"] == 0
    generations = (tmp_path / "run" / "generations" / "eval-step-0000016.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in generations] == [e["id"] for e in examples[:2]]

    trainer.save_model(str(tmp_path / "final"))
    saved = sorted(p.name for p in (tmp_path / "final").iterdir())
    processor_files = [
        "chat_template.jinja",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert saved == sorted(
        ["README.md", "config.json", "model.safetensors", "training_args.json", *processor_files]
    )
    # no pickle; the processor is saved with the weights, so the folder alone says how to use it
    assert "learning_rate" in (tmp_path / "final" / "README.md").read_text()  # the card records the recipe
    from safetensors.torch import load_file

    state = load_file(tmp_path / "final" / "model.safetensors")
    assert set(state) == set(hn.state_dict()) and not any("text_model" in k for k in state)
    assert all(not p.requires_grad for p in hn.vlm.parameters())


def test_kl_term_on_cached_teacher_topk(tmp_path, tiny_vlm_path, manifest):
    examples = load_manifest(manifest)[:2]
    hn = build_hypernetwork(tiny_vlm_path)
    torch.nn.init.normal_(hn.scaler_B["down_proj"], std=1.0)  # a non-zero adapter
    collator = Video2LoraDataCollator(hn.processor, num_frames=4, longest_edge=64)
    rows = []
    for example in examples:
        ids = collator.target_token_ids(example)
        rows.append({**example, "target_token_ids": ids, "teacher_topk_ids": [[t, 5] for t in ids],
                     "teacher_topk_logprobs": [[-0.05, -3.0] for _ in ids]})  # fmt: skip
    batch = collator(rows)
    trainer = Video2LoraTrainer(
        model=hn, args=_args(tmp_path, ce_weight=0.0, kl_weight=1.0), data_collator=collator
    )
    loss = trainer.compute_loss(hn, batch)
    ce_trainer = Video2LoraTrainer(model=hn, args=_args(tmp_path, ce_weight=1.0), data_collator=collator)
    ce = ce_trainer.compute_loss(hn, batch)
    assert torch.isfinite(loss) and loss.item() > 0 and loss.item() != pytest.approx(ce.item())
    loss.backward()
    assert hn.scaler_B["down_proj"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not both 0"):
        _args(tmp_path, ce_weight=0.0, kl_weight=0.0)


def test_a_first_step_without_any_readable_video_stops_with_advice(tmp_path, tiny_vlm_path):
    from transformers_v2l import VideoDecodeError

    rows = [
        {**corrupt_row(tmp_path), "id": f"missing-{i}", "video_path": f"videos/missing-{i}.mp4"}
        for i in range(2)
    ]
    examples = load_manifest(write_manifest(tmp_path, rows))
    trainer = Video2LoraTrainer(
        model=build_hypernetwork(tiny_vlm_path),
        args=_args(tmp_path / "run", max_steps=2),
        train_dataset=examples,
    )
    with pytest.raises(VideoDecodeError, match="None of the 2 videos of the first training step"):
        trainer.train()
