"""`Video2LoraRuntime`: the frozen side of Video2LoRA, owned by one object.

A hypernetwork is a model; to internalize and answer it needs more than its weights: the frozen base
VLM (held by reference, never saved or trained with the hypernetwork), the VLM's family wrapper, the
processor, where each of them lives (device and dtype), and whether an adapter is merged into the
base weights. The runtime owns exactly that, and runs the frozen passes. `Video2LoraHypernetwork`'s
pipeline methods (`pipeline.Video2LoraPipelineMixin`) delegate the frozen work to it:

    video ─ processor ─▶ runtime.encode (family features [B, L, S, H]) ─▶ hypernetwork ─▶ GeneratedLora
    question ─ processor ─▶ runtime.generate(adapters) ─▶ answer

Loading is explicit: `load_base_model()` and `load_processor()` run when a pipeline method first
needs them (or when `from_pretrained` loads everything), never inside a property.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from .adapter_ops import MergedAdapter, merged_adapter
from .errors import AdapterMismatchError, CheckpointMismatchError
from .families import Video2LoraFamily, family_class, get_family
from .injection import inject_lora, stack_adapters

if TYPE_CHECKING:
    from .configuration_video2lora import Video2LoraConfig
    from .lora import GeneratedLora
    from .processing_video2lora import Video2LoraProcessor

logger = logging.getLogger(__name__)

__all__ = ["Video2LoraRuntime"]


class Video2LoraRuntime:
    """The base VLM, its family, the processor, their placement and the merge state of one hypernetwork.

    Args:
        config: the hypernetwork's `Video2LoraConfig` (its base-model binding).
        base_model: an already loaded base VLM to use.
        processor: an already built `Video2LoraProcessor`.
        base_model_kwargs: keyword arguments for loading the base VLM (`dtype`, `device_map`, ...).
        processor_source: where to load the processor from when it is first needed: `{"path": ...,
            **hub options}` of a hypernetwork folder or Hub repo; without a saved processor there (or
            without a source), the base model's files and the config's version-0.1 settings.

    Example:
        ```python
        runtime = hn.runtime
        runtime.load_base_model()  # explicit; internalize/answer call it on first use
        features, mask = runtime.encode(runtime.processor.internalization_inputs("clip.mp4"))
        ```
    """

    def __init__(
        self,
        config: Video2LoraConfig,
        *,
        base_model: torch.nn.Module | None = None,
        processor: Video2LoraProcessor | None = None,
        base_model_kwargs: dict[str, Any] | None = None,
        processor_source: dict[str, Any] | None = None,
    ):
        self.config = config
        self.base_model_kwargs = dict(base_model_kwargs or {})
        self.processor_source = processor_source
        self.hub_revision: str | None = None  # the hypernetwork's Hub commit, recorded in adapter cards
        self._family: Video2LoraFamily | None = None
        self._processor = processor
        if base_model is not None:
            self.attach_base_model(base_model)

    def __deepcopy__(self, memo: dict) -> Video2LoraRuntime:
        # the base VLM and the processor are shared, never copied with the hypernetwork
        clone = copy.copy(self)
        clone.base_model_kwargs = dict(self.base_model_kwargs)
        return clone

    # ---- the base model ---------------------------------------------------------------------------
    @property
    def is_loaded(self) -> bool:
        """Whether a base VLM is attached."""
        return self._family is not None

    @property
    def family(self) -> Video2LoraFamily:
        """The family wrapper of the attached base VLM (its layers, target modules and features)."""
        if self._family is None:
            raise RuntimeError(
                "The base model is not loaded: call `hn.load_base_model()` (internalize and answer load it on "
                "first use), or pass `base_model=` to `from_pretrained`."
            )
        return self._family

    @property
    def vlm(self) -> torch.nn.Module:
        """The attached base VLM (see `family` for when it is not loaded)."""
        return self.family.model

    @property
    def base_model_name(self) -> str | None:
        """The base model's name as adapters record it: the loaded model's (a Hub id, or the folder it was read from), else the config's."""
        if self._family is not None and getattr(self.vlm, "name_or_path", None):
            return self.vlm.name_or_path
        return self.config.base_model_name_or_path

    def attach_base_model(self, base_model: torch.nn.Module) -> None:
        """Use `base_model` as the frozen VLM; its family and text-tower shapes must match the configuration.

        Args:
            base_model: a loaded VLM of the family this hypernetwork was built for.

        Raises:
            CheckpointMismatchError: the model's family, layers or module shapes differ from the config's.

        Example:
            ```python
            hn.runtime.attach_base_model(vlm)
            ```
        """
        family = get_family(base_model)
        expected = self.config.base_model_type
        if expected is not None and family_class(expected) is not type(family):
            raise CheckpointMismatchError(
                f"This hypernetwork was built for a {expected!r} model, but the base model is a "
                f"{base_model.config.model_type!r} model ({type(family).__name__})."
            )
        shapes = {m: tuple(s) for m, s in self.config.module_shapes.items()}
        try:
            family.check_shapes(self.config.num_hidden_layers, shapes, "This hypernetwork")
        except AdapterMismatchError as error:
            raise CheckpointMismatchError(str(error)) from None
        base_model.eval()
        self._family = family

    def load_base_model(self) -> torch.nn.Module:
        """Load the base VLM from `config.base_model_name_or_path` unless one is attached; return it.

        Returns:
            The base VLM, in eval mode.

        Raises:
            ValueError: the configuration names no base model.
            HubUnavailableError: a Hub id that is not cached while the Hub cannot be reached.

        Example:
            ```python
            vlm = hn.runtime.load_base_model()
            ```
        """
        if self._family is not None:
            return self._family.model
        from .hub import OFFLINE_MODEL_HINT, hub_unavailable_error, hub_unreachable

        name = self.config.base_model_name_or_path
        if not name:
            raise ValueError("No base model: pass base_model= or set config.base_model_name_or_path.")
        kwargs = {"dtype": "auto", **self.base_model_kwargs}
        logger.info("Loading the frozen base model %s", name)
        try:
            family = family_class(self.config.base_model_type or _model_type(name, kwargs))
            vlm = family.model_class().from_pretrained(name, **kwargs)
        except OSError as error:
            if os.path.isdir(name) or not hub_unreachable(error):
                raise
            local = bool(kwargs.get("local_files_only"))
            raise hub_unavailable_error(
                name, "the base model", error, local_files_only=local, hint=OFFLINE_MODEL_HINT
            ) from error
        self.attach_base_model(vlm)
        return vlm

    # ---- the processor ----------------------------------------------------------------------------
    @property
    def processor(self) -> Video2LoraProcessor:
        """The processor (see `load_processor` for when it is not built yet)."""
        if self._processor is None:
            raise RuntimeError(
                "The processor is not loaded: call `hn.load_processor()` (internalize and answer load it on first "
                "use), or pass `processor=` to `from_pretrained`."
            )
        return self._processor

    @processor.setter
    def processor(self, processor: Video2LoraProcessor) -> None:
        self._processor = processor

    def load_processor(self) -> Video2LoraProcessor:
        """Build the processor unless one is set: from `processor_source`, else from the base model's files.

        A hypernetwork saved by version 0.1 kept its frames, resolution and instruction in its config;
        those settings (`config.processor_settings`) are applied over the base model's.

        Returns:
            The `Video2LoraProcessor`.

        Example:
            ```python
            processor = hn.runtime.load_processor()
            ```
        """
        if self._processor is not None:
            return self._processor
        from .processing_video2lora import Video2LoraProcessor, saved_processor_settings

        source = dict(self.processor_source or {})
        path = source.pop("path", None)
        if path is not None and saved_processor_settings(path, **source) is not None:
            self._processor = Video2LoraProcessor.from_pretrained(path, **source)
            return self._processor
        name = self.config.base_model_name_or_path
        if not name:
            raise ValueError("No processor: pass processor= or set config.base_model_name_or_path.")
        self._processor = Video2LoraProcessor.from_pretrained(name, **self.config.processor_settings)
        return self._processor

    def saved_processor(self) -> Video2LoraProcessor | None:
        """The processor to save with the hypernetwork: the loaded one, else one built now if it can be.

        Returns:
            The processor, or `None` (with a warning) when none can be built, for example with no base model at hand.

        Example:
            ```python
            processor = hn.runtime.saved_processor()
            ```
        """
        if self._processor is not None:
            return self._processor
        try:
            return self.load_processor()
        except (OSError, ValueError) as error:
            logger.warning(
                "Saving the hypernetwork without its processor (%s); it will load the base model's.", error
            )
            return None

    def ensure_loaded(self) -> None:
        """Load the base model and the processor if they are not yet (what the pipeline methods call first).

        Example:
            ```python
            hn.runtime.ensure_loaded()
            ```
        """
        self.load_base_model()
        self.load_processor()

    # ---- placement ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the base VLM takes its inputs (its input embeddings' device)."""
        return self.vlm.get_input_embeddings().weight.device

    def to(self, device: torch.device | str) -> None:
        """Move the base VLM to `device`, unless it is dispatched over several devices (`device_map`).

        Args:
            device: the target device.

        Example:
            ```python
            hn.runtime.to("cuda")
            ```
        """
        if self._family is None:
            self.base_model_kwargs["device_map"] = str(device)
            return
        devices = set((getattr(self.vlm, "hf_device_map", None) or {}).values())
        if len(devices) > 1:
            logger.warning(
                "The base model is dispatched over %s; leaving it where it is.", sorted(map(str, devices))
            )
            return
        self.vlm.to(device)

    # ---- the frozen passes ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the frozen VLM once over processor outputs: the residual stream entering each decoder layer.

        Args:
            inputs: processor outputs (non-tensor entries such as `video_metadata` are ignored).

        Returns:
            `(features, attention_mask)`: `[B, L, S, H]` and `[B, S]`, on the VLM's last layer's device.

        Raises:
            RuntimeError: an adapter is merged into the base weights (features would be those of the merged model).

        Example:
            ```python
            features, mask = hn.runtime.encode(hn.processor.internalization_inputs("clip.mp4"))
            ```
        """
        self.refuse_if_merged("extract features from the video")
        device = self.device
        tensors = {k: v.to(device, non_blocking=True) for k, v in inputs.items() if torch.is_tensor(v)}
        return self.family.extract_features(**tensors)

    @torch.no_grad()
    def generate(
        self,
        inputs: dict[str, Any],
        *,
        adapters: Sequence[GeneratedLora] | None = None,
        max_new_tokens: int = 64,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Greedy (by default) generation from processor outputs, with one adapter per row or none.

        Args:
            inputs: processor outputs (`input_ids`, `attention_mask`, and video inputs if any).
            adapters: one adapter per row, applied with per-row hooks; `None` runs the base model as it
                is (with a merged adapter if `use_adapter` merged one).
            max_new_tokens: generation budget per row.
            **generate_kwargs: passed to `generate`.

        Returns:
            The decoded new text of each row, stripped.

        Example:
            ```python
            hn.runtime.generate(hn.processor.query_inputs(["What happens?"]), adapters=[adapter])
            ```
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
        device = self.device
        tensors = {k: v.to(device, non_blocking=True) for k, v in inputs.items() if torch.is_tensor(v)}
        tokenizer = self.processor.tokenizer
        kwargs = {"do_sample": False, "pad_token_id": self.processor.pad_token_id, **generate_kwargs}
        model_inputs = self.family.generation_inputs(**tensors)
        if adapters is None:
            output = self.vlm.generate(**model_inputs, max_new_tokens=max_new_tokens, **kwargs)
        else:
            lora_A, lora_B, scaling = stack_adapters(list(adapters))
            with inject_lora(self.family, lora_A, lora_B, scaling):
                output = self.vlm.generate(**model_inputs, max_new_tokens=max_new_tokens, **kwargs)
        new_tokens = output[:, tensors["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    # ---- merging -----------------------------------------------------------------------------------
    @property
    def merged(self) -> MergedAdapter | None:
        """The handle of the adapter merged into the base weights, or `None`."""
        return merged_adapter(self.vlm) if self._family is not None else None

    def refuse_if_merged(self, action: str) -> None:
        """Raise `RuntimeError` naming `action` while an adapter is merged into the base weights.

        Args:
            action: what was attempted, for the message.

        Example:
            ```python
            hn.runtime.refuse_if_merged("answer without an adapter")
            ```
        """
        if self.merged is not None:
            raise RuntimeError(
                f"Cannot {action}: the base model holds a merged adapter. Leave the `use_adapter()` block "
                "(or call `GeneratedLora.unmerge(model)`) first."
            )

    def check_adapter(self, adapter: GeneratedLora, *, strict: bool = False) -> None:
        """Raise `AdapterMismatchError` unless `adapter` fits the base model.

        Args:
            adapter: the adapter to check.
            strict: also require the same `base_model_name_or_path` (otherwise a different name only warns).

        Example:
            ```python
            hn.runtime.check_adapter(adapter)
            ```
        """
        adapter.check_compatible(self.vlm, strict=strict)

    @contextmanager
    def use_adapter(self, adapter: GeneratedLora) -> Iterator[GeneratedLora]:
        """Merge `adapter` into the base weights for the block; the weights are restored bit-exactly after.

        Args:
            adapter: the adapter to merge.

        Returns:
            A context manager yielding `adapter`.

        Example:
            ```python
            with hn.runtime.use_adapter(adapter):
                hn.runtime.generate(hn.processor.query_inputs("What happens?"))
            ```
        """
        self.check_adapter(adapter)
        handle = adapter.merge_into(self.vlm)
        try:
            yield adapter
        finally:
            handle.unmerge()


def _model_type(name: str, kwargs: dict[str, Any]) -> str:
    """The `model_type` in a checkpoint's config.json (for a configuration that does not record its family)."""
    from transformers import AutoConfig

    hub = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
    return AutoConfig.from_pretrained(name, **hub).model_type
