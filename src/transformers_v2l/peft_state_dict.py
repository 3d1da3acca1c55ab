"""PEFT LoRA state dicts of generated adapters: one decoder layer and module per PEFT key pair.

`build` writes the keys `base_model.model.<module path>.lora_A.weight` `[R, d_in]` and
`.lora_B.weight` `[d_out, R]` for every layer and module of a `GeneratedLora`; `parse` reads a plain
PEFT LoRA state dict back into stacked `[L, R, d]` tensors, refusing what a generated adapter
cannot represent. The module paths come from the VLM family (`transformers_v2l.families`).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import torch

from .errors import AdapterMismatchError
from .families import FAMILIES, PEFT_PREFIX, Video2LoraFamily, family_class

if TYPE_CHECKING:
    from peft import LoraConfig

    from .lora import GeneratedLora

__all__ = ["PEFT_PREFIX", "build", "parse"]

_KEY = re.compile(r"^(?P<path>.+)\.lora_(?P<which>[AB])\.weight$")


def build(adapter: GeneratedLora) -> dict[str, torch.Tensor]:
    """The PEFT state dict of `adapter`, with copies of its tensors.

    Args:
        adapter: the generated adapter.

    Returns:
        `{PEFT key: tensor}`: `lora_A.weight` `[R, d_in]` and `lora_B.weight` `[d_out, R]` per layer and module.

    Example:
        ```python
        state = build(adapter)  # what adapter.to_peft_state_dict() returns
        ```
    """
    family = family_class(adapter.base_model_type)
    state = {}
    for module in adapter.target_modules:
        for layer in range(adapter.num_layers):
            key = family.peft_key(layer, module)
            state[f"{key}.lora_A.weight"] = adapter.lora_A[module][layer].clone()  # no shared storage
            state[f"{key}.lora_B.weight"] = adapter.lora_B[module][layer].T.contiguous()
    return state


def parse(
    state_dict: dict[str, torch.Tensor],
    config: LoraConfig | dict[str, Any],
    base_model_type: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float, str]:
    """Stacked adapter tensors from a PEFT LoRA state dict and its config.

    Args:
        state_dict: PEFT keys and tensors.
        config: the adapter's `LoraConfig` or `adapter_config.json` content.
        base_model_type: the VLM family; by default the one whose decoder path the keys use (families
            that share a path, such as `model.language_model.layers`, need it given).

    Returns:
        `(lora_A, lora_B, scaling, base_model_type)`: `{module: [L, R, d_in]}`, `{module: [L, R, d_out]}`,
        the update's scale and the VLM family.

    Raises:
        AdapterMismatchError: the adapter cannot be represented (names what and why).

    Example:
        ```python
        lora_A, lora_B, scaling, family = parse(load_file("adapter_model.safetensors"), config_dict)
        ```
    """
    cfg = config if isinstance(config, dict) else config.to_dict()
    _refuse_unsupported(cfg)
    paths = _pair_keys(state_dict)  # {module path: {"A": tensor, "B": tensor}}
    family = family_class(base_model_type) if base_model_type else _infer_family(list(paths))
    lora_A, lora_B = _stack_layers(paths, family)
    r, alpha = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    ranks = {m: t.shape[1] for m, t in lora_A.items()}
    if set(ranks.values()) != {r}:
        raise AdapterMismatchError(f"adapter_config.json says r={r} but the tensors have ranks {ranks}.")
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    return lora_A, lora_B, scaling, family.name


def _refuse_unsupported(cfg: dict[str, Any]) -> None:
    peft_type = str(getattr(cfg.get("peft_type"), "value", cfg.get("peft_type")))
    unsupported = {
        "peft_type": peft_type not in ("LORA", "None"),
        "use_dora": bool(cfg.get("use_dora")),
        "lora_bias": bool(cfg.get("lora_bias")),
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
    }
    bad = [f"{k}={cfg.get(k)!r}" for k, v in unsupported.items() if v]
    if bad:
        raise AdapterMismatchError(
            f"This PEFT adapter cannot be used as a generated adapter: {', '.join(bad)}."
        )


def _pair_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    paths: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        match = _KEY.match(key.removeprefix(PEFT_PREFIX))
        if match is None:
            raise AdapterMismatchError(
                f"Unexpected tensor {key!r} in a LoRA adapter: expected only '<module>.lora_A.weight' / '.lora_B.weight'."
            )
        paths.setdefault(match["path"], {})[match["which"]] = tensor
    return paths


def _stack_layers(
    paths: dict[str, dict[str, torch.Tensor]], family: type[Video2LoraFamily]
) -> tuple[dict, dict]:
    """`{module: [L, R, d_in]}` and `{module: [L, R, d_out]}` from per-path `A [R, d_in]`, `B [d_out, R]`."""
    per_module: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    for path, pair in paths.items():
        found = family.module_from_path(path)
        if found is None or set(pair) != {"A", "B"}:
            raise AdapterMismatchError(
                f"LoRA weights for {path!r} cannot be used: a generated adapter only targets "
                f"{family.layers_path}.<i>.<{'|'.join(sorted(family.module_subpaths.values()))}> with both lora_A and lora_B."
            )
        layer, module = found
        per_module.setdefault(module, {})[layer] = (pair["A"], pair["B"])
    lora_A, lora_B = {}, {}
    for module, layers in per_module.items():
        missing = sorted(set(range(max(layers) + 1)) - set(layers))
        if missing:
            raise AdapterMismatchError(
                f"The adapter has no {module} weights for layers {missing}; every layer needs A and B."
            )
        lora_A[module] = torch.stack([layers[i][0] for i in range(len(layers))])
        lora_B[module] = torch.stack([layers[i][1].T for i in range(len(layers))])
    return lora_A, lora_B


def _infer_family(paths: list[str]) -> type[Video2LoraFamily]:
    """The one family whose decoder path the keys use; several or none is an error that says what to pass."""
    families = {cls for cls in FAMILIES.values() if any(p.startswith(cls.layers_path + ".") for p in paths)}
    if len(families) == 1:
        return families.pop()
    if not families:
        raise AdapterMismatchError(
            f"Cannot tell which VLM family these LoRA weights are for (first module: {paths[0]!r}); supported "
            f"decoder paths: {sorted({cls.layers_path for cls in FAMILIES.values()})}."
        )
    names = sorted(cls.name for cls in families)
    raise AdapterMismatchError(
        f"These LoRA weights use the decoder path {next(iter(families)).layers_path!r}, which the families {names} "
        "share: pass base_model_type= (one of them)."
    )
