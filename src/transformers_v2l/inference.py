"""The user-facing pipeline of `Video2LoraHypernetwork`: internalize videos, answer from adapters.

This mixin holds the runtime state that is not part of the hypernetwork checkpoint: the frozen base
VLM (held by reference, never a submodule, so it is never saved and never trained), its backbone
wrapper and the processor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from .adapter_ops import merged_adapter
from .backbones import Video2LoraBackbone, get_backbone
from .errors import AdapterMismatchError, CheckpointMismatchError, HubUnavailableError
from .hub import OFFLINE_MODEL_HINT, hub_unavailable_error, hub_unreachable
from .injection import inject_lora, stack_adapters
from .lora import GeneratedLora
from .video_io import is_single_video

logger = logging.getLogger(__name__)

__all__ = ["Video2LoraInferenceMixin"]


class Video2LoraInferenceMixin:
    """Internalization and answering on top of the hypernetwork's `forward`.

    `Video2LoraHypernetwork` inherits these methods; the mixin is not used on its own.

    Example:
        ```python
        hn = Video2LoraHypernetwork.from_pretrained("my-hypernet")
        adapter = hn.internalize("clip.mp4")
        hn.answer(adapter, "What happens in the video?")
        ```
    """

    # ---- runtime state ------------------------------------------------------------------
    def _init_runtime(self, base_model=None, processor=None, base_model_kwargs: dict | None = None) -> None:
        object.__setattr__(self, "_vlm", None)
        object.__setattr__(self, "_backbone", None)
        object.__setattr__(self, "_processor", processor)
        object.__setattr__(self, "_base_model_kwargs", dict(base_model_kwargs or {}))
        object.__setattr__(self, "_hub_revision", None)
        if base_model is not None:
            self.attach_base_model(base_model)

    def attach_base_model(self, base_model: torch.nn.Module) -> None:
        """Use `base_model` as the frozen VLM; its text-tower shapes must match the configuration.

        Args:
            base_model: a loaded VLM of the family this hypernetwork was built for.

        Example:
            ```python
            hn.attach_base_model(SmolVLMForConditionalGeneration.from_pretrained(path))
            ```
        """
        backbone = get_backbone(base_model)
        shapes = {m: tuple(s) for m, s in self.config.module_shapes.items()}
        try:
            backbone.check_shapes(self.config.num_hidden_layers, shapes, "This hypernetwork")
        except AdapterMismatchError as error:
            raise CheckpointMismatchError(str(error)) from None
        object.__setattr__(self, "_vlm", base_model.eval())
        object.__setattr__(self, "_backbone", backbone)

    @property
    def vlm(self) -> torch.nn.Module:
        """The frozen base VLM, loaded from `config.base_model_name_or_path` on first use."""
        if self._vlm is None:
            from transformers import AutoModelForImageTextToText

            name = self.config.base_model_name_or_path
            if not name:
                raise ValueError("No base model: pass base_model= or set config.base_model_name_or_path.")
            kwargs = {"dtype": "auto", **self._base_model_kwargs}
            logger.info("Loading the frozen base model %s", name)
            try:
                vlm = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
            except OSError as error:
                if os.path.isdir(name) or not hub_unreachable(error):
                    raise
                raise hub_unavailable_error(
                    name,
                    "the base model",
                    error,
                    local_files_only=bool(kwargs.get("local_files_only")),
                    hint=OFFLINE_MODEL_HINT,
                ) from error
            self.attach_base_model(vlm)
        return self._vlm

    @property
    def backbone(self) -> Video2LoraBackbone:
        """The `Video2LoraBackbone` wrapper of the base VLM (loads the VLM on first use)."""
        self.vlm  # noqa: B018 (loads the base model if needed)
        return self._backbone

    @property
    def processor(self):
        """The `Video2LoraProcessor` of the base model, with this hypernetwork's encoding settings."""
        if self._processor is None:
            from .processing_video2lora import Video2LoraProcessor

            name = self.config.base_model_name_or_path
            if not name:
                raise ValueError("No processor: pass processor= or set config.base_model_name_or_path.")
            overrides = {"resize_mode": self.config.resize_mode} if self.config.resize_mode else {}
            object.__setattr__(self, "_processor", Video2LoraProcessor.from_pretrained(name, **overrides))
        return self._processor

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *args,
        base_model: torch.nn.Module | None = None,
        processor=None,
        base_model_kwargs: dict | None = None,
        **kwargs,
    ):
        """Load a hypernetwork checkpoint (safetensors + config.json) from a folder or a Hub repo.

        Args:
            pretrained_model_name_or_path: a local folder or a Hub repo id.
            base_model: reuse a loaded VLM instead of loading `config.base_model_name_or_path`.
            processor: reuse a `Video2LoraProcessor`.
            base_model_kwargs: keyword arguments for loading the base VLM (for example `{"dtype": torch.float32}`).
            **kwargs: passed to `PreTrainedModel.from_pretrained` (for example `revision`).

        Returns:
            The `Video2LoraHypernetwork`.

        Raises:
            HubUnavailableError: a Hub repo id that is not cached while the Hub cannot be reached.

        Example:
            ```python
            hn = Video2LoraHypernetwork.from_pretrained("my-hypernet", base_model=vlm)
            ```
        """
        from .hub import resolve_commit_hash

        hub = {key: kwargs.get(key) for key in ("revision", "token", "cache_dir")}
        local_files_only = bool(kwargs.get("local_files_only", False))
        try:  # before loading: an unreachable Hub gets our error, not transformers' generic OSError
            revision = resolve_commit_hash(
                pretrained_model_name_or_path, **hub, local_files_only=local_files_only
            )
        except HubUnavailableError as error:
            raise HubUnavailableError(f"{error}{OFFLINE_MODEL_HINT}") from error
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as error:
            if os.path.isdir(pretrained_model_name_or_path) or not hub_unreachable(error):
                raise
            raise hub_unavailable_error(
                pretrained_model_name_or_path,
                "model.safetensors",
                error,
                local_files_only=local_files_only,
                hint=OFFLINE_MODEL_HINT,
            ) from error
        model._init_runtime(base_model, processor, base_model_kwargs)
        object.__setattr__(model, "_hub_revision", revision)
        return model

    # ---- features and adapters ------------------------------------------------------------
    @torch.no_grad()
    def extract_features(self, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the frozen VLM once over processor outputs and return `([B, L, S, H], [B, S])`.

        Args:
            **inputs: `input_ids`, `attention_mask`, `pixel_values`, `pixel_attention_mask` from the processor.

        Returns:
            The residual stream entering each text decoder layer and its attention mask.

        Example:
            ```python
            features, mask = hn.extract_features(**hn.processor.internalization_inputs(["clip.mp4"]))
            ```
        """
        self._refuse_if_merged("extract features from the video")
        device = next(self.vlm.parameters()).device
        tensors = {k: v.to(device) for k, v in inputs.items() if torch.is_tensor(v)}
        return self.backbone.extract_features(**tensors)

    def _adapters_from_output(self, output, metadata: list) -> list[GeneratedLora]:
        adapters = []
        for row, meta in enumerate(metadata):
            adapters.append(
                GeneratedLora(
                    lora_A={m: t[row].detach() for m, t in output.lora_A.items()},
                    lora_B={m: t[row].detach() for m, t in output.lora_B.items()},
                    scaling=self.config.scaling,
                    base_model_name_or_path=self.config.base_model_name_or_path,
                    base_model_type=self.config.base_model_type,
                    metadata=meta,
                )
            )
        return adapters

    def _provenance(self, video_meta, settings: dict) -> dict:
        meta = video_meta.to_dict() if hasattr(video_meta, "to_dict") else dict(video_meta or {})
        meta.update(settings)  # instruction, num_frames, longest_edge
        meta["hypernetwork"] = getattr(self.config, "_name_or_path", None) or None
        meta["hypernetwork_revision"] = self._hub_revision
        return meta

    @torch.no_grad()
    def internalize(
        self,
        videos,
        *,
        batch_size: int = 1,
        instruction: str | None = None,
        num_frames: int | None = None,
        longest_edge: int | None = None,
        chunk_frames: int | None = None,
        show_progress: bool | None = None,
    ) -> GeneratedLora | list[GeneratedLora]:
        """Turn videos into LoRA adapters: one encoder pass and one hypernetwork pass per batch.

        Args:
            videos: one video (a path, a file object, bytes, a `[T, H, W, 3]` uint8 array or a list of
                PIL images) or a list of videos.
            batch_size: videos per forward pass.
            instruction: the internalization instruction; defaults to `config.instruction`.
            num_frames: maximum frames sampled per video; defaults to `config.num_frames`.
            longest_edge: frame resize target in pixels; defaults to `config.longest_edge`.
            chunk_frames: internalize long videos chunk by chunk (this many frames each, streaming) and
                compose the chunk adapters in rank space (paper section 5.6); memory stays bounded.
                `batch_size` then counts chunks per encoder pass; see `long_video.internalize_chunked`
                for the other options.
            show_progress: show a progress bar; by default only for more than one batch.

        Returns:
            A `GeneratedLora` for one video, or a list of them for a list of videos.

        Example:
            ```python
            adapter = hn.internalize("clip.mp4")
            adapters = hn.internalize(["a.mp4", "b.avi"], batch_size=2)
            ```
        """
        single = is_single_video(videos)
        items = [videos] if single else list(videos)
        if not items:
            raise ValueError("internalize() needs at least one video.")
        if chunk_frames is not None:
            from .long_video import internalize_chunked

            if num_frames is not None and num_frames != chunk_frames:
                raise ValueError(
                    f"internalize() got num_frames={num_frames} and chunk_frames={chunk_frames}: with chunks, "
                    "chunk_frames is the number of frames per chunk; drop num_frames."
                )
            options = {
                "instruction": instruction,
                "longest_edge": longest_edge,
                "show_progress": show_progress,
                "batch_size": batch_size,  # chunks per encoder pass
            }
            adapters = [
                internalize_chunked(self, item, chunk_frames=chunk_frames, **options) for item in items
            ]
            return adapters[0] if single else adapters
        instruction = instruction or self.config.instruction
        settings = {
            "instruction": instruction,
            "num_frames": num_frames or self.config.num_frames,
            "longest_edge": longest_edge or self.config.longest_edge,
        }
        starts = range(0, len(items), batch_size)
        progress = show_progress if show_progress is not None else len(starts) > 1
        adapters: list[GeneratedLora] = []
        for start in tqdm(starts, desc="Internalizing", disable=not progress, unit="batch"):
            inputs = self.processor.internalization_inputs(items[start : start + batch_size], **settings)
            metadata = inputs.pop("video_metadata")
            features, mask = self.extract_features(**inputs)
            output = self(context_features=features, context_attention_mask=mask)
            provenance = [self._provenance(meta, settings) for meta in metadata]
            adapters.extend(self._adapters_from_output(output, provenance))
        return adapters[0] if single else adapters

    # ---- answering ----------------------------------------------------------------------
    @contextmanager
    def use_adapter(self, adapter: GeneratedLora) -> Iterator[GeneratedLora]:
        """Merge `adapter` into the base model's weights for the block, so queries cost nothing extra.

        Inside the block, `answer(adapter, ...)` runs the plain model (no LoRA hooks): a query
        costs what the same text-only query costs without Video2LoRA. Leaving the block restores
        the original weights bit-exactly. Internalizing, answering with the video in context, or
        answering with another adapter inside the block raises `RuntimeError`.

        Args:
            adapter: the adapter to merge.

        Returns:
            A context manager that yields `adapter`.

        Example:
            ```python
            with hn.use_adapter(adapter):
                for question in questions:
                    print(hn.answer(adapter, question))
            ```
        """
        self.check_adapter(adapter)
        handle = adapter.merge_into(self.vlm)
        try:
            yield adapter
        finally:
            handle.unmerge()

    def _refuse_if_merged(self, action: str) -> None:
        if merged_adapter(self.vlm) is not None:
            raise RuntimeError(
                f"Cannot {action}: the base model holds a merged adapter. Leave the `use_adapter()` block "
                "(or call `GeneratedLora.unmerge(model)`) first."
            )

    def check_adapter(self, adapter: GeneratedLora, *, strict: bool = False) -> None:
        """Raise `AdapterMismatchError` unless `adapter` fits this hypernetwork's base model.

        Args:
            adapter: the adapter to check.
            strict: also require the same `base_model_name_or_path` (otherwise a different name only warns).

        Example:
            ```python
            hn.check_adapter(GeneratedLora.from_pretrained("me/lecture-adapter"))
            ```
        """
        adapter.check_compatible(self.vlm, strict=strict)

    def _generate(self, inputs, max_new_tokens: int, generate_kwargs: dict) -> list[str]:
        device = next(self.vlm.parameters()).device
        tensors = {k: v.to(device) for k, v in inputs.items() if torch.is_tensor(v)}
        tokenizer = self.processor.tokenizer
        kwargs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, **generate_kwargs}
        output = self.vlm.generate(**tensors, max_new_tokens=max_new_tokens, **kwargs)
        new_tokens = output[:, tensors["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    @torch.no_grad()
    def answer(
        self,
        adapters: GeneratedLora | Sequence[GeneratedLora],
        questions: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        **generate_kwargs,
    ) -> str | list[str]:
        """Answer questions from adapters alone: the prompt holds no visual tokens.

        Args:
            adapters: one adapter (shared by every question) or one adapter per question.
            questions: a question or a list of questions, answered in one batch.
            max_new_tokens: generation budget per answer.
            **generate_kwargs: passed to `generate` (greedy by default).

        Returns:
            The answer for a single question, or a list of answers.

        Example:
            ```python
            hn.answer(adapter, "What happens in the video?", max_new_tokens=64)
            hn.answer([adapter_a, adapter_b], ["Q for a", "Q for b"])
            ```
        """
        single = isinstance(questions, str)
        prompts = [questions] if single else list(questions)
        rows = [adapters] if isinstance(adapters, GeneratedLora) else list(adapters)
        if len(rows) == 1 and len(prompts) > 1:
            rows = rows * len(prompts)
        if len(rows) != len(prompts):
            raise ValueError(
                f"answer() got {len(rows)} adapters for {len(prompts)} questions; give one or one per question."
            )
        inputs = self.processor.query_inputs(prompts)
        handle = merged_adapter(self.vlm)
        if handle is not None:
            if any(adapter is not handle.adapter for adapter in rows):
                raise RuntimeError(
                    "answer() got an adapter other than the one merged by `use_adapter()`; answer with that "
                    "adapter inside the block, or leave the block first."
                )
            answers = self._generate(inputs, max_new_tokens, generate_kwargs)
            return answers[0] if single else answers
        for adapter in {id(a): a for a in rows}.values():
            self.check_adapter(adapter)
        lora_A, lora_B, scaling = stack_adapters(rows)
        with inject_lora(self.backbone, lora_A, lora_B, scaling):
            answers = self._generate(inputs, max_new_tokens, generate_kwargs)
        return answers[0] if single else answers

    @torch.no_grad()
    def answer_plain(
        self, questions: str | Sequence[str], *, max_new_tokens: int = 64, **generate_kwargs
    ) -> str | list[str]:
        """The frozen base model alone: text-only prompts, with neither an adapter nor visual tokens.

        The text-only baseline of the benchmarks, and the reader of a caption an adapter produced
        (for example the second turn of the tiny-world model's dialog, `toy_world.dialog_prompt`).

        Args:
            questions: a question or a list of questions, answered in one batch.
            max_new_tokens: generation budget per answer.
            **generate_kwargs: passed to `generate` (greedy by default).

        Returns:
            The answer for a single question, or a list of answers.

        Example:
            ```python
            caption = hn.answer(adapter, "Describe the video.")
            hn.answer_plain(dialog_prompt(caption, "How many objects are there?"))
            ```
        """
        single = isinstance(questions, str)
        prompts = [questions] if single else list(questions)
        self._refuse_if_merged("answer without an adapter")
        answers = self._generate(self.processor.query_inputs(prompts), max_new_tokens, generate_kwargs)
        return answers[0] if single else answers

    @torch.no_grad()
    def answer_with_video(
        self,
        videos,
        questions: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        num_frames: int | None = None,
        longest_edge: int | None = None,
        **generate_kwargs,
    ) -> str | list[str]:
        """The reference condition: the plain base model answers with the video in its context.

        Args:
            videos: one video or one video per question.
            questions: a question or a list of questions.
            max_new_tokens: generation budget per answer.
            num_frames: frames sampled per video; defaults to `config.num_frames`.
            longest_edge: frame resize target; defaults to `config.longest_edge`.

        Returns:
            The answer, or a list of answers.

        Example:
            ```python
            hn.answer_with_video("clip.mp4", "What happens in the video?")
            ```
        """
        single = isinstance(questions, str)
        prompts = [questions] if single else list(questions)
        items = [videos] * len(prompts) if is_single_video(videos) else list(videos)
        if len(items) != len(prompts):
            raise ValueError(f"answer_with_video() got {len(items)} videos for {len(prompts)} questions.")
        self._refuse_if_merged("answer with the video in context")
        inputs = self.processor.video_in_context_inputs(
            items,
            prompts,
            num_frames=num_frames or self.config.num_frames,
            longest_edge=longest_edge or self.config.longest_edge,
        )
        inputs.pop("video_metadata", None)
        answers = self._generate(inputs, max_new_tokens, generate_kwargs)
        return answers[0] if single else answers
