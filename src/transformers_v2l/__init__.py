"""transformers-v2l: parametric video internalization (Video2LoRA) for Hugging Face VLMs.

Importing the package is cheap: the public names below are imported from their modules on first use
(the way transformers' own lazy module works), so `v2l --help` and tools that only need a constant
never load torch, transformers or peft. Using `Video2LoraConfig` or `Video2LoraHypernetwork` registers
them with transformers' `AutoConfig` and `AutoModel`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name -> the module that defines it
_LAZY = {
    "Video2LoraConfig": "configuration_video2lora",
    "GeneratedLoraConfig": "configuration_generated_lora",
    "Video2LoraHypernetwork": "modeling_video2lora",
    "Video2LoraOutput": "modeling_video2lora",
    "Video2LoraProcessor": "processing_video2lora",
    "Video2LoraRuntime": "runtime",
    "GeneratedLora": "lora",
    "MergedAdapter": "adapter_ops",
    "inject_lora": "injection",
    "Video2LoraFamily": "families",
    "get_family": "families",
    "register_family": "families",
    "convert_frames2lora": "frames2lora",
    "load_default_hypernetwork": "demo",
    **dict.fromkeys(
        [
            "AdapterMismatchError",
            "CheckpointMismatchError",
            "EmptyVideoError",
            "HubPushError",
            "HubUnavailableError",
            "InvalidArgumentError",
            "MissingDependencyError",
            "UnsafeCheckpointError",
            "Video2LoraError",
            "VideoDecodeError",
        ],
        "errors",
    ),
}

__all__ = [
    "AdapterMismatchError",
    "CheckpointMismatchError",
    "EmptyVideoError",
    "GeneratedLora",
    "GeneratedLoraConfig",
    "HubPushError",
    "HubUnavailableError",
    "InvalidArgumentError",
    "MergedAdapter",
    "MissingDependencyError",
    "UnsafeCheckpointError",
    "Video2LoraConfig",
    "Video2LoraError",
    "Video2LoraFamily",
    "Video2LoraHypernetwork",
    "Video2LoraOutput",
    "Video2LoraProcessor",
    "Video2LoraRuntime",
    "VideoDecodeError",
    "__version__",
    "convert_frames2lora",
    "get_family",
    "inject_lora",
    "load_default_hypernetwork",
    "register_family",
]

if TYPE_CHECKING:
    from .adapter_ops import MergedAdapter
    from .configuration_generated_lora import GeneratedLoraConfig
    from .configuration_video2lora import Video2LoraConfig
    from .demo import load_default_hypernetwork
    from .errors import (
        AdapterMismatchError,
        CheckpointMismatchError,
        EmptyVideoError,
        HubPushError,
        HubUnavailableError,
        InvalidArgumentError,
        MissingDependencyError,
        UnsafeCheckpointError,
        Video2LoraError,
        VideoDecodeError,
    )
    from .families import Video2LoraFamily, get_family, register_family
    from .frames2lora import convert_frames2lora
    from .injection import inject_lora
    from .lora import GeneratedLora
    from .modeling_video2lora import Video2LoraHypernetwork, Video2LoraOutput
    from .processing_video2lora import Video2LoraProcessor
    from .runtime import Video2LoraRuntime


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'transformers_v2l' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
