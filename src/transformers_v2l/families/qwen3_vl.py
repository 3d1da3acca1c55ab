"""Qwen3-VL (`Qwen3VLForConditionalGeneration`, a Qwen3 text decoder with DeepStack): what differs from Qwen2.5-VL.

The decoder path, target modules, 3-D positions from `mm_token_type_ids`, the resize kernel and the
patch layout are Qwen2.5-VL's (`Qwen2_5_VLFamily`). Qwen3-VL's video processor and prompt differ, and
are reproduced token for token and pixel for pixel against transformers 5.25's `Qwen3VLProcessor`:

* Frames: `Qwen3VLVideoProcessor.sample_frames` (`linspace(0, total - 1, n).round()`, `n` frames at
  the target rate, at least 4, no rounding to pairs).
* Pixels: 16 px patches (32 px merged), normalization 0.5 / 0.5, and the video's `smart_resize`,
  whose pixel budget covers all frames: here `longest_edge**2` per frame times the frame count,
  capped by the checkpoint's `max_pixels` (a whole-video budget for Qwen3-VL).
* Prompt: the video slot's `<|video_pad|>` becomes, per temporal patch, `<{t:.1f} seconds>` (the mean
  of the patch's two frame times) then `<|vision_start|>`, one `<|video_pad|>` per merged patch of
  the frame pair and `<|vision_end|>`. A template that wraps the slot in vision markers (as
  Qwen2.5-VL's) has the whole wrapper replaced, so the markers never nest (Qwen's own processor, and
  transformers from 5.25; 5.24 kept the outer pair).
* No `second_per_grid_ts`: the timestamps in the text carry time; positions restart per patch.

Features (DeepStack): Qwen3-VL adds vision-tower features to the hidden states of the video tokens
after each of the first `len(deepstack_visual_indexes)` decoder layers. The hypernetwork reads the
residual stream *entering* every decoder layer (the family's pre-hooks), which includes those
additions, exactly what each layer computes on. transformers' `output_hidden_states` records layer
outputs before the addition, so its entries 1..k differ from the layer inputs on the video tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .base import FamilyDefaults
from .qwen2_5_vl import (
    BICUBIC,
    IMAGE_TOKEN,
    MIN_FRAMES,
    VIDEO_TOKEN,
    Qwen2_5_VLFamily,
    _patchify,
    _resize,
    _token_types,
)

if TYPE_CHECKING:
    from ..processing_video2lora import Video2LoraProcessor
    from ..video_sampling import VideoMetadata

__all__ = ["Qwen3VLFamily"]

# Qwen3VLVideoProcessor's defaults; min/max_pixels bound the whole video (all frames), not one frame
_VIDEO_PROCESSOR_DEFAULTS = {
    "min_pixels": 128 * 32 * 32, "max_pixels": 32 * 32 * 768, "patch_size": 16, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255,
    "resample": BICUBIC,
}  # fmt: skip


class Qwen3VLFamily(Qwen2_5_VLFamily):
    """Qwen3-VL (`Qwen3VLForConditionalGeneration`): Qwen2.5-VL's layout with DeepStack, timestamps and 16 px patches.

    Args:
        model: a loaded `Qwen3VLForConditionalGeneration`.

    Example:
        ```python
        family = Qwen3VLFamily(vlm)
        features, mask = family.extract_features(**inputs)  # [B, L, S, H]: DeepStack additions included
        ```
    """

    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    model_class_name = "Qwen3VLForConditionalGeneration"
    processor_classes = ("Qwen3VLProcessor",)
    video_input_keys = ("pixel_values_videos", "video_grid_thw", "mm_token_type_ids")
    # 12 frames at 2 fps as for Qwen2.5-VL; L = 384 gives 144 tokens per two frames with 32 px merged
    # patches (the same count as Qwen2.5-VL at 336) when the checkpoint's video budget allows it.
    defaults = FamilyDefaults(
        num_frames=12, longest_edge=384, fps=2.0, skip_secs=0.0, vision=_VIDEO_PROCESSOR_DEFAULTS
    )

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
        """Qwen3VLVideoProcessor's `sample_frames` at `fps=target_fps`, with `num_frames` as its `max_frames`.

        `n = min(max(int(duration * target_fps), 4), num_frames, total)` frames at
        `linspace(0, total - 1, n).round()`; `skip_secs > 0` first drops that many seconds at each end.

        Args:
            total_num_frames: frames in the clip.
            fps: the clip's native frame rate.
            num_frames: the most frames to sample.
            target_fps: frames sampled per second of video.
            skip_secs: seconds dropped at each end (Qwen3-VL: 0).

        Returns:
            Sorted frame indices.

        Raises:
            InvalidArgumentError: an argument out of range.

        Example:
            ```python
            Qwen3VLFamily.sample_frame_indices(300, 30.0, num_frames=12)  # 12 frames over 10 s
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
        n = min(max(int(count / fps * target_fps), MIN_FRAMES), num_frames, count)
        return (np.linspace(0, count - 1, n).round().astype(int) + first).tolist()

    @classmethod
    def pixel_budget(
        cls, processor: Video2LoraProcessor, longest_edge: int | None = None, num_frames: int | None = None
    ) -> tuple[int, int]:
        """`(min_pixels, max_pixels)` of a whole clip: `longest_edge**2` per frame, within the checkpoint's video budget.

        Args:
            processor: the processor (its `vision` settings).
            longest_edge: defaults to the processor's.
            num_frames: the clip's frames; defaults to the processor's `num_frames`.

        Returns:
            What the official processor takes as `size={"shortest_edge": ..., "longest_edge": ...}`.

        Example:
            ```python
            Qwen3VLFamily.pixel_budget(processor, 384, 12)  # (131072, 786432) with the default budget
            ```
        """
        vision, edge = processor.vision, longest_edge or processor.longest_edge
        budget = min(vision["max_pixels"], edge * edge * (num_frames or processor.num_frames))
        return min(vision["min_pixels"], budget), budget

    @classmethod
    def tokens_per_frame(cls, processor: Video2LoraProcessor) -> int:
        """The most visual tokens a frame adds at `num_frames` frames (the budget's share, per frame of a pair).

        Args:
            processor: the processor.

        Returns:
            The token count per frame (timestamps and markers excluded).

        Example:
            ```python
            Qwen3VLFamily.tokens_per_frame(processor)  # 32 with the default 786432-pixel budget at 12 frames
            ```
        """
        vision = processor.vision
        unit = (vision["patch_size"] * vision["merge_size"]) ** 2
        per_frame = cls.pixel_budget(processor)[1] // processor.num_frames
        return per_frame // unit // vision["temporal_patch_size"]

    @classmethod
    def video_pixels(
        cls, processor: Video2LoraProcessor, frames: np.ndarray, longest_edge: int
    ) -> dict[str, torch.Tensor]:
        """Resize, normalize and patchify one clip's frames as `Qwen3VLVideoProcessor` does.

        Args:
            processor: the processor (its `vision` settings).
            frames: `[T, H, W, 3]` uint8 RGB frames (one frame is taken as two, like its patch).
            longest_edge: `longest_edge**2` pixels per frame (see `pixel_budget`).

        Returns:
            `pixel_values_videos` `[t * gh * gw, 3 * temporal * patch**2]` float32 and `video_grid_thw` `[1, 3]`.

        Raises:
            InvalidArgumentError: frames more than 200 times wider than high (or the reverse).

        Example:
            ```python
            Qwen3VLFamily.video_pixels(processor, frames, 384)["video_grid_thw"]
            ```
        """
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        vision = processor.vision
        patch, merge, temporal = vision["patch_size"], vision["merge_size"], vision["temporal_patch_size"]
        count, height, width = max(frames.shape[0], temporal), frames.shape[1], frames.shape[2]
        low, high = cls.pixel_budget(processor, longest_edge, count)
        try:
            size = smart_resize(count, height, width, temporal, patch * merge, low, high)
        except ValueError as error:
            raise InvalidArgumentError(f"Cannot resize {width}x{height} frames: {error}") from None
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        video = _resize(video, size)  # [T, 3, h, w] uint8
        mean = torch.tensor(vision["image_mean"]) * (1.0 / vision["rescale_factor"])
        std = torch.tensor(vision["image_std"]) * (1.0 / vision["rescale_factor"])
        video = (video.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)  # [T, 3, h, w]
        patches, grid = _patchify(video, patch, merge, temporal)
        return {"pixel_values_videos": patches, "video_grid_thw": torch.tensor([grid], dtype=torch.long)}

    @classmethod
    def video_batch_inputs(
        cls, processor: Video2LoraProcessor, input_ids: torch.Tensor, metadata: Sequence[VideoMetadata]
    ) -> dict[str, torch.Tensor]:
        """Which tokens are video tokens (Qwen3-VL has no `second_per_grid_ts`: time is in the text).

        Args:
            processor: the processor.
            input_ids: `[B, S]` the padded prompts.
            metadata: one `VideoMetadata` per clip (unused).

        Returns:
            `mm_token_type_ids` `[B, S]` int64.

        Example:
            ```python
            Qwen3VLFamily.video_batch_inputs(processor, inputs["input_ids"], inputs["video_metadata"])
            ```
        """
        video, image = processor.tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, IMAGE_TOKEN])
        return {"mm_token_type_ids": _token_types(input_ids, video, image)}

    @classmethod
    def video_text(
        cls,
        processor: Video2LoraProcessor,
        metadata: VideoMetadata,
        pixels: dict[str, torch.Tensor],
        text: str,
        add_generation_prompt: bool,
    ) -> str:
        """The prompt of one user turn `[video, text]`, exactly what `Qwen3VLProcessor` tokenizes.

        Args:
            processor: the processor (its chat template, the checkpoint's).
            metadata: the clip's metadata (frame indices and rate give the timestamps).
            pixels: the clip's `video_pixels` (its grid gives the token counts).
            text: the instruction or question after the video.
            add_generation_prompt: append the assistant turn's opening.

        Returns:
            The prompt string.

        Raises:
            ValueError: the chat template renders no `<|video_pad|>` slot.

        Example:
            ```python
            Qwen3VLFamily.video_text(processor, meta, pixels, "Describe the video.", True)
            ```
        """
        rendered = cls.render_turn(
            processor, text, video_token=VIDEO_TOKEN, add_generation_prompt=add_generation_prompt
        )
        grid_t, grid_h, grid_w = pixels["video_grid_thw"][0].tolist()
        per_patch = grid_h * grid_w // processor.vision["merge_size"] ** 2
        temporal = processor.vision["temporal_patch_size"]
        indices = list(metadata.frame_indices) or [0]
        indices += [indices[-1]] * (-len(indices) % temporal)  # the patch's padding frame
        seconds = [index / (metadata.fps or 24.0) for index in indices]
        slots = "".join(
            f"<{(seconds[i] + seconds[i + temporal - 1]) / 2:.1f} seconds><|vision_start|>"
            + VIDEO_TOKEN * per_patch + "<|vision_end|>"
            for i in range(0, temporal * grid_t, temporal)
        )  # fmt: skip
        wrapped = f"<|vision_start|>{VIDEO_TOKEN}<|vision_end|>"  # every slot carries its own markers
        return rendered.replace(wrapped if wrapped in rendered else VIDEO_TOKEN, slots, 1)

    # ---- tiny and real-shape models ------------------------------------------------------------------
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Qwen/Qwen3-VL-2B-Instruct, the smallest Qwen3-VL (a Qwen3-1.7B-sized decoder): shapes as in
        # torchtitan's experiments/qwen3_vl "2B" and Qwen3-VL configs (DeepStack after ViT blocks 5, 11, 17).
        "qwen3-vl-2b": {
            "vision": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                       "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]},
            "text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                     "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                     "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "rope_scaling": {
                         "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                         "mrope_interleaved": True}},
            "tie_word_embeddings": True,
            "token_ids": {"vision_start_token_id": 151652, "vision_end_token_id": 151653,
                          "image_token_id": 151655, "video_token_id": 151656},
        },
    }  # fmt: skip

    @classmethod
    def _config(cls, vision: dict, text: dict, token_ids: dict, tie_word_embeddings: bool):
        from transformers import Qwen3VLConfig

        if "mrope_section" in text.get("rope_scaling", {}):  # Qwen3-VL interleaves the sections
            text = {
                **text,
                "rope_scaling": {"rope_type": "default", **text["rope_scaling"], "mrope_interleaved": True},
            }
            text["rope_scaling"].pop("type", None)
        vision = {
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": list(range(vision["depth"])),
            **vision,
        }
        return Qwen3VLConfig(
            vision_config={"model_type": "qwen3_vl", **{k: v for k, v in vision.items() if k != "fullatt_block_indexes"
                                                          and k != "tokens_per_second"}},
            text_config={"model_type": "qwen3_vl_text", "head_dim": text["hidden_size"] // text["num_attention_heads"], **text},
            tie_word_embeddings=tie_word_embeddings,
            **token_ids,
        )  # fmt: skip

    @classmethod
    def save_tiny_model(
        cls, model, tokenizer, path, *, min_pixels: int = 32 * 32, max_pixels: int = 12 * 128 * 128
    ):
        """Save a tiny model with its tokenizer, image and video processor configs and chat template.

        Args:
            model: a model from `build_tiny_model`.
            tokenizer: its tokenizer.
            path: the output folder.
            min_pixels: the smallest video size in pixels (all frames).
            max_pixels: the largest video size in pixels (all frames; 12 frames of 128 x 128 by default).

        Returns:
            `path`, which `from_pretrained` (model, tokenizer, `Video2LoraProcessor` and, with torchvision,
            `Qwen3VLProcessor`) can load.

        Example:
            ```python
            path = Qwen3VLFamily.save_tiny_model(*Qwen3VLFamily.build_tiny_model(), "tiny-qwen3_vl")
            ```
        """
        import json
        from pathlib import Path

        path = Path(Qwen2_5_VLFamily.save_tiny_model(model, tokenizer, path))
        vision = model.config.vision_config
        shared = {"patch_size": vision.patch_size, "temporal_patch_size": vision.temporal_patch_size,
                  "merge_size": vision.spatial_merge_size, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                  "processor_class": "Qwen3VLProcessor"}  # fmt: skip
        image = json.loads((path / "preprocessor_config.json").read_text())
        (path / "preprocessor_config.json").write_text(json.dumps({**image, **shared}, indent=2))
        video = {"video_processor_type": "Qwen3VLVideoProcessor", "size": {"shortest_edge": min_pixels,
                 "longest_edge": max_pixels}, "fps": 2, "do_sample_frames": True, **shared}  # fmt: skip
        (path / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
        return path
