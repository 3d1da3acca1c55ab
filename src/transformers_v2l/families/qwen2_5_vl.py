"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`, a Qwen2 text decoder with 3-D rotary positions).

Prompt, pixels and positions are Qwen2.5-VL's, token for token and pixel for pixel:

* Prompt: the checkpoint's chat template for one user turn `[video, text]` (it opens with the default
  system turn), with its `<|vision_start|><|video_pad|><|vision_end|>` slot expanded to one
  `<|video_pad|>` per merged patch: `grid_t * grid_h * grid_w / merge_size**2` tokens.
* Pixels: what `Qwen2VLVideoProcessor` (transformers 5.x, torchvision) computes from the same frames:
  `smart_resize` (the official function; both sides multiples of `patch_size * merge_size`, the pixel
  count within `[min_pixels, max_pixels]`), BICUBIC antialiased resize on uint8 (torch's
  `interpolate`, the kernel torchvision calls), a fused rescale and normalize, then patches of
  `temporal_patch_size` consecutive frames (an odd frame count repeats the last frame).
* Positions: `video_grid_thw` and `second_per_grid_ts = temporal_patch_size / sampled fps` give the
  temporal rope its seconds; `mm_token_type_ids` marks the video tokens (without it, transformers
  5.24 silently gives them 1-D positions).

Resolution: the processor's `longest_edge` L sets the pixel budget of a frame to `L**2` (an L x L
square's worth, capped by the checkpoint's `max_pixels`), which is what the official processor takes as
`size={"shortest_edge": min_pixels, "longest_edge": max_pixels}`; frames keep their aspect ratio, so a
16:9 frame at L = 336 becomes 252 x 448 (144 tokens per two frames).

Tiny models for tests and real-shape random models for benchmarks are built at the end of this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .base import FamilyDefaults, Video2LoraFamily

if TYPE_CHECKING:
    from ..processing_video2lora import Video2LoraProcessor
    from ..video_sampling import VideoMetadata

__all__ = ["QWEN2_5_VL_CHAT_TEMPLATE", "Qwen2_5_VLFamily"]

# The chat template Qwen2.5-VL checkpoints ship (tokenizer_config.json and chat_template.json), for
# tokenizers without one. Written out as data: it is the model's prompt format.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VIDEO_TOKEN, IMAGE_TOKEN = "<|video_pad|>", "<|image_pad|>"
MIN_FRAMES = 4  # Qwen2VLVideoProcessor.min_frames: fps sampling takes at least this many frames
BICUBIC = 3  # PIL code of the only resampling Qwen2-VL processors use
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OPENAI_CLIP_MEAN, the Qwen2-VL processors' default
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Qwen2VLVideoProcessor's defaults (min/max_pixels are its size["shortest_edge"] and size["longest_edge"])
_VIDEO_PROCESSOR_DEFAULTS = {
    "min_pixels": 128 * 28 * 28, "max_pixels": 768 * 28 * 28, "patch_size": 14, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD, "rescale_factor": 1 / 255, "resample": BICUBIC,
}  # fmt: skip
_FILE_KEYS = ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "rescale_factor",
              "resample")  # fmt: skip


def _sampled_fps(meta: VideoMetadata) -> float:
    """transformers' `VideoMetadata.sampled_fps`: sampled frames per second of the clip."""
    if meta.frame_indices and meta.total_num_frames and meta.fps:
        return len(meta.frame_indices) / meta.total_num_frames * meta.fps
    return meta.fps or 24.0


def _resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision's CPU BICUBIC `resize` of a uint8 `[T, 3, H, W]` batch: the native uint8 kernel, antialiased."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    return torch.nn.functional.interpolate(
        video, size=list(size), mode="bicubic", antialias=True, align_corners=False
    )


def _token_types(input_ids: torch.Tensor, video_id: int, image_id: int) -> torch.Tensor:
    """`mm_token_type_ids` `[B, S]` int64: 2 on video tokens, 1 on image tokens, 0 elsewhere (as the official processor)."""
    return (input_ids == video_id).long() * 2 + (input_ids == image_id).long()


def _patchify(video: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """`[T, C, h, w]` -> `[t * gh * gw, C * temporal * patch**2]` in the vision tower's order, and `[t, gh, gw]`."""
    if pad := -video.shape[0] % temporal:  # an odd frame count repeats the last frame
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    frames, channels, height, width = video.shape
    t, gh, gw = frames // temporal, height // patch, width // patch
    # axes: (t, temporal, C, gh/merge, merge, patch, gw/merge, merge, patch)
    blocks = video.reshape(t, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    # rows ordered (t, block row, block col, row in block, col in block); features (C, temporal, patch, patch)
    blocks = blocks.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return blocks.reshape(t * gh * gw, channels * temporal * patch * patch), [t, gh, gw]


class Qwen2_5_VLFamily(Video2LoraFamily):
    """Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`, a Qwen2 text decoder at `model.language_model`).

    Videos go to the vision tower as `pixel_values_videos` (flattened patches of two frames) with a
    `video_grid_thw` row per clip; the prompt holds one `<|video_pad|>` per merged patch. The vision
    tower has `mlp.down_proj` modules of its own (`model.visual.blocks.N.mlp.down_proj`): adapters
    name the language model's layers only.

    Args:
        model: a loaded `Qwen2_5_VLForConditionalGeneration`.

    Example:
        ```python
        family = Qwen2_5_VLFamily(vlm)
        family.module_path(3, "down_proj")  # 'model.language_model.layers.3.mlp.down_proj'
        ```
    """

    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    processor_classes = ("Qwen2_5_VLProcessor",)
    layers_path = "model.language_model.layers"
    module_subpaths: ClassVar[dict[str, str]] = {
        **{name: f"self_attn.{name}" for name in ("q_proj", "k_proj", "v_proj", "o_proj")},
        **{name: f"mlp.{name}" for name in ("gate_proj", "up_proj", "down_proj")},
    }
    video_input_keys = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")
    end_of_turn_token = "<|im_end|>"
    # 12 frames: the paper's frame budget (an even count: 6 temporal patches, none padded). 2 fps:
    # Qwen2.5-VL's own video sampling rate (qwen-vl-utils). L = 336: a 336 x 336 pixel budget, 144
    # tokens per two frames (72 per frame, SmolVLM2's 64 in the paper), just above the 128 tokens per
    # two frames that Qwen2.5-VL's video processor allows at least. No seconds skipped: Qwen's rule has none.
    defaults = FamilyDefaults(
        num_frames=12,
        longest_edge=336,
        fps=2.0,
        skip_secs=0.0,
        vision=_VIDEO_PROCESSOR_DEFAULTS,
    )

    # ---- frame sampling ----------------------------------------------------------------------------
    @classmethod
    def sample_frame_indices(
        cls,
        total_num_frames: int,
        fps: float,
        *,
        num_frames: int,
        target_fps: float = 2.0,
        skip_secs: float = 0.0,
    ) -> list[int]:
        """Qwen2VLVideoProcessor's `sample_frames` at `fps=target_fps, max_frames=num_frames`, index for index.

        An even `n` of at least 4 frames (fewer if the clip or `num_frames` has fewer) at
        `arange(0, total, total / n)`. Beyond it: a clip too short for two frames (or `num_frames=1`)
        gives its first frame, and `skip_secs > 0` first drops that many seconds at each end.

        Args:
            total_num_frames: frames in the clip.
            fps: the clip's native frame rate.
            num_frames: the most frames to sample.
            target_fps: frames sampled per second of video.
            skip_secs: seconds dropped at each end (Qwen2.5-VL: 0).

        Returns:
            Sorted frame indices.

        Raises:
            InvalidArgumentError: an argument out of range.

        Example:
            ```python
            Qwen2_5_VLFamily.sample_frame_indices(300, 30.0, num_frames=12, target_fps=2.0)  # 12 of 300
            ```
        """
        from ..video_sampling import check_number, check_sampling_arguments

        check_sampling_arguments(num_frames, target_fps, skip_secs)
        fps = check_number("fps", fps, positive=True)
        total = total_num_frames if isinstance(total_num_frames, Integral) else 0
        if isinstance(total, bool) or total < 1:
            raise InvalidArgumentError(f"total_num_frames must be an integer >= 1, got {total_num_frames!r}.")
        first, count, skip = 0, int(total), int(skip_secs * fps)
        if skip and count - 2 * skip >= MIN_FRAMES:
            first, count = skip, count - 2 * skip
        pair = cls.defaults.vision["temporal_patch_size"]
        cap = min(num_frames, count) // pair * pair
        wanted = min(max(count / fps * target_fps, MIN_FRAMES), cap, count)
        n = math.floor(wanted / pair) * pair or 1
        return (torch.arange(0, count, count / n).int() + first).tolist()

    # ---- processing --------------------------------------------------------------------------------
    @classmethod
    def vision_settings_from_files(cls, read_json) -> dict[str, Any]:
        """The video processor settings of a checkpoint, from the file transformers' video processor reads.

        Like `Qwen2VLVideoProcessor.from_pretrained`: the `video_processor` of `processor_config.json`,
        else `video_preprocessor_config.json`, else `preprocessor_config.json` (Qwen2.5-VL repos ship
        only that one, so their videos get the image processor's pixel range).

        Args:
            read_json: returns one of the checkpoint's JSON files by name, or `None`.

        Returns:
            `min_pixels`, `max_pixels` (from `size` or the legacy keys), the patch sizes, normalization,
            resampling, and `fps` when the file sets one.

        Example:
            ```python
            Qwen2_5_VLFamily.vision_settings_from_files(read_json)["max_pixels"]
            ```
        """
        source = (read_json("processor_config.json") or {}).get("video_processor")
        for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
            source = source or read_json(name)
        source = source or {}
        settings: dict[str, Any] = {key: source[key] for key in _FILE_KEYS if source.get(key) is not None}
        size = source.get("size") or {}
        for key, legacy in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
            value = source.get(legacy, size.get(key))
            if value is not None:
                settings[legacy] = value
        if source.get("fps") is not None:
            settings["fps"] = float(source["fps"])
        return settings

    @classmethod
    def vision_settings_for(cls, config: Any, **overrides: Any) -> dict[str, Any]:
        """The pixel settings that fit a model config: the vision tower's patch, temporal patch and merge sizes.

        Args:
            config: a `Qwen2_5_VLConfig`.
            **overrides: other settings (`min_pixels`, `max_pixels`, ...).

        Returns:
            The settings over `defaults.vision`.

        Example:
            ```python
            Qwen2_5_VLFamily.vision_settings_for(vlm.config)["patch_size"]  # 14
            ```
        """
        vision = config.vision_config
        tower = {"patch_size": vision.patch_size, "temporal_patch_size": vision.temporal_patch_size,
                 "merge_size": vision.spatial_merge_size}  # fmt: skip
        return {**cls.defaults.vision, **tower, **overrides}

    @classmethod
    def pixel_budget(cls, processor: Video2LoraProcessor, longest_edge: int | None = None) -> tuple[int, int]:
        """`(min_pixels, max_pixels)` of a frame at `longest_edge`: the budget `longest_edge**2` within the checkpoint's range.

        Args:
            processor: the processor (its `vision` settings).
            longest_edge: defaults to the processor's.

        Returns:
            What the official processor takes as `size={"shortest_edge": ..., "longest_edge": ...}`.

        Example:
            ```python
            Qwen2_5_VLFamily.pixel_budget(processor, 336)  # (100352, 112896)
            ```
        """
        vision, edge = processor.vision, longest_edge or processor.longest_edge
        budget = min(vision["max_pixels"], edge * edge)
        return min(vision["min_pixels"], budget), budget

    @classmethod
    def tokens_per_frame(cls, processor: Video2LoraProcessor) -> int:
        """The most visual tokens a frame adds (the pixel budget in merged patches, per frame of a pair).

        Exact when `smart_resize` fills the budget (a 336 x 336 frame: 144 per two frames); else a few fewer.

        Args:
            processor: the processor.

        Returns:
            The token count per frame.

        Example:
            ```python
            Qwen2_5_VLFamily.tokens_per_frame(processor)  # 72 at longest_edge=336
            ```
        """
        vision = processor.vision
        unit = (vision["patch_size"] * vision["merge_size"]) ** 2
        return cls.pixel_budget(processor)[1] // unit // vision["temporal_patch_size"]

    @classmethod
    def check_vision_settings(cls, vision: dict[str, Any]) -> None:
        """Raise `ValueError` naming the key when a Qwen2.5-VL pixel setting is invalid.

        Args:
            vision: the processor's pixel settings.

        Example:
            ```python
            Qwen2_5_VLFamily.check_vision_settings(Qwen2_5_VLFamily.defaults.vision)
            ```
        """
        for key in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"):
            value = vision[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        if vision["min_pixels"] > vision["max_pixels"]:
            raise ValueError(
                f"min_pixels must not exceed max_pixels, got {vision['min_pixels']} > {vision['max_pixels']}."
            )
        if vision["resample"] != BICUBIC:
            raise ValueError(f"resample must be {BICUBIC} (BICUBIC, Qwen2-VL's), got {vision['resample']!r}.")
        for key in ("image_mean", "image_std"):
            if len(vision[key]) != 3:
                raise ValueError(f"{key} must hold 3 values (RGB), got {vision[key]!r}.")

    @classmethod
    def video_pixels(
        cls, processor: Video2LoraProcessor, frames: np.ndarray, longest_edge: int
    ) -> dict[str, torch.Tensor]:
        """Resize, normalize and patchify one clip's frames as `Qwen2VLVideoProcessor` does.

        Args:
            processor: the processor (its `vision` settings).
            frames: `[T, H, W, 3]` uint8 RGB frames.
            longest_edge: sets the pixel budget `longest_edge**2` (see `pixel_budget`).

        Returns:
            `pixel_values_videos` `[t * gh * gw, 3 * temporal * patch**2]` float32 and `video_grid_thw` `[1, 3]`.

        Raises:
            InvalidArgumentError: frames more than 200 times wider than high (or the reverse).

        Example:
            ```python
            Qwen2_5_VLFamily.video_pixels(processor, frames, 336)["video_grid_thw"]  # [[6, 18, 32]] for 12 16:9 frames
            ```
        """
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        vision = processor.vision
        patch, merge = vision["patch_size"], vision["merge_size"]
        low, high = cls.pixel_budget(processor, longest_edge)
        height, width = frames.shape[1:3]
        try:
            size = smart_resize(height, width, patch * merge, low, high)
        except ValueError as error:
            raise InvalidArgumentError(f"Cannot resize {width}x{height} frames: {error}") from None
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        video = _resize(video, size)  # [T, 3, h, w] uint8
        mean = torch.tensor(vision["image_mean"]) * (1.0 / vision["rescale_factor"])
        std = torch.tensor(vision["image_std"]) * (1.0 / vision["rescale_factor"])
        video = (video.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)  # [T, 3, h, w]
        patches, grid = _patchify(video, patch, merge, vision["temporal_patch_size"])
        return {"pixel_values_videos": patches, "video_grid_thw": torch.tensor([grid], dtype=torch.long)}

    @classmethod
    def collate_video_pixels(cls, clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Concatenate the clips' patches (the vision tower takes them flat) and grids.

        Args:
            clips: `video_pixels` outputs.

        Returns:
            `pixel_values_videos` `[N, D]` float32 and `video_grid_thw` `[B, 3]` int64.

        Example:
            ```python
            batch = Qwen2_5_VLFamily.collate_video_pixels([clip_a, clip_b])
            ```
        """
        return {
            "pixel_values_videos": torch.cat([clip["pixel_values_videos"] for clip in clips]),
            "video_grid_thw": torch.cat([clip["video_grid_thw"] for clip in clips]),
        }

    @classmethod
    def video_batch_inputs(
        cls, processor: Video2LoraProcessor, input_ids: torch.Tensor, metadata: Sequence[VideoMetadata]
    ) -> dict[str, torch.Tensor]:
        """Seconds per temporal patch of each clip, and which tokens are video tokens.

        Args:
            processor: the processor.
            input_ids: `[B, S]` the padded prompts.
            metadata: one `VideoMetadata` per clip.

        Returns:
            `second_per_grid_ts` `[B]` float32 (`temporal_patch_size / sampled fps`, as `Qwen2_5_VLProcessor`)
            and `mm_token_type_ids` `[B, S]` int64 (2 on video tokens, 1 on image tokens, else 0).

        Example:
            ```python
            Qwen2_5_VLFamily.video_batch_inputs(processor, inputs["input_ids"], inputs["video_metadata"])
            ```
        """
        temporal = processor.vision["temporal_patch_size"]
        seconds = torch.tensor([temporal / _sampled_fps(meta) for meta in metadata], dtype=torch.float32)
        video, image = processor.tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, IMAGE_TOKEN])
        return {"second_per_grid_ts": seconds, "mm_token_type_ids": _token_types(input_ids, video, image)}

    @classmethod
    def video_text(
        cls,
        processor: Video2LoraProcessor,
        metadata: VideoMetadata,
        pixels: dict[str, torch.Tensor],
        text: str,
        add_generation_prompt: bool,
    ) -> str:
        """The prompt of one user turn `[video, text]`, exactly what `Qwen2_5_VLProcessor` tokenizes.

        Args:
            processor: the processor (its chat template, the checkpoint's).
            metadata: the clip's metadata (unused: the prompt holds no timestamps).
            pixels: the clip's `video_pixels` (its grid gives the token count).
            text: the instruction or question after the video.
            add_generation_prompt: append `<|im_start|>assistant\\n`.

        Returns:
            The prompt string.

        Raises:
            ValueError: the chat template renders no `<|video_pad|>` slot.

        Example:
            ```python
            Qwen2_5_VLFamily.video_text(processor, meta, pixels, "Describe the video.", True)
            ```
        """
        rendered = cls.render_turn(
            processor, text, video_token=VIDEO_TOKEN, add_generation_prompt=add_generation_prompt
        )
        count = int(pixels["video_grid_thw"][0].prod()) // processor.vision["merge_size"] ** 2
        return rendered.replace(VIDEO_TOKEN, VIDEO_TOKEN * count, 1)

    @classmethod
    def default_chat_template(cls) -> str:
        """Qwen2.5-VL's chat template, for a tokenizer that ships none.

        Returns:
            The Jinja template.

        Example:
            ```python
            tokenizer.chat_template = tokenizer.chat_template or Qwen2_5_VLFamily.default_chat_template()
            ```
        """
        return QWEN2_5_VL_CHAT_TEMPLATE

    # ---- live model ---------------------------------------------------------------------------------
    def extract_features(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream entering each decoder layer, with the video's 3-D positions.

        Unlike the default, only the pixels are cast to the model's dtype: `second_per_grid_ts` stays
        float32, since its product with `tokens_per_second` is truncated to integer positions. Inputs
        without `mm_token_type_ids` get them from `input_ids`.

        Args:
            **inputs: `input_ids`, `attention_mask` and `video_input_keys`, on the model's device.

        Returns:
            `(features, attention_mask)`: `[B, L, S, H]` in the model's dtype and `[B, S]` int64.

        Example:
            ```python
            features, mask = family.extract_features(**processor.internalization_inputs("clip.mp4", return_metadata=False))
            ```
        """
        tensors = dict(inputs)
        if "pixel_values_videos" in tensors:
            tensors["pixel_values_videos"] = tensors["pixel_values_videos"].to(self.model.dtype)
            if "mm_token_type_ids" not in tensors:
                ids, config = tensors["input_ids"], self.model.config
                tensors["mm_token_type_ids"] = _token_types(ids, config.video_token_id, config.image_token_id)
        inner = self.model.model
        kept = self.record_layer_inputs(lambda: inner(**tensors, use_cache=False, return_dict=True))
        features = torch.stack(kept, dim=1)  # [B, L, S, H]
        mask = tensors.get("attention_mask")
        if mask is None:
            mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long, device=features.device)
        return features, mask.long()

    # ---- tiny and real-shape models ------------------------------------------------------------------
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Qwen/Qwen2.5-VL-3B-Instruct's config.json (the smallest Qwen2.5-VL checkpoint); the vision tower
        # as in the Qwen2.5-VL technical report (32 blocks, full attention at 7, 15, 23, 31).
        "qwen2.5-vl-3b": {
            "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                       "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2},
            "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                     "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                     "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
            "tie_word_embeddings": True,
            "token_ids": {"vision_start_token_id": 151652, "vision_end_token_id": 151653,
                          "image_token_id": 151655, "video_token_id": 151656},
        },
    }  # fmt: skip

    @classmethod
    def build_tokenizer(cls, corpus: list[str] | None = None, vocab_size: int = 400):
        """Train a byte-level BPE tokenizer with Qwen2.5-VL's special tokens and chat template, offline.

        Args:
            corpus: training sentences; defaults to a few lines that cover the library's prompts.
            vocab_size: the BPE vocabulary size, special tokens included.

        Returns:
            A `PreTrainedTokenizerFast`: `<|im_end|>` ends a turn (eos), `<|endoftext|>` pads, no BOS.

        Example:
            ```python
            tokenizer = Qwen2_5_VLFamily.build_tokenizer(vocab_size=300)
            tokenizer.convert_tokens_to_ids("<|video_pad|>")
            ```
        """
        from .tokenization import DEFAULT_CORPUS, train_byte_level_tokenizer

        lines = [*(corpus or DEFAULT_CORPUS), "system You are a helpful assistant. user assistant"]
        return train_byte_level_tokenizer(
            lines,
            vocab_size,
            special_tokens=_TOKENIZER_SPECIAL_TOKENS,
            roles={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
            extra_special_tokens=_TOKENIZER_NAMED_TOKENS,
            chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
        )

    @classmethod
    def _config(cls, vision: dict, text: dict, token_ids: dict, tie_word_embeddings: bool):
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(
            vision_config={"model_type": "qwen2_5_vl_vision", **vision},
            text_config={"model_type": "qwen2_5_vl_text", **text},
            tie_word_embeddings=tie_word_embeddings,
            **token_ids,
        )

    @staticmethod
    def _token_ids(tokenizer) -> dict[str, int]:
        names = {"vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>",
                 "image_token_id": IMAGE_TOKEN, "video_token_id": VIDEO_TOKEN}  # fmt: skip
        return {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}

    @classmethod
    def build_tiny_model(
        cls,
        *,
        seed: int = 0,
        corpus: list[str] | None = None,
        vocab_size: int = 400,
        hidden_size: int = 64,
        num_layers: int = 4,
        intermediate_size: int = 128,
        vision_depth: int = 2,
        dtype: torch.dtype = torch.float32,
    ):
        """A tiny `Qwen2_5_VLForConditionalGeneration` and its tokenizer, built offline in well under a second.

        The vision tower keeps Qwen2.5-VL's patch (14), temporal patch (2) and merge (2) sizes, so the
        official processors apply unchanged; rotary sections `[2, 3, 3]` fill the 16-dim heads.

        Args:
            seed: the seed of the random weights.
            corpus: sentences to train the tokenizer on (see `build_tokenizer`).
            vocab_size: the tokenizer's vocabulary size.
            hidden_size: text hidden size `H` (4 heads, 2 key/value heads).
            num_layers: text decoder layers `L`.
            intermediate_size: the decoder MLP width (`down_proj` has `d_in = intermediate_size`).
            vision_depth: vision tower blocks (the last one has full attention).
            dtype: the weights' dtype.

        Returns:
            `(model, tokenizer)`.

        Example:
            ```python
            model, tokenizer = Qwen2_5_VLFamily.build_tiny_model(seed=0, num_layers=2)
            ```
        """
        tokenizer = cls.build_tokenizer(corpus, vocab_size)
        half = (
            hidden_size // 4 // 2
        )  # rotary pairs per head, split (t, h, w) 1 : 1.5 : 1.5 as the 3B's [16, 24, 24]
        t_section = half // 4
        sections = [t_section, (half - t_section) // 2, half - t_section - (half - t_section) // 2]
        text = {
            "hidden_size": hidden_size, "num_hidden_layers": num_layers, "intermediate_size": intermediate_size,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096, "rope_scaling": {"type": "mrope", "mrope_section": sections},
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id,
        }  # fmt: skip
        vision = {"depth": vision_depth, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": hidden_size, "fullatt_block_indexes": [vision_depth - 1], "tokens_per_second": 2}  # fmt: skip
        config = cls._config(vision, text, cls._token_ids(tokenizer), tie_word_embeddings=False)
        torch.manual_seed(seed)
        model = cls.model_class()(config).to(dtype).eval()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = None
        return model, tokenizer

    @classmethod
    def save_tiny_model(
        cls, model, tokenizer, path, *, min_pixels: int = 28 * 28, max_pixels: int = 112 * 112
    ):
        """Save a tiny model with its tokenizer, preprocessing config and chat template, as Qwen2.5-VL repos ship them.

        Like the Hub checkpoints, only `preprocessor_config.json` holds the pixel range, which the
        official video processor (and so `Video2LoraProcessor`) also uses for videos.

        Args:
            model: a model from `build_tiny_model`.
            tokenizer: its tokenizer.
            path: the output folder.
            min_pixels: the smallest frame size in pixels.
            max_pixels: the largest frame size in pixels (112 x 112: at most 16 tokens per two frames).

        Returns:
            `path`, which `from_pretrained` (model, tokenizer, `Video2LoraProcessor` and, with torchvision,
            `Qwen2_5_VLProcessor`) can load.

        Example:
            ```python
            path = Qwen2_5_VLFamily.save_tiny_model(*Qwen2_5_VLFamily.build_tiny_model(), "tiny-qwen2_5_vl")
            ```
        """
        import json
        from pathlib import Path

        path = Path(path)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        vision = model.config.vision_config
        preprocessor = {
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
            "do_convert_rgb": True, "do_resize": True, "do_rescale": True, "do_normalize": True,
            "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD, "rescale_factor": 1 / 255, "resample": BICUBIC,
            "min_pixels": min_pixels, "max_pixels": max_pixels, "patch_size": vision.patch_size,
            "temporal_patch_size": vision.temporal_patch_size, "merge_size": vision.spatial_merge_size,
        }  # fmt: skip
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
        (path / "chat_template.json").write_text(
            json.dumps({"chat_template": QWEN2_5_VL_CHAT_TEMPLATE}, indent=2)
        )
        return path

    @classmethod
    def build_random_model(
        cls, preset: str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0, tokenizer=None
    ):
        """Qwen2.5-VL's real shapes with random weights, built directly in `dtype` (no fp32 copy).

        Args:
            preset: a key of `presets`: `"qwen2.5-vl-3b"`.
            dtype: the weights' dtype.
            seed: the seed of the random weights.
            tokenizer: an offline tokenizer whose special-token ids the model should use (timing is unchanged).

        Returns:
            The model in eval mode.

        Example:
            ```python
            vlm = Qwen2_5_VLFamily.build_random_model("qwen2.5-vl-3b", dtype=torch.bfloat16)
            ```
        """
        shapes = cls.presets[preset]
        ids = cls._token_ids(tokenizer) if tokenizer is not None else shapes["token_ids"]
        eos = tokenizer.eos_token_id if tokenizer is not None else 151645
        text = {**shapes["text"], "pad_token_id": tokenizer.pad_token_id if tokenizer else 151643,
                "bos_token_id": None, "eos_token_id": eos}  # fmt: skip
        config = cls._config(shapes["vision"], text, ids, shapes["tie_word_embeddings"])
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            torch.manual_seed(seed)
            model = cls.model_class()(config).eval()
        finally:
            torch.set_default_dtype(previous)
        model.generation_config.pad_token_id = text["pad_token_id"]
        model.generation_config.eos_token_id = eos
        return model


_TOKENIZER_NAMED_TOKENS = {"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN,
                           "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}  # fmt: skip
_TOKENIZER_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                             "<|vision_pad|>", IMAGE_TOKEN, VIDEO_TOKEN]  # fmt: skip
