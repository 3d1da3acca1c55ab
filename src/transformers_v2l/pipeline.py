"""`Video2LoraPipelineMixin`: what a `Video2LoraHypernetwork` does with videos and questions.

The hypernetwork inherits these methods (as `PreTrainedModel` inherits `GenerationMixin`'s): they
orchestrate the processor, the frozen passes of the runtime (`hn.runtime`, which owns the base VLM,
the processor, placement and merge state) and the hypernetwork's own `forward`. The mixin holds no
state of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .lora import GeneratedLora
from .video_io import is_single_video

if TYPE_CHECKING:
    from .families import Video2LoraFamily
    from .processing_video2lora import Video2LoraProcessor

__all__ = ["Video2LoraPipelineMixin"]


class Video2LoraPipelineMixin:
    """Internalization and answering for `Video2LoraHypernetwork` (not used on its own; it needs `self.runtime`).

    Example:
        ```python
        hn = Video2LoraHypernetwork.from_pretrained("my-hypernet")
        adapter = hn.internalize("clip.mp4")
        hn.answer(adapter, "What happens in the video?")
        ```
    """

    # ---- the runtime's parts ------------------------------------------------------------------------
    @property
    def vlm(self) -> torch.nn.Module:
        """The frozen base VLM (`hn.load_base_model()` loads it; the pipeline methods do on first use)."""
        return self.runtime.vlm

    @property
    def family(self) -> Video2LoraFamily:
        """The VLM family wrapper of the base model: decoder layers, target modules, features."""
        return self.runtime.family

    @property
    def processor(self) -> Video2LoraProcessor:
        """The processor, saved with the checkpoint (frames, resolution, instruction, answering protocol)."""
        return self.runtime.load_processor()

    def load_base_model(self) -> torch.nn.Module:
        """Load the frozen base VLM now (see `Video2LoraRuntime.load_base_model`).

        Returns:
            The base VLM.

        Example:
            ```python
            vlm = hn.load_base_model()
            ```
        """
        return self.runtime.load_base_model()

    def attach_base_model(self, base_model: torch.nn.Module) -> None:
        """Use `base_model` as the frozen VLM; its family and text-tower shapes must match the configuration.

        Args:
            base_model: a loaded VLM of the family this hypernetwork was built for.

        Example:
            ```python
            hn.attach_base_model(vlm)
            ```
        """
        self.runtime.attach_base_model(base_model)

    def extract_features(self, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the frozen VLM once over processor outputs and return `([B, L, S, H], [B, S])`.

        Args:
            **inputs: the processor's outputs (`input_ids`, `attention_mask` and the family's video inputs).

        Returns:
            The residual stream entering each text decoder layer and its attention mask.

        Example:
            ```python
            features, mask = hn.extract_features(**hn.processor.internalization_inputs(["clip.mp4"]))
            ```
        """
        self.runtime.ensure_loaded()
        return self.runtime.encode(inputs)

    # ---- internalizing ---------------------------------------------------------------------------------
    @torch.no_grad()
    def internalize(
        self,
        videos: Any,
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
            videos: one video (a path, a file object, bytes, a `[T, H, W, 3]` or `[T, 3, H, W]` uint8
                array or tensor, a list of frames or PIL images) or a list of videos.
            batch_size: videos per forward pass (with `chunk_frames`: chunks per encoder pass).
            instruction: the internalization instruction; defaults to the processor's.
            num_frames: maximum frames sampled per video; defaults to the processor's (the number the
                hypernetwork was trained on). The adapter's metadata records the frames used.
            longest_edge: frame resize target in pixels; defaults to the processor's.
            chunk_frames: internalize long videos chunk by chunk (this many frames each, streaming) and
                compose the chunk adapters in rank space (paper section 5.6); memory stays bounded.
                See `long_video.internalize_chunked` for the other options.
            show_progress: show a progress bar; by default only for more than one batch.

        Returns:
            A `GeneratedLora` for one video, or a list of them for a list of videos.

        Raises:
            InvalidArgumentError: a non-positive or non-integer count, or no video.
            VideoDecodeError: a video cannot be read (names the file and the reason).

        Example:
            ```python
            adapter = hn.internalize("clip.mp4")
            adapters = hn.internalize(["a.mp4", "b.avi"], batch_size=2)
            ```
        """
        from .errors import InvalidArgumentError

        for name, value in (("batch_size", batch_size), ("num_frames", num_frames), ("longest_edge", longest_edge),
                            ("chunk_frames", chunk_frames)):  # fmt: skip
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(
                    f"internalize() needs {name} to be a positive integer, got {value!r}."
                )
        single = is_single_video(videos)
        items = [videos] if single else list(videos)
        if not items:
            raise InvalidArgumentError("internalize() needs at least one video.")
        if chunk_frames is not None:
            from .long_video import internalize_chunked

            if num_frames is not None and num_frames != chunk_frames:
                raise InvalidArgumentError(
                    f"internalize() got num_frames={num_frames} and chunk_frames={chunk_frames}: with chunks, "
                    "chunk_frames is the number of frames per chunk; drop num_frames."
                )
            options = {
                "instruction": instruction,
                "longest_edge": longest_edge,
                "show_progress": show_progress,
            }
            adapters = [
                internalize_chunked(self, item, chunk_frames=chunk_frames, batch_size=batch_size, **options)
                for item in items
            ]
            return adapters[0] if single else adapters
        self.runtime.ensure_loaded()
        starts = range(0, len(items), batch_size)
        progress = show_progress if show_progress is not None else len(starts) > 1
        adapters = []
        for start in tqdm(starts, desc="Internalizing", disable=not progress, unit="batch"):
            batch = items[start : start + batch_size]
            adapters += self.internalize_batch(
                batch, instruction=instruction, num_frames=num_frames, longest_edge=longest_edge
            )
        return adapters[0] if single else adapters

    @torch.no_grad()
    def internalize_batch(
        self,
        videos: Sequence[Any],
        *,
        instruction: str | None = None,
        num_frames: int | None = None,
        longest_edge: int | None = None,
    ) -> list[GeneratedLora]:
        """One encoder pass and one hypernetwork pass over a batch of videos: the shared primitive.

        `internalize` and chunked internalization (`long_video`) both call it.

        Args:
            videos: the videos (anything the processor takes, including `(frames, VideoMetadata)` pairs).
            instruction: the internalization instruction; defaults to the processor's.
            num_frames: maximum frames sampled per video; defaults to the processor's.
            longest_edge: frame resize target; defaults to the processor's.

        Returns:
            One `GeneratedLora` per video; its metadata records the video and the settings used.

        Example:
            ```python
            adapters = hn.internalize_batch(["a.mp4", "b.mp4"])
            ```
        """
        self.runtime.ensure_loaded()
        processor = self.processor
        settings = {
            "instruction": instruction or processor.instruction,
            "num_frames": num_frames or processor.num_frames,
            "longest_edge": longest_edge or processor.longest_edge,
        }
        inputs = processor.internalization_inputs(list(videos), **settings)
        metadata = inputs.pop("video_metadata")
        features, mask = self.runtime.encode(inputs)  # [B, L, S, H], [B, S]
        device = self.device
        output = self(context_features=features.to(device), context_attention_mask=mask.to(device))
        return self.adapters_from_output(output, [self._provenance(meta, settings) for meta in metadata])

    def _provenance(self, video_meta: Any, settings: dict[str, Any]) -> dict[str, Any]:
        meta = video_meta.to_dict() if hasattr(video_meta, "to_dict") else dict(video_meta or {})
        meta["instruction"] = settings["instruction"]
        meta["num_frames"] = len(meta.get("frame_indices") or []) or settings["num_frames"]  # what was used
        meta["max_frames"] = settings["num_frames"]  # what was asked for
        meta["longest_edge"] = settings["longest_edge"]
        meta["hypernetwork"] = getattr(self.config, "_name_or_path", None) or None
        meta["hypernetwork_revision"] = self.runtime.hub_revision
        return meta

    # ---- answering ------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer(
        self,
        adapters: GeneratedLora | Sequence[GeneratedLora],
        questions: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        **generate_kwargs: Any,
    ) -> str | list[str]:
        """Answer questions from adapters alone: the prompt holds no visual tokens.

        The checkpoint's answering protocol (`processor.answer`, saved with it) is applied: `"direct"`
        asks each question as it is; `"recall"` has each adapter first recall a description, then
        asks the question as the next chat turn.

        Args:
            adapters: one adapter (shared by every question) or one adapter per question.
            questions: a question or a list of questions, answered in one batch.
            max_new_tokens: generation budget per answer.
            **generate_kwargs: passed to `generate` (greedy by default).

        Returns:
            The answer for a single question, or a list of answers.

        Example:
            ```python
            hn.answer(adapter, "What happens in the video?")
            ```
        """
        single = isinstance(questions, str)
        prompts = [questions] if single else list(questions)
        rows = [adapters] if isinstance(adapters, GeneratedLora) else list(adapters)
        if len(rows) == 1 and len(prompts) > 1:
            rows = rows * len(prompts)
        if len(rows) != len(prompts) or not prompts:
            raise ValueError(
                f"answer() got {len(rows)} adapters for {len(prompts)} questions; give one or one per question."
            )
        self.runtime.ensure_loaded()
        handle = self.runtime.merged
        if handle is not None and any(adapter is not handle.adapter for adapter in rows):
            raise RuntimeError(
                "answer() got an adapter other than the one merged by `use_adapter()`; answer with that adapter "
                "inside the block, or leave the block first."
            )
        if handle is None:
            for adapter in {id(a): a for a in rows}.values():
                self.check_adapter(adapter)
        hooked = None if handle is not None else rows  # a merged adapter needs no hooks
        options = {"max_new_tokens": max_new_tokens, **generate_kwargs}
        if self.processor.answer["protocol"] == "recall":
            answers = self._answer_after_recall(rows, prompts, hooked, options)
        else:
            answers = self.runtime.generate(self.processor.query_inputs(prompts), adapters=hooked, **options)
        return answers[0] if single else answers

    def _answer_after_recall(self, rows, prompts, hooked, options) -> list[str]:
        """The recall protocol: each adapter recalls a description; the question is the next chat turn.

        The recall prompt itself is asked directly (its answer is the description).
        """
        protocol = self.processor.answer
        recall = protocol["recall_prompt"]
        asked = [i for i, q in enumerate(prompts) if q == recall]
        others = [i for i, q in enumerate(prompts) if q != recall]
        answers: dict[int, str] = {}
        if asked:
            direct = None if hooked is None else [hooked[i] for i in asked]
            texts = self.runtime.generate(
                self.processor.query_inputs([recall] * len(asked)), adapters=direct, **options
            )
            answers.update(zip(asked, texts))
        if others:
            subset = None if hooked is None else [hooked[i] for i in others]
            texts = self._recall_then_answer(
                [rows[i] for i in others], [prompts[i] for i in others], subset, options
            )
            answers.update(zip(others, texts))
        return [answers[i] for i in range(len(prompts))]

    def _recall_then_answer(self, rows, prompts, hooked, options) -> list[str]:
        """Recall once per distinct adapter, then ask each question as the turn after the recall."""
        protocol = self.processor.answer
        recall, unique = protocol["recall_prompt"], list({id(a): a for a in rows}.values())
        recalled = self.runtime.generate(
            self.processor.query_inputs([recall] * len(unique)),
            adapters=None if hooked is None else unique,
            max_new_tokens=protocol["recall_max_new_tokens"],
        )
        by_adapter = {id(a): text for a, text in zip(unique, recalled)}
        conversations = [
            [{"role": "user", "content": recall}, {"role": "assistant", "content": by_adapter[id(a)]},
             {"role": "user", "content": q}]
            for a, q in zip(rows, prompts)
        ]  # fmt: skip
        if protocol["reader"] == "adapter" or hooked is not None:
            reader = hooked if protocol["reader"] == "adapter" else None
            answers = self.runtime.generate(
                self.processor.chat_inputs(conversations), adapters=reader, **options
            )
        else:  # merged, and the frozen model reads: its own weights for this pass
            with self.runtime.merged.suspended():
                answers = self.runtime.generate(self.processor.chat_inputs(conversations), **options)
        return answers

    @torch.no_grad()
    def answer_plain(
        self, questions: str | Sequence[str], *, max_new_tokens: int = 64, **generate_kwargs: Any
    ) -> str | list[str]:
        """The frozen base model alone: text-only prompts, with neither an adapter nor visual tokens.

        Args:
            questions: a question or a list of questions, answered in one batch.
            max_new_tokens: generation budget per answer.
            **generate_kwargs: passed to `generate` (greedy by default).

        Returns:
            The answer for a single question, or a list of answers.

        Example:
            ```python
            hn.answer_plain("What color is the sky?")
            ```
        """
        single = isinstance(questions, str)
        prompts = [questions] if single else list(questions)
        self.runtime.ensure_loaded()
        self.runtime.refuse_if_merged("answer without an adapter")
        answers = self.runtime.generate(
            self.processor.query_inputs(prompts), max_new_tokens=max_new_tokens, **generate_kwargs
        )
        return answers[0] if single else answers

    @torch.no_grad()
    def answer_with_video(
        self,
        videos: Any,
        questions: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        num_frames: int | None = None,
        longest_edge: int | None = None,
        **generate_kwargs: Any,
    ) -> str | list[str]:
        """The reference condition: the plain base model answers each question with the video in context.

        The checkpoint's answering protocol applies here too: with `"recall"`, the base model first gives its own
        description of the video (the recall prompt, video in context), then answers the question as the next
        chat turn, the video still in its context, as it was trained to.

        Args:
            videos: one video or one video per question.
            questions: a question or a list of questions.
            max_new_tokens: generation budget per answer.
            num_frames: frames sampled per video; defaults to the processor's.
            longest_edge: frame resize target; defaults to the processor's.
            **generate_kwargs: passed to `generate` (greedy by default).

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
        self.runtime.ensure_loaded()
        self.runtime.refuse_if_merged("answer with the video in context")
        frames = {"num_frames": num_frames, "longest_edge": longest_edge, "return_metadata": False}
        if self.processor.answer["protocol"] == "recall":
            prompts = self._recall_with_video(items, prompts, frames)
        inputs = self.processor.video_in_context_inputs(items, prompts, **frames)
        answers = self.runtime.generate(inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
        return answers[0] if single else answers

    def _recall_with_video(self, items: list, prompts: list[str], frames: dict[str, Any]) -> list:
        """The recall protocol with the video in context: each question becomes the turn after the model's description.

        The recall prompt itself stays as it is (its answer is the description).
        """
        protocol = self.processor.answer
        recall = protocol["recall_prompt"]
        asking = [i for i, q in enumerate(prompts) if q != recall]
        if not asking:
            return prompts
        recalled = self.runtime.generate(
            self.processor.video_in_context_inputs(
                [items[i] for i in asking], [recall] * len(asking), **frames
            ),
            max_new_tokens=protocol["recall_max_new_tokens"],
        )
        conversations = list(prompts)
        for i, description in zip(asking, recalled):
            conversations[i] = [{"role": "user", "content": recall}, {"role": "assistant", "content": description},
                                {"role": "user", "content": prompts[i]}]  # fmt: skip
        return conversations

    # ---- adapters and the base weights ----------------------------------------------------------------
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
        self.runtime.load_base_model()
        self.runtime.check_adapter(adapter, strict=strict)

    @contextmanager
    def use_adapter(self, adapter: GeneratedLora) -> Iterator[GeneratedLora]:
        """Merge `adapter` into the base model's weights for the block, so queries cost nothing extra.

        Inside the block, `answer(adapter, ...)` runs the plain model (no LoRA hooks): a query costs
        what the same text-only query costs without Video2LoRA. Leaving the block restores the original
        weights bit-exactly. Internalizing, answering with the video in context, or answering with
        another adapter inside the block raises `RuntimeError`.

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
        self.runtime.ensure_loaded()
        with self.runtime.use_adapter(adapter):
            yield adapter
