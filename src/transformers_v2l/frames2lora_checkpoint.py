"""What a Frames2LoRA checkpoint says: its tensors and its architecture (`Frames2LoraInfo`).

`frames2lora_pickle` turns the file's bytes into inert objects without running any code;
this module reads the hypernetwork tensors and the recorded sizes and switches out of them;
`frames2lora` maps them onto a `Video2LoraHypernetwork`.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointMismatchError
from .frames2lora_pickle import PickledConfig, load_frames2lora_pickle

logger = logging.getLogger(__name__)

__all__ = ["Frames2LoraInfo", "read_frames2lora"]

# --------------------------------------------------------------------------------------------
# What the file says (SPEC sections 1.2, 1.3)
# --------------------------------------------------------------------------------------------


@dataclass
class Frames2LoraInfo:
    """The architecture and provenance recorded in a Frames2LoRA checkpoint (SPEC section 1.3).

    Example:
        ```python
        state_dict, info = read_frames2lora("checkpoint.pt")
        info.base_model_name_or_path, info.lora_r, info.target_modules
        ```
    """

    base_model_name_or_path: str | None
    """The base VLM the hypernetwork was trained for."""
    lora_r: int
    """Generated rank `r`."""
    lora_alpha: float
    """The raw LoRA multiplier `s` (not divided by `r`)."""
    target_modules: list[str]
    """Sorted target module names."""
    lora_dropout: float
    """LoRA dropout in training (not applied at inference)."""
    latent_size: int
    """Perceiver width `D`."""
    n_latent_queries: int
    """Encoder latent queries `Q`."""
    num_blocks: int
    """Encoder blocks."""
    num_self_attn_per_block: int
    """Self-attention layers after each encoder cross-attention layer."""
    num_pre_head_layers: int
    """Residual MLP blocks before the head."""
    use_bias: bool
    """Whether `r` learned bias ranks are appended."""
    num_layers: int
    """Text decoder layers `L` of the base model."""
    hidden_size: int
    """Text hidden size `H` of the base model."""
    feature_sizes: dict[str, list[int]]
    """`{module: [d_in, d_out]}` of the target modules."""
    layer_indices: list[int]
    """Decoder layers that receive an adapter."""
    flags: dict[str, Any] = field(default_factory=dict)
    """The other switches, as `"<config>.<field>"`."""
    peft_version: str | None = None
    """The peft version that pickled the LoraConfig."""
    extra_entries: list[str] = field(default_factory=list)
    """Unknown non-tensor top-level entries (ignored)."""


def _fields(obj: Any, what: str) -> dict[str, Any]:
    if isinstance(obj, PickledConfig):
        return dict(vars(obj))  # not obj.to_dict(): a crafted state could shadow the method
    if isinstance(obj, dict):
        return dict(obj)
    raise CheckpointMismatchError(
        f"`{what}` in the checkpoint is a {type(obj).__name__}, not a config object."
    )


def _require(fields: dict[str, Any], name: str, what: str) -> Any:
    if name not in fields:
        raise CheckpointMismatchError(f"`{what}` in the checkpoint has no field `{name}`.")
    return fields[name]


_HYPERNET_FLAGS = ("per_rank_gen", "use_light_weight_lora", "use_per_rank_bias", "per_layer_processing",
                   "use_token_mixing", "dropout_rate", "extra_modules")  # fmt: skip
_AGGREGATOR_FLAGS = ("aggregator_type", "shared_weights", "layer_to_layer_ctx_encoder", "num_extra_modules",
                     "num_modules", "lora_r", "feature_size", "output_size", "num_layers")  # fmt: skip


def _info_from_checkpoint(checkpoint: dict[str, Any]) -> Frames2LoraInfo:
    hyper = _fields(checkpoint["hypernet_config"], "hypernet_config")
    agg = _fields(
        _require(hyper, "aggregator_config", "hypernet_config"), "hypernet_config.aggregator_config"
    )
    lora = _fields(_require(hyper, "lora_config", "hypernet_config"), "hypernet_config.lora_config")
    sizes = _require(hyper, "feature_sizes", "hypernet_config")
    if not (isinstance(sizes, (tuple, list)) and len(sizes) == 2 and all(isinstance(s, dict) for s in sizes)):
        raise CheckpointMismatchError(
            f"hypernet_config.feature_sizes must be ({{m: d_in}}, {{m: d_out}}), got {sizes!r}."
        )
    modules = sorted(sizes[0])
    declared = _require(lora, "target_modules", "hypernet_config.lora_config")
    if isinstance(declared, (set, frozenset, list, tuple)) and sorted(declared) != modules:
        raise CheckpointMismatchError(
            f"lora_config.target_modules {sorted(declared)} differs from feature_sizes modules {modules}."
        )
    indices = _require(hyper, "layer_indices", "hypernet_config")
    indices = indices.tolist() if torch.is_tensor(indices) else list(indices)
    flags = {f"hypernet_config.{k}": hyper[k] for k in _HYPERNET_FLAGS if k in hyper}
    flags.update({f"aggregator_config.{k}": agg[k] for k in _AGGREGATOR_FLAGS if k in agg})
    ctx = checkpoint.get("ctx_encoder_args")
    if ctx is not None:
        flags.update({f"ctx_encoder_args.{k}": v for k, v in _fields(ctx, "ctx_encoder_args").items()})
    return Frames2LoraInfo(
        base_model_name_or_path=checkpoint.get("base_model_name_or_path"),
        lora_r=int(_require(lora, "r", "lora_config")),
        lora_alpha=float(_require(lora, "lora_alpha", "lora_config")),
        target_modules=modules,
        lora_dropout=float(lora.get("lora_dropout", 0.0) or 0.0),
        latent_size=int(_require(hyper, "latent_size", "hypernet_config")),
        n_latent_queries=int(_require(agg, "n_latent_queries", "aggregator_config")),
        num_blocks=int(_require(agg, "num_blocks", "aggregator_config")),
        num_self_attn_per_block=int(_require(agg, "num_self_attn_per_block", "aggregator_config")),
        num_pre_head_layers=int(_require(hyper, "num_pre_head_layers", "hypernet_config")),
        use_bias=bool(_require(hyper, "use_bias", "hypernet_config")),
        num_layers=int(agg.get("num_layers", len(indices))),
        hidden_size=int(_require(hyper, "base_hidden_size", "hypernet_config")),
        feature_sizes={m: [int(sizes[0][m]), int(sizes[1][m])] for m in modules},
        layer_indices=[int(i) for i in indices],
        flags=flags,
        peft_version=lora.get("peft_version"),
    )


def read_frames2lora(path: str | os.PathLike) -> tuple[OrderedDict[str, torch.Tensor], Frames2LoraInfo]:
    """Read a Frames2LoRA `.pt` checkpoint safely: its tensors (authors' key names) and its architecture.

    Args:
        path: the local `.pt` file.

    Returns:
        `(state_dict, info)`: the hypernetwork tensors keyed as in the authors' `HyperLoRA` module (a
        `_orig_mod.` prefix from `torch.compile` is stripped), and a `Frames2LoraInfo`.

    Raises:
        UnsafeCheckpointError: the file names a global outside `ALLOWED_GLOBALS`.
        CheckpointMismatchError: the file is not a Frames2LoRA checkpoint.

    Example:
        ```python
        state_dict, info = read_frames2lora("frames2lora-smolvlm2-500m-best-ce.pt")
        info.base_model_name_or_path, info.lora_r, info.feature_sizes
        ```
    """
    checkpoint = load_frames2lora_pickle(path)
    if not isinstance(checkpoint, dict) or "hypernet_config" not in checkpoint:
        raise CheckpointMismatchError(
            f"{Path(path).name} holds a {type(checkpoint).__name__} without `hypernet_config`: it is not a "
            "Frames2LoRA checkpoint (an OrderedDict of tensors, base_model_name_or_path and hypernet_config)."
        )
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    extras = []
    for key, value in checkpoint.items():
        if torch.is_tensor(value):
            state_dict[key.replace("_orig_mod.", "")] = value.detach()  # drops any hooks a BUILD could set
        elif key not in ("base_model_name_or_path", "hypernet_config", "ctx_encoder_args"):
            extras.append(str(key))
    try:
        info = _info_from_checkpoint(checkpoint)
    except CheckpointMismatchError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as error:  # a field of the wrong type
        raise CheckpointMismatchError(
            f"{Path(path).name} has a malformed hypernet_config: {error!r}."
        ) from error
    info.extra_entries = extras
    if extras:
        logger.info("Ignoring non-tensor entries %s of %s", extras, Path(path).name)
    return state_dict, info
