"""`Video2LoraTrainer`: an HF `Trainer` that trains only the hypernetwork (paper section 3.5).

Per batch: the frozen VLM encodes each video span (no gradients) into `[B, L, S, H]` features; the
hypernetwork (the only trained module, wrapped by DDP/FSDP/DeepSpeed through `accelerate`) turns them
into per-example adapters; the frozen answer model, with the adapters injected and only the text
prompt in context, is teacher-forced on the response tokens. The loss is the summed token
cross-entropy (plus an optional KL term on cached teacher top-k) divided by the number of response
tokens of the whole optimizer step across all processes and accumulation steps, so any split of a
global batch over devices and micro-batches gives the same gradient.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import VideoDecodeError, require
from ..injection import inject_lora
from .collator import IGNORE_INDEX, Video2LoraDataCollator
from .training_args import Video2LoraTrainingArguments
from .utils import atomic_write_text

require("accelerate", "training", "Video2LoraTrainer")
from transformers import Trainer, TrainerCallback  # noqa: E402  (needs accelerate)

logger = logging.getLogger(__name__)

__all__ = ["Video2LoraTrainer", "Video2LoraTrainingArguments", "find_resumable_checkpoint"]

#: Written last into a checkpoint, after every process saved its part: marks the checkpoint complete.
STATE_FILE = "v2l_training_state.json"


class _HypernetworkKeepsNoTokenIds(TrainerCallback, logging.Filter):
    """Undo what `Trainer.train` does for language models: copy the tokenizer's bos/eos/pad ids into the model's
    config (and warn about it). The hypernetwork has no vocabulary; its config keeps what it had."""

    fields = ("bos_token_id", "eos_token_id", "pad_token_id")

    def __init__(self, config):
        logging.Filter.__init__(self)
        self.config, self.saved = config, {f: getattr(config, f) for f in self.fields if hasattr(config, f)}

    def on_train_begin(self, args, state, control, **kwargs):  # after the alignment, before any checkpoint
        for name in self.fields:
            if name in self.saved:
                setattr(self.config, name, self.saved[name])
            elif hasattr(self.config, name):
                delattr(self.config, name)

    def filter(self, record: logging.LogRecord) -> bool:  # drop the alignment's warning
        return "new PAD/BOS/EOS tokens" not in record.getMessage()


def find_resumable_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint under `output_dir` that every process finished writing, or `None`.

    Args:
        output_dir: the run folder holding `checkpoint-<step>` folders.

    Returns:
        The path of the newest complete checkpoint (one with the `v2l_training_state.json` marker).

    Example:
        ```python
        trainer.train(resume_from_checkpoint=find_resumable_checkpoint("runs/v2l"))
        ```
    """
    root = Path(output_dir)
    candidates = []
    for path in root.glob("checkpoint-*") if root.is_dir() else []:
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            candidates.append((int(suffix), path))
    return str(max(candidates)[1]) if candidates else None


class Video2LoraTrainer(Trainer):
    """Train a `Video2LoraHypernetwork` against its frozen base VLM.

    Args:
        model: the hypernetwork, with its frozen VLM attached (`base_model=` or `attach_base_model`).
        args: `Video2LoraTrainingArguments`.
        train_dataset: examples (`Video2LoraDataset` or any map-style dataset of example dicts).
        eval_dataset: validation examples (CE and sample generations at every evaluation).
        data_collator: defaults to a `Video2LoraDataCollator` over the hypernetwork's processor.
        processing_class: the `Video2LoraProcessor`; defaults to `model.processor`.
        **kwargs: passed to `transformers.Trainer` (for example `callbacks`).

    Example:
        ```python
        trainer = Video2LoraTrainer(model=hn, args=args, train_dataset=train, eval_dataset=val)
        trainer.train()
        ```
    """

    def __init__(
        self,
        model,
        args: Video2LoraTrainingArguments,
        train_dataset=None,
        eval_dataset=None,
        data_collator=None,
        processing_class=None,
        **kwargs,
    ):
        model.load_base_model()
        processing_class = processing_class if processing_class is not None else model.processor
        if data_collator is None:
            data_collator = Video2LoraDataCollator(
                processing_class,
                instruction=args.instruction or processing_class.instruction,
                num_frames=args.num_frames or processing_class.num_frames,
                longest_edge=args.longest_edge or processing_class.longest_edge,
                max_target_tokens=args.max_target_tokens,
            )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator,
            processing_class=processing_class,
            **kwargs,
        )
        self.loss_is_scaled_for_ga = True  # compute_loss normalizes over the whole optimizer step
        self.skipped_videos = 0
        vlm = model.vlm
        vlm.requires_grad_(False)
        vlm.to(self.args.device)

    # ---- the frozen model --------------------------------------------------------------------------
    @property
    def hypernetwork(self):
        """The unwrapped hypernetwork (never the DDP/FSDP wrapper)."""
        return self.accelerator.unwrap_model(self.model)

    @contextlib.contextmanager
    def _checkpointed_decoder(self) -> Iterator[None]:
        """Let the frozen decoder layers checkpoint activations (transformers only does so in training mode)."""
        if not self._checkpoint_frozen:
            yield
            return
        layers = self.hypernetwork.family.decoder_layers()
        for layer in layers:
            layer.training = True  # only the layer's own flag: its dropouts stay in eval mode
        try:
            yield
        finally:
            for layer in layers:
                layer.training = False

    _checkpoint_frozen = False

    def enable_frozen_checkpointing(self) -> None:
        """Recompute the frozen answer model's decoder layers in backward instead of storing their activations.

        `train()` calls this when `args.activation_checkpointing` is set. Non-reentrant checkpointing, so the
        frozen inputs need no gradient; the generated adapters stay injected through backward (see `training_step`).

        Example:
            ```python
            trainer.enable_frozen_checkpointing()  # or set `activation_checkpointing=True` in the arguments
            ```
        """
        self.hypernetwork.vlm.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
        self._checkpoint_frozen = True

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`, where `resume_from_checkpoint=True` picks the newest *complete* checkpoint.

        A checkpoint is complete once every process finished writing it (it holds `v2l_training_state.json`).

        Args:
            resume_from_checkpoint: a checkpoint folder, `True` for the newest complete one under
                `args.output_dir` (or a fresh start when there is none), or `None`.
            **kwargs: passed to `Trainer.train`.

        Returns:
            The `TrainOutput` of `Trainer.train`.

        Example:
            ```python
            trainer.train(resume_from_checkpoint=True)  # `v2l train ... --resume_from_checkpoint last`
            ```
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = find_resumable_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                logger.warning("No complete checkpoint in %s: starting from scratch.", self.args.output_dir)
        state_file = Path(resume_from_checkpoint or ".") / STATE_FILE
        if resume_from_checkpoint and state_file.is_file():
            self.skipped_videos = int(json.loads(state_file.read_text()).get("skipped_videos", 0))
        checkpointing = bool(self.args.activation_checkpointing)
        if checkpointing:  # checkpoint the frozen VLM, not the hypernetwork
            self.enable_frozen_checkpointing()
        self.args.activation_checkpointing = False
        keep = _HypernetworkKeepsNoTokenIds(self.hypernetwork.config)
        self.add_callback(keep)
        logging.getLogger("transformers.trainer_utils").addFilter(keep)
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self.args.activation_checkpointing = checkpointing
            logging.getLogger("transformers.trainer_utils").removeFilter(keep)
            self.remove_callback(keep)

    def _get_train_sampler(self, train_dataset=None):
        """With `args.task_mixture`, a `TaskMixtureSampler` over the examples' task types; else `Trainer`'s."""
        if self.args.task_mixture is None:
            return super()._get_train_sampler(train_dataset)
        from .data import TaskMixtureSampler, example_task_types

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return TaskMixtureSampler(example_task_types(dataset), self.args.task_mixture, seed=seed)

    # ---- loss --------------------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """Prefetch one optimizer step of micro-batches; count response tokens and skipped videos globally.

        Called by `Trainer` once per optimizer step; the token count normalizes the loss (see `compute_loss`).

        Args:
            epoch_iterator: the training dataloader's iterator.
            num_batches: micro-batches per optimizer step (the gradient accumulation steps).
            device: where the counts are reduced across processes.

        Returns:
            `(batches, num_items_in_batch)`: the micro-batches and the response tokens of the whole
            step over all processes (at least 1).

        Example:
            ```python
            batches, tokens = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 2, trainer.args.device)
            ```
        """
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        skipped = sum(int(b["num_skipped"]) for b in batches)
        kept = sum(len(b["example_ids"]) for b in batches)
        counts = torch.tensor([tokens, skipped, kept], dtype=torch.long, device=device)
        if self.accelerator.num_processes > 1:  # every rank agrees on the counts, so none waits for another
            counts = self.accelerator.reduce(counts, reduction="sum")
        self.skipped_videos += int(counts[1])
        if self.state.global_step == 0 and int(counts[2]) == 0 and int(counts[1]) > 0:
            raise VideoDecodeError(
                f"None of the {int(counts[1])} videos of the first training step could be read (the warnings above "
                "say why). Check the dataset's `video_path` column; relative paths resolve against `data_root` "
                "(or the manifest's folder when it is not set)."
            )
        return batches, counts[0].clamp(min=1)

    def _context_features(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen encoder pass: `([B, L, S, H], [B, S])`, no gradients."""
        hn = self.hypernetwork
        encoder_inputs = {
            "input_ids": inputs["context_input_ids"],
            "attention_mask": inputs["context_attention_mask"],
        }
        for key in hn.family.video_input_keys:
            if key in inputs:
                encoder_inputs[key] = inputs[key]
        with torch.no_grad():
            return hn.family.extract_features(**encoder_inputs)

    def _response_losses(self, adapters, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Summed response CE and KL of the adapted answer model on the text-only prompt.

        Within `training_step` the adapters stay injected until the backward pass is over, because
        checkpointed decoder layers re-run their forward (LoRA hooks included) during backward.
        """
        hn = self.hypernetwork
        vlm = hn.vlm
        with contextlib.ExitStack() as local:
            scope = self._adapter_scope if self._adapter_scope is not None else local
            scope.enter_context(inject_lora(hn.family, adapters.lora_A, adapters.lora_B, hn.config.scaling))
            with self._checkpointed_decoder():
                hidden = vlm.model(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
                ).last_hidden_state  # [B, T, H]
        labels = inputs["labels"][:, 1:]  # position t predicts token t + 1
        selected = labels != IGNORE_INDEX  # [B, T - 1]
        logits = vlm.lm_head(hidden[:, :-1][selected]).float()  # [N, V], only response positions
        targets = labels[selected]  # [N]
        log_probs = F.log_softmax(logits, dim=-1)
        ce = F.nll_loss(log_probs, targets, reduction="sum")
        kl = ce.new_zeros(())
        if self.args.kl_weight > 0 and "teacher_topk_ids" in inputs:
            topk_ids = inputs["teacher_topk_ids"][:, 1:][selected]  # [N, k]
            teacher = F.log_softmax(
                inputs["teacher_topk_logprobs"][:, 1:][selected].float(), dim=-1
            )  # renormalized
            student = log_probs.gather(-1, topk_ids)  # [N, k]
            kl = (teacher.exp() * (teacher - student)).sum()
        return ce, kl, int(selected.sum())

    _adapter_scope: contextlib.ExitStack | None = None

    def training_step(self, model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        """`Trainer.training_step` with the generated adapters injected through forward *and* backward.

        Args:
            model: the (possibly wrapped) hypernetwork.
            inputs: one collated micro-batch from `Video2LoraDataCollator`.
            num_items_in_batch: the step's global response-token count from `get_batch_samples`.

        Returns:
            The detached loss of the micro-batch.

        Example:
            ```python
            loss = trainer.training_step(trainer.model, batch, num_items_in_batch=tokens)
            ```
        """
        with contextlib.ExitStack() as scope:
            self._adapter_scope = scope
            try:
                return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self._adapter_scope = None

    def _zero_loss(self, model) -> torch.Tensor:
        """A zero loss through the wrapped model, for a micro-batch whose videos were all skipped.

        Every parameter gets a (zero) gradient, so DDP's gradient all-reduce still runs on this rank.
        """
        config = self.hypernetwork.config
        features = torch.zeros(1, config.num_hidden_layers, 1, config.hidden_size, device=self.args.device)
        output = model(
            context_features=features, context_attention_mask=torch.ones(1, 1, device=self.args.device)
        )
        return sum(t.sum() for t in [*output.lora_A.values(), *output.lora_B.values()]) * 0.0

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        """`(ce_weight * CE + kl_weight * KL)` summed over response tokens / the step's global token count.

        Args:
            model: the (possibly wrapped) hypernetwork.
            inputs: one collated micro-batch from `Video2LoraDataCollator`.
            return_outputs: also return the generated adapters.
            num_items_in_batch: the step's global response-token count; `None` divides by this batch's count.

        Returns:
            The loss, or `(loss, Video2LoraOutput)` with `return_outputs=True`.

        Example:
            ```python
            loss = trainer.compute_loss(trainer.model, batch)
            ```
        """
        if inputs["input_ids"].shape[0] == 0:
            loss = self._zero_loss(model)
            return (loss, None) if return_outputs else loss
        with self.accelerator.autocast():
            features, mask = self._context_features(inputs)
            adapters = model(context_features=features, context_attention_mask=mask)
            ce, kl, count = self._response_losses(adapters, inputs)
        total = self.args.ce_weight * ce + self.args.kl_weight * kl
        if num_items_in_batch is None:
            loss = total / max(count, 1)
        else:  # DDP averages gradients over processes: undo it, the normalizer is already global
            loss = total / num_items_in_batch * self.accelerator.num_processes
        return (loss, adapters) if return_outputs else loss

    def floating_point_ops(self, inputs: dict) -> int:
        """Report no FLOPs: `Trainer`'s estimate counts model inputs, which these batches are not.

        Args:
            inputs: a collated batch (unused).

        Returns:
            `0`.

        Example:
            ```python
            trainer.floating_point_ops(batch)  # 0
            ```
        """
        return 0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """`Trainer.log`, adding `skipped_videos` (unreadable videos so far) to every training-loss entry.

        Args:
            logs: the metrics to log.
            start_time: the training start time, for speed metrics.

        Example:
            ```python
            trainer.log({"loss": 1.25})  # logs {"loss": 1.25, "skipped_videos": 0}
            ```
        """
        if "loss" in logs:
            logs["skipped_videos"] = self.skipped_videos
        super().log(logs, start_time)

    # ---- evaluation --------------------------------------------------------------------------------
    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Token-level CE of the validation set, plus sample generations written to `<output_dir>/generations/`.

        Args:
            eval_dataset: the examples; defaults to the trainer's `eval_dataset`.
            ignore_keys: unused (kept for `Trainer` compatibility).
            metric_key_prefix: the prefix of the metric names.

        Returns:
            `{f"{prefix}_loss", f"{prefix}_tokens", f"{prefix}_skipped_videos"}`.

        Example:
            ```python
            metrics = trainer.evaluate()
            metrics["eval_loss"]
            ```
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        dataloader = self.get_eval_dataloader(dataset)
        model = self.model_wrapped
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.args.device)  # CE, tokens, skipped
        with torch.no_grad(), self.accelerator.autocast():
            for inputs in dataloader:
                inputs = self._prepare_inputs(inputs)
                sums[2] += int(inputs["num_skipped"])
                if inputs["input_ids"].shape[0] == 0:
                    continue
                features, mask = self._context_features(inputs)
                ce, _, count = self._response_losses(
                    model(context_features=features, context_attention_mask=mask), inputs
                )
                sums[0] += ce.double()
                sums[1] += count
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        metrics = {
            f"{metric_key_prefix}_loss": float(sums[0] / sums[1].clamp(min=1)),
            f"{metric_key_prefix}_tokens": int(sums[1]),
            f"{metric_key_prefix}_skipped_videos": int(sums[2]),
        }
        if self.args.eval_num_generations > 0 and self.is_world_process_zero():
            self.write_generations(dataset, f"{metric_key_prefix}-step-{self.state.global_step:07d}.jsonl")
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @torch.no_grad()
    def generate_answers(self, inputs: dict, max_new_tokens: int) -> list[str]:
        """Greedy answers of the adapted model to each row's prompt (no visual tokens in context).

        Args:
            inputs: a collated batch on the trainer's device (videos and prompts).
            max_new_tokens: the generation budget per answer.

        Returns:
            One answer per row.

        Example:
            ```python
            batch = trainer.data_collator([val[0], val[1]])
            trainer.generate_answers(trainer._prepare_inputs(batch), max_new_tokens=32)
            ```
        """
        hn = self.hypernetwork
        processor = self.processing_class
        features, mask = self._context_features(inputs)
        adapters = hn(context_features=features, context_attention_mask=mask)
        query = processor.query_inputs(inputs["prompts"])
        tensors = {k: v.to(self.args.device) for k, v in query.items() if torch.is_tensor(v)}
        pad = processor.tokenizer.pad_token_id
        with inject_lora(hn.family, adapters.lora_A, adapters.lora_B, hn.config.scaling):
            output = hn.vlm.generate(
                **tensors, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
            )
        new_tokens = output[:, tensors["input_ids"].shape[1] :]
        return [
            text.strip() for text in processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ]

    def write_generations(self, dataset, filename: str) -> Path:
        """Write `{id, prompt, target, generation}` lines for the first validation examples, atomically.

        Args:
            dataset: the validation examples; the first `args.eval_num_generations` are used.
            filename: the file name under `<output_dir>/generations/`.

        Returns:
            The path of the JSONL file.

        Example:
            ```python
            trainer.write_generations(val, "manual.jsonl")
            ```
        """
        count = min(self.args.eval_num_generations, len(dataset))
        rows = []
        batch_size = self.args.per_device_eval_batch_size
        with self.accelerator.autocast():
            for start in range(0, count, batch_size):
                batch = self.data_collator([dataset[i] for i in range(start, min(start + batch_size, count))])
                if not batch["example_ids"]:
                    continue
                answers = self.generate_answers(self._prepare_inputs(batch), self.args.eval_max_new_tokens)
                for example_id, prompt, target, answer in zip(
                    batch["example_ids"], batch["prompts"], batch["targets"], answers
                ):
                    rows.append({"id": example_id, "prompt": prompt, "target": target, "generation": answer})
        path = Path(self.args.output_dir) / "generations" / filename
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return path

    # ---- checkpoints -------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the hypernetwork only (safetensors + config.json) and the arguments as JSON (no pickle)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        args = self.args
        training = {
            "global_step": self.state.global_step,
            "max_steps": args.max_steps,
            "global_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "learning_rate": args.learning_rate,
            "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            "bf16": args.bf16,
            "kl_weight": args.kl_weight,
        }
        card = {"training": training}
        self.hypernetwork.save_pretrained(output_dir, state_dict=state_dict, model_card_kwargs=card)
        arguments = self.args.to_dict()
        arguments["activation_checkpointing"] = (
            self._checkpoint_frozen or arguments["activation_checkpointing"]
        )
        atomic_write_text(
            Path(output_dir) / "training_args.json", json.dumps(arguments, indent=2, sort_keys=True)
        )

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every rank wrote its RNG state and optimizer shard
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            state = {
                "global_step": self.state.global_step,
                "world_size": self.accelerator.num_processes,
                "skipped_videos": self.skipped_videos,
            }
            atomic_write_text(folder / STATE_FILE, json.dumps(state, indent=2))
