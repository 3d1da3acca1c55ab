"""Functional per-example LoRA during a forward pass.

Generated adapters are applied with forward hooks that add `s * (x A^T) B` to the output of each
target module, with every batch row using its own `A` and `B` (two batched matmuls). The hooks are
removed when the context exits, so the shared base model is never mutated or patched. The same
mechanism serves training (gradients flow to the adapter tensors, hence to the hypernetwork) and
batched answering.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import torch

from .backbones import Video2LoraBackbone
from .errors import AdapterMismatchError

if TYPE_CHECKING:
    from .lora import GeneratedLora

__all__ = ["inject_lora", "stack_adapters"]


def _lora_hook(module, args, output, *, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: torch.Tensor):
    x = args[0]  # [b, S, d_in]
    rows = x.shape[0]
    if lora_A.shape[0] != rows:  # generate() may expand the batch (beams, num_return_sequences)
        if rows % lora_A.shape[0]:
            raise AdapterMismatchError(
                f"A batch of {rows} rows cannot use {lora_A.shape[0]} adapters: the row count must be a multiple."
            )
        repeats = rows // lora_A.shape[0]
        lora_A, lora_B = lora_A.repeat_interleave(repeats, 0), lora_B.repeat_interleave(repeats, 0)
        scaling = scaling.repeat_interleave(repeats, 0)
    hidden = torch.bmm(x.to(lora_A.dtype), lora_A.transpose(1, 2))  # [b, S, R]
    delta = torch.bmm(hidden, lora_B)  # [b, S, d_out]
    return (output + scaling.view(-1, 1, 1) * delta).to(output.dtype)


@contextmanager
def inject_lora(
    backbone: Video2LoraBackbone,
    lora_A: dict[str, torch.Tensor],
    lora_B: dict[str, torch.Tensor],
    scaling: float | torch.Tensor,
) -> Iterator[None]:
    """Apply per-row generated adapters to the backbone's target modules inside a `with` block.

    Args:
        backbone: the base VLM's backbone wrapper.
        lora_A: `{module: [B, L, R, d_in]}`.
        lora_B: `{module: [B, L, R, d_out]}`.
        scaling: the multiplier `s`, a float or one value per row (`[B]`).

    Returns:
        A context manager; the hooks are active inside the `with` block and removed when it exits.

    Raises:
        AdapterMismatchError: the tensors do not fit the backbone's layers and module shapes.

    Example:
        ```python
        with inject_lora(backbone, out.lora_A, out.lora_B, hn.config.scaling):
            logits = vlm(input_ids=ids, attention_mask=mask).logits
        ```
    """
    num_layers = backbone.num_layers
    batch = next(iter(lora_A.values())).shape[0]
    live_shapes = backbone.live_module_shapes(list(lora_A))
    for module, tensor_a in lora_A.items():
        tensor_b = lora_B[module]
        d_in, d_out = live_shapes[module]
        if tensor_a.dim() != 4 or tensor_a.shape[1] != num_layers or tensor_a.shape[-1] != d_in:
            raise AdapterMismatchError(
                f"lora_A[{module!r}] must be [B, {num_layers}, R, {d_in}] for this base model, got {list(tensor_a.shape)}."
            )
        if tensor_b.shape[:3] != tensor_a.shape[:3] or tensor_b.shape[-1] != d_out:
            raise AdapterMismatchError(
                f"lora_B[{module!r}] must be [B, {num_layers}, {tensor_a.shape[2]}, {d_out}], got {list(tensor_b.shape)}."
            )
    if not torch.is_tensor(scaling):
        scaling = torch.full((batch,), float(scaling))
    handles = []
    try:
        for module in sorted(lora_A):
            device = backbone.target_module(0, module).weight.device
            scale = scaling.to(device=device, dtype=lora_A[module].dtype)
            for layer in range(num_layers):
                hook = partial(
                    _lora_hook,
                    lora_A=lora_A[module][:, layer].to(device),
                    lora_B=lora_B[module][:, layer].to(device),
                    scaling=scale,
                )
                handles.append(backbone.target_module(layer, module).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def stack_adapters(
    adapters: list[GeneratedLora],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Stack adapters into batch tensors for per-row injection.

    Adapters of different ranks (for example composed ones) are zero-padded on the rank axis,
    which adds nothing to the update.

    Args:
        adapters: adapters for the same target modules and layers, one per batch row.

    Returns:
        `(lora_A, lora_B, scaling)` with `lora_A[m]` `[B, L, R_max, d_in]`, `lora_B[m]`
        `[B, L, R_max, d_out]` and `scaling` `[B]`.

    Raises:
        AdapterMismatchError: the adapters target different modules or layers.

    Example:
        ```python
        with inject_lora(hn.backbone, *stack_adapters([adapter_a, adapter_b])):
            logits = hn.vlm(input_ids=ids, attention_mask=mask).logits
        ```
    """
    if not adapters:
        raise ValueError("stack_adapters needs at least one adapter.")
    first = adapters[0]
    for adapter in adapters[1:]:
        if adapter.module_shapes != first.module_shapes or adapter.num_layers != first.num_layers:
            raise AdapterMismatchError(
                "Adapters in one batch must target the same modules and layers: got "
                f"{first.num_layers} layers {first.module_shapes} and {adapter.num_layers} layers {adapter.module_shapes}."
            )
    max_rank = max(a.rank for a in adapters)
    dtype = first.dtype
    for adapter in adapters[1:]:  # adapters loaded from disk may be bf16 beside fresh fp32 ones
        dtype = torch.promote_types(dtype, adapter.dtype)

    def pad(t: torch.Tensor) -> torch.Tensor:  # [L, R, d] -> [L, R_max, d]
        return torch.nn.functional.pad(t.to(dtype), (0, 0, 0, max_rank - t.shape[1]))

    lora_A = {m: torch.stack([pad(a.lora_A[m]) for a in adapters]) for m in first.target_modules}
    lora_B = {m: torch.stack([pad(a.lora_B[m]) for a in adapters]) for m in first.target_modules}
    scaling = torch.tensor([a.scaling for a in adapters], dtype=torch.float32)
    return lora_A, lora_B, scaling
