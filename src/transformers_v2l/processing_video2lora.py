"""`Video2LoraProcessor`: encoder prompts and pixels for internalization, text prompts for answering.

The video prompt and pixels are SmolVLM2's, token for token and pixel for pixel:

* Prompt: what `SmolVLMProcessor.apply_chat_template` renders for one user turn `[video, text]`,
  with each frame's `<image>` slot expanded to `image_seq_len` image tokens.
* Pixels (`resize_mode="transformers-5"`, the default): `SmolVLMVideoProcessor` of transformers 5.x
  (torchvision >= 0.27 on CPU): resize the longest edge to `longest_edge` (SmolVLM's even-rounding
  rule), then to the `max_image_size` square tile, both with LANCZOS on uint8 (torch's
  `interpolate(mode="lanczos")`, the kernel torchvision calls), then a fused rescale and normalize.
* `resize_mode="frames2lora"`: the transformers 4.51.3 image-processor path that the Frames2LoRA
  authors ran (same sizes, PIL LANCZOS, float64 rescale). It reproduces their fixture pixels
  exactly. The two LANCZOS implementations round differently: the modes differ by 1 to 3 uint8
  levels on about 1% of the pixels.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_video2lora import DEFAULT_INSTRUCTION
from .errors import HubUnavailableError
from .hub import hub_unavailable_error, hub_unreachable
from .video_io import is_single_video, load_video
from .video_sampling import VideoMetadata

__all__ = ["SMOLVLM_VIDEO_CHAT_TEMPLATE", "Video2LoraProcessor", "resize_output_size"]

# SmolVLMProcessor uses this template for every conversation that holds a video (transformers'
# `DEFAULT_CHAT_TEMPLATE` in `processing_smolvlm.py`), whatever the checkpoint ships.
SMOLVLM_VIDEO_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
VIDEO_INTRO = "You are provided the following series of {count} frames from a {duration} [H:MM:SS] video.\n"
FRAME_MESSAGE = "\nFrame from {timestamp}:"
MEDIA_OUTTRO = "\n\n"
MAX_IMAGE_SIZE = 4096  # SmolVLM's absolute cap on the resized longest edge
RESIZE_MODES = ("transformers-5", "frames2lora")
_TORCH_MODES = {0: "nearest-exact", 1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL resample -> interpolate
_SETTINGS = tuple(
    [
        "image_seq_len",
        "max_image_size",
        "longest_edge",
        "num_frames",
        "fps",
        "skip_secs",
        "image_mean",
        "image_std",
        "rescale_factor",
        "resample",
        "resize_mode",
        "instruction",
    ]
)  # the keys of our processor_config.json


def resize_output_size(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """SmolVLM's `get_resize_output_image_size`: longest edge to `longest_edge`, the other edge rounded up to even.

    Args:
        height: Input height.
        width: Input width.
        longest_edge: Target longest edge (capped at 4096).

    Returns:
        `(height, width)` after resizing.

    Example:
        ```python
        resize_output_size(720, 1280, 384)  # (216, 384)
        ```
    """
    longest_edge = min(MAX_IMAGE_SIZE, longest_edge)
    aspect_ratio = width / height
    if width >= height:
        width, height = longest_edge, int(longest_edge / aspect_ratio)
        height += height % 2
    else:
        height, width = longest_edge, int(longest_edge * aspect_ratio)
        width += width % 2
    return max(height, 1), max(width, 1)


def _resize_torch(frames: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    """torchvision's CPU `resize` on a uint8 `[T, 3, H, W]` batch (antialiased, no-op at equal size)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    mode = _TORCH_MODES.get(int(resample))
    if mode is None:
        raise ValueError(f"resample={resample} is not supported in resize_mode='transformers-5'.")
    antialias = mode in ("lanczos", "bilinear", "bicubic")
    align = False if antialias else None
    return torch.nn.functional.interpolate(
        frames, size=list(size), mode=mode, antialias=antialias, align_corners=align
    )


def _pixels_transformers5(
    frames: np.ndarray, size: tuple[int, int], tile: int, settings: dict
) -> torch.Tensor:
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W] uint8
    try:
        video = _resize_torch(video, size, settings["resample"])
        video = _resize_torch(video, (tile, tile), settings["resample"])
    except (RuntimeError, NotImplementedError) as error:  # a torch without uint8 LANCZOS
        warnings.warn(
            f"torch cannot resize with resample={settings['resample']} ({error}); using PIL, "
            "which can differ by one level per pixel.",
            stacklevel=4,
        )
        return _pixels_frames2lora(frames, size, tile, settings)
    mean = torch.tensor(settings["image_mean"]) * (1.0 / settings["rescale_factor"])
    std = torch.tensor(settings["image_std"]) * (1.0 / settings["rescale_factor"])
    return (video.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)  # [T, 3, E, E]


def _pixels_frames2lora(frames: np.ndarray, size: tuple[int, int], tile: int, settings: dict) -> torch.Tensor:
    from PIL import Image

    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        for height, width in (size, (tile, tile)):
            if image.size != (width, height):
                image = image.resize((width, height), resample=settings["resample"])
        out.append(np.asarray(image))
    pixels = (np.stack(out).astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
    pixels = (pixels - np.array(settings["image_mean"], np.float32)) / np.array(
        settings["image_std"], np.float32
    )
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # [T, 3, E, E]


class Video2LoraProcessor(ProcessorMixin):
    r"""Builds the encoder inputs of Video2LoRA internalization and the text-only answering prompts.

    Args:
        tokenizer: The base VLM's tokenizer (with SmolVLM's special tokens).
        image_seq_len: `<image>` tokens per frame, `(image_size // patch_size) ** 2 // scale_factor ** 2`.
        max_image_size: Edge of the square tile fed to the vision tower (512 for SmolVLM2 256M/500M).
        longest_edge: Frames are first resized so their longest edge is this (the paper: 384).
        num_frames: Maximum frames sampled per video (the paper: 12).
        fps: Frames sampled per second of video (SmolVLM2: 1).
        skip_secs: Seconds skipped at each end of long videos (SmolVLM2: 1).
        image_mean: Per-channel normalization mean.
        image_std: Per-channel normalization standard deviation.
        rescale_factor: Scale from uint8 to [0, 1].
        resample: PIL resampling filter (1 = LANCZOS, SmolVLM's).
        resize_mode: `"transformers-5"` (default, the current official video processor) or
            `"frames2lora"` (transformers 4.51.3 with PIL, as the released checkpoints were trained).
        instruction: Internalization instruction placed after the video.
        chat_template: Template for text-only prompts; video prompts always use SmolVLM's video template.

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
        image_seq_len: int = 64,
        max_image_size: int = 512,
        longest_edge: int = 384,
        num_frames: int = 12,
        fps: float = 1.0,
        skip_secs: float = 1.0,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        rescale_factor: float = 1 / 255,
        resample: int = 1,
        resize_mode: str = "transformers-5",
        instruction: str = DEFAULT_INSTRUCTION,
        chat_template: str | None = None,
    ):
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}.")
        for name, value in (
            ("image_seq_len", image_seq_len),
            ("max_image_size", max_image_size),
            ("longest_edge", longest_edge),
            ("num_frames", num_frames),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.image_seq_len = int(image_seq_len)
        self.max_image_size = int(max_image_size)
        self.longest_edge = int(longest_edge)
        self.num_frames = int(num_frames)
        self.fps = float(fps)
        self.skip_secs = float(skip_secs)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.rescale_factor = float(rescale_factor)
        self.resample = int(resample)
        self.resize_mode = resize_mode
        self.instruction = instruction
        super().__init__(
            tokenizer, chat_template=chat_template or tokenizer.chat_template or SMOLVLM_VIDEO_CHAT_TEMPLATE
        )
        self.image_token = getattr(tokenizer, "image_token", None) or "<image>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<video>"
        self.fake_image_token = getattr(tokenizer, "fake_image_token", None) or "<fake_token_around_image>"
        self.global_image_token = getattr(tokenizer, "global_image_token", None) or "<global-img>"

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs
    ) -> Video2LoraProcessor:
        """Load from a folder or Hub repo saved by this class, or from a plain SmolVLM checkpoint.

        A SmolVLM checkpoint provides the tokenizer, `image_seq_len` (`processor_config.json`, else
        computed from `config.json`) and, from `preprocessor_config.json` (or a 5.x
        `video_preprocessor_config.json`), `max_image_size`, mean/std, `rescale_factor`, `resample`
        and `video_sampling.fps`. `longest_edge` and `num_frames` stay at the paper's 384 and 12
        unless passed here. Hub repos resolve through the Hugging Face cache, so they work offline
        once downloaded.

        Args:
            pretrained_model_name_or_path: A local folder or a Hub repo id.
            **kwargs: Hub options (`revision`, `cache_dir`, `token`, `local_files_only`, `subfolder`,
                `force_download`) and overrides of any processor setting.

        Returns:
            The `Video2LoraProcessor`.

        Raises:
            HubUnavailableError: a Hub repo that is not cached while the Hub cannot be reached.

        Example:
            ```python
            processor = Video2LoraProcessor.from_pretrained("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", num_frames=16)
            ```
        """
        hub_keys = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download")
        hub = {key: kwargs.pop(key) for key in hub_keys if key in kwargs}
        path = os.fspath(pretrained_model_name_or_path)
        try:
            tokenizer = kwargs.pop("tokenizer", None) or AutoTokenizer.from_pretrained(path, **hub)
        except OSError as error:
            if os.path.isdir(path):
                raise
            if hub_unreachable(error):
                local = bool(hub.get("local_files_only"))
                raise hub_unavailable_error(path, "its tokenizer", error, local_files_only=local) from error
            raise HubUnavailableError(f"Cannot load the processor of {path!r}: {error}") from error
        settings = cls._settings_from_files(path, hub)
        settings.setdefault("chat_template", _read_chat_template(path, hub))
        settings.update(kwargs)
        return cls(tokenizer, **settings)

    @classmethod
    def _settings_from_files(cls, path: str, hub: dict) -> dict:
        processor = _read_json(path, "processor_config.json", hub) or {}
        if processor.get("processor_class") == cls.__name__:
            return {key: value for key, value in processor.items() if key in _SETTINGS}
        settings: dict[str, Any] = {}
        sources = [
            _read_json(path, "preprocessor_config.json", hub),
            processor.get("image_processor"),
            _read_json(path, "video_preprocessor_config.json", hub),
            processor.get("video_processor"),
        ]
        for source in sources:
            settings.update(_smolvlm_video_settings(source or {}))
        if "image_seq_len" in processor:
            settings["image_seq_len"] = processor["image_seq_len"]
        elif (config := _read_json(path, "config.json", hub)) and "vision_config" in config:
            vision = config["vision_config"]
            tokens = (vision["image_size"] // vision["patch_size"]) ** 2 // config.get("scale_factor", 1) ** 2
            settings["image_seq_len"] = tokens
        return settings

    @property
    def model_input_names(self) -> list[str]:
        """The tensors the processor returns for the VLM: ids, mask, pixels and pixel mask."""
        return ["input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"]

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id, or its end-of-sequence id when it has none."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    # ---- prompts ------------------------------------------------------------------------------
    def video_prompt(self, metadata: VideoMetadata, num_frames: int) -> str:
        """SmolVLM's expansion of one video: intro, one timestamped image slot per frame, outro.

        Args:
            metadata: The video's metadata (duration, sampled frame indices, fps).
            num_frames: Frames actually fed to the model.

        Returns:
            The text that replaces the `<video>` token.

        Example:
            ```python
            frames, meta = load_video("clip.mp4", num_frames=processor.num_frames)
            print(processor.video_prompt(meta, len(frames)))  # "You are provided the following series of ..."
            ```
        """
        from num2words import num2words

        image = self.fake_image_token + self.global_image_token + self.image_token * self.image_seq_len
        image += self.fake_image_token
        text = VIDEO_INTRO.format(
            count=num2words(num_frames), duration=str(timedelta(seconds=int(metadata.duration)))
        )
        for second in metadata.timestamps:
            text += FRAME_MESSAGE.format(timestamp=f"{int(second // 60):02d}:{int(second % 60):02d}") + image
        return text + MEDIA_OUTTRO

    def video_chat_text(
        self, metadata: VideoMetadata, num_frames: int, text: str, add_generation_prompt: bool
    ) -> str:
        """The full prompt text of one user turn `[video, text]`, with the video expanded.

        Args:
            metadata: The video's metadata.
            num_frames: Frames fed to the model.
            text: The instruction or question that follows the video.
            add_generation_prompt: Append `Assistant:`.

        Returns:
            The prompt string, exactly what `SmolVLMProcessor` tokenizes.

        Example:
            ```python
            frames, meta = load_video("clip.mp4", num_frames=processor.num_frames)
            text = processor.video_chat_text(meta, len(frames), "Describe the video.", add_generation_prompt=True)
            ```
        """
        content = [{"type": "video"}, {"type": "text", "text": text}]
        rendered = self._render(content, add_generation_prompt, SMOLVLM_VIDEO_CHAT_TEMPLATE)
        return rendered.replace(self.video_token, self.video_prompt(metadata, num_frames), 1)

    def _render(self, content: list[dict], add_generation_prompt: bool, template: str) -> str:
        conversation = [{"role": "user", "content": content}]
        return self.tokenizer.apply_chat_template(
            conversation, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _tokenize(self, texts: list[str], padding_side: str) -> dict[str, torch.Tensor]:
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

    # ---- pixels -------------------------------------------------------------------------------
    def preprocess_frames(self, frames: np.ndarray, longest_edge: int | None = None) -> torch.Tensor:
        """Resize, rescale and normalize decoded frames into vision-tower tiles.

        Args:
            frames: `[T, H, W, 3]` uint8 RGB frames.
            longest_edge: Override of `self.longest_edge`.

        Returns:
            `[T, 3, E, E]` float32 pixel values, `E = max_image_size`.

        Example:
            ```python
            frames, _ = load_video("clip.mp4")
            pixel_values = processor.preprocess_frames(frames)  # [T, 3, E, E]
            ```
        """
        height, width = frames.shape[1:3]
        size = resize_output_size(height, width, longest_edge or self.longest_edge)
        settings = {
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        }
        if self.resize_mode == "frames2lora":
            return _pixels_frames2lora(frames, size, self.max_image_size, settings)
        return _pixels_transformers5(frames, size, self.max_image_size, settings)

    def _decode(self, video: Any, num_frames: int | None) -> tuple[np.ndarray, VideoMetadata]:
        if isinstance(video, tuple) and len(video) == 2 and isinstance(video[1], VideoMetadata):
            return np.asarray(video[0]), video[1]
        return load_video(
            video, num_frames=num_frames or self.num_frames, target_fps=self.fps, skip_secs=self.skip_secs
        )

    def _video_batch(
        self, videos, texts, num_frames, longest_edge, add_generation_prompt, padding_side, return_metadata
    ):
        items = [videos] if is_single_video(videos) else list(videos)
        if not items:
            raise ValueError("Expected at least one video.")
        if len(texts) == 1 and len(items) > 1:
            texts = texts * len(items)
        if len(texts) != len(items):
            raise ValueError(
                f"Got {len(items)} videos but {len(texts)} texts; pass one text or one per video."
            )
        prompts, pixels, metadata = [], [], []
        for video, text in zip(items, texts):
            frames, meta = self._decode(video, num_frames)
            prompts.append(self.video_chat_text(meta, len(frames), text, add_generation_prompt))
            pixels.append(self.preprocess_frames(frames, longest_edge))
            metadata.append(meta)
        data = self._tokenize(prompts, padding_side)
        data["pixel_values"], data["pixel_attention_mask"] = self._pad_frames(pixels)
        if return_metadata:
            data["video_metadata"] = metadata
        return BatchFeature(data)

    @staticmethod
    def _pad_frames(pixels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        count, tile = max(p.shape[0] for p in pixels), pixels[0].shape[-1]
        batch = torch.zeros((len(pixels), count, 3, tile, tile), dtype=torch.float32)  # [B, T, 3, E, E]
        mask = torch.zeros((len(pixels), count, tile, tile), dtype=torch.long)  # [B, T, E, E]
        for i, video in enumerate(pixels):
            batch[i, : video.shape[0]] = video
            mask[i, : video.shape[0]] = 1
        return batch, mask

    # ---- public inputs ------------------------------------------------------------------------
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
            videos: One video or a list: paths, bytes, file objects, `[T, H, W, 3]` uint8 arrays or
                tensors, lists of PIL images, or `(frames, VideoMetadata)` pairs from `load_video`.
            instruction: Defaults to `self.instruction`.
            num_frames: Maximum frames per video; defaults to `self.num_frames`.
            longest_edge: Frame resize target; defaults to `self.longest_edge`.
            return_metadata: Add `video_metadata`, the list of `VideoMetadata`.

        Returns:
            A `BatchFeature` with `input_ids` and `attention_mask` `[B, S]` (right-padded),
            `pixel_values` `[B, T, 3, E, E]` float32 and `pixel_attention_mask` `[B, T, E, E]`
            (frames zero-padded to the batch's longest video).

        Example:
            ```python
            inputs = processor.internalization_inputs(["a.mp4", "b.avi"], num_frames=12)
            inputs["pixel_values"].shape  # [2, 12, 3, 512, 512]
            ```
        """
        texts = [instruction or self.instruction]
        return self._video_batch(videos, texts, num_frames, longest_edge, False, "right", return_metadata)

    def video_in_context_inputs(
        self,
        videos: Any,
        prompts: str | Sequence[str],
        num_frames: int | None = None,
        longest_edge: int | None = None,
        return_metadata: bool = True,
    ) -> BatchFeature:
        """Generation inputs for the base model with the video in its context: `[video, question]` + `Assistant:`.

        Args:
            videos: One video (shared by all prompts) or one per prompt (see `internalization_inputs`).
            prompts: A question or one question per video.
            num_frames: Maximum frames per video; defaults to `self.num_frames`.
            longest_edge: Frame resize target; defaults to `self.longest_edge`.
            return_metadata: Add `video_metadata`.

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
        return self._video_batch(videos, texts, num_frames, longest_edge, True, "left", return_metadata)

    def query_inputs(self, prompts: str | Sequence[str]) -> BatchFeature:
        """Text-only answering prompts, `<|im_start|>User: {q}<end_of_utterance>\\nAssistant:`, left-padded.

        Args:
            prompts: A question or a list of questions.

        Returns:
            A `BatchFeature` with `input_ids` and `attention_mask` `[B, S]`.

        Example:
            ```python
            inputs = processor.query_inputs(["What color is the car?", "Who enters first?"])
            ```
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        texts = [self._render([{"type": "text", "text": p}], True, self.chat_template) for p in prompts]
        return BatchFeature(self._tokenize(texts, "left"))

    def __call__(self, videos: Any = None, text: str | Sequence[str] | None = None, **kwargs) -> BatchFeature:
        """Dispatch: videos only -> `internalization_inputs`; text only -> `query_inputs`; both -> `video_in_context_inputs`."""
        if videos is not None and text is not None:
            return self.video_in_context_inputs(videos, text, **kwargs)
        if videos is not None:
            return self.internalization_inputs(videos, **kwargs)
        if text is not None:
            return self.query_inputs(text)
        raise ValueError("Pass videos, text, or both.")


def _read_json(path: str, filename: str, hub: dict) -> dict | None:
    from transformers.utils import cached_file

    resolved = cached_file(
        path,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub,
    )
    if resolved is None:
        return None
    with open(resolved, encoding="utf-8") as handle:
        return json.load(handle)


def _read_chat_template(path: str, hub: dict) -> str | None:
    from transformers.utils import cached_file

    kwargs = {
        "_raise_exceptions_for_missing_entries": False,
        "_raise_exceptions_for_connection_errors": False,
    }
    if resolved := cached_file(path, "chat_template.jinja", **kwargs, **hub):
        with open(resolved, encoding="utf-8") as handle:
            return handle.read()
    legacy = _read_json(path, "chat_template.json", hub)
    return legacy.get("chat_template") if legacy else None


def _smolvlm_video_settings(config: dict) -> dict:
    """Our settings from a SmolVLM image or video processor config (`longest_edge`/`num_frames` excluded)."""
    settings = {}
    tile = config.get("max_image_size")
    if tile is not None:
        settings["max_image_size"] = tile["longest_edge"] if isinstance(tile, dict) else tile
    for key in ("image_mean", "image_std", "rescale_factor", "resample"):
        if config.get(key) is not None:
            settings[key] = config[key]
    fps = (config.get("video_sampling") or {}).get("fps", config.get("fps"))
    if fps is not None and math.isfinite(float(fps)):
        settings["fps"] = fps
    return settings
