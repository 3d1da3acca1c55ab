"""Write checkpoints in the authors' exact Frames2LoRA format (SPEC section 1), for tests.

The fixture shipped with the spec covers one configuration. These helpers write more: several
target modules, self-attention layers in the Perceiver blocks, several pre-head blocks, and no
bias ranks. The state-dict keys and shapes are written out from SPEC section 1.5. They are not
derived from our model, so a mapping mistake cannot cancel out. The configs are pickled under
the authors' class names (`ctx_to_lora.modeling.hypernet.HypernetConfig`, ...) with the authors'
opcodes (`GLOBAL cls`, `EMPTY_TUPLE`, `NEWOBJ`, `BUILD`), without importing their package.
"""

from __future__ import annotations

import math
import pickle
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["TinyArch", "pickled_as", "random_frames2lora_state_dict", "write_frames2lora_checkpoint"]


class _AuthorsPickler(pickle._Pickler):
    """Writes a class marked with `_pickle_as` as `GLOBAL <module> <name>`, without importing that module."""

    def save_global(self, obj, name=None):
        qualified = obj.__dict__.get("_pickle_as") if isinstance(obj, type) else None
        if qualified is None:
            return super().save_global(obj, name)
        module, _, qualname = qualified.rpartition(".")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + qualname.encode() + b"\n")
        self.memoize(obj)


_PICKLE_MODULE = types.ModuleType("frames2lora_authors_pickle")
_PICKLE_MODULE.Pickler = _AuthorsPickler


def pickled_as(qualified_name: str):
    """Class decorator: pickle this class under another module and name."""

    def decorate(cls):
        cls._pickle_as = qualified_name
        return cls

    return decorate


@pickled_as("ctx_to_lora.modeling.hypernet.HypernetConfig")
class HypernetConfig:
    pass


@pickled_as("ctx_to_lora.modeling.aggregator.AggregatorConfig")
class AggregatorConfig:
    pass


@pickled_as("ctx_to_lora.configs.CtxEncoderArguments")
class CtxEncoderArguments:
    pass


@pickled_as("peft.tuners.lora.config.LoraConfig")
class LoraConfig:
    pass


@pickled_as("peft.tuners.lora.config.LoraRuntimeConfig")
class LoraRuntimeConfig:
    pass


@pickled_as("peft.utils.peft_types.PeftType")
class _PeftTypeCall:
    pass


@pickled_as("peft.utils.peft_types.TaskType")
class _TaskTypeCall:
    pass


class PeftEnum:
    """A str enum member pickled as `PeftType("LORA")` (or `TaskType(...)`), like peft's enums."""

    def __init__(self, value: str, enum: type = _PeftTypeCall):
        self.value, self.enum = value, enum

    def __reduce__(self):
        return (self.enum, (self.value,))


def _instance(cls: type, fields: dict[str, Any]):
    obj = cls.__new__(cls)
    obj.__dict__.update(fields)
    return obj


@dataclass
class TinyArch:
    """The sizes of one Frames2LoRA hypernetwork (names as in SPEC section 1.3)."""

    num_layers: int = 4
    hidden_size: int = 64
    feature_sizes: dict[str, tuple[int, int]] = field(default_factory=lambda: {"down_proj": (128, 64)})
    lora_r: int = 4
    latent_size: int = 32
    n_latent_queries: int = 8
    num_blocks: int = 2
    num_self_attn_per_block: int = 0
    num_pre_head_layers: int = 1
    use_bias: bool = True
    base_model_name_or_path: str = "tiny-smolvlm"

    @property
    def modules(self) -> list[str]:
        return sorted(self.feature_sizes)

    @property
    def lora_alpha(self) -> float:
        return 2.0 * self.lora_r**1.5


def random_frames2lora_state_dict(arch: TinyArch, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """The authors' `HyperLoRA` state dict (SPEC section 1.5) with random, non-degenerate values."""
    g = torch.Generator().manual_seed(seed)
    H, D, L, r = arch.hidden_size, arch.latent_size, arch.num_layers, arch.lora_r
    M = len(arch.modules)
    d_lora = max(d_in + d_out for d_in, d_out in arch.feature_sizes.values())

    def linear(rows, cols):
        return torch.randn(rows, cols, generator=g) / math.sqrt(cols)

    def near_one(size):
        return 1.0 + 0.2 * torch.randn(size, generator=g)

    sd = OrderedDict()
    p = "aggregator.perceiver."
    sd[p + "modality_projection.gate_proj.weight"] = linear(4 * H, H)
    sd[p + "modality_projection.up_proj.weight"] = linear(4 * H, H)
    sd[p + "modality_projection.down_proj.weight"] = linear(D, 4 * H)

    def perceiver_layer(prefix: str, cross: bool):
        sd[prefix + "input_latents_layernorm.weight"] = near_one(D)
        if cross:
            sd[prefix + "input_context_layernorm.weight"] = near_one(D)
        sd[prefix + "self_attn.q_proj.weight"] = linear(2048, D)
        sd[prefix + "self_attn.k_proj.weight"] = linear(512, D)
        sd[prefix + "self_attn.v_proj.weight"] = linear(512, D)
        sd[prefix + "self_attn.o_proj.weight"] = linear(D, 2048)
        sd[prefix + "post_attention_layernorm.weight"] = near_one(D)
        sd[prefix + "pre_ff_layernorm.weight"] = near_one(D)
        sd[prefix + "post_ff_layernorm.weight"] = near_one(D)
        sd[prefix + "mlp.gate_proj.weight"] = linear(4 * D, D)
        sd[prefix + "mlp.up_proj.weight"] = linear(4 * D, D)
        sd[prefix + "mlp.down_proj.weight"] = linear(D, 4 * D)

    sd[p + "encoder.latents_q"] = torch.randn(arch.n_latent_queries, D, generator=g)
    period = 1 + arch.num_self_attn_per_block
    for i in range(arch.num_blocks * period):
        perceiver_layer(f"{p}encoder.layers.{i}.", cross=i % period == 0)
    sd[p + "encoder.layernorm.weight"] = near_one(D)
    sd[p + "decoder.latents_q"] = torch.randn(M * r, D, generator=g)
    perceiver_layer(f"{p}decoder.layers.0.", cross=True)
    sd[p + "decoder.layernorm.weight"] = near_one(D)
    for k in range(arch.num_pre_head_layers):
        sd[f"layers.{k}.mlp.0.weight"], sd[f"layers.{k}.mlp.0.bias"] = (
            near_one(D),
            0.1 * torch.randn(D, generator=g),
        )
        sd[f"layers.{k}.mlp.2.weight"], sd[f"layers.{k}.mlp.2.bias"] = (
            linear(4 * D, D),
            0.1 * torch.randn(4 * D, generator=g),
        )
        sd[f"layers.{k}.mlp.5.weight"], sd[f"layers.{k}.mlp.5.bias"] = (
            linear(D, 4 * D),
            0.1 * torch.randn(D, generator=g),
        )
        sd[f"layers.{k}.mlp.6.weight"], sd[f"layers.{k}.mlp.6.bias"] = (
            near_one(D),
            0.1 * torch.randn(D, generator=g),
        )
    for m in arch.modules:
        d_in, d_out = arch.feature_sizes[m]
        if arch.use_bias:
            sd[f"bias_A.{m}"] = 0.1 * torch.randn(L, r, d_in, generator=g)
            sd[f"bias_B.{m}"] = 0.1 * torch.randn(L, r, d_out, generator=g)
        sd[f"scaler_A.{m}"] = 1.0 + 0.5 * torch.randn(1, L, r, 1, generator=g)
        sd[f"scaler_B.{m}"] = torch.randn(1, L, r, 1, generator=g)  # non-zero, unlike a fresh model
    head_shape = (L, D, d_lora) if M == 1 else (L, M, D, d_lora)
    sd["head.weight"] = 0.5 * torch.randn(*head_shape, generator=g)
    return sd


def _configs(arch: TinyArch, hypernet: dict, aggregator: dict, lora: dict, task_type_enum: bool):
    lora_fields = {
        "task_type": PeftEnum("CAUSAL_LM", _TaskTypeCall) if task_type_enum else "CAUSAL_LM",
        "peft_type": PeftEnum("LORA"), "auto_mapping": None, "peft_version": "0.19.1",
        "base_model_name_or_path": arch.base_model_name_or_path, "revision": None, "inference_mode": False,
        "r": arch.lora_r, "target_modules": set(arch.modules), "exclude_modules": None,
        "lora_alpha": arch.lora_alpha, "lora_dropout": 0.0, "fan_in_fan_out": False, "bias": "none",
        "use_rslora": False, "modules_to_save": None, "init_lora_weights": True, "rank_pattern": {},
        "alpha_pattern": {}, "loftq_config": {}, "use_dora": False,
        "runtime_config": _instance(LoraRuntimeConfig, {"ephemeral_gpu_offload": False}),
        **lora,
    }  # fmt: skip
    aggregator_fields = {
        "aggregator_type": "perceiver", "num_layers": arch.num_layers, "num_modules": len(arch.modules),
        "num_extra_modules": 0, "output_size": arch.latent_size, "feature_size": arch.hidden_size,
        "pooling_type": "mean", "num_latent_factor": 8, "lora_r": arch.lora_r, "per_rank_gen": True,
        "n_latent_queries": arch.n_latent_queries, "num_blocks": arch.num_blocks,
        "num_self_attn_per_block": arch.num_self_attn_per_block, "shared_weights": False,
        "layer_to_layer_ctx_encoder": True, **aggregator,
    }  # fmt: skip
    hypernet_fields = {
        "latent_size": arch.latent_size, "use_light_weight_lora": False, "light_weight_latent_size": 128,
        "per_rank_gen": True, "use_per_rank_bias": False, "use_bias": arch.use_bias,
        "per_layer_processing": False, "use_token_mixing": False,
        "num_pre_head_layers": arch.num_pre_head_layers, "dropout_rate": 0.0,
        "lora_config": _instance(LoraConfig, lora_fields), "extra_modules": None,
        "base_hidden_size": arch.hidden_size, "layer_indices": torch.arange(arch.num_layers),
        "feature_sizes": ({m: arch.feature_sizes[m][0] for m in arch.modules},
                          {m: arch.feature_sizes[m][1] for m in arch.modules}),
        "aggregator_config": _instance(AggregatorConfig, aggregator_fields), **hypernet,
    }  # fmt: skip
    ctx_fields = {"ctx_encoder_model_name_or_path": "precomputed", "ctx_encoder_type": "per_layer_activations",
                  "layer_idx": None, "quantize_ctx_encoder": False, "ctx_encoder_last_layer": None}  # fmt: skip
    return _instance(HypernetConfig, hypernet_fields), _instance(CtxEncoderArguments, ctx_fields)


def write_frames2lora_checkpoint(
    path: str | Path,
    arch: TinyArch,
    state_dict: dict[str, torch.Tensor],
    *,
    hypernet: dict | None = None,
    aggregator: dict | None = None,
    lora: dict | None = None,
    task_type_enum: bool = False,
    compiled: bool = False,
    extra_entries: dict | None = None,
) -> Path:
    """Save `state_dict` and the pickled configs the way the authors' trainer does.

    Args:
        path: the `.pt` file to write.
        arch: the sizes recorded in the configs.
        state_dict: tensors keyed as in the authors' `HyperLoRA` module.
        hypernet, aggregator, lora: fields to override or add in those configs.
        task_type_enum: pickle `task_type` as `peft.utils.peft_types.TaskType(...)`, as other peft versions may.
        compiled: prefix every key with `_orig_mod.`, as a `torch.compile`d module's state dict has.
        extra_entries: more top-level entries.
    """
    checkpoint = OrderedDict((("_orig_mod." if compiled else "") + k, v) for k, v in state_dict.items())
    checkpoint._metadata = OrderedDict([("", {"version": 1})])
    checkpoint["base_model_name_or_path"] = arch.base_model_name_or_path
    hypernet_config, ctx_args = _configs(arch, hypernet or {}, aggregator or {}, lora or {}, task_type_enum)
    checkpoint["hypernet_config"] = hypernet_config
    checkpoint["ctx_encoder_args"] = ctx_args
    checkpoint.update(extra_entries or {})
    path = Path(path)
    torch.save(checkpoint, path, pickle_module=_PICKLE_MODULE, pickle_protocol=2)
    return path
