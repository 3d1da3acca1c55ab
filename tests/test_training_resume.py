"""Exact resume: a run killed after step k and resumed logs the same losses as an uninterrupted run."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from transformers import TrainerCallback

from test_training_utils import (
    build_hypernetwork,
    one_torch_thread,  # noqa: F401 (module-wide fixture)
    toy_world_rows,
    write_manifest,
)
from transformers_v2l.training import (
    Video2LoraTrainer,
    Video2LoraTrainingArguments,
    find_resumable_checkpoint,
)
from transformers_v2l.training.data import load_manifest

MAX_STEPS, CRASH_AT = 4, 2


class CrashAfterSave(TrainerCallback):
    """Dies right after checkpoint `step` is on disk, like a job killed between steps."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after step {self.step}")


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-data")
    return load_manifest(write_manifest(root, toy_world_rows(root, count=5)))


def _run(output_dir, vlm_path, examples, *, resume=None, crash_at=None):
    args = Video2LoraTrainingArguments(
        output_dir=str(output_dir), max_steps=MAX_STEPS, per_device_train_batch_size=1,
        gradient_accumulation_steps=2, learning_rate=1e-2, warmup_steps=2, lr_scheduler_type="cosine",
        logging_steps=1, save_steps=2, save_total_limit=2, disable_tqdm=True, seed=0, report_to="none",
    )  # fmt: skip
    callbacks = [CrashAfterSave(crash_at)] if crash_at else None
    trainer = Video2LoraTrainer(
        model=build_hypernetwork(vlm_path), args=args, train_dataset=examples, callbacks=callbacks
    )
    with contextlib.suppress(KeyboardInterrupt):
        trainer.train(resume_from_checkpoint=resume)
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


def test_resume_after_a_kill_reproduces_the_uninterrupted_losses(tmp_path, tiny_vlm_path, examples):
    reference = _run(tmp_path / "full", tiny_vlm_path, examples)
    assert sorted(reference) == list(range(1, MAX_STEPS + 1))

    partial = _run(tmp_path / "killed", tiny_vlm_path, examples, crash_at=CRASH_AT)
    assert max(partial) == CRASH_AT
    # a checkpoint that was being written when the process died has no completion marker: it is ignored
    (tmp_path / "killed" / f"checkpoint-{CRASH_AT + 1}").mkdir()
    assert find_resumable_checkpoint(tmp_path / "killed").endswith(f"checkpoint-{CRASH_AT}")
    checkpoint = tmp_path / "killed" / f"checkpoint-{CRASH_AT}"
    files = sorted(p.name for p in checkpoint.iterdir())
    assert {"README.md",
        "model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
            "trainer_state.json", "training_args.json", "v2l_training_state.json",
            "processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} == set(files)  # fmt: skip
    assert json.loads((checkpoint / "v2l_training_state.json").read_text())["global_step"] == CRASH_AT

    resumed = _run(tmp_path / "killed", tiny_vlm_path, examples, resume=True)
    diffs = [abs(resumed[s] - reference[s]) for s in range(CRASH_AT + 1, MAX_STEPS + 1)]
    print(f"resume: max |loss diff| over steps {CRASH_AT + 1}..{MAX_STEPS} = {max(diffs):.3g}")
    assert max(diffs) <= 1e-6


def test_activation_checkpointing_of_the_frozen_model_gives_the_same_gradients(
    tmp_path, tiny_vlm_path, examples
):
    args = Video2LoraTrainingArguments(output_dir=str(tmp_path), report_to="none", disable_tqdm=True)
    grads = []
    for checkpointing in (False, True):
        hn = build_hypernetwork(tiny_vlm_path)
        torch.nn.init.normal_(
            hn.scaler_B["down_proj"], std=1.0
        )  # a non-zero adapter, so the LoRA path matters
        trainer = Video2LoraTrainer(model=hn, args=args)
        if checkpointing:
            trainer.enable_frozen_checkpointing()
        calls = []
        down_proj = hn.vlm.model.text_model.layers[0].mlp.down_proj
        handle = down_proj.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        batch = trainer.data_collator(examples[:2])
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        trainer.training_step(
            hn, batch, torch.tensor(tokens)
        )  # forward + backward, adapters live through both
        handle.remove()
        assert len(calls) == (
            3 if checkpointing else 2
        )  # encoder + answer passes, + the recompute in backward
        grads.append({name: p.grad.clone() for name, p in hn.named_parameters()})
    layer = hn.vlm.model.text_model.layers[0]
    assert layer.gradient_checkpointing and not layer.training  # checkpointing was on, eval mode restored
    diff = max((grads[0][name] - grads[1][name]).abs().max().item() for name in grads[0])
    scale = max(g.abs().max().item() for g in grads[0].values())
    print(f"activation checkpointing: max |grad diff| = {diff:.3g} (max |grad| {scale:.3g})")
    assert scale > 0 and diff <= 1e-6 * max(scale, 1.0)
