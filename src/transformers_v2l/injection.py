"""Functional per-example LoRA during a forward pass.

Generated adapters are applied with forward hooks that add `s * (x A^T) B` to the output of each
target module, with every batch row using its own `A` and `B` (two batched matmuls). The hooks are
removed when the context exits, so the shared base model is never mutated or patched. The same
mechanism serves training (gradients flow to the adapter tensors, hence to the hypernetwork) and
batched answering.

Precision: the update is computed in float32 or wider (the widest of the activations', the adapter's and
float32), as PEFT does by default (it upcasts bf16/fp16 adapters to fp32), and added to the module's
output in that dtype before casting back. On CPUs the small fp32 matmuls of a decoding step are also
about 4x faster than bf16 ones. Per call, the adapter tensors are moved,
cast once (a per-row scaling folded into `B`; a shared one is `baddbmm`'s `alpha`), so each hook runs one
matmul and one fused matmul-add.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import torch

from .errors import AdapterMismatchError

if TYPE_CHECKING:
    from .families import Video2LoraFamily
    from .lora import GeneratedLora

__all__ = ["compute_dtype", "inject_lora", "lora_forward", "stack_adapters"]


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype the LoRA update is computed in: the widest of `dtypes` and float32 (as PEFT by default).

    Args:
        *dtypes: the base weight's and the adapter's dtypes.

    Returns:
        `torch.float32`, or a wider dtype among `dtypes`.

    Example:
        ```python
        compute_dtype(torch.bfloat16, torch.bfloat16)  # torch.float32
        ```
    """
    compute = torch.float32
    for dtype in dtypes:
        compute = torch.promote_types(compute, dtype)
    return compute


def lora_forward(
    output: torch.Tensor, x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    """`output + alpha * (x @ lora_A) @ lora_B` per batch row, in the adapters' dtype, returned in `output`'s.

    Args:
        output: the target module's output, `[b, S, d_out]`.
        x: the target module's input, `[b, S, d_in]`.
        lora_A: `[b, d_in, R]` (transposed), in the compute dtype (`compute_dtype`).
        lora_B: `[b, R, d_out]`, in the compute dtype, per-row scalings folded in.
        alpha: a scaling shared by every row.

    Returns:
        The updated output, `[b, S, d_out]` in `output.dtype`.

    Example:
        ```python
        out = lora_forward(out, x, a.transpose(-1, -2), b, alpha=2.0)
        ```
    """
    compute = lora_A.dtype
    hidden = torch.bmm(x.to(compute), lora_A)  # [b, S, R]
    # output + alpha * hidden @ B: one kernel for the matmul, the scaling and the add
    if output.dtype == compute:
        return torch.baddbmm(output, hidden, lora_B, alpha=alpha)
    return torch.baddbmm(output.to(compute), hidden, lora_B, alpha=alpha).to(output.dtype)


def _lora_hook(module, args, output, *, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float):
    # lora_A: [b, d_in, R] (transposed), lora_B: [b, R, d_out] (per-row scalings folded in, else `alpha`);
    # both in the compute dtype
    rows = args[0].shape[0]
    if lora_A.shape[0] != rows:  # generate() may expand the batch (beams, num_return_sequences)
        if rows % lora_A.shape[0]:
            raise AdapterMismatchError(
                f"A batch of {rows} rows cannot use {lora_A.shape[0]} adapters: the row count must be a multiple."
            )
        repeats = rows // lora_A.shape[0]
        lora_A, lora_B = lora_A.repeat_interleave(repeats, 0), lora_B.repeat_interleave(repeats, 0)
    return lora_forward(output, args[0], lora_A, lora_B, alpha)


@contextmanager
def inject_lora(
    family: Video2LoraFamily,
    lora_A: dict[str, torch.Tensor],
    lora_B: dict[str, torch.Tensor],
    scaling: float | torch.Tensor,
) -> Iterator[None]:
    """Apply per-row generated adapters to the family's target modules inside a `with` block.

    Args:
        family: the base VLM's family wrapper (`hn.family`, or `get_family(vlm)`).
        lora_A: `{module: [B, L, R, d_in]}`.
        lora_B: `{module: [B, L, R, d_out]}`.
        scaling: the multiplier `s`, a float or one value per row (`[B]`).

    Returns:
        A context manager; the hooks are active inside the `with` block and removed when it exits.

    Raises:
        AdapterMismatchError: the tensors do not fit the model's layers and module shapes.

    Example:
        ```python
        with inject_lora(hn.family, out.lora_A, out.lora_B, hn.config.scaling):
            logits = vlm(input_ids=ids, attention_mask=mask).logits
        ```
    """
    num_layers = family.num_layers
    live_shapes = family.live_module_shapes(list(lora_A))
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
    handles = []
    layers = family.decoder_layers()
    try:
        for module in sorted(lora_A):
            targets = [layer.get_submodule(family.module_subpaths[module]) for layer in layers]
            weight = targets[0].weight
            # at least fp32, as PEFT (its default upcasts adapters to fp32); also the fast path on CPUs
            compute = compute_dtype(weight.dtype, lora_A[module].dtype)
            a = lora_A[module].to(weight.device, compute).transpose(-1, -2)  # [B, L, d_in, R]
            b = lora_B[module].to(weight.device, compute)  # [B, L, R, d_out]; no copy when already there
            alpha = 1.0
            if torch.is_tensor(scaling):  # one scaling per row: folded into B
                b = b * scaling.to(weight.device, compute).view(-1, 1, 1, 1)
            else:
                alpha = float(scaling)
            for layer in range(num_layers):
                hook = partial(_lora_hook, lora_A=a[:, layer], lora_B=b[:, layer], alpha=alpha)
                handles.append(targets[layer].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def stack_adapters(
    adapters: list[GeneratedLora],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float | torch.Tensor]:
    """Stack adapters into batch tensors for per-row injection.

    Adapters of different ranks (for example composed ones) are zero-padded on the rank axis,
    which adds nothing to the update.

    Args:
        adapters: adapters for the same target modules and layers, one per batch row.

    Returns:
        `(lora_A, lora_B, scaling)` with `lora_A[m]` `[B, L, R_max, d_in]`, `lora_B[m]`
        `[B, L, R_max, d_out]` (views when one adapter serves every row) and `scaling`, a float when
        the adapters share it, else `[B]`.

    Raises:
        AdapterMismatchError: the adapters target different modules or layers.

    Example:
        ```python
        with inject_lora(hn.family, *stack_adapters([adapter_a, adapter_b])):
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
    if all(adapter is first for adapter in adapters):  # one adapter shared by every row: views, no copies
        rows = len(adapters)
        lora_A = {m: t.unsqueeze(0).expand(rows, -1, -1, -1) for m, t in first.lora_A.items()}
        lora_B = {m: t.unsqueeze(0).expand(rows, -1, -1, -1) for m, t in first.lora_B.items()}
        return lora_A, lora_B, first.scaling
    max_rank = max(a.rank for a in adapters)
    dtype = first.dtype
    for adapter in adapters[1:]:  # adapters loaded from disk may be bf16 beside fresh fp32 ones
        dtype = torch.promote_types(dtype, adapter.dtype)

    def pad(t: torch.Tensor) -> torch.Tensor:  # [L, R, d] -> [L, R_max, d]
        return torch.nn.functional.pad(t.to(dtype), (0, 0, 0, max_rank - t.shape[1]))

    lora_A = {m: torch.stack([pad(a.lora_A[m]) for a in adapters]) for m in first.target_modules}
    lora_B = {m: torch.stack([pad(a.lora_B[m]) for a in adapters]) for m in first.target_modules}
    if len({a.scaling for a in adapters}) == 1:
        return lora_A, lora_B, first.scaling
    scaling = torch.tensor([a.scaling for a in adapters], dtype=torch.float32, device=first.device)
    return lora_A, lora_B, scaling
