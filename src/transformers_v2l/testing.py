"""Offline models for tests, examples and benchmarks, for any registered VLM family.

Nothing here downloads anything. Each family builds its own tiny random model with an offline
tokenizer (`Video2LoraFamily.build_tiny_model`), saves it the way its Hub checkpoints ship
(`save_tiny_model`), and builds its real checkpoints' shapes with random weights for timing
(`build_random_model`; time does not depend on the weights). This module finds the family.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .families import FAMILIES, Video2LoraFamily, family_class, get_family

__all__ = ["build_random_vlm", "build_tiny_vlm", "family_of_preset", "presets", "save_tiny_vlm"]


def build_tiny_vlm(family: str, *, seed: int = 0, **sizes: Any) -> tuple[torch.nn.Module, Any]:
    """A tiny random model of `family` and its offline tokenizer, built in well under a second.

    Args:
        family: a registered family's name or `model_type`.
        seed: the seed of the random weights.
        **sizes: the family's sizes (see its `build_tiny_model`).

    Returns:
        `(model, tokenizer)`.

    Example:
        ```python
        model, tokenizer = build_tiny_vlm("smolvlm", num_layers=2)
        ```
    """
    return family_class(family).build_tiny_model(seed=seed, **sizes)


def save_tiny_vlm(model: torch.nn.Module, tokenizer: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a tiny model with its tokenizer and preprocessing files, as its family's Hub checkpoints ship.

    Args:
        model: a model from `build_tiny_vlm`.
        tokenizer: its tokenizer.
        path: the output folder.
        **kwargs: family-specific options (see its `save_tiny_model`).

    Returns:
        The folder, which `from_pretrained` (model, tokenizer and `Video2LoraProcessor`) can load.

    Example:
        ```python
        path = save_tiny_vlm(*build_tiny_vlm("smolvlm"), "tiny-vlm")
        ```
    """
    return Path(get_family(model).save_tiny_model(model, tokenizer, path, **kwargs))


def presets() -> dict[str, type[Video2LoraFamily]]:
    """Every real-shape preset of every registered family.

    Returns:
        `{preset: family class}`, for example `{"256m": SmolVLMFamily, ...}`.

    Example:
        ```python
        sorted(presets())
        ```
    """
    return {preset: cls for cls in dict.fromkeys(FAMILIES.values()) for preset in cls.presets}


def family_of_preset(preset: str) -> type[Video2LoraFamily]:
    """The family that defines a real-shape preset.

    Args:
        preset: a preset name, for example `"500m"`.

    Returns:
        The family class.

    Raises:
        ValueError: no family defines it; the message lists the presets.

    Example:
        ```python
        family_of_preset("500m").name
        ```
    """
    known = presets()
    if preset not in known:
        raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(known)}.")
    return known[preset]


def build_random_vlm(
    preset: str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0, tokenizer: Any = None
) -> torch.nn.Module:
    """A model with a real checkpoint's shapes and random weights, built directly in `dtype`.

    Args:
        preset: a preset of any family (`presets()`).
        dtype: the weights' dtype.
        seed: the seed of the random weights.
        tokenizer: an offline tokenizer of the family whose special-token ids the model should use.

    Returns:
        The model in eval mode.

    Example:
        ```python
        vlm = build_random_vlm("256m", dtype=torch.bfloat16)
        ```
    """
    return family_of_preset(preset).build_random_model(preset, dtype=dtype, seed=seed, tokenizer=tokenizer)
