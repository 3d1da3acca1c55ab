"""`Video2LoraProcessor`: a thin front over a VLM family's prompts and pixels, with its settings saved.

The processor holds the tokenizer and the preprocessing settings (frames, frame rate, resolution,
instruction, the family's pixel settings, how the checkpoint answers questions) and saves them in its
own `processor_config.json`, like transformers' processors. Everything family-specific (the video
prompt, the pixels, the text-only prompt) is asked of the family (`transformers_v2l.families`).

Three kinds of inputs:

* `internalization_inputs`: one user turn `[video, instruction]`, no generation prompt: what the
  frozen VLM encodes once to internalize the video;
* `video_in_context_inputs`: `[video, question]` plus the assistant's opening: the base model
  answering with the video in its context (the reference condition);
* `query_inputs` / `chat_inputs`: text-only turns with zero visual tokens: answering from an adapter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .families import FAMILIES, Video2LoraFamily, family_class
from .processing_files import (
    HUB_KEYS,
    SETTINGS,
    load_tokenizer,
    read_chat_templates,
    saved_processor_settings,
    settings_from_files,
)
from .video_frames import frames_from_memory
from .video_io import is_single_video, load_video
from .video_sampling import VideoMetadata

__all__ = [
    "ANSWER_PROTOCOLS",
    "SETTINGS",
    "Video2LoraProcessor",
    "saved_processor_settings",
]  # two re-exported

#: How a checkpoint answers a question from an adapter (`processor.answer["protocol"]`).
ANSWER_PROTOCOLS = ("direct", "recall")


class Video2LoraProcessor(ProcessorMixin):
    r"""Builds the encoder inputs of internalization and the text-only answering prompts for one VLM family.

    Args:
        tokenizer: the base VLM's tokenizer.
        family: the VLM family's name (`transformers_v2l.families`), for example `"smolvlm"`.
        num_frames: maximum frames sampled per video; defaults to the family's (12 for SmolVLM2).
        longest_edge: frames are resized so that their longest edge is this many pixels (the paper: 384).
        fps: frames sampled per second of video (SmolVLM2: 1).
        skip_secs: seconds skipped at each end of long videos (SmolVLM2: 1).
        instruction: the internalization instruction placed after the video.
        vision: the family's pixel settings, over its defaults (for SmolVLM: `image_seq_len`,
            `max_image_size`, `image_mean`, `image_std`, `rescale_factor`, `resample`, `resize_mode`).
        answer: how `Video2LoraHypernetwork.answer` asks a question: `{"protocol": "direct"}` (the
            question as it is) or `{"protocol": "recall", "recall_prompt": ..., "reader": "frozen" |
            "adapter", "recall_max_new_tokens": ...}` (the adapter first recalls a description, then
            the question is the next chat turn, answered by the frozen model or the adapter).
        chat_template: the template for text-only turns (a string, or a dict of named templates with
            `"default"`); defaults to the tokenizer's.

    Example:
        ```python
        from transformers_v2l import Video2LoraProcessor

        processor = Video2LoraProcessor.from_pretrained("HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        inputs = processor.internalization_inputs("clip.mp4")  # input_ids, pixel_values, ...
        queries = processor.query_inputs(["What happens in the video?"])
        ```
    """

    def __init__(
        self,
        tokenizer,
        family: str,
        num_frames: int | None = None,
        longest_edge: int | None = None,
        fps: float | None = None,
        skip_secs: float | None = None,
        instruction: str | None = None,
        vision: dict[str, Any] | None = None,
        answer: dict[str, Any] | None = None,
        chat_template: str | dict[str, str] | None = None,
    ):
        cls = family_class(family)
        defaults = cls.defaults
        self.family = cls.name
        self.num_frames = _positive_int(
            "num_frames", defaults.num_frames if num_frames is None else num_frames
        )
        self.longest_edge = _positive_int(
            "longest_edge", defaults.longest_edge if longest_edge is None else longest_edge
        )
        self.fps = _positive_float("fps", defaults.fps if fps is None else fps)
        self.skip_secs = float(defaults.skip_secs if skip_secs is None else skip_secs)
        if not self.skip_secs >= 0:
            raise ValueError(f"skip_secs must be >= 0, got {skip_secs!r}.")
        self.instruction = defaults.instruction if instruction is None else str(instruction)
        unknown = sorted(set(vision or {}) - set(defaults.vision))
        if unknown:
            raise ValueError(
                f"Unknown {cls.name} pixel settings {unknown}; known: {sorted(defaults.vision)}."
            )
        self.vision = {**defaults.vision, **(vision or {})}
        cls.check_vision_settings(self.vision)
        self.answer = _check_answer({"protocol": "direct", **(answer or {})})
        template = chat_template or tokenizer.chat_template or cls.default_chat_template()
        super().__init__(tokenizer, chat_template=template)

    # ---- the family ------------------------------------------------------------------------------
    @property
    def family_class(self) -> type[Video2LoraFamily]:
        """The `Video2LoraFamily` subclass named by `family`."""
        return family_class(self.family)

    @property
    def model_input_names(self) -> list[str]:
        """The tensors the processor returns for the VLM: ids, mask and the family's video inputs."""
        return ["input_ids", "attention_mask", *self.family_class.video_input_keys]

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id, or its end-of-sequence id when it has none."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    @property
    def text_chat_template(self) -> str:
        """The chat template of text-only turns (the `"default"` one of a dict of templates)."""
        template = self.chat_template
        return (
            template.get("default", next(iter(template.values()))) if isinstance(template, dict) else template
        )

    # ---- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> Video2LoraProcessor:
        """Load from a folder or Hub repo saved by this class, or from a base VLM checkpoint of a known family.

        A base checkpoint provides the tokenizer, the family (its `config.json`), the family's pixel
        settings and frame rate (its processor files); `num_frames`, `longest_edge` and the
        instruction then take the family's defaults unless passed here. Hub repos resolve through
        the Hugging Face cache, so they work offline once downloaded.

        Args:
            pretrained_model_name_or_path: a local folder or a Hub repo id.
            **kwargs: Hub options (`revision`, `cache_dir`, `token`, `local_files_only`, `subfolder`,
                `force_download`); overrides of any setting (`num_frames=16`) or pixel setting
                (`resize_mode="frames2lora"`); `tokenizer=` to reuse one; anything else goes to
                `AutoTokenizer.from_pretrained`.

        Returns:
            The `Video2LoraProcessor`.

        Raises:
            HubUnavailableError: a Hub repo that is not cached while the Hub cannot be reached.

        Example:
            ```python
            processor = Video2LoraProcessor.from_pretrained("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", num_frames=16)
            ```
        """
        hub = {key: kwargs.pop(key) for key in HUB_KEYS if key in kwargs}
        path = os.fspath(pretrained_model_name_or_path)
        tokenizer = kwargs.pop("tokenizer", None)
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in SETTINGS}
        vision_keys = {key for cls_ in FAMILIES.values() for key in cls_.defaults.vision}
        vision = {k: kwargs.pop(k) for k in list(kwargs) if k in vision_keys}
        if tokenizer is None:  # first: an unreachable Hub repo fails here with HubUnavailableError
            tokenizer = load_tokenizer(path, hub, kwargs)
        elif kwargs:
            raise TypeError(f"Video2LoraProcessor.from_pretrained got unexpected arguments {sorted(kwargs)}.")
        settings = settings_from_files(path, hub)
        settings.update(overrides)
        settings["vision"] = {**settings.get("vision", {}), **vision}
        settings.setdefault("chat_template", read_chat_templates(path, hub))
        return cls(tokenizer, **settings)

    # ---- text ---------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Tokenize prompts that already hold their special tokens, and pad them into one batch.

        Args:
            texts: rendered prompts.
            padding_side: `"left"` (for generation) or `"right"` (for encoding).

        Returns:
            `input_ids` and `attention_mask`, `[B, S]` int64 each.

        Example:
            ```python
            processor.tokenize(["<|im_start|>User: Hi<end_of_utterance>\\nAssistant:"])
            ```
        """
        bos = self.tokenizer.bos_token
        rows = [
            self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
            for text in texts
        ]
        length = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            cols = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
            input_ids[i, cols] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, cols] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}  # [B, S] each

    def chat_text(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """One text-only conversation rendered with the text chat template.

        Args:
            messages: `{"role": ..., "content": str | [{"type": "text", "text": ...}]}` dicts.
            add_generation_prompt: append the assistant turn's opening.

        Returns:
            The prompt string.

        Example:
            ```python
            processor.chat_text([{"role": "user", "content": "What happens?"}])
            ```
        """
        normalized = [
            {**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m["content"], str) else m
            for m in messages
        ]
        return self.tokenizer.apply_chat_template(
            normalized,
            chat_template=self.text_chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def chat_inputs(self, conversations: Sequence[Sequence[dict[str, Any]]]) -> BatchFeature:
        """Text-only conversations (zero visual tokens), left-padded for generation.

        Args:
            conversations: one list of messages per row (see `chat_text`).

        Returns:
            A `BatchFeature` with `input_ids` and `attention_mask` `[B, S]`.

        Example:
            ```python
            processor.chat_inputs([[{"role": "user", "content": "Describe the video."},
                                    {"role": "assistant", "content": "A red circle moves."},
                                    {"role": "user", "content": "What color is it?"}]])
            ```
        """
        return BatchFeature(self.tokenize([self.chat_text(c) for c in conversations], "left"))

    def query_inputs(self, prompts: str | Sequence[str]) -> BatchFeature:
        """Text-only answering prompts, one user turn each plus the assistant's opening, left-padded.

        Args:
            prompts: a question or a list of questions.

        Returns:
            A `BatchFeature` with `input_ids` and `attention_mask` `[B, S]`.

        Example:
            ```python
            inputs = processor.query_inputs(["What color is the car?", "Who enters first?"])
            ```
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self.chat_inputs([[{"role": "user", "content": p}] for p in prompts])

    # ---- videos -------------------------------------------------------------------------------------
    def _decode(self, video: Any, num_frames: int | None) -> tuple[np.ndarray, VideoMetadata]:
        if isinstance(video, tuple) and len(video) == 2 and isinstance(video[1], VideoMetadata):
            return frames_from_memory(video[0])[0], video[1]  # already sampled: any frame layout
        frames = self.num_frames if num_frames is None else num_frames
        return load_video(
            video,
            num_frames=frames,
            target_fps=self.fps,
            skip_secs=self.skip_secs,
            sampler=self.family_class.sample_frame_indices,
        )

    def video_inputs(
        self,
        videos: Any,
        texts: Sequence[str | Sequence[dict[str, Any]]],
        *,
        num_frames: int | None = None,
        longest_edge: int | None = None,
        add_generation_prompt: bool,
        padding_side: str,
        return_metadata: bool = True,
    ) -> BatchFeature:
        """Prompts `[video, text]` with the family's expansion, and the family's pixels, for a batch.

        Args:
            videos: one video or a list (see `internalization_inputs`).
            texts: one text (for every video) or one per video; a text may be a conversation (see `video_text`).
            num_frames: maximum frames per video; defaults to `self.num_frames`.
            longest_edge: frame resize target; defaults to `self.longest_edge`.
            add_generation_prompt: append the assistant's opening.
            padding_side: `"left"` or `"right"`.
            return_metadata: add `video_metadata`, the list of `VideoMetadata`.

        Returns:
            A `BatchFeature` with `input_ids`, `attention_mask` and the family's video inputs.

        Example:
            ```python
            processor.video_inputs(["a.mp4"], ["Describe."], add_generation_prompt=True, padding_side="left")
            ```
        """
        items = [videos] if is_single_video(videos) else list(videos)
        texts = list(texts)
        if not items:
            raise ValueError("Expected at least one video.")
        if len(texts) == 1 and len(items) > 1:
            texts = texts * len(items)
        if len(texts) != len(items):
            raise ValueError(
                f"Got {len(items)} videos but {len(texts)} texts; pass one text or one per video."
            )
        family, edge = self.family_class, longest_edge or self.longest_edge
        prompts, pixels, metadata = [], [], []
        for video, text in zip(items, texts):
            frames, meta = self._decode(video, num_frames)
            clip = family.video_pixels(self, frames, edge)
            prompts.append(self.video_text(meta, clip, text, add_generation_prompt))
            pixels.append(clip)
            metadata.append(meta)
        data: dict[str, Any] = {**self.tokenize(prompts, padding_side), **family.collate_video_pixels(pixels)}
        data.update(family.video_batch_inputs(self, data["input_ids"], metadata))
        if return_metadata:
            data["video_metadata"] = metadata
        return BatchFeature(data)

    def video_text(
        self,
        metadata: VideoMetadata,
        pixels: dict[str, torch.Tensor],
        text: str | Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt of one user turn `[video, text]`, or of a conversation whose first user turn holds the video.

        Args:
            metadata: the clip's metadata.
            pixels: the clip's `family.video_pixels`.
            text: the text after the video, or chat messages (`{"role": ..., "content": str}`) that start with the
                user turn holding the video: for example a description the model gave, then a follow-up question.
            add_generation_prompt: append the assistant turn's opening.

        Returns:
            The prompt string, the video expanded as the family's processor expands it.

        Raises:
            ValueError: the conversation does not start with a user turn of text, or the chat template renders that
                turn differently inside the conversation than alone.

        Example:
            ```python
            processor.video_text(meta, pixels, [{"role": "user", "content": "Describe the video."},
                                                {"role": "assistant", "content": "A dog runs."},
                                                {"role": "user", "content": "What color is the dog?"}])
            ```
        """
        family = self.family_class
        if isinstance(text, str):
            return family.video_text(self, metadata, pixels, text, add_generation_prompt)
        messages = list(text)
        if (
            not messages
            or messages[0].get("role") != "user"
            or not isinstance(messages[0].get("content"), str)
        ):
            raise ValueError("A conversation about a video starts with a user turn whose content is text.")
        opening = self.chat_text(messages[:1], add_generation_prompt=False)
        rendered = self.chat_text(messages, add_generation_prompt=add_generation_prompt)
        if not rendered.startswith(opening):
            raise ValueError("The chat template renders the first turn differently inside the conversation.")
        return (
            family.video_text(self, metadata, pixels, messages[0]["content"], False)
            + rendered[len(opening) :]
        )

    def internalization_inputs(
        self,
        videos: Any,
        instruction: str | None = None,
        num_frames: int | None = None,
        longest_edge: int | None = None,
        return_metadata: bool = True,
    ) -> BatchFeature:
        """Encoder inputs for internalization: one user turn `[video, instruction]`, no generation prompt.

        Args:
            videos: one video or a list: paths, bytes, file objects, `[T, H, W, 3]` uint8 arrays or
                tensors, lists of PIL images, or `(frames, VideoMetadata)` pairs from `load_video`.
            instruction: defaults to `self.instruction`.
            num_frames: maximum frames per video; defaults to `self.num_frames`.
            longest_edge: frame resize target; defaults to `self.longest_edge`.
            return_metadata: add `video_metadata`, the list of `VideoMetadata`.

        Returns:
            A `BatchFeature` with `input_ids` and `attention_mask` `[B, S]` (right-padded) and the
            family's video inputs (for SmolVLM: `pixel_values` `[B, T, 3, E, E]` and
            `pixel_attention_mask` `[B, T, E, E]`, frames zero-padded to the batch's longest video).

        Example:
            ```python
            inputs = processor.internalization_inputs(["a.mp4", "b.avi"], num_frames=12)
            ```
        """
        return self.video_inputs(
            videos,
            [instruction or self.instruction],
            num_frames=num_frames,
            longest_edge=longest_edge,
            add_generation_prompt=False,
            padding_side="right",
            return_metadata=return_metadata,
        )

    def video_in_context_inputs(
        self,
        videos: Any,
        prompts: str | Sequence[str | Sequence[dict[str, Any]]],
        num_frames: int | None = None,
        longest_edge: int | None = None,
        return_metadata: bool = True,
    ) -> BatchFeature:
        """Generation inputs for the base model with the video in its context: `[video, question]` + the assistant's opening.

        Args:
            videos: one video (shared by all prompts) or one per prompt (see `internalization_inputs`).
            prompts: a question, or one per video; a prompt may also be a conversation whose first user turn
                holds the video (see `video_text`).
            num_frames: maximum frames per video; defaults to `self.num_frames`.
            longest_edge: frame resize target; defaults to `self.longest_edge`.
            return_metadata: add `video_metadata`.

        Returns:
            A `BatchFeature` like `internalization_inputs`, left-padded for generation.

        Example:
            ```python
            inputs = processor.video_in_context_inputs("clip.mp4", "What happens?")
            ```
        """
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if is_single_video(videos) and len(texts) > 1:
            videos = [videos] * len(texts)
        return self.video_inputs(
            videos,
            texts,
            num_frames=num_frames,
            longest_edge=longest_edge,
            add_generation_prompt=True,
            padding_side="left",
            return_metadata=return_metadata,
        )

    def __call__(
        self, videos: Any = None, text: str | Sequence[str] | None = None, images: Any = None, **kwargs: Any
    ) -> BatchFeature:
        """Videos only -> `internalization_inputs`; text only -> `query_inputs`; both -> `video_in_context_inputs`."""
        if images is not None:
            raise ValueError("Video2LoraProcessor takes videos, not images: pass the frames as one video.")
        if videos is not None and text is not None:
            return self.video_in_context_inputs(videos, text, **kwargs)
        if videos is not None:
            return self.internalization_inputs(videos, **kwargs)
        if text is not None:
            return self.query_inputs(text)
        raise ValueError("Pass videos, text, or both.")

    # ---- chat templates -------------------------------------------------------------------------------
    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]] | list[list[dict[str, Any]]],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str | list[str] | list[list[int]] | BatchFeature:
        """Render (and optionally tokenize) conversations; a video in a conversation gives the family's video inputs.

        A conversation without a video is rendered once with the text template (or `chat_template`).
        A conversation with a video must be one user turn `[video, text]` (what the family's video
        prompt covers); anything else with a video is refused. Returned tensors are padded on
        `processor_kwargs["padding_side"]` (default left, for generation).

        Args:
            conversation: one conversation (a list of messages) or a list of them.
            chat_template: a template for text-only conversations; defaults to `text_chat_template`.
            add_generation_prompt: append the assistant turn's opening.
            tokenize: return token ids instead of text.
            return_dict: with `tokenize`, return a `BatchFeature` (with pixels for videos).
            processor_kwargs: `padding_side` (`"left"` or `"right"`), `num_frames`, `longest_edge`.
            **kwargs: refused (named in the error), so no option is silently ignored.

        Returns:
            The text (or a list of texts), token ids, or a `BatchFeature`.

        Raises:
            ValueError: a video in anything but a single user turn `[video, text]`, or an unknown option.

        Example:
            ```python
            conversation = [{"role": "user", "content": [{"type": "video", "path": "clip.mp4"},
                                                         {"type": "text", "text": "What happens?"}]}]
            inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
            ```
        """
        if kwargs:
            raise ValueError(f"Video2LoraProcessor.apply_chat_template does not support {sorted(kwargs)}.")
        options = dict(processor_kwargs or {})
        padding_side = options.pop("padding_side", "left")
        frames = {k: options.pop(k) for k in ("num_frames", "longest_edge") if k in options}
        if options:
            raise ValueError(
                f"Unsupported processor_kwargs {sorted(options)}; use padding_side, num_frames, longest_edge."
            )
        single = bool(conversation) and isinstance(conversation[0], dict)
        conversations = [conversation] if single else list(conversation)
        videos = [_conversation_video(c) for c in conversations]
        if any(v is not None for v in videos):
            if any(v is None for v in videos):
                raise ValueError(
                    "apply_chat_template got a batch mixing conversations with and without a video."
                )
            texts = [text for _, text in videos]
            inputs = self.video_inputs(
                [video for video, _ in videos], texts, add_generation_prompt=add_generation_prompt,
                padding_side=padding_side, return_metadata=False, **frames,
            )  # fmt: skip
            if not tokenize:
                rendered = self.tokenizer.batch_decode(
                    [ids[mask.bool()] for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
                )
                return rendered[0] if single else rendered
        else:
            template = chat_template or self.text_chat_template
            rendered = [
                self.tokenizer.apply_chat_template(
                    c, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
                for c in conversations
            ]
            if not tokenize:
                return rendered[0] if single else rendered
            inputs = BatchFeature(self.tokenize(rendered, padding_side))
        if return_dict:
            return inputs
        ids = [row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        return ids[0] if single else ids


# ---- helpers -------------------------------------------------------------------------------------------
def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def _check_answer(answer: dict[str, Any]) -> dict[str, Any]:
    protocol = answer["protocol"]
    if protocol not in ANSWER_PROTOCOLS:
        raise ValueError(f"answer['protocol'] must be one of {ANSWER_PROTOCOLS}, got {protocol!r}.")
    if protocol == "recall":
        answer = {
            "recall_prompt": "Describe the video.",
            "reader": "frozen",
            "recall_max_new_tokens": 48,
            **answer,
        }
        if answer["reader"] not in ("frozen", "adapter"):
            raise ValueError(f"answer['reader'] must be 'frozen' or 'adapter', got {answer['reader']!r}.")
    return answer


def _conversation_video(conversation: list[dict[str, Any]]) -> tuple[Any, str] | None:
    """`(video, text)` of a conversation that holds a video, or `None`; refuses unsupported layouts."""
    items = [(m, item) for m in conversation if isinstance(m.get("content"), list) for item in m["content"]]
    video_items = [(m, item) for m, item in items if item.get("type") == "video"]
    if not video_items:
        return None
    message, item = video_items[0]
    texts = [i.get("text", "") for i in message["content"] if i.get("type") == "text"]
    if len(conversation) != 1 or message.get("role") != "user" or len(video_items) != 1 or len(texts) != 1:
        raise ValueError(
            "Video2LoraProcessor.apply_chat_template supports a video only in a conversation of one user turn "
            "[video, text]; render longer conversations with text only (the video lives in the adapter)."
        )
    video = next((item[key] for key in ("video", "path", "url") if item.get(key) is not None), None)
    if video is None:
        raise ValueError("A video item needs a 'video', 'path' or 'url' entry.")
    return video, texts[0]
