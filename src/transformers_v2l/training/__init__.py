"""Training of Video2LoRA hypernetworks: data, teacher targets, the trainer, and the CLI.

Heavy and optional dependencies (`accelerate`, `datasets`, `yaml`) are imported only when the name
that needs them is used; a missing one raises `MissingDependencyError` naming the `training` extra.

Example:
    ```python
    from transformers_v2l.training import Video2LoraTrainer, Video2LoraTrainingArguments, load_examples
    ```
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SpanSampler",
    "TeacherSettings",
    "Video2LoraDataCollator",
    "Video2LoraDataset",
    "Video2LoraScriptArguments",
    "Video2LoraTrainer",
    "Video2LoraTrainingArguments",
    "expand_spans",
    "find_resumable_checkpoint",
    "generate_teacher_targets",
    "load_example_video",
    "load_examples",
    "load_manifest",
    "load_teacher_dataset",
    "parse_scenes",
]

_LOCATIONS = {
    "SpanSampler": "data",
    "Video2LoraDataset": "data",
    "expand_spans": "data",
    "load_examples": "data",
    "load_example_video": "data",
    "load_manifest": "data",
    "parse_scenes": "data",
    "Video2LoraDataCollator": "collator",
    "TeacherSettings": "teacher",
    "generate_teacher_targets": "teacher",
    "load_teacher_dataset": "teacher_outputs",
    "Video2LoraTrainer": "trainer",
    "Video2LoraTrainingArguments": "training_args",
    "find_resumable_checkpoint": "trainer",
    "Video2LoraScriptArguments": "cli",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(f".{_LOCATIONS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
