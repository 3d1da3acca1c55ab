"""Offline SmolVLM models for tests, examples and benchmarks.

Nothing here downloads anything. `build_tiny_smolvlm` trains a small byte-level BPE tokenizer
with SmolVLM's special tokens and chat template and builds a `SmolVLMForConditionalGeneration`
from a small `SmolVLMConfig`. `build_random_smolvlm` builds the real SmolVLM2 shapes with random
weights for timing (time does not depend on the weights).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

__all__ = [
    "REAL_SHAPES",
    "SMOLVLM_CHAT_TEMPLATE",
    "SMOLVLM_SPECIAL_TOKENS",
    "build_random_smolvlm",
    "build_tiny_smolvlm",
    "build_tiny_tokenizer",
    "save_tiny_smolvlm",
]

SMOLVLM_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "<video>",
    "<unk>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_DEFAULT_CORPUS = [
    "You are provided the following series of twelve frames from a 0:00:16 [H:MM:SS] video.",
    "Frame from 00:01: Internalize this video for later captioning. Describe the video.",
    "User: What happens in the video? Assistant: A red circle moves left on a blue background.",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
    "What color is the square? Which event came first? How many objects are there? The answer is green.",
    "0123456789 : [ ] . , ? ! - a b c d e f g h i j k l m n o p q r s t u v w x y z",
]

#: Text-tower and vision-tower shapes of the public SmolVLM2 checkpoints (see GUIDE.md section 3).
REAL_SHAPES = {
    "256m": {
        "vision": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "intermediate_size": 3072, "image_size": 512, "patch_size": 16},
        "text": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                 "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49280,
                 "max_position_embeddings": 16384, "rope_theta": 100000.0},
        "scale_factor": 4,
    },
    "500m": {
        "vision": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "intermediate_size": 3072, "image_size": 512, "patch_size": 16},
        "text": {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
                 "num_key_value_heads": 5, "intermediate_size": 2560, "vocab_size": 49280,
                 "max_position_embeddings": 16384, "rope_theta": 100000.0},
        "scale_factor": 4,
    },
}  # fmt: skip


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 400):
    """Train a byte-level BPE tokenizer with SmolVLM's special tokens and chat template.

    Args:
        corpus: training sentences; defaults to a few lines that cover the library's prompts.
        vocab_size: the BPE vocabulary size, special tokens included.

    Returns:
        A `PreTrainedTokenizerFast` with SmolVLM's special tokens and `chat_template`.

    Example:
        ```python
        tokenizer = build_tiny_tokenizer(vocab_size=300)
        tokenizer.convert_tokens_to_ids("<video>")
        ```
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SMOLVLM_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus or _DEFAULT_CORPUS), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        extra_special_tokens={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
    )
    fast.chat_template = SMOLVLM_CHAT_TEMPLATE
    return fast


def _smolvlm_config(vision: dict, text: dict, scale_factor: int, tokenizer_or_vocab, image_token_id: int):
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        vision_config={"model_type": "smolvlm_vision", **vision},
        text_config={"model_type": "llama", "rms_norm_eps": 1e-5, **text},
        scale_factor=scale_factor,
        image_token_id=image_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_smolvlm(
    *,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 400,
    hidden_size: int = 64,
    num_layers: int = 4,
    intermediate_size: int = 128,
    image_size: int = 64,
    patch_size: int = 8,
    scale_factor: int = 2,
    dtype: torch.dtype = torch.float32,
):
    """A tiny `SmolVLMForConditionalGeneration` and its tokenizer, built offline in well under a second.

    Args:
        seed: the seed of the random weights.
        corpus: sentences to train the tokenizer on (see `build_tiny_tokenizer`).
        vocab_size: the tokenizer's vocabulary size.
        hidden_size: text hidden size `H`.
        num_layers: text decoder layers `L`.
        intermediate_size: the decoder MLP width (`down_proj` has `d_in = intermediate_size`).
        image_size: vision tower input size in pixels.
        patch_size: vision tower patch size in pixels.
        scale_factor: pixel-shuffle factor of the connector.
        dtype: the weights' dtype.

    Returns:
        `(model, tokenizer)`; image tokens per frame are `(image_size // patch_size) ** 2 // scale_factor ** 2`.

    Example:
        ```python
        model, tokenizer = build_tiny_smolvlm(seed=0, num_layers=2)
        path = save_tiny_smolvlm(model, tokenizer, "tiny-smolvlm")
        ```
    """
    from transformers import SmolVLMForConditionalGeneration

    tokenizer = build_tiny_tokenizer(corpus, vocab_size)
    text = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "image_size": image_size, "patch_size": patch_size}  # fmt: skip
    config = _smolvlm_config(
        vision, text, scale_factor, tokenizer, tokenizer.convert_tokens_to_ids("<image>")
    )
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def save_tiny_smolvlm(model, tokenizer, path: str | os.PathLike, *, longest_edge: int | None = None) -> Path:
    """Save a tiny model with its tokenizer and SmolVLM preprocessing configs, the way Hub repos ship them.

    Args:
        model: a model from `build_tiny_smolvlm`.
        tokenizer: its tokenizer.
        path: the output folder.
        longest_edge: the processor's resize target in pixels; defaults to the vision tower's image size.

    Returns:
        `path`, which `from_pretrained` (model, tokenizer and processor) can load.

    Example:
        ```python
        path = save_tiny_smolvlm(*build_tiny_smolvlm(), "tiny-smolvlm")
        config = Video2LoraConfig.from_base_model(path, lora_rank=4, latent_size=32)
        ```
    """
    import json

    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    vision = model.config.vision_config
    image_seq_len = (vision.image_size // vision.patch_size) ** 2 // model.config.scale_factor**2
    edge = longest_edge or vision.image_size
    preprocessor = {
        "image_processor_type": "SmolVLMImageProcessor",
        "processor_class": "SmolVLMProcessor",
        "do_convert_rgb": True, "do_resize": True, "do_rescale": True, "do_normalize": True,
        "do_pad": True, "do_image_splitting": False,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 1,
        "rescale_factor": 1 / 255,
        "max_image_size": {"longest_edge": vision.image_size},
        "size": {"longest_edge": edge},
        "video_sampling": {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": edge}},
    }  # fmt: skip
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (path / "processor_config.json").write_text(
        json.dumps({"image_seq_len": image_seq_len, "processor_class": "SmolVLMProcessor"}, indent=2)
    )
    (path / "chat_template.json").write_text(json.dumps({"chat_template": SMOLVLM_CHAT_TEMPLATE}, indent=2))
    return path


def build_random_smolvlm(preset: str = "500m", *, dtype: torch.dtype = torch.bfloat16, seed: int = 0):
    """A `SmolVLMForConditionalGeneration` with the real SmolVLM2 shapes and random weights, built in `dtype`.

    The weights are created directly in `dtype` (no fp32 copy), so peak memory stays at the model size.

    Args:
        preset: a key of `REAL_SHAPES`: `"256m"` or `"500m"`.
        dtype: the weights' dtype.
        seed: the seed of the random weights.

    Returns:
        The model in eval mode (no tokenizer: feed it token ids directly).

    Example:
        ```python
        vlm = build_random_smolvlm("256m", dtype=torch.bfloat16)
        ```
    """
    from transformers import SmolVLMForConditionalGeneration

    shapes = REAL_SHAPES[preset]
    text = {**shapes["text"], "pad_token_id": 2, "bos_token_id": 1, "eos_token_id": 2}
    config = _smolvlm_config(shapes["vision"], text, shapes["scale_factor"], None, 49190)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        model = SmolVLMForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return model
