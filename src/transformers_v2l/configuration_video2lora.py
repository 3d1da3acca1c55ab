"""Configuration of a Video2LoRA hypernetwork."""

from __future__ import annotations

import os
from dataclasses import field
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from .families import FAMILIES, family_class
from .families.base import DEFAULT_INSTRUCTION

__all__ = ["DEFAULT_INSTRUCTION", "LEGACY_PROCESSOR_FIELDS", "Video2LoraConfig"]

#: Preprocessing fields that configs of version 0.1 held; they now live in the processor's saved config.
#: A config that still has them keeps them in `processor_settings` (never saved again) for the runtime.
LEGACY_PROCESSOR_FIELDS = {  # config field -> processor setting
    "instruction": "instruction",
    "num_frames": "num_frames",
    "longest_edge": "longest_edge",
    "video_fps": "fps",
    "skip_secs": "skip_secs",
    "resize_mode": "resize_mode",
}


def _help(text: str, default: Any) -> Any:
    """A dataclass field with PEFT-style `help` metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


class Video2LoraConfig(PreTrainedConfig):
    r"""Configuration of a [`Video2LoraHypernetwork`].

    The defaults reproduce the Video2LoRA paper (section 4.1, table 6) and the authors' released
    Frames2LoRA checkpoints: rank 16 on every text decoder `down_proj`, a Perceiver with latent size
    512, 8 latent queries and 9 cross-attention blocks, learned bias ranks, raw `lora_alpha = 2 r^1.5`
    scaling. It holds the architecture and the base-model binding only: frames, resolution and the
    instruction are the processor's settings (`Video2LoraProcessor`, saved beside the weights).
    Every field carries a `help` string in its metadata (`Video2LoraConfig.field_help()` lists them).

    Args:
        base_model_name_or_path: Hub id or local path of the frozen base VLM.
        base_model_type: the base VLM's family (`transformers_v2l.families`), for example `"smolvlm"`.
        num_hidden_layers: Number of text decoder layers of the base VLM (`L`).
        hidden_size: Text hidden size of the base VLM (`H`).
        module_shapes: `{module: [d_in, d_out]}` for each target module.
        target_modules: Names of the text-decoder linear modules that receive a generated LoRA.
        lora_rank: Generated rank `r` per layer and module.
        lora_scaling: `s` in `y = x W^T + s (x A^T) B`; `None` means `2 r^1.5` (Frames2LoRA's raw alpha).
        use_bias_lora: Append `r` learned, input-independent ranks to every generated adapter.
        latent_size: Width `D` of the Perceiver latents.
        num_latent_queries: Encoder latent queries `Q`.
        num_blocks: Encoder blocks, each one cross-attention layer then self-attention layers.
        num_self_attn_per_block: Self-attention layers per encoder block.
        num_attention_heads: Query heads of every Perceiver attention.
        num_key_value_heads: Key/value heads of every Perceiver attention.
        attention_head_dim: Head size of every Perceiver attention.
        input_expansion: Hidden width of the input projection, as a multiple of `H`.
        mlp_expansion: Hidden width of the Perceiver and pre-head MLPs, as a multiple of `D`.
        rms_norm_eps: Epsilon of the Perceiver's RMSNorms.
        layer_norm_eps: Epsilon of the pre-head LayerNorms.
        num_pre_head_layers: Residual MLP blocks between the Perceiver and the head.
        normalize_head_input: L2-normalize each rank latent before the head.
        initializer_range: Standard deviation of the latent queries' normal initialization.
        source: Provenance of converted checkpoints (for example the Frames2LoRA file and its SHA-256).

    Example:
        ```python
        from transformers_v2l import Video2LoraConfig

        config = Video2LoraConfig.from_base_model("HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        config.lora_rank  # 16
        ```
    """

    model_type = "video2lora"

    base_model_name_or_path: str | None = _help("Hub id or local path of the frozen base VLM.", None)
    base_model_type: str | None = _help(
        "The base VLM's family (transformers_v2l.families); set by binding.", None
    )
    num_hidden_layers: int | None = _help("Number of text decoder layers L of the base VLM.", None)
    hidden_size: int | None = _help("Text hidden size H of the base VLM.", None)
    module_shapes: dict = _help("{module: [d_in, d_out]} of each target module in the base VLM.", {})
    target_modules: list = _help("Text-decoder linear modules that receive a generated LoRA.", ["down_proj"])
    lora_rank: int = _help("Generated LoRA rank r per layer and module.", 16)
    lora_scaling: float | None = _help("s in y = xW^T + s(xA^T)B; None means 2*r**1.5 (Frames2LoRA).", None)
    use_bias_lora: bool = _help("Append r learned, input-independent 'bias' ranks to each adapter.", True)
    latent_size: int = _help("Width D of the Perceiver latents.", 512)
    num_latent_queries: int = _help("Number Q of encoder latent queries.", 8)
    num_blocks: int = _help("Encoder blocks (one cross-attention layer plus self-attention layers).", 9)
    num_self_attn_per_block: int = _help("Self-attention layers after each encoder cross-attention.", 0)
    num_attention_heads: int = _help("Query heads of every Perceiver attention.", 16)
    num_key_value_heads: int = _help("Key/value heads of every Perceiver attention (grouped query).", 4)
    attention_head_dim: int = _help("Head size of every Perceiver attention.", 128)
    input_expansion: int = _help("Input projection hidden width as a multiple of H.", 4)
    mlp_expansion: int = _help("Perceiver and pre-head MLP hidden width as a multiple of D.", 4)
    rms_norm_eps: float = _help("Epsilon of the Perceiver RMSNorms.", 1e-6)
    layer_norm_eps: float = _help("Epsilon of the pre-head LayerNorms.", 1e-5)
    num_pre_head_layers: int = _help("Residual MLP blocks between the Perceiver and the head.", 1)
    normalize_head_input: bool = _help("L2-normalize each rank latent before the head.", True)
    initializer_range: float = _help("Std of the latent queries' normal init.", 1.0)
    source: dict | None = _help("Provenance of a converted checkpoint (file, repo, revision, sha256).", None)

    def __post_init__(self, **kwargs):
        self.target_modules = sorted(self.target_modules)
        legacy = {
            LEGACY_PROCESSOR_FIELDS[k]: kwargs.pop(k) for k in list(kwargs) if k in LEGACY_PROCESSOR_FIELDS
        }
        super().__post_init__(**kwargs)
        #: preprocessing settings of a version-0.1 config, handed to the processor on load (not saved)
        self.processor_settings = {k: v for k, v in legacy.items() if v is not None}
        self._validate()

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content: the architecture and the base-model binding (no preprocessing settings).

        Returns:
            A JSON-serializable dict.

        Example:
            ```python
            "num_frames" in config.to_dict()  # False: frames are the processor's
            ```
        """
        output = super().to_dict()
        output.pop("processor_settings", None)
        return output

    # ------------------------------------------------------------------------------------
    def _validate(self) -> None:
        positive = (
            "lora_rank",
            "latent_size",
            "num_latent_queries",
            "num_blocks",
            "num_attention_heads",
            "num_key_value_heads",
            "attention_head_dim",
            "input_expansion",
            "mlp_expansion",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Video2LoraConfig.{name} must be a positive integer, got {value!r}.")
        for name in ("num_self_attn_per_block", "num_pre_head_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Video2LoraConfig.{name} must be a non-negative integer, got {value!r}.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                "Video2LoraConfig.num_attention_heads must be a multiple of num_key_value_heads, got "
                f"{self.num_attention_heads} and {self.num_key_value_heads}."
            )
        if not self.target_modules or len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(
                f"Video2LoraConfig.target_modules must be a non-empty list of distinct names, got {self.target_modules!r}."
            )
        if self.base_model_type is not None:
            family_class(self.base_model_type).check_module_names(self.target_modules)
        else:  # not bound yet: each name must be a decoder module of some family
            known = {name for family in FAMILIES.values() for name in family.module_subpaths}
            if unknown := sorted(set(self.target_modules) - known):
                raise ValueError(
                    f"Video2LoraConfig.target_modules {unknown} are not linear modules of any supported family's "
                    f"text decoder layers; choose from {sorted(known)}."
                )
        if self.lora_scaling is not None and not self.lora_scaling > 0:
            raise ValueError(
                f"Video2LoraConfig.lora_scaling must be positive or None, got {self.lora_scaling!r}."
            )
        if self.module_shapes and set(self.module_shapes) != set(self.target_modules):
            raise ValueError(
                f"Video2LoraConfig.module_shapes covers {sorted(self.module_shapes)} but target_modules is "
                f"{self.target_modules}."
            )

    # ------------------------------------------------------------------------------------
    @property
    def scaling(self) -> float:
        """The LoRA multiplier `s` applied to every generated adapter."""
        return float(self.lora_scaling) if self.lora_scaling is not None else 2.0 * self.lora_rank**1.5

    @property
    def effective_rank(self) -> int:
        """Ranks per adapter: generated ranks plus bias ranks."""
        return self.lora_rank * (2 if self.use_bias_lora else 1)

    @property
    def is_bound(self) -> bool:
        """Whether the base model's text-tower shapes are recorded."""
        return bool(self.num_hidden_layers and self.hidden_size and self.module_shapes)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """The `help` text of every configurable field.

        Returns:
            `{field: help}`, in declaration order.

        Example:
            ```python
            Video2LoraConfig.field_help()["lora_rank"]  # 'Generated LoRA rank r per layer and module.'
            ```
        """
        fields = getattr(cls, "__dataclass_fields__", {})
        return {name: f.metadata["help"] for name, f in fields.items() if "help" in f.metadata}

    @classmethod
    def from_base_model(
        cls, base_model: str | os.PathLike | PreTrainedConfig | Any, **kwargs: Any
    ) -> Video2LoraConfig:
        """Build a configuration bound to a base VLM's text-tower shapes.

        Args:
            base_model: a Hub id or local path (only its `config.json` is read), a VLM config, or a
                loaded VLM.
            **kwargs: any other `Video2LoraConfig` field, for example `lora_rank=8`.

        Returns:
            A `Video2LoraConfig` whose `num_hidden_layers`, `hidden_size` and `module_shapes` match the base.

        Raises:
            HubUnavailableError: `base_model` is a Hub id that is not cached while the Hub cannot be reached.

        Example:
            ```python
            config = Video2LoraConfig.from_base_model("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", lora_rank=8)
            config.base_model_type  # 'smolvlm'

            ```
        """
        name = None
        if isinstance(base_model, (str, os.PathLike)):
            name = str(base_model)
            try:
                vlm_config = AutoConfig.from_pretrained(name)
            except OSError as error:
                from .hub import OFFLINE_MODEL_HINT, hub_unavailable_error, hub_unreachable

                if os.path.isdir(name) or not hub_unreachable(error):
                    raise
                raise hub_unavailable_error(name, "config.json", error, hint=OFFLINE_MODEL_HINT) from error
        elif isinstance(base_model, PreTrainedConfig):
            vlm_config = base_model
        else:  # a loaded model
            vlm_config = base_model.config
        name = (
            kwargs.pop("base_model_name_or_path", None) or name or getattr(vlm_config, "_name_or_path", None)
        )
        target_modules = sorted(kwargs.pop("target_modules", ["down_proj"]))
        family = family_class(vlm_config.model_type)
        text = family.text_config(vlm_config)
        shapes = family.module_shapes(vlm_config, target_modules)
        return cls(
            base_model_name_or_path=name or None,
            base_model_type=family.name,
            num_hidden_layers=text.num_hidden_layers,
            hidden_size=text.hidden_size,
            module_shapes={k: list(v) for k, v in shapes.items()},
            target_modules=target_modules,
            **kwargs,
        )


AutoConfig.register(Video2LoraConfig.model_type, Video2LoraConfig, exist_ok=True)
