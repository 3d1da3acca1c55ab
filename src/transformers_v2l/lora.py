"""Generated LoRA adapters: the tensors one video becomes, and how batches of them are stacked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["GeneratedLora", "stack_adapters"]


@dataclass
class GeneratedLora:
    """The LoRA adapter generated for one video.

    For every target module `m`, `lora_A[m]` is `[L, R, d_in]` and `lora_B[m]` is `[L, R, d_out]`
    (rank-major, as the paper writes them), and the update of layer `l` is
    `delta_y = scaling * (x @ lora_A[m][l].T) @ lora_B[m][l]`.

    Args:
        lora_A: `{module: [L, R, d_in]}`.
        lora_B: `{module: [L, R, d_out]}`.
        scaling: the multiplier `s` of the update.
        base_model_name_or_path: the base VLM the adapter was generated for.
        base_model_type: `model_type` of that VLM.
        metadata: provenance (source video SHA-256, frame indices, resolution, hypernetwork, instruction).

    Example:
        ```python
        adapter = hn.internalize("clip.mp4")
        adapter.rank, adapter.nbytes
        ```
    """

    lora_A: dict[str, torch.Tensor]
    lora_B: dict[str, torch.Tensor]
    scaling: float
    base_model_name_or_path: str | None = None
    base_model_type: str = "smolvlm"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def target_modules(self) -> list[str]:
        return sorted(self.lora_A)

    @property
    def num_layers(self) -> int:
        return next(iter(self.lora_A.values())).shape[0]

    @property
    def rank(self) -> int:
        return next(iter(self.lora_A.values())).shape[1]

    @property
    def module_shapes(self) -> dict[str, tuple[int, int]]:
        return {m: (self.lora_A[m].shape[-1], self.lora_B[m].shape[-1]) for m in self.target_modules}

    @property
    def nbytes(self) -> int:
        """Bytes held by the adapter tensors."""
        tensors = [*self.lora_A.values(), *self.lora_B.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.lora_A.values())).dtype

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> GeneratedLora:
        """A copy with tensors cast to `dtype` and/or moved to `device`."""
        return GeneratedLora(
            lora_A={m: t.to(device=device, dtype=dtype) for m, t in self.lora_A.items()},
            lora_B={m: t.to(device=device, dtype=dtype) for m, t in self.lora_B.items()},
            scaling=self.scaling,
            base_model_name_or_path=self.base_model_name_or_path,
            base_model_type=self.base_model_type,
            metadata=dict(self.metadata),
        )


def stack_adapters(
    adapters: list[GeneratedLora],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Stack adapters into batch tensors for per-row injection.

    Adapters of different ranks (for example composed ones) are zero-padded on the rank axis,
    which adds nothing to the update.

    Returns:
        `(lora_A, lora_B, scaling)` with `lora_A[m]` `[B, L, R_max, d_in]`, `lora_B[m]`
        `[B, L, R_max, d_out]` and `scaling` `[B]`.
    """
    if not adapters:
        raise ValueError("stack_adapters needs at least one adapter.")
    first = adapters[0]
    for adapter in adapters[1:]:
        if adapter.module_shapes != first.module_shapes or adapter.num_layers != first.num_layers:
            from .errors import AdapterMismatchError

            raise AdapterMismatchError(
                "Adapters in one batch must target the same modules and layers: got "
                f"{first.num_layers} layers {first.module_shapes} and {adapter.num_layers} layers {adapter.module_shapes}."
            )
    max_rank = max(a.rank for a in adapters)

    def pad(t: torch.Tensor) -> torch.Tensor:  # [L, R, d] -> [L, R_max, d]
        return torch.nn.functional.pad(t, (0, 0, 0, max_rank - t.shape[1]))

    lora_A = {m: torch.stack([pad(a.lora_A[m]) for a in adapters]) for m in first.target_modules}
    lora_B = {m: torch.stack([pad(a.lora_B[m]) for a in adapters]) for m in first.target_modules}
    scaling = torch.tensor([a.scaling for a in adapters], dtype=torch.float32)
    return lora_A, lora_B, scaling
