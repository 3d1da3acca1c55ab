"""`Video2LoraTrainingArguments`: `TrainingArguments` for hypernetwork training (the paper's recipe as defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import require

require("accelerate", "training", "Video2LoraTrainingArguments")
from transformers import TrainingArguments  # noqa: E402  (needs accelerate)

__all__ = ["Video2LoraTrainingArguments"]


@dataclass
class Video2LoraTrainingArguments(TrainingArguments):
    """`TrainingArguments` for hypernetwork training, with the paper's recipe as the defaults where it applies.

    `activation_checkpointing` (alias `gradient_checkpointing`) checkpoints the decoder layers of the
    *frozen* answer model, whose activations dominate memory; the hypernetwork itself is small.

    Example:
        ```python
        args = Video2LoraTrainingArguments(output_dir="runs/v2l", max_steps=9000, learning_rate=1e-4,
                                           warmup_steps=0.03, weight_decay=0.01, bf16=True)
        ```
    """

    ce_weight: float = field(default=1.0, metadata={"help": "Weight of the response cross-entropy."})
    """Weight of the response cross-entropy."""
    kl_weight: float = field(
        default=0.0, metadata={"help": "Weight of KL(teacher || student) on cached teacher top-k log-probs."}
    )
    """Weight of KL(teacher || student) on cached teacher top-k log-probs."""
    instruction: str | None = field(
        default=None, metadata={"help": "Internalization instruction; None uses the hypernetwork config's."}
    )
    """Internalization instruction; None uses the hypernetwork config's."""
    num_frames: int | None = field(
        default=None, metadata={"help": "Frames per span; None uses the config's (12)."}
    )
    """Frames per span; None uses the config's (12)."""
    longest_edge: int | None = field(
        default=None, metadata={"help": "Frame resize target in px; None uses the config's (384)."}
    )
    """Frame resize target in px; None uses the config's (384)."""
    max_target_tokens: int = field(default=512, metadata={"help": "Responses are cut to this many tokens."})
    """Responses are cut to this many tokens."""
    eval_num_generations: int = field(
        default=4, metadata={"help": "Validation examples whose generations are written at every evaluation."}
    )
    """Validation examples whose generations are written at every evaluation."""
    eval_max_new_tokens: int = field(default=64, metadata={"help": "Generation budget of those samples."})
    """Generation budget of those samples."""
    task_mixture: dict | str | None = field(
        default=None,
        metadata={"help": "Draw training examples by task_type with these weights, e.g. 'caption=1,qa=3'."},
    )
    """Draw training examples by `task_type` with these weights (`TaskMixture`), e.g. `"caption=1,qa=3"`."""
    # `None` first, as in TrainingArguments: HfArgumentParser reads the union in this order
    report_to: None | str | list[str] = field(  # noqa: RUF036
        default="auto",
        metadata={"help": "'auto' logs to tensorboard and/or wandb when installed; or a list."},
    )
    """Where to log: `"auto"` (tensorboard and/or wandb when installed), or as in `TrainingArguments`."""
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: rows are not model inputs."}
    )
    """Kept False: rows are example dicts for the collator, not model inputs."""
    save_only_model: bool = field(
        default=False, metadata={"help": "Kept False: exact resume needs optimizer state."}
    )
    """Kept False: an exact resume needs the optimizer and scheduler state."""

    def __post_init__(self):
        if self.report_to == "auto":
            import importlib.util

            self.report_to = [n for n in ("tensorboard", "wandb") if importlib.util.find_spec(n)] or "none"
        if not self.use_cpu and not torch.accelerator.is_available():
            # no GPU/XPU/...: run on the CPU explicitly, which also makes multi-process runs use gloo DDP
            # (without it, processes started by `accelerate launch` would each train alone)
            self.use_cpu = True
        if self.ce_weight < 0 or self.kl_weight < 0 or self.ce_weight + self.kl_weight == 0:
            raise ValueError(
                "Video2LoraTrainingArguments.ce_weight and kl_weight must be >= 0 and not both 0, got "
                f"{self.ce_weight} and {self.kl_weight}."
            )
        if self.task_mixture is not None:  # a clear error now, not at the first epoch
            from .data import TaskMixture

            TaskMixture.parse(self.task_mixture)
        super().__post_init__()
