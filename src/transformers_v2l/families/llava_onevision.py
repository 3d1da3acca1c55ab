"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`, a Qwen2 text decoder): everything we know about it.

Prompt and pixels are transformers' `LlavaOnevisionProcessor`'s for one user turn `[video, text]`, token for
token and pixel for pixel (tests/test_family_llava_onevision.py, with torchvision):

* Prompt: the checkpoint's template renders `<|im_start|>user <video>\\n{text}<|im_end|>`, and the `<video>`
  becomes `frames * ceil(sqrt(num_image_tokens) / 2) ** 2 + 1` video tokens: each frame's patch grid (27 x 27
  for SigLIP at 384 px) pooled 2 x 2 by the model (196 tokens), plus one `image_newline` after the last frame.
* Pixels: `LlavaOnevisionVideoProcessor`'s (torchvision) on CPU: each frame squashed to the vision tower's
  square tile with antialiased BICUBIC on uint8 (torch's `interpolate`, the kernel torchvision calls), then a
  fused rescale and normalize. (`LlavaOnevisionImageProcessorPil` runs without torchvision but pads multi-image
  inputs to squares and tiles single images: not the video path.)
* Frames: `num_frames` spread uniformly (`sample_frame_indices`), with no frame rate and no seconds skipped.

A batch whose videos have different frame counts (which the official processor refuses) is encoded with
each row's own count (`merged_embeddings`). Adapters are PEFT adapters of `model.language_model.layers`;
vLLM (0.32) maps those keys to its `language_model.model.layers` but has no LoRA support for this class.
Tiny and real-shape random models are built at the end.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .base import FamilyDefaults, Video2LoraFamily

if TYPE_CHECKING:
    from ..processing_video2lora import Video2LoraProcessor
    from ..video_sampling import VideoMetadata

__all__ = ["LLAVA_ONEVISION_CHAT_TEMPLATE", "LlavaOnevisionFamily"]

# The chat template the llava-hf LLaVA-OneVision checkpoints ship (chat_template.json): images, then
# videos, then "\n" + text; no system turn; no newline after <|im_end|>.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
VIDEO_TOKEN = "<video>"
_PREPROCESSOR = "preprocessor_config.json"
_PIXEL_KEYS = ("image_mean", "image_std", "rescale_factor", "resample")
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL resample codes torchvision maps to these modes
_ATTENTION, _MLP = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")
_MODULE_SUBPATHS = {m: f"self_attn.{m}" for m in _ATTENTION} | {m: f"mlp.{m}" for m in _MLP}  # a Qwen2 layer


def _video_tokens(num_frames: int, num_image_tokens: int) -> int:
    """`LlavaOnevisionProcessor.replace_video_token`'s count: each frame's patch grid pooled 2 x 2, one newline."""
    pooled = math.ceil(int(math.sqrt(num_image_tokens)) / 2)
    return num_frames * pooled * pooled + 1


def _pixels(frames: np.ndarray, vision: dict[str, Any]) -> torch.Tensor:
    """`LlavaOnevisionVideoProcessor` on CPU: uint8 antialiased resize to the tile, fused rescale and normalize."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W] uint8
    tile, mode = vision["image_size"], _RESAMPLE[vision["resample"]]
    if tuple(video.shape[-2:]) != (tile, tile):  # torchvision's resize: uint8 in, uint8 out
        video = torch.nn.functional.interpolate(
            video, size=[tile, tile], mode=mode, align_corners=False, antialias=True
        )
    mean = torch.tensor(vision["image_mean"]) * (1.0 / vision["rescale_factor"])
    std = torch.tensor(vision["image_std"]) * (1.0 / vision["rescale_factor"])
    return (video.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)  # [T, 3, E, E]


class LlavaOnevisionFamily(Video2LoraFamily):
    """LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`: SigLIP, a 2-layer projector, a Qwen2 decoder).

    A video goes to the vision tower as `pixel_values_videos` `[B, T, 3, E, E]`; each frame's patch
    features are pooled 2 x 2 and the clip's tokens end with one `image_newline`.

    Args:
        model: a loaded `LlavaOnevisionForConditionalGeneration`.

    Example:
        ```python
        family = LlavaOnevisionFamily(vlm)
        family.module_path(3, "down_proj")  # 'model.language_model.layers.3.mlp.down_proj'
        ```
    """

    name = "llava_onevision"
    model_types = ("llava_onevision",)
    model_class_name = "LlavaOnevisionForConditionalGeneration"
    processor_classes = ("LlavaOnevisionProcessor",)
    layers_path = "model.language_model.layers"
    module_subpaths: ClassVar[dict[str, str]] = dict(_MODULE_SUBPATHS)
    video_input_keys = ("pixel_values_videos",)
    end_of_turn_token = "<|im_end|>"
    # 8 frames: the llava-hf model card's and transformers' video examples (1569 tokens at 384 px). The pixel
    # settings are llava-onevision-qwen2-0.5b-ov-hf's video processor's. No seconds skipped (uniform rule).
    defaults = FamilyDefaults(
        num_frames=8, longest_edge=384, fps=1.0, skip_secs=0.0,
        vision={
            "image_size": 384,  # the square tile every frame is squashed to (the vision tower's input)
            "num_image_tokens": 729,  # (image_size // patch_size) ** 2 patches per frame before pooling
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255,
            "resample": 3,  # PIL BICUBIC
        },
    )  # fmt: skip

    # ---- processing --------------------------------------------------------------------------------
    @classmethod
    def sample_frame_indices(
        cls,
        total_num_frames: int,
        fps: float,
        *,
        num_frames: int,
        target_fps: float = 1,
        skip_secs: float = 0,
    ) -> list[int]:
        """LLaVA-OneVision's frame rule, `LlavaOnevisionVideoProcessor.sample_frames(num_frames=n)`'s: uniform.

        `arange(n) * total_num_frames // n` with `n = min(num_frames, total_num_frames)` (a shorter video gives
        all its frames). The signature is `video_sampling.sample_frame_indices`'s.

        Args:
            total_num_frames: frames in the video.
            fps: the video's frame rate; like `target_fps` and `skip_secs`, not used by this rule.
            num_frames: frames to sample.
            target_fps: not used.
            skip_secs: not used.

        Returns:
            Sorted, unique frame indices.

        Raises:
            InvalidArgumentError: a count below 1.

        Example:
            ```python
            LlavaOnevisionFamily.sample_frame_indices(300, 30.0, num_frames=8)  # [0, 37, 75, ..., 262]
            ```
        """
        for label, value in (("total_num_frames", total_num_frames), ("num_frames", num_frames)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidArgumentError(f"{label} must be an integer >= 1, got {value!r}.")
        count = min(int(num_frames), int(total_num_frames))
        return (np.arange(count, dtype=np.int64) * int(total_num_frames) // count).tolist()

    @classmethod
    def vision_settings_from_files(cls, read_json) -> dict[str, Any]:
        """LLaVA-OneVision's pixel settings from a checkpoint's processor and model configs.

        Args:
            read_json: returns one of the checkpoint's JSON files by name, or `None`.

        Returns:
            Tile, normalization and resampling of the image processor, then of the video processor (either file
            name of the llava-hf repos), and `num_image_tokens` (`processor_config.json`, else from `config.json`).

        Example:
            ```python
            LlavaOnevisionFamily.vision_settings_from_files(read_json)["num_image_tokens"]  # 729
            ```
        """
        processor = read_json("processor_config.json") or {}
        settings: dict[str, Any] = {}
        sources = [
            read_json(_PREPROCESSOR),
            processor.get("image_processor"),
            read_json("video_preprocessor_config.json") or read_json(f"video_processor/{_PREPROCESSOR}"),
            processor.get("video_processor"),
        ]
        for source in filter(None, sources):
            size = source.get("size") or {}
            if size.get("height") is not None and size.get("height") == size.get("width"):
                settings["image_size"] = int(size["height"])
            settings.update({key: source[key] for key in _PIXEL_KEYS if key in source})
        config = read_json("config.json") or {}
        vision = config.get("vision_config") or {}
        if "num_image_tokens" in processor:
            settings["num_image_tokens"] = int(processor["num_image_tokens"])
        elif "image_size" in vision and "patch_size" in vision:
            settings["num_image_tokens"] = (vision["image_size"] // vision["patch_size"]) ** 2
        if "image_size" not in settings and "image_size" in vision:
            settings["image_size"] = int(vision["image_size"])
        return settings

    @classmethod
    def vision_settings_for(cls, config: Any, **overrides: Any) -> dict[str, Any]:
        """LLaVA-OneVision's pixel settings for a model config: the tile is the vision tower's image size.

        Args:
            config: a `LlavaOnevisionConfig`.
            **overrides: other pixel settings (for example `resample=2`).

        Returns:
            The settings over `defaults.vision`.

        Example:
            ```python
            LlavaOnevisionFamily.vision_settings_for(vlm.config)["num_image_tokens"]  # 729 at 384 px
            ```
        """
        edge, patch = config.vision_config.image_size, config.vision_config.patch_size
        return {
            **cls.defaults.vision,
            "image_size": edge,
            "num_image_tokens": (edge // patch) ** 2,
            **overrides,
        }

    @classmethod
    def tokens_per_frame(cls, processor: Video2LoraProcessor) -> int:
        """Visual tokens of one frame after the model's 2 x 2 pooling (the clip adds one `image_newline`).

        Args:
            processor: the processor.

        Returns:
            `ceil(sqrt(num_image_tokens) / 2) ** 2`.

        Example:
            ```python
            LlavaOnevisionFamily.tokens_per_frame(processor)  # 196 at 384 px
            ```
        """
        return _video_tokens(1, processor.vision["num_image_tokens"]) - 1

    @classmethod
    def check_vision_settings(cls, vision: dict[str, Any]) -> None:
        """Raise `ValueError` naming the key when a LLaVA-OneVision pixel setting is invalid.

        Args:
            vision: the processor's pixel settings.

        Example:
            ```python
            LlavaOnevisionFamily.check_vision_settings({**LlavaOnevisionFamily.defaults.vision, "resample": 2})
            ```
        """
        if vision["resample"] not in _RESAMPLE:
            raise ValueError(f"resample must be 2 (BILINEAR) or 3 (BICUBIC), got {vision['resample']!r}.")
        for key in ("image_size", "num_image_tokens"):
            value = vision[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        if math.isqrt(tokens := vision["num_image_tokens"]) ** 2 != tokens:
            raise ValueError(f"num_image_tokens must be a square patch grid (729 = 27 x 27), got {tokens}.")

    @classmethod
    def video_pixels(
        cls, processor: Video2LoraProcessor, frames: np.ndarray, longest_edge: int
    ) -> dict[str, torch.Tensor]:
        """Squash, rescale and normalize one clip's frames into vision-tower tiles.

        Args:
            processor: the processor (its `vision` settings).
            frames: `[T, H, W, 3]` uint8 RGB frames.
            longest_edge: not used: LLaVA-OneVision squashes every frame to the square tile `vision["image_size"]`.

        Returns:
            `{"pixel_values_videos": [T, 3, E, E]}` float32, `E = image_size`.

        Example:
            ```python
            LlavaOnevisionFamily.video_pixels(processor, frames, 384)["pixel_values_videos"].shape  # [T, 3, 384, 384]
            ```
        """
        return {"pixel_values_videos": _pixels(frames, processor.vision)}

    @classmethod
    def collate_video_pixels(cls, clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Batch the clips, zero-padding shorter clips' frames (`extract_features` reads each row's own count).

        Args:
            clips: `{"pixel_values_videos": [T_i, 3, E, E]}` per clip.

        Returns:
            `pixel_values_videos` `[B, T, 3, E, E]` float32, `T = max(T_i)`.

        Example:
            ```python
            batch = LlavaOnevisionFamily.collate_video_pixels([clip_a, clip_b])
            ```
        """
        pixels = [clip["pixel_values_videos"] for clip in clips]  # [T_i, 3, E, E] each
        count = max(p.shape[0] for p in pixels)
        padded = [torch.nn.functional.pad(p, (0, 0, 0, 0, 0, 0, 0, count - p.shape[0])) for p in pixels]
        return {"pixel_values_videos": torch.stack(padded)}  # [B, T, 3, E, E]

    @classmethod
    def video_text(
        cls, processor: Video2LoraProcessor, metadata: VideoMetadata, pixels: dict[str, torch.Tensor], text: str,
        add_generation_prompt: bool,
    ) -> str:  # fmt: skip
        """The prompt of one user turn `[video, text]`, exactly what `LlavaOnevisionProcessor` tokenizes.

        Args:
            processor: the processor (its chat template and `num_image_tokens`).
            metadata: the clip's metadata (not used: the prompt holds no timestamps).
            pixels: the clip's `video_pixels` (its frame count).
            text: the instruction or question after the video.
            add_generation_prompt: append `<|im_start|>assistant\\n`.

        Returns:
            The prompt string, its `<video>` expanded to `frames x tokens_per_frame + 1` video tokens.

        Raises:
            ValueError: the chat template renders no `<video>` for a video item.

        Example:
            ```python
            LlavaOnevisionFamily.video_text(processor, meta, pixels, "Describe the video.", True)
            ```
        """
        video_token = getattr(processor.tokenizer, "video_token", None) or VIDEO_TOKEN
        rendered = cls.render_turn(
            processor, text, video_token=video_token, add_generation_prompt=add_generation_prompt
        )
        count = _video_tokens(pixels["pixel_values_videos"].shape[0], processor.vision["num_image_tokens"])
        return rendered.replace(video_token, video_token * count, 1)

    @classmethod
    def default_chat_template(cls) -> str:
        """LLaVA-OneVision's chat template, for a tokenizer that ships none.

        Returns:
            The Jinja template.

        Example:
            ```python
            tokenizer.chat_template = tokenizer.chat_template or LlavaOnevisionFamily.default_chat_template()
            ```
        """
        return LLAVA_ONEVISION_CHAT_TEMPLATE

    # ---- features and generation --------------------------------------------------------------------
    def extract_features(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual stream entering each Qwen2 layer; rows may hold videos of different frame counts.

        Rows of equal frame counts run the model's own forward; otherwise the decoder starts from `merged_embeddings`.

        Args:
            **inputs: `input_ids`, `attention_mask` and `pixel_values_videos` on the model's device.

        Returns:
            `(features, attention_mask)`: `[B, L, S, H]` in the model's dtype and `[B, S]` int64.

        Raises:
            InvalidArgumentError: a row's video tokens do not match a whole number of frames.

        Example:
            ```python
            features, mask = family.extract_features(**processor.internalization_inputs(["a.mp4", "b.mp4"]))
            ```
        """
        pixels = inputs.get("pixel_values_videos")
        if pixels is None or self._uniform(inputs["input_ids"], pixels):
            return super().extract_features(**inputs)
        mask = inputs.get("attention_mask")
        embeds = self.merged_embeddings(inputs["input_ids"], pixels)  # [B, S, H]
        decoder = self.model.model.language_model
        kept = self.record_layer_inputs(
            lambda: decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        )
        features = torch.stack(kept, dim=1)  # [B, L, S, H]
        if mask is None:
            mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long, device=features.device)
        return features, mask.long()

    def generation_inputs(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs for `generate`: unchanged, or `inputs_embeds` when the rows' videos have different frame counts.

        The model takes one frame count per batch; with `inputs_embeds` (and `input_ids`, which `generate`
        keeps in its output) every row is answered as it would be alone.

        Args:
            **inputs: processor outputs on the model's device.

        Returns:
            `inputs` as they are, or `input_ids`, `inputs_embeds` `[B, S, H]` and `attention_mask`.

        Example:
            ```python
            output = vlm.generate(**family.generation_inputs(**inputs), max_new_tokens=16)
            ```
        """
        pixels = inputs.get("pixel_values_videos")
        if pixels is None or self._uniform(inputs["input_ids"], pixels):
            return dict(inputs)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        embeds = self.merged_embeddings(ids, pixels)  # [B, S, H]
        return {"input_ids": ids, "inputs_embeds": embeds, "attention_mask": mask}

    @torch.no_grad()
    def merged_embeddings(self, input_ids: torch.Tensor, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Token embeddings with each row's video features in its video tokens, as `LlavaOnevisionModel.forward` merges them.

        Each row's frame count is read from its video tokens; the vision tower sees only real frames.

        Args:
            input_ids: `[B, S]`.
            pixel_values_videos: `[B, T, 3, E, E]`, shorter videos zero-padded to `T` frames.

        Returns:
            `[B, S, H]` in the model's dtype.

        Raises:
            InvalidArgumentError: a row's video tokens do not match a whole number of at most `T` frames.

        Example:
            ```python
            embeds = family.merged_embeddings(inputs["input_ids"], inputs["pixel_values_videos"])
            ```
        """
        inner = self.model.model
        frames = self._frames_per_row(input_ids, pixel_values_videos.shape[1])
        real = torch.cat([pixel_values_videos[i, :n] for i, n in enumerate(frames)])[None]  # [1, N, 3, E, E]
        output = inner.get_video_features(real.to(self.model.dtype), return_dict=True)
        video = output.pooler_output[0]  # [N * per_frame + 1, H]
        per_frame, rows, start = (video.shape[0] - 1) // real.shape[1], [], 0
        for count in frames:  # each row: its frames' tokens, then the image_newline
            rows += [video[start : start + count * per_frame], video[-1:]]
            start += count * per_frame
        embeds = inner.get_input_embeddings()(input_ids)  # [B, S, H]
        placeholders = (input_ids == self.config.video_token_id).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(placeholders, torch.cat(rows).to(embeds.dtype))

    def _uniform(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> bool:
        return all(count == pixels.shape[1] for count in self._frames_per_row(input_ids, pixels.shape[1]))

    def _frames_per_row(self, input_ids: torch.Tensor, padded: int) -> list[int]:
        vision = self.config.vision_config
        per_frame = _video_tokens(1, (vision.image_size // vision.patch_size) ** 2) - 1
        counts = (input_ids == self.config.video_token_id).sum(-1).tolist()
        frames = [(count - 1) // per_frame for count in counts]
        if any(c < 1 + per_frame or (c - 1) % per_frame or n > padded for c, n in zip(counts, frames)):
            raise InvalidArgumentError(
                f"Each row needs 1 + frames x {per_frame} video tokens for at most {padded} frames; got {counts}."
            )
        return frames

    # ---- tiny and real-shape models ------------------------------------------------------------------
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "llava-ov-0.5b": {  # llava-hf/llava-onevision-qwen2-0.5b-ov-hf: SigLIP so400m (26 layers) + Qwen2-0.5B
            "vision": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26,
                       "num_attention_heads": 16, "image_size": 384, "patch_size": 14},
            "text": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 152000,
                     "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": True},
        },
    }  # fmt: skip

    @classmethod
    def build_tokenizer(cls, corpus: list[str] | None = None, vocab_size: int = 400):
        """Train a byte-level BPE tokenizer with LLaVA-OneVision's (Qwen2's) special tokens and chat template, offline.

        Args:
            corpus: training sentences; defaults to a few lines that cover the library's prompts.
            vocab_size: the BPE vocabulary size, special tokens included.

        Returns:
            A `PreTrainedTokenizerFast` without a BOS token (as Qwen2's), `<|im_end|>` as EOS and the chat template.

        Example:
            ```python
            tokenizer = LlavaOnevisionFamily.build_tokenizer(vocab_size=300)
            tokenizer.convert_tokens_to_ids("<video>")
            ```
        """
        from .tokenization import train_byte_level_tokenizer

        return train_byte_level_tokenizer(
            corpus,
            vocab_size,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", VIDEO_TOKEN],
            roles={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
            extra_special_tokens={"image_token": "<image>", "video_token": VIDEO_TOKEN},
            chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        )

    @classmethod
    def _config(cls, vision: dict, text: dict, tokenizer):
        from transformers import LlavaOnevisionConfig

        ids = (tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids(VIDEO_TOKEN))
        return LlavaOnevisionConfig(
            vision_config={"model_type": "siglip_vision_model", "vision_use_head": False, **vision},
            text_config={"model_type": "qwen2", "rms_norm_eps": 1e-6, "pad_token_id": tokenizer.pad_token_id,
                         "eos_token_id": tokenizer.eos_token_id, **text},
            image_token_index=ids[0],
            video_token_index=ids[1],
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )  # fmt: skip

    @classmethod
    def build_tiny_model(
        cls, *, seed: int = 0, corpus: list[str] | None = None, vocab_size: int = 400, hidden_size: int = 64,
        num_layers: int = 4, intermediate_size: int = 128, image_size: int = 64, patch_size: int = 8,
        text: dict[str, Any] | None = None, vision: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32,
    ):  # fmt: skip
        """A tiny `LlavaOnevisionForConditionalGeneration` and its tokenizer, built offline in well under a second.

        The defaults are the toy world's frame size: 64 px tiles of 8 px patches, an 8 x 8 grid pooled to 16
        tokens per frame (the tiny SmolVLM's count); `text`/`vision` set any other Qwen2 or SigLIP field.

        Args:
            seed: the seed of the random weights.
            corpus: sentences to train the tokenizer on (see `build_tokenizer`).
            vocab_size: the tokenizer's vocabulary size.
            hidden_size: text hidden size `H`.
            num_layers: text decoder layers `L`.
            intermediate_size: the decoder MLP width (`down_proj` has `d_in = intermediate_size`).
            image_size: the vision tower's square input in pixels (frames are squashed to it).
            patch_size: vision tower patch size in pixels.
            text: more `Qwen2Config` fields, for example `{"num_attention_heads": 4, "num_key_value_heads": 2}`.
            vision: more `SiglipVisionConfig` fields, for example `{"hidden_size": 128, "num_hidden_layers": 2}`.
            dtype: the weights' dtype.

        Returns:
            `(model, tokenizer)`.

        Example:
            ```python
            model, tokenizer = LlavaOnevisionFamily.build_tiny_model(hidden_size=128, vision={"hidden_size": 128})
            ```
        """
        tokenizer = cls.build_tokenizer(corpus, vocab_size)
        text = {"hidden_size": hidden_size, "num_hidden_layers": num_layers, "intermediate_size": intermediate_size,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tokenizer),
                "max_position_embeddings": 4096, **(text or {})}  # fmt: skip
        vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                  "image_size": image_size, "patch_size": patch_size, **(vision or {})}  # fmt: skip
        torch.manual_seed(seed)
        model = cls.model_class()(cls._config(vision, text, tokenizer)).to(dtype).eval()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        return model, tokenizer

    @classmethod
    def save_tiny_model(cls, model, tokenizer, path):
        """Save a tiny model with its tokenizer and LLaVA-OneVision processor files, as the llava-hf repos ship them.

        Args:
            model: a model from `build_tiny_model`.
            tokenizer: its tokenizer.
            path: the output folder.

        Returns:
            `path`, which `from_pretrained` (model, tokenizer, `Video2LoraProcessor` and, with torchvision,
            transformers' `LlavaOnevisionProcessor`) can load.

        Example:
            ```python
            path = LlavaOnevisionFamily.save_tiny_model(*LlavaOnevisionFamily.build_tiny_model(), "tiny-llava-ov")
            ```
        """
        import json
        from pathlib import Path

        path = Path(path)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        vision = model.config.vision_config
        pixels = {"do_convert_rgb": True, "do_resize": True, "do_rescale": True, "do_normalize": True,
                  "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
                  "rescale_factor": 1 / 255, "size": {"height": vision.image_size, "width": vision.image_size}}  # fmt: skip
        files = {
            "preprocessor_config.json": {**pixels, "image_processor_type": "LlavaOnevisionImageProcessor",
                                         "processor_class": "LlavaOnevisionProcessor", "do_pad": True,
                                         "image_grid_pinpoints": model.config.image_grid_pinpoints},
            "video_preprocessor_config.json": {**pixels, "video_processor_type": "LlavaOnevisionVideoProcessor",
                                               "processor_class": "LlavaOnevisionProcessor"},
            "processor_config.json": {"processor_class": "LlavaOnevisionProcessor", "image_token": "<image>",
                                      "video_token": VIDEO_TOKEN, "vision_feature_select_strategy": "full",
                                      "num_image_tokens": (vision.image_size // vision.patch_size) ** 2},
            "chat_template.json": {"chat_template": LLAVA_ONEVISION_CHAT_TEMPLATE},
        }  # fmt: skip
        for name, content in files.items():
            (path / name).write_text(json.dumps(content, indent=2))
        return path

    @classmethod
    def build_random_model(
        cls, preset: str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0, tokenizer=None
    ):
        """LLaVA-OneVision's real shapes with random weights, built directly in `dtype` (no fp32 copy).

        Args:
            preset: a key of `presets`: `"llava-ov-0.5b"`.
            dtype: the weights' dtype.
            seed: the seed of the random weights.
            tokenizer: an offline tokenizer (`build_tokenizer`) whose `<video>`, pad and EOS ids the model uses.

        Returns:
            The model in eval mode.

        Example:
            ```python
            vlm = LlavaOnevisionFamily.build_random_model("llava-ov-0.5b", dtype=torch.bfloat16)
            ```
        """
        shapes = cls.presets[preset]
        config = cls._config(shapes["vision"], shapes["text"], tokenizer or cls.build_tokenizer())
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            torch.manual_seed(seed)
            model = cls.model_class()(config).eval()
        finally:
            torch.set_default_dtype(previous)
        if tokenizer is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.generation_config.eos_token_id = tokenizer.eos_token_id
        return model
