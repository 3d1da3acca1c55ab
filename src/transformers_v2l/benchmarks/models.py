"""The benchmarks' models and inputs: real SmolVLM2 shapes with random weights, random videos, the first token.

Time does not depend on the weights, so every benchmark runs the real SmolVLM2 256M or 500M shape
with random weights, built directly in bf16, with an offline tokenizer and a hypernetwork of the
paper's architecture bound to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["BENCH_QUESTION", "BenchSetup", "build_setup", "first_token", "random_video"]

#: A 25-token question (with the real SmolVLM tokenizer), the setting of GUIDE.md section 3.
BENCH_QUESTION = (
    "What happens in the video, and which objects and colors appear first, in the middle, and at the end?"
)

_BENCH_CORPUS = [
    BENCH_QUESTION,
    "You are provided the following series of twelve frames from a 0:00:12 [H:MM:SS] video.",
    "Frame from 00:01: Internalize this video for later captioning. Describe the video in detail.",
    "User: What happens in the video? Assistant: A bunny wakes up and walks out of a hole in a tree.",
    "one two three four five six seven eight nine ten eleven twelve twenty forty sixty hundred thousand",
    "0123456789 : [ ] . , ? ! - a b c d e f g h i j k l m n o p q r s t u v w x y z",
]


@dataclass
class BenchSetup:
    """A real-shape random SmolVLM2, a hypernetwork bound to it, and an offline processor.

    `build_setup` makes one.

    Args:
        preset: `"256m"` or `"500m"`.
        vlm: the `SmolVLMForConditionalGeneration` (random weights, bf16).
        hypernet: a `Video2LoraHypernetwork` with the paper's architecture (bf16, random, non-zero adapters).
        processor: a `Video2LoraProcessor` with SmolVLM2's video settings and an offline tokenizer.

    Example:
        ```python
        setup = build_setup("256m")
        setup.tokens_per_frame  # visual tokens per frame
        ```
    """

    preset: str
    vlm: torch.nn.Module
    hypernet: Any
    processor: Any

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame (the processor's `image_seq_len`)."""
        return self.processor.image_seq_len


def build_setup(
    preset: str = "500m",
    *,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    max_image_size: int = 512,
    longest_edge: int = 384,
    hypernet_kwargs: dict | None = None,
    tiny: bool = False,
) -> BenchSetup:
    """Build the models every benchmark uses, offline and directly in `dtype`.

    Args:
        preset: real SmolVLM2 shape, `"256m"` or `"500m"`.
        dtype: weight dtype of both models.
        seed: weight seed.
        max_image_size: edge of the square tile the vision tower sees (SmolVLM2: 512, 64 tokens per frame).
        longest_edge: frame resize target before squaring (the paper: 384).
        hypernet_kwargs: `Video2LoraConfig` overrides (the paper's architecture by default).
        tiny: build the tiny test model instead (for smoke tests); `preset` is ignored.

    Returns:
        A `BenchSetup`.

    Example:
        ```python
        setup = build_setup("500m")
        adapter = setup.hypernet.internalize(random_video(12))
        ```
    """
    from ..configuration_video2lora import Video2LoraConfig
    from ..modeling_video2lora import Video2LoraHypernetwork
    from ..processing_video2lora import Video2LoraProcessor
    from ..testing import build_random_smolvlm, build_tiny_smolvlm, build_tiny_tokenizer

    if tiny:
        vlm, tokenizer = build_tiny_smolvlm(seed=seed, dtype=dtype)
        vision = vlm.config.vision_config
        max_image_size = vision.image_size
        longest_edge = min(longest_edge, max_image_size)
        hypernet_kwargs = {
            "lora_rank": 4, "latent_size": 32, "num_latent_queries": 4, "num_blocks": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "attention_head_dim": 16,
            **(hypernet_kwargs or {}),
        }  # fmt: skip
    else:
        vlm = build_random_smolvlm(preset, dtype=dtype, seed=seed)
        tokenizer = build_tiny_tokenizer(_BENCH_CORPUS, vocab_size=600)
        image_token = tokenizer.convert_tokens_to_ids("<image>")
        vlm.config.image_token_id = image_token  # the offline tokenizer's id; timing is unchanged
        vlm.model.image_token_id = image_token
        vlm.generation_config.pad_token_id = tokenizer.pad_token_id
        vlm.generation_config.eos_token_id = tokenizer.eos_token_id
    vision = vlm.config.vision_config
    tokens = (max_image_size // vision.patch_size) ** 2 // vlm.config.scale_factor**2
    processor = Video2LoraProcessor(
        tokenizer, image_seq_len=tokens, max_image_size=max_image_size, longest_edge=longest_edge
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        config = Video2LoraConfig.from_base_model(vlm, longest_edge=longest_edge, **(hypernet_kwargs or {}))
        hypernet = Video2LoraHypernetwork(config, base_model=vlm, processor=processor).eval()
    finally:
        torch.set_default_dtype(previous)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # an untrained hypernetwork emits B = 0; give it non-zero outputs
        for name in hypernet.scaler_B:
            scaler = hypernet.scaler_B[name]
            scaler.copy_(torch.randn(scaler.shape, generator=generator).to(scaler.dtype))
            if config.use_bias_lora:
                bias = hypernet.bias_B[name]
                bias.copy_((0.02 * torch.randn(bias.shape, generator=generator)).to(bias.dtype))
    return BenchSetup(preset="tiny" if tiny else preset, vlm=vlm, hypernet=hypernet, processor=processor)


def random_video(num_frames: int, height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    """A `[T, H, W, 3]` uint8 clip of noise (720p by default), for timing.

    Args:
        num_frames: frames `T`.
        height: frame height in pixels.
        width: frame width in pixels.
        seed: the noise seed.

    Returns:
        The frames, which `internalize` and the processor accept like a decoded video.

    Example:
        ```python
        adapter = setup.hypernet.internalize(random_video(12))
        ```
    """
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8)


@torch.no_grad()
def first_token(model: torch.nn.Module, inputs: dict[str, Any], past_key_values=None) -> torch.Tensor:
    """Prefill and pick the first generated token (greedy): exactly the time to first token.

    Only the last position's logits are computed (`logits_to_keep=1`), as `generate` does.

    Args:
        model: the VLM.
        inputs: processor outputs (tensors only are used).
        past_key_values: an optional cache holding a prefix of `inputs["input_ids"]`'s context.

    Returns:
        `[B]` token ids.

    Example:
        ```python
        inputs = setup.processor.query_inputs([BENCH_QUESTION])
        stats = interleaved({"text only": lambda: first_token(setup.vlm, inputs)})
        ```
    """
    tensors = {k: v for k, v in inputs.items() if torch.is_tensor(v)}
    if "pixel_values" in tensors:
        tensors["pixel_values"] = tensors["pixel_values"].to(model.dtype)
    out = model(**tensors, past_key_values=past_key_values, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].argmax(-1)
