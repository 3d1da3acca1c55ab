"""The registry of VLM families: `config.model_type` -> the `Video2LoraFamily` that knows it.

Adding a family means adding one module here with a `Video2LoraFamily` subclass and one line below
(see docs/supported_models.md for the tests a family needs).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import PEFT_PREFIX, FamilyDefaults, Video2LoraFamily
from .llava_onevision import LlavaOnevisionFamily
from .qwen2_5_vl import Qwen2_5_VLFamily
from .qwen3_vl import Qwen3VLFamily
from .smolvlm import SmolVLMFamily

__all__ = [
    "FAMILIES",
    "PEFT_PREFIX",
    "FamilyDefaults",
    "Video2LoraFamily",
    "family_class",
    "get_family",
    "register_family",
]

#: `model_type` -> family class, for every registered family.
FAMILIES: dict[str, type[Video2LoraFamily]] = {}


def register_family(cls: type[Video2LoraFamily]) -> type[Video2LoraFamily]:
    """Register a family class for each `model_type` it declares (usable as a class decorator).

    Args:
        cls: a `Video2LoraFamily` subclass with `name`, `model_types`, `layers_path` and `module_subpaths`.

    Returns:
        `cls`, unchanged.

    Raises:
        ValueError: another family already claims one of its `model_types`.

    Example:
        ```python
        @register_family
        class MyVLMFamily(Video2LoraFamily):
            name = "my_vlm"
            model_types = ("my_vlm",)
            layers_path = "model.language_model.layers"
        ```
    """
    for model_type in cls.model_types:
        if FAMILIES.get(model_type, cls) is not cls:
            raise ValueError(
                f"model_type {model_type!r} is already registered to {FAMILIES[model_type].__name__}."
            )
        FAMILIES[model_type] = cls
    return cls


for _family in (SmolVLMFamily, Qwen2_5_VLFamily, Qwen3VLFamily, LlavaOnevisionFamily):
    register_family(_family)


def family_class(model_type: str) -> type[Video2LoraFamily]:
    """The family class for a `model_type` (or a family `name`).

    Args:
        model_type: a VLM config's `model_type`, or a registered family's `name`.

    Returns:
        The `Video2LoraFamily` subclass.

    Raises:
        ValueError: no family knows it; the message lists the supported ones.

    Example:
        ```python
        family_class("smolvlm").layers_path
        ```
    """
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(
            f"transformers-v2l supports no VLM family with model_type {model_type!r}; supported: "
            f"{sorted(FAMILIES)}. A family is one module in transformers_v2l/families/ (docs/supported_models.md)."
        ) from None


def get_family(model: nn.Module | Any) -> Video2LoraFamily:
    """The family wrapper of a live generative VLM.

    Args:
        model: a loaded VLM whose `config.model_type` has a registered family.

    Returns:
        The family instance wrapping `model`.

    Raises:
        ValueError: no family is registered for the model's `model_type`.

    Example:
        ```python
        family = get_family(vlm)
        family.num_layers
        ```
    """
    return family_class(model.config.model_type)(model)
