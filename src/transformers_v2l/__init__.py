"""transformers-v2l: parametric video internalization (Video2LoRA) for Hugging Face VLMs."""

from transformers import AutoConfig, AutoModel

from .adapter_ops import MergedAdapter
from .backbones import SmolVLMBackbone, Video2LoraBackbone, get_backbone, register_backbone
from .configuration_video2lora import Video2LoraConfig
from .errors import (
    AdapterMismatchError,
    CheckpointMismatchError,
    EmptyVideoError,
    HubPushError,
    HubUnavailableError,
    MissingDependencyError,
    UnsafeCheckpointError,
    Video2LoraError,
    VideoDecodeError,
)
from .injection import inject_lora
from .lora import GeneratedLora, GeneratedLoraConfig
from .modeling_video2lora import Video2LoraHypernetwork, Video2LoraOutput
from .processing_video2lora import Video2LoraProcessor

__version__ = "0.1.0"

AutoConfig.register("video2lora", Video2LoraConfig)
AutoModel.register(Video2LoraConfig, Video2LoraHypernetwork)

__all__ = [
    "AdapterMismatchError",
    "CheckpointMismatchError",
    "EmptyVideoError",
    "GeneratedLora",
    "GeneratedLoraConfig",
    "HubPushError",
    "HubUnavailableError",
    "MergedAdapter",
    "MissingDependencyError",
    "SmolVLMBackbone",
    "UnsafeCheckpointError",
    "Video2LoraBackbone",
    "Video2LoraConfig",
    "Video2LoraError",
    "Video2LoraHypernetwork",
    "Video2LoraOutput",
    "Video2LoraProcessor",
    "VideoDecodeError",
    "__version__",
    "get_backbone",
    "inject_lora",
    "register_backbone",
]
