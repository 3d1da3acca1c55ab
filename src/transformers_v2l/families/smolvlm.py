"""SmolVLM and SmolVLM2 (`SmolVLMForConditionalGeneration`, a Llama text decoder): everything we know about them.

Prompt and pixels are SmolVLM2's, token for token and pixel for pixel:

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

Tiny models for tests and real-shape random models for benchmarks are built at the end of this module.
"""

from __future__ import annotations

import math
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from .base import FamilyDefaults, Video2LoraFamily

if TYPE_CHECKING:
    from ..processing_video2lora import Video2LoraProcessor
    from ..video_sampling import VideoMetadata

__all__ = ["SMOLVLM_VIDEO_CHAT_TEMPLATE", "SmolVLMFamily", "resize_output_size"]

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
_SPECIAL_TOKENS = {  # tokenizer attribute -> SmolVLM's token
    "image_token": "<image>",
    "video_token": "<video>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
}


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


def _pixels_transformers5(frames: np.ndarray, size: tuple[int, int], tile: int, vision: dict) -> torch.Tensor:
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W] uint8
    try:
        video = _resize_torch(video, size, vision["resample"])
        video = _resize_torch(video, (tile, tile), vision["resample"])
    except (RuntimeError, NotImplementedError) as error:  # a torch without uint8 LANCZOS
        warnings.warn(
            f"torch cannot resize with resample={vision['resample']} ({error}); using PIL, "
            "which can differ by one level per pixel.",
            stacklevel=4,
        )
        return _pixels_frames2lora(frames, size, tile, vision)
    mean = torch.tensor(vision["image_mean"]) * (1.0 / vision["rescale_factor"])
    std = torch.tensor(vision["image_std"]) * (1.0 / vision["rescale_factor"])
    return (video.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)  # [T, 3, E, E]


def _pixels_frames2lora(frames: np.ndarray, size: tuple[int, int], tile: int, vision: dict) -> torch.Tensor:
    from PIL import Image

    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        for height, width in (size, (tile, tile)):
            if image.size != (width, height):
                image = image.resize((width, height), resample=vision["resample"])
        out.append(np.asarray(image))
    pixels = (np.stack(out).astype(np.float64) * vision["rescale_factor"]).astype(np.float32)
    pixels = (pixels - np.array(vision["image_mean"], np.float32)) / np.array(vision["image_std"], np.float32)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # [T, 3, E, E]


def _checkpoint_vision_settings(config: dict) -> dict:
    """Our settings from a SmolVLM image or video processor config (`longest_edge`/`num_frames` excluded)."""
    settings: dict[str, Any] = {}
    tile = config.get("max_image_size")
    if tile is not None:
        settings["max_image_size"] = tile["longest_edge"] if isinstance(tile, dict) else tile
    for key in ("image_mean", "image_std", "rescale_factor", "resample"):
        if config.get(key) is not None:
            settings[key] = config[key]
    fps = (config.get("video_sampling") or {}).get("fps", config.get("fps"))
    if fps is not None and math.isfinite(float(fps)):
        settings["fps"] = float(fps)
    return settings


class SmolVLMFamily(Video2LoraFamily):
    """SmolVLM and SmolVLM2 (`SmolVLMForConditionalGeneration`, a Llama text decoder).

    Frames go to the vision tower as images (`pixel_values` `[B, T, 3, E, E]` with a
    `pixel_attention_mask`), each frame's slot in the prompt holding `image_seq_len` tokens.

    Args:
        model: a loaded `SmolVLMForConditionalGeneration`.

    Example:
        ```python
        family = SmolVLMFamily(vlm)
        family.module_path(3, "down_proj")  # 'model.text_model.layers.3.mlp.down_proj'
        ```
    """

    name = "smolvlm"
    model_types = ("smolvlm", "idefics3")
    model_class_name = "SmolVLMForConditionalGeneration"
    processor_classes = ("SmolVLMProcessor", "Idefics3Processor")
    layers_path = "model.text_model.layers"
    module_subpaths: ClassVar[dict[str, str]] = {
        "q_proj": "self_attn.q_proj",
        "k_proj": "self_attn.k_proj",
        "v_proj": "self_attn.v_proj",
        "o_proj": "self_attn.o_proj",
        "gate_proj": "mlp.gate_proj",
        "up_proj": "mlp.up_proj",
        "down_proj": "mlp.down_proj",
    }
    video_input_keys = ("pixel_values", "pixel_attention_mask")
    end_of_turn_token = "<end_of_utterance>"
    defaults = FamilyDefaults(
        num_frames=12,
        longest_edge=384,
        fps=1.0,
        skip_secs=1.0,
        vision={
            "image_seq_len": 64,  # (image_size // patch_size) ** 2 // scale_factor ** 2
            "max_image_size": 512,  # the square tile the vision tower sees
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "rescale_factor": 1 / 255,
            "resample": 1,  # PIL LANCZOS
            "resize_mode": "transformers-5",
        },
    )

    # ---- processing --------------------------------------------------------------------------------
    @classmethod
    def vision_settings_from_files(cls, read_json) -> dict[str, Any]:
        """SmolVLM's pixel settings and frame rate from a checkpoint's processor and model configs.

        Args:
            read_json: returns one of the checkpoint's JSON files by name, or `None`.

        Returns:
            `image_seq_len` (`processor_config.json`, else computed from `config.json`), the tile size,
            normalization and resampling of `preprocessor_config.json` (or a 5.x
            `video_preprocessor_config.json`), and `fps` (`video_sampling.fps`).

        Example:
            ```python
            SmolVLMFamily.vision_settings_from_files(read_json)["image_seq_len"]  # 64 for SmolVLM2-500M
            ```
        """
        processor = read_json("processor_config.json") or {}
        settings: dict[str, Any] = {}
        sources = [
            read_json("preprocessor_config.json"),
            processor.get("image_processor"),
            read_json("video_preprocessor_config.json"),
            processor.get("video_processor"),
        ]
        for source in sources:
            settings.update(_checkpoint_vision_settings(source or {}))
        if "image_seq_len" in processor:
            settings["image_seq_len"] = processor["image_seq_len"]
        elif (config := read_json("config.json")) and "vision_config" in config:
            vision = config["vision_config"]
            tokens = (vision["image_size"] // vision["patch_size"]) ** 2 // config.get("scale_factor", 1) ** 2
            settings["image_seq_len"] = tokens
        return settings

    @classmethod
    def vision_settings_for(cls, config: Any, **overrides: Any) -> dict[str, Any]:
        """SmolVLM's pixel settings for a model config: the tile is the vision tower's image size.

        Args:
            config: a `SmolVLMConfig`.
            **overrides: `max_image_size` (a smaller tile; `image_seq_len` follows) or other settings.

        Returns:
            The settings over `defaults.vision`.

        Example:
            ```python
            SmolVLMFamily.vision_settings_for(vlm.config)["image_seq_len"]  # 64 for SmolVLM2
            ```
        """
        vision = config.vision_config
        tile = overrides.pop("max_image_size", None) or vision.image_size
        tokens = (tile // vision.patch_size) ** 2 // config.scale_factor**2
        return {**cls.defaults.vision, "max_image_size": tile, "image_seq_len": tokens, **overrides}

    @classmethod
    def tokens_per_frame(cls, processor: Video2LoraProcessor) -> int:
        """`image_seq_len`: every frame is one tile of that many tokens (plus three markers and a timestamp).

        Args:
            processor: the processor.

        Returns:
            The processor's `image_seq_len`.

        Example:
            ```python
            SmolVLMFamily.tokens_per_frame(processor)  # 64 for SmolVLM2
            ```
        """
        return processor.vision["image_seq_len"]

    @classmethod
    def check_vision_settings(cls, vision: dict[str, Any]) -> None:
        """Raise `ValueError` naming the key when a SmolVLM pixel setting is invalid.

        Args:
            vision: the processor's pixel settings.

        Example:
            ```python
            SmolVLMFamily.check_vision_settings({**SmolVLMFamily.defaults.vision, "resize_mode": "frames2lora"})
            ```
        """
        if vision["resize_mode"] not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {vision['resize_mode']!r}.")
        for key in ("image_seq_len", "max_image_size"):
            value = vision[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")

    @classmethod
    def video_pixels(
        cls, processor: Video2LoraProcessor, frames: np.ndarray, longest_edge: int
    ) -> dict[str, torch.Tensor]:
        """Resize, rescale and normalize one clip's frames into vision-tower tiles.

        Args:
            processor: the processor (its `vision` settings).
            frames: `[T, H, W, 3]` uint8 RGB frames.
            longest_edge: the first resize's target.

        Returns:
            `{"pixel_values": [T, 3, E, E]}` float32, `E = max_image_size`.

        Example:
            ```python
            SmolVLMFamily.video_pixels(processor, frames, 384)["pixel_values"].shape  # [T, 3, 512, 512]
            ```
        """
        vision = processor.vision
        size = resize_output_size(frames.shape[1], frames.shape[2], longest_edge)
        tile = vision["max_image_size"]
        if vision["resize_mode"] == "frames2lora":
            return {"pixel_values": _pixels_frames2lora(frames, size, tile, vision)}
        return {"pixel_values": _pixels_transformers5(frames, size, tile, vision)}

    @classmethod
    def collate_video_pixels(cls, clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Zero-pad the clips' frames to the longest clip and mark the real frames.

        Args:
            clips: `{"pixel_values": [T_i, 3, E, E]}` per clip.

        Returns:
            `pixel_values` `[B, T, 3, E, E]` float32 and `pixel_attention_mask` `[B, T, E, E]` int64.

        Example:
            ```python
            batch = SmolVLMFamily.collate_video_pixels([clip_a, clip_b])
            ```
        """
        pixels = [clip["pixel_values"] for clip in clips]
        count, tile = max(p.shape[0] for p in pixels), pixels[0].shape[-1]
        batch = torch.zeros((len(pixels), count, 3, tile, tile), dtype=torch.float32)  # [B, T, 3, E, E]
        mask = torch.zeros((len(pixels), count, tile, tile), dtype=torch.long)  # [B, T, E, E]
        for i, video in enumerate(pixels):
            batch[i, : video.shape[0]] = video
            mask[i, : video.shape[0]] = 1
        return {"pixel_values": batch, "pixel_attention_mask": mask}

    @classmethod
    def video_prompt(cls, processor: Video2LoraProcessor, metadata: VideoMetadata, num_frames: int) -> str:
        """SmolVLM's expansion of one video: intro, one timestamped image slot per frame, outro.

        Args:
            processor: the processor (tokenizer tokens and `image_seq_len`).
            metadata: the video's metadata (duration and sampled frames' timestamps).
            num_frames: frames actually fed to the model.

        Returns:
            The text that replaces the `<video>` token.

        Example:
            ```python
            SmolVLMFamily.video_prompt(processor, meta, 8)  # "You are provided the following series of ..."
            ```
        """
        from num2words import num2words

        tokens = {
            attr: getattr(processor.tokenizer, attr, None) or token for attr, token in _SPECIAL_TOKENS.items()
        }
        image = tokens["fake_image_token"] + tokens["global_image_token"]
        image += tokens["image_token"] * processor.vision["image_seq_len"] + tokens["fake_image_token"]
        text = VIDEO_INTRO.format(
            count=num2words(num_frames), duration=str(timedelta(seconds=int(metadata.duration)))
        )
        for second in metadata.timestamps:
            text += FRAME_MESSAGE.format(timestamp=f"{int(second // 60):02d}:{int(second % 60):02d}") + image
        return text + MEDIA_OUTTRO

    @classmethod
    def video_text(
        cls,
        processor: Video2LoraProcessor,
        metadata: VideoMetadata,
        pixels: dict[str, torch.Tensor],
        text: str,
        add_generation_prompt: bool,
    ) -> str:
        """The prompt of one user turn `[video, text]`, exactly what `SmolVLMProcessor` tokenizes.

        Args:
            processor: the processor.
            metadata: the clip's metadata.
            pixels: the clip's `video_pixels` (its frame count).
            text: the instruction or question after the video.
            add_generation_prompt: append `Assistant:`.

        Returns:
            The prompt string.

        Example:
            ```python
            SmolVLMFamily.video_text(processor, meta, pixels, "Describe the video.", True)
            ```
        """
        video_token = getattr(processor.tokenizer, "video_token", None) or _SPECIAL_TOKENS["video_token"]
        rendered = cls.render_turn(
            processor,
            text,
            video_token=video_token,
            add_generation_prompt=add_generation_prompt,
            chat_template=SMOLVLM_VIDEO_CHAT_TEMPLATE,
        )
        expansion = cls.video_prompt(processor, metadata, pixels["pixel_values"].shape[0])
        return rendered.replace(video_token, expansion, 1)

    @classmethod
    def default_chat_template(cls) -> str:
        """SmolVLM's chat template, for a tokenizer that ships none.

        Returns:
            The Jinja template.

        Example:
            ```python
            tokenizer.chat_template = tokenizer.chat_template or SmolVLMFamily.default_chat_template()
            ```
        """
        return SMOLVLM_VIDEO_CHAT_TEMPLATE

    # ---- tiny and real-shape models ------------------------------------------------------------------
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "256m": {  # SmolVLM2-256M-Video-Instruct
            "vision": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                       "intermediate_size": 3072, "image_size": 512, "patch_size": 16},
            "text": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49280,
                     "max_position_embeddings": 16384, "rope_theta": 100000.0},
            "scale_factor": 4,
        },
        "500m": {  # SmolVLM2-500M-Video-Instruct
            "vision": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                       "intermediate_size": 3072, "image_size": 512, "patch_size": 16},
            "text": {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
                     "num_key_value_heads": 5, "intermediate_size": 2560, "vocab_size": 49280,
                     "max_position_embeddings": 16384, "rope_theta": 100000.0},
            "scale_factor": 4,
        },
    }  # fmt: skip

    @classmethod
    def build_tokenizer(cls, corpus: list[str] | None = None, vocab_size: int = 400):
        """Train a byte-level BPE tokenizer with SmolVLM's special tokens and chat template, offline.

        Args:
            corpus: training sentences; defaults to a few lines that cover the library's prompts.
            vocab_size: the BPE vocabulary size, special tokens included.

        Returns:
            A `PreTrainedTokenizerFast` with SmolVLM's special tokens and `chat_template`.

        Example:
            ```python
            tokenizer = SmolVLMFamily.build_tokenizer(vocab_size=300)
            tokenizer.convert_tokens_to_ids("<video>")
            ```
        """
        from .tokenization import train_byte_level_tokenizer

        return train_byte_level_tokenizer(
            corpus,
            vocab_size,
            special_tokens=_TOKENIZER_SPECIAL_TOKENS,
            roles={
                "bos_token": "<|im_start|>",
                "eos_token": "<end_of_utterance>",
                "pad_token": "<|endoftext|>",
            },
            extra_special_tokens={  # in the order 0.1 wrote them (the saved tokenizer files stay identical)
                "image_token": "<image>",
                "fake_image_token": "<fake_token_around_image>",
                "global_image_token": "<global-img>",
                "end_of_utterance_token": "<end_of_utterance>",
                "video_token": "<video>",
            },
            chat_template=SMOLVLM_VIDEO_CHAT_TEMPLATE,
        )

    @classmethod
    def _config(cls, vision: dict, text: dict, scale_factor: int, image_token_id: int):
        from transformers import SmolVLMConfig

        return SmolVLMConfig(
            vision_config={"model_type": "smolvlm_vision", **vision},
            text_config={"model_type": "llama", "rms_norm_eps": 1e-5, **text},
            scale_factor=scale_factor,
            image_token_id=image_token_id,
            tie_word_embeddings=False,
        )

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
        image_size: int = 64,
        patch_size: int = 8,
        scale_factor: int = 2,
        text: dict[str, Any] | None = None,
        vision: dict[str, Any] | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        """A tiny `SmolVLMForConditionalGeneration` and its tokenizer, built offline in well under a second.

        Args:
            seed: the seed of the random weights.
            corpus: sentences to train the tokenizer on (see `build_tokenizer`).
            vocab_size: the tokenizer's vocabulary size.
            hidden_size: text hidden size `H`.
            num_layers: text decoder layers `L`.
            intermediate_size: the decoder MLP width (`down_proj` has `d_in = intermediate_size`).
            image_size: vision tower input size in pixels.
            patch_size: vision tower patch size in pixels.
            scale_factor: pixel-shuffle factor of the connector.
            text: more Llama text-config fields, for example `{"num_attention_heads": 8}`.
            vision: more vision-config fields, for example `{"hidden_size": 128, "num_hidden_layers": 2}`.
            dtype: the weights' dtype.

        Returns:
            `(model, tokenizer)`; image tokens per frame are `(image_size // patch_size) ** 2 // scale_factor ** 2`.

        Example:
            ```python
            model, tokenizer = SmolVLMFamily.build_tiny_model(seed=0, num_layers=2)
            ```
        """
        tokenizer = cls.build_tokenizer(corpus, vocab_size)
        text = {
            "hidden_size": hidden_size, "num_hidden_layers": num_layers, "intermediate_size": intermediate_size,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, **(text or {}),
        }  # fmt: skip
        vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                  "image_size": image_size, "patch_size": patch_size, **(vision or {})}  # fmt: skip
        config = cls._config(vision, text, scale_factor, tokenizer.convert_tokens_to_ids("<image>"))
        torch.manual_seed(seed)
        model = cls.model_class()(config).to(dtype).eval()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        return model, tokenizer

    @classmethod
    def save_tiny_model(cls, model, tokenizer, path, *, longest_edge: int | None = None):
        """Save a tiny model with its tokenizer and SmolVLM preprocessing configs, as Hub repos ship them.

        Args:
            model: a model from `build_tiny_model`.
            tokenizer: its tokenizer.
            path: the output folder.
            longest_edge: the processor's resize target in pixels; defaults to the vision tower's image size.

        Returns:
            `path`, which `from_pretrained` (model, tokenizer and `Video2LoraProcessor`) can load.

        Example:
            ```python
            path = SmolVLMFamily.save_tiny_model(*SmolVLMFamily.build_tiny_model(), "tiny-smolvlm")
            ```
        """
        import json
        from pathlib import Path

        path = Path(path)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        vision = model.config.vision_config
        image_seq_len = (vision.image_size // vision.patch_size) ** 2 // model.config.scale_factor**2
        edge = longest_edge or vision.image_size
        preprocessor = {
            "image_processor_type": "SmolVLMImageProcessor", "processor_class": "SmolVLMProcessor",
            "do_convert_rgb": True, "do_resize": True, "do_rescale": True, "do_normalize": True,
            "do_pad": True, "do_image_splitting": False,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 1,
            "rescale_factor": 1 / 255, "max_image_size": {"longest_edge": vision.image_size},
            "size": {"longest_edge": edge},
            "video_sampling": {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": edge}},
        }  # fmt: skip
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
        processor = {"image_seq_len": image_seq_len, "processor_class": "SmolVLMProcessor"}
        (path / "processor_config.json").write_text(json.dumps(processor, indent=2))
        (path / "chat_template.json").write_text(
            json.dumps({"chat_template": SMOLVLM_VIDEO_CHAT_TEMPLATE}, indent=2)
        )
        return path

    @classmethod
    def build_random_model(
        cls, preset: str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0, tokenizer=None
    ):
        """SmolVLM2's real shapes with random weights, built directly in `dtype` (no fp32 copy).

        Args:
            preset: a key of `presets`: `"256m"` or `"500m"`.
            dtype: the weights' dtype.
            seed: the seed of the random weights.
            tokenizer: an offline tokenizer whose `<image>` id the model should use (timing is unchanged).

        Returns:
            The model in eval mode.

        Example:
            ```python
            vlm = SmolVLMFamily.build_random_model("256m", dtype=torch.bfloat16)
            ```
        """
        shapes = cls.presets[preset]
        text = {**shapes["text"], "pad_token_id": 2, "bos_token_id": 1, "eos_token_id": 2}
        image_token = tokenizer.convert_tokens_to_ids("<image>") if tokenizer is not None else 49190
        config = cls._config(shapes["vision"], text, shapes["scale_factor"], image_token)
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


_TOKENIZER_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "<video>",
    "<unk>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
