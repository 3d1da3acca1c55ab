"""`GeneratedLoraConfig`: the PEFT `LoraConfig` a generated adapter is saved with.

Its `adapter_config.json` is a plain LORA config (`r = R`, `lora_alpha = s * R`, exact-match target
regex for the generated layers), so PEFT and other LoRA tooling load it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peft import LoraConfig

from .families import family_class

__all__ = ["GeneratedLoraConfig"]


@dataclass
class GeneratedLoraConfig(LoraConfig):
    """The PEFT `LoraConfig` of a generated adapter (SPEC section 3.3).

    It adds no fields: `adapter_config.json` is a plain LORA config that PEFT (and other LoRA
    consumers) load without warnings. It writes only the keys that decide how the adapter is applied
    and that PEFT has had for many releases, so older PEFT versions load it without "unexpected
    keyword" warnings too. `r` is the effective rank `R` (generated ranks plus bias ranks) and
    `lora_alpha = s * R`, so PEFT's scaling `lora_alpha / r` equals the generated adapter's `s`.
    `target_modules` is a regex matching exactly the text decoder modules (the vision tower has
    `q_proj`/`k_proj`/`v_proj` too).

    Example:
        ```python
        config = GeneratedLoraConfig.for_generated(
            rank=32, scaling=128.0, target_modules=["down_proj"], base_model_type=adapter.base_model_type,
            base_model_name_or_path="HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
        )
        config.lora_alpha, config.scaling  # 4096.0, 128.0
        ```
    """

    #: keys written to adapter_config.json (all exist in PEFT since 0.10)
    SAVED_KEYS = (
        "peft_type", "base_model_name_or_path", "revision", "task_type", "inference_mode", "r", "lora_alpha",
        "lora_dropout", "target_modules", "bias", "fan_in_fan_out", "use_rslora", "use_dora", "modules_to_save",
        "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern",
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        alpha = self.lora_alpha
        rules = {  # field: (holds, what it must be)
            "r": (isinstance(self.r, int) and self.r > 0, "a positive integer (the effective rank R)"),
            "lora_alpha": (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha != 0, "s * R"),
            "lora_dropout": (self.lora_dropout == 0, "0"),
            "bias": (self.bias == "none", '"none"'),
            "use_rslora": (not self.use_rslora, "False (the scaling is lora_alpha / r)"),
            "use_dora": (not self.use_dora, "False"),
            "modules_to_save": (not self.modules_to_save, "empty"),
            "rank_pattern": (not self.rank_pattern, "empty (one rank everywhere)"),
            "alpha_pattern": (not self.alpha_pattern, "empty (one scaling everywhere)"),
            "target_modules": (bool(self.target_modules), "the text decoder modules"),
        }
        for name, (holds, expected) in rules.items():
            if not holds:
                raise ValueError(
                    f"GeneratedLoraConfig.{name} must be {expected} for a generated adapter, got {getattr(self, name)!r}."
                )

    @classmethod
    def for_generated(
        cls,
        *,
        rank: int,
        scaling: float,
        target_modules: Sequence[str],
        base_model_type: str | None,
        base_model_name_or_path: str | None = None,
    ) -> GeneratedLoraConfig:
        """The config of a generated adapter of effective rank `rank` and multiplier `scaling`.

        Args:
            rank: the effective rank `R`.
            scaling: the multiplier `s`.
            target_modules: short module names, for example `["down_proj"]`.
            base_model_type: the base VLM's family; selects the module paths.
            base_model_name_or_path: the base VLM's Hub id or path.

        Returns:
            A `GeneratedLoraConfig` with `r = rank`, `lora_alpha = scaling * rank` and the exact
            text-decoder regex as `target_modules`.

        Example:
            ```python
            config = GeneratedLoraConfig.for_generated(
                rank=32, scaling=128.0, target_modules=["down_proj"], base_model_type=adapter.base_model_type
            )
            config.r, config.lora_alpha  # (32, 4096.0)
            ```
        """
        if base_model_type is None:
            raise ValueError("A generated adapter's config needs its base model's family (base_model_type).")
        regex = family_class(base_model_type).peft_target_regex(list(target_modules))
        return cls(
            r=int(rank),
            lora_alpha=float(scaling) * int(rank),
            lora_dropout=0.0,
            bias="none",
            target_modules=regex,
            base_model_name_or_path=base_model_name_or_path,
            inference_mode=True,
        )

    @property
    def scaling(self) -> float:
        """PEFT's multiplier `lora_alpha / r` (the generated adapter's `s`)."""
        return self.lora_alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        """The `adapter_config.json` content: only `SAVED_KEYS`.

        Returns:
            A JSON-serializable dict (`target_modules` as written by PEFT).

        Example:
            ```python
            sorted(config.to_dict())  # ['alpha_pattern', 'base_model_name_or_path', 'bias', ...]
            ```
        """
        full = super().to_dict()
        out = {key: full[key] for key in self.SAVED_KEYS if key in full}
        if isinstance(out.get("target_modules"), set):
            out["target_modules"] = sorted(out["target_modules"])
        return out
