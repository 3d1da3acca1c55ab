"""The benchmarks' models and inputs: real checkpoint shapes with random weights, random videos, the first token.

Time does not depend on the weights, so every benchmark runs a real checkpoint's shape (a preset of
its VLM family, `transformers_v2l.testing.presets()`: SmolVLM2 256M and 500M, and the other
families' smallest checkpoints) with random weights, built directly in bf16, with an offline
tokenizer and a hypernetwork of the paper's architecture bound to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "BENCH_QUESTION",
    "BenchSetup",
    "build_setup",
    "first_token",
    "model_tensors",
    "question_suffix_length",
    "random_video",
]

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
    """A real-shape random VLM, a hypernetwork bound to it, and an offline processor.

    `build_setup` makes one.

    Args:
        preset: the preset, for example `"500m"` (`transformers_v2l.testing.presets()`).
        vlm: the family's generative model (random weights, bf16).
        hypernet: a `Video2LoraHypernetwork` with the paper's architecture (bf16, random, non-zero adapters).
        processor: a `Video2LoraProcessor` with the family's video settings and an offline tokenizer.

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
        """Visual tokens per frame at the processor's settings."""
        return self.processor.family_class.tokens_per_frame(self.processor)


def build_setup(
    preset: str = "500m",
    *,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    longest_edge: int = 384,
    vision: dict | None = None,
    hypernet_kwargs: dict | None = None,
    tiny: bool = False,
) -> BenchSetup:
    """Build the models every benchmark uses, offline and directly in `dtype`.

    Args:
        preset: a real checkpoint's shape (`transformers_v2l.testing.presets()`), for example `"500m"`.
        dtype: weight dtype of both models.
        seed: weight seed.
        longest_edge: frame resize target (the paper: 384).
        vision: pixel-setting overrides of the family (for SmolVLM, `{"max_image_size": 384}` for a smaller tile).
        hypernet_kwargs: `Video2LoraConfig` overrides (the paper's architecture by default).
        tiny: build the family's tiny test model instead (for smoke tests).

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
    from ..testing import family_of_preset

    family = family_of_preset(preset)
    if tiny:
        vlm, tokenizer = family.build_tiny_model(seed=seed, dtype=dtype)
        hypernet_kwargs = {
            "lora_rank": 4, "latent_size": 32, "num_latent_queries": 4, "num_blocks": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "attention_head_dim": 16,
            **(hypernet_kwargs or {}),
        }  # fmt: skip
    else:
        tokenizer = family.build_tokenizer(_BENCH_CORPUS, vocab_size=600)
        vlm = family.build_random_model(preset, dtype=dtype, seed=seed, tokenizer=tokenizer)
    settings = family.vision_settings_for(vlm.config, **(vision or {}))
    processor = Video2LoraProcessor(tokenizer, family.name, longest_edge=longest_edge, vision=settings)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        config = Video2LoraConfig.from_base_model(vlm, **(hypernet_kwargs or {}))
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
def first_token(model: torch.nn.Module, inputs: dict[str, Any], cache=None) -> torch.Tensor:
    """Prefill and pick the first generated token (greedy): exactly the time to first token.

    Only the last position's logits are computed (`logits_to_keep=1`), as `generate` does.

    Args:
        model: the VLM.
        inputs: processor outputs (tensors only are used).
        cache: an optional KV cache holding a prefix of `inputs["input_ids"]`'s context.

    Returns:
        `[B]` token ids.

    Example:
        ```python
        inputs = setup.processor.query_inputs([BENCH_QUESTION])
        stats = interleaved({"text only": lambda: first_token(setup.vlm, inputs)})
        ```
    """
    out = model(**model_tensors(inputs, model), cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].argmax(-1)


def model_tensors(inputs: dict[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of processor outputs, floating ones (pixels) cast to the model's dtype.

    Args:
        inputs: processor outputs.
        model: the VLM.

    Returns:
        `{name: tensor}` ready for `model(**tensors)`.

    Example:
        ```python
        out = vlm(**model_tensors(processor.video_in_context_inputs(video, question), vlm))
        ```
    """
    return {
        k: v.to(model.dtype) if v.is_floating_point() else v for k, v in inputs.items() if torch.is_tensor(v)
    }


def question_suffix_length(processor: Any, question: str) -> int:
    """Tokens at the end of a video-in-context prompt that come after the video: the question, turn end and generation prompt.

    Args:
        processor: the `Video2LoraProcessor`.
        question: the question.

    Returns:
        The token count, so that `input_ids[:, :-n]` is the video prefix a KV cache can hold.

    Example:
        ```python
        n = question_suffix_length(processor, BENCH_QUESTION)
        ```
    """
    marker = "\x00"
    tail = processor.chat_text([{"role": "user", "content": marker}]).split(marker, 1)[1]
    return len(processor.tokenizer(question + tail, add_special_tokens=False)["input_ids"])
