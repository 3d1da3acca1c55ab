"""The operations every family performs on one live model: layers, target modules, shape checks, features.

`Video2LoraFamily` inherits them; an instance wraps the model (`family(model)`, or `get_family(model)`)
and reads the family's class attributes (`layers_path`, `module_subpaths`) and `module_path`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import AdapterMismatchError

__all__ = ["LiveModelMixin"]


class _LayerInputsRecorded(Exception):
    """Stops a forward pass once the last decoder layer's input is recorded."""


class LiveModelMixin:
    """The live-model half of a `Video2LoraFamily` (not used on its own; it needs `self.model` and the family's paths).

    Example:
        ```python
        family = get_family(vlm)
        family.num_layers, family.target_module(0, "down_proj")
        ```
    """

    model: nn.Module

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
            len(family.decoder_layers())  # L
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
            family.target_module(0, "down_proj").weight.shape  # [d_out, d_in]
            ```
        """
        return self.model.get_submodule(self.module_path(layer, module))

    def live_module_shapes(self, target_modules: Sequence[str]) -> dict[str, tuple[int, int]]:
        """The shapes of the target modules of the live model (layer 0).

        Args:
            target_modules: module names, for example `["down_proj"]`.

        Returns:
            `{module: (d_in, d_out)}`, sorted by module name.

        Example:
            ```python
            family.live_module_shapes(["down_proj"])
            ```
        """
        shapes = {}
        for name in sorted(target_modules):
            linear = self.target_module(0, name)
            shapes[name] = (linear.in_features, linear.out_features)
        return shapes

    def check_shapes(self, num_layers: int, shapes: dict[str, Sequence[int]], what: str) -> None:
        """Raise `AdapterMismatchError` unless `num_layers` and `shapes` fit this live model.

        Args:
            num_layers: the number of decoder layers expected.
            shapes: `{module: (d_in, d_out)}` expected.
            what: what is checked, for the message (for example `"The adapter"`).

        Raises:
            AdapterMismatchError: the layers or shapes differ; the message gives both.

        Example:
            ```python
            family.check_shapes(adapter.num_layers, adapter.module_shapes, "The adapter")
            ```
        """
        expected = {k: tuple(v) for k, v in shapes.items()}
        found_layers = self.num_layers
        found = self.live_module_shapes(list(shapes))
        if found_layers != num_layers or expected != found:
            name = getattr(self.config, "_name_or_path", "") or type(self.model).__name__
            raise AdapterMismatchError(
                f"{what} was built for a text decoder with {num_layers} layers and module shapes {expected} "
                f"(d_in, d_out), but the base model {name} has {found_layers} layers and {found}."
            )

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
            inputs = family.record_layer_inputs(lambda: vlm.model(**tensors, use_cache=False))
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

    def extract_features(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual stream entering each decoder layer, and its attention mask.

        The default runs the inner model (`self.model.model`, no LM head) up to its last decoder
        layer, with the vision inputs cast to the model's dtype. Override when the family's
        features need more (for example vision features added inside the decoder).

        Args:
            **inputs: the processor's outputs on the model's device (`input_ids`, `attention_mask`
                and `video_input_keys`).

        Returns:
            `(features, attention_mask)`: `[B, L, S, H]` in the model's dtype and `[B, S]` int64.

        Example:
            ```python
            features, mask = family.extract_features(**processor(videos=["clip.mp4"]))
            ```
        """
        dtype = self.model.dtype
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        kept = self.record_layer_inputs(
            lambda: self.model.model(**tensors, use_cache=False, return_dict=True)
        )
        features = torch.stack(kept, dim=1)  # [B, L, S, H]
        mask = tensors.get("attention_mask")
        if mask is None:
            mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long, device=features.device)
        return features, mask.long()

    def generation_inputs(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """*Override.* The inputs `generate` takes for processor outputs (default: unchanged).

        A family whose model cannot take a batch as the processor builds it (for example videos of
        different frame counts) returns equivalent inputs here (such as `inputs_embeds`).

        Args:
            **inputs: processor outputs on the model's device.

        Returns:
            The keyword arguments for `generate`.

        Example:
            ```python
            output = vlm.generate(**family.generation_inputs(**inputs), max_new_tokens=16)
            ```
        """
        return dict(inputs)
