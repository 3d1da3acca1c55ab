"""Everything transformers-v2l knows about one VLM family.

A backbone answers four questions for the rest of the library:

1. where the text decoder layers are, and which linear modules an adapter may target;
2. the shapes of those modules (`d_in`, `d_out`), from a live model or from its config alone;
3. how to get the residual stream entering every decoder layer (`[B, L, S, H]`) in one forward
   pass of the inner model;
4. the module paths a PEFT adapter uses for them.

Adding another VLM family means adding one `Video2LoraBackbone` subclass here and registering it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import AdapterMismatchError

__all__ = ["BACKBONES", "SmolVLMBackbone", "Video2LoraBackbone", "get_backbone", "register_backbone"]


class _LayerInputsRecorded(Exception):
    """Stops a forward pass once the last decoder layer's input is recorded."""


class Video2LoraBackbone:
    """Adapter between transformers-v2l and one family of vision-language models.

    Args:
        model: the full generative model (for example a `SmolVLMForConditionalGeneration`).

    Example:
        ```python
        backbone = get_backbone(vlm)
        features, mask = backbone.extract_features(**inputs)  # [B, L, S, H], [B, S]
        ```
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    #: module name -> sub-path inside one decoder layer
    module_subpaths: ClassVar[dict[str, str]] = {}
    #: attribute path from the generative model to the decoder layer list
    layers_path: ClassVar[str] = ""

    def __init__(self, model: nn.Module):
        self.model = model

    # ---- static knowledge, from the config alone -------------------------------------------
    @classmethod
    def text_config(cls, config) -> Any:
        """The text decoder's sub-config of a VLM config.

        Args:
            config: the VLM's `PreTrainedConfig`.

        Returns:
            The config holding `num_hidden_layers`, `hidden_size` and the decoder's module sizes.

        Example:
            ```python
            SmolVLMBackbone.text_config(vlm.config).num_hidden_layers
            ```
        """
        raise NotImplementedError

    @classmethod
    def module_shapes(cls, config, target_modules: list[str]) -> dict[str, tuple[int, int]]:
        """The shapes of the text decoder's target modules, read from a config (no weights needed).

        Args:
            config: the VLM's `PreTrainedConfig`.
            target_modules: module names, for example `["down_proj"]`.

        Returns:
            `{module: (d_in, d_out)}`, sorted by module name.

        Example:
            ```python
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained("HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
            SmolVLMBackbone.module_shapes(config, ["down_proj"])  # {'down_proj': (2560, 960)}
            ```
        """
        raise NotImplementedError

    @classmethod
    def module_path(cls, layer: int, module: str) -> str:
        """Dotted path of one target module, relative to the generative model.

        Args:
            layer: the decoder layer index.
            module: the target module name.

        Returns:
            The path, for `model.get_submodule`.

        Example:
            ```python
            SmolVLMBackbone.module_path(0, "down_proj")  # 'model.text_model.layers.0.mlp.down_proj'
            ```
        """
        cls.check_module_names([module])
        return f"{cls.layers_path}.{layer}.{cls.module_subpaths[module]}"

    @classmethod
    def peft_target_regex(cls, target_modules: list[str]) -> str:
        """A PEFT `target_modules` regex that matches exactly these text-decoder modules.

        The vision tower has modules of the same names, so plain names would match them too.

        Args:
            target_modules: module names, for example `["down_proj"]`.

        Returns:
            A regular expression for `LoraConfig(target_modules=...)`.

        Example:
            ```python
            SmolVLMBackbone.peft_target_regex(["down_proj"])  # '.*model\\.text_model\\.layers\\.\\d+\\.(?:mlp\\.down_proj)'
            ```
        """
        cls.check_module_names(target_modules)
        subpaths = "|".join(re.escape(cls.module_subpaths[m]) for m in sorted(target_modules))
        return rf".*{re.escape(cls.layers_path)}\.\d+\.(?:{subpaths})"

    @classmethod
    def check_module_names(cls, target_modules: list[str]) -> None:
        """Raise `ValueError` unless every name is a linear module of this family's decoder layers.

        Args:
            target_modules: module names, for example `["down_proj"]`.

        Raises:
            ValueError: a name is unknown; the message lists the valid ones.

        Example:
            ```python
            SmolVLMBackbone.check_module_names(["down_proj", "q_proj"])
            ```
        """
        unknown = sorted(set(target_modules) - set(cls.module_subpaths))
        if unknown:
            raise ValueError(
                f"target_modules {unknown} are not linear modules of a {cls.model_types[0]} text decoder layer; "
                f"choose from {sorted(cls.module_subpaths)}."
            )

    # ---- live model ------------------------------------------------------------------------
    @property
    def config(self):
        """The live model's config."""
        return self.model.config

    def decoder_layers(self) -> nn.ModuleList:
        """The text decoder layers of the live model.

        Returns:
            The `nn.ModuleList` at `layers_path`.

        Example:
            ```python
            len(get_backbone(vlm).decoder_layers())  # L
            ```
        """
        return self.model.get_submodule(self.layers_path)

    @property
    def num_layers(self) -> int:
        """Number of text decoder layers `L` of the live model."""
        return len(self.decoder_layers())

    def target_module(self, layer: int, module: str) -> nn.Linear:
        """One target module of the live model.

        Args:
            layer: the decoder layer index.
            module: the target module name.

        Returns:
            The `nn.Linear` an adapter changes.

        Example:
            ```python
            get_backbone(vlm).target_module(0, "down_proj").weight.shape  # [d_out, d_in]
            ```
        """
        return self.model.get_submodule(self.module_path(layer, module))

    def live_module_shapes(self, target_modules: list[str]) -> dict[str, tuple[int, int]]:
        """The shapes of the target modules of the live model (layer 0).

        Args:
            target_modules: module names, for example `["down_proj"]`.

        Returns:
            `{module: (d_in, d_out)}`, sorted by module name.

        Example:
            ```python
            get_backbone(vlm).live_module_shapes(["down_proj"])
            ```
        """
        shapes = {}
        for name in sorted(target_modules):
            linear = self.target_module(0, name)
            shapes[name] = (linear.in_features, linear.out_features)
        return shapes

    def record_layer_inputs(self, run: Callable[[], Any]) -> list[torch.Tensor]:
        """The hidden states entering each decoder layer during `run()`, which stops at the last layer.

        The last layer, the final norm and anything after them never run: their outputs are not
        features, so the pass costs `(L - 1) / L` of the decoder.

        Args:
            run: calls the model (or the part of it that holds the decoder layers) once.

        Returns:
            `L` tensors `[B, S, H]`, in layer order.

        Example:
            ```python
            backbone = get_backbone(vlm)
            inputs = backbone.record_layer_inputs(lambda: vlm.model(**tensors, use_cache=False))
            ```
        """
        layers = self.decoder_layers()
        captured: list[torch.Tensor] = []

        def record(module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])  # [B, S, H]
            if len(captured) == len(layers):
                raise _LayerInputsRecorded

        handles = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in layers]
        try:
            run()
        except _LayerInputsRecorded:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(captured) != len(layers):
            raise RuntimeError(
                f"Expected the inputs of {len(layers)} decoder layers, recorded {len(captured)}."
            )
        return captured

    def extract_features(self, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual stream entering each decoder layer, and its attention mask.

        Args:
            **inputs: the processor's outputs (`input_ids`, `attention_mask`, `pixel_values`, ...).

        Returns:
            `(features, attention_mask)`: `[B, L, S, H]` in the model's dtype and `[B, S]` int64.

        Example:
            ```python
            features, mask = get_backbone(vlm).extract_features(**inputs)
            ```
        """
        raise NotImplementedError

    def check_shapes(self, num_layers: int, shapes: dict[str, tuple[int, int]], what: str) -> None:
        """Raise `AdapterMismatchError` unless `num_layers` and `shapes` fit this live model.

        Args:
            num_layers: the number of decoder layers expected.
            shapes: `{module: (d_in, d_out)}` expected.
            what: what is checked, for the message (for example `"The adapter"`).

        Raises:
            AdapterMismatchError: the layers or shapes differ; the message gives both.

        Example:
            ```python
            get_backbone(vlm).check_shapes(adapter.num_layers, adapter.module_shapes, "The adapter")
            ```
        """
        found_layers = self.num_layers
        found = self.live_module_shapes(list(shapes))
        if found_layers != num_layers or {k: tuple(v) for k, v in shapes.items()} != found:
            raise AdapterMismatchError(
                f"{what} was built for a text decoder with {num_layers} layers and module shapes "
                f"{ {k: tuple(v) for k, v in shapes.items()} } (d_in, d_out), but the base model "
                f"{getattr(self.config, '_name_or_path', '') or type(self.model).__name__} has "
                f"{found_layers} layers and {found}."
            )


class SmolVLMBackbone(Video2LoraBackbone):
    """SmolVLM and SmolVLM2 (`SmolVLMForConditionalGeneration`, a Llama text decoder).

    Args:
        model: a loaded `SmolVLMForConditionalGeneration`.

    Example:
        ```python
        backbone = SmolVLMBackbone(vlm)
        backbone.module_path(3, "down_proj")  # 'model.text_model.layers.3.mlp.down_proj'
        ```
    """

    model_types = ("smolvlm", "idefics3")
    module_subpaths: ClassVar[dict[str, str]] = {
        "q_proj": "self_attn.q_proj",
        "k_proj": "self_attn.k_proj",
        "v_proj": "self_attn.v_proj",
        "o_proj": "self_attn.o_proj",
        "gate_proj": "mlp.gate_proj",
        "up_proj": "mlp.up_proj",
        "down_proj": "mlp.down_proj",
    }
    layers_path = "model.text_model.layers"

    @classmethod
    def text_config(cls, config):
        """The `text_config` of a SmolVLM config.

        Args:
            config: a `SmolVLMConfig`.

        Returns:
            Its Llama `text_config`.

        Example:
            ```python
            SmolVLMBackbone.text_config(vlm.config).hidden_size  # 960 for SmolVLM2-500M
            ```
        """
        return config.text_config

    @classmethod
    def module_shapes(cls, config, target_modules: list[str]) -> dict[str, tuple[int, int]]:
        """The shapes of the Llama decoder's target modules, read from a SmolVLM config.

        Args:
            config: a `SmolVLMConfig`.
            target_modules: module names, for example `["down_proj"]`.

        Returns:
            `{module: (d_in, d_out)}`, sorted by module name.

        Example:
            ```python
            SmolVLMBackbone.module_shapes(vlm.config, ["down_proj", "q_proj"])
            ```
        """
        cls.check_module_names(target_modules)
        text = cls.text_config(config)
        hidden, inter = text.hidden_size, text.intermediate_size
        head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
        q_dim = text.num_attention_heads * head_dim
        kv_dim = (text.num_key_value_heads or text.num_attention_heads) * head_dim
        table = {
            "q_proj": (hidden, q_dim),
            "k_proj": (hidden, kv_dim),
            "v_proj": (hidden, kv_dim),
            "o_proj": (q_dim, hidden),
            "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }
        return {name: table[name] for name in sorted(target_modules)}

    def extract_features(self, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the inner `SmolVLMModel` up to its last decoder layer and keep the input of every layer.

        Args:
            **inputs: the processor's outputs (`input_ids`, `attention_mask`, `pixel_values`,
                `pixel_attention_mask`).

        Returns:
            `(features, attention_mask)`: `[B, L, S, H]` in the model's dtype and `[B, S]` int64.

        Example:
            ```python
            features, mask = SmolVLMBackbone(vlm).extract_features(**processor(videos=["clip.mp4"]))
            ```
        """
        inner = self.model.model  # SmolVLMModel: vision tower, connector, text decoder; no LM head
        pixel_values = inputs.get("pixel_values")
        if pixel_values is not None:
            inputs["pixel_values"] = pixel_values.to(self.model.dtype)
        kept = self.record_layer_inputs(lambda: inner(**inputs, use_cache=False, return_dict=True))
        features = torch.stack(kept, dim=1)  # [B, L, S, H]
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long, device=features.device)
        return features, mask.long()


BACKBONES: dict[str, type[Video2LoraBackbone]] = {}


def register_backbone(cls: type[Video2LoraBackbone]) -> type[Video2LoraBackbone]:
    """Register a backbone class for each `model_type` it declares (usable as a class decorator).

    Args:
        cls: a `Video2LoraBackbone` subclass with `model_types`, `module_subpaths` and `layers_path`.

    Returns:
        `cls`, unchanged.

    Example:
        ```python
        @register_backbone
        class MyVLMBackbone(SmolVLMBackbone):
            model_types = ("my_vlm",)
            layers_path = "model.language_model.layers"
        ```
    """
    for model_type in cls.model_types:
        BACKBONES[model_type] = cls
    return cls


register_backbone(SmolVLMBackbone)


def backbone_class(model_type: str) -> type[Video2LoraBackbone]:
    try:
        return BACKBONES[model_type]
    except KeyError:
        raise ValueError(
            f"transformers-v2l has no backbone for model_type {model_type!r}; supported: {sorted(BACKBONES)}. "
            "Add a Video2LoraBackbone subclass in transformers_v2l/backbones.py."
        ) from None


def get_backbone(model: nn.Module) -> Video2LoraBackbone:
    """The backbone wrapper for a live generative VLM.

    Args:
        model: a loaded VLM whose `config.model_type` has a registered backbone.

    Returns:
        A `Video2LoraBackbone` wrapping `model`.

    Raises:
        ValueError: no backbone is registered for the model's `model_type`.

    Example:
        ```python
        backbone = get_backbone(vlm)
        backbone.num_layers
        ```
    """
    return backbone_class(model.config.model_type)(model)
