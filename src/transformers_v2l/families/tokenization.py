"""Offline tokenizers for the tiny test models of every family: a small byte-level BPE with the family's tokens."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_CORPUS", "train_byte_level_tokenizer"]


#: Sentences that cover the library's prompts, for the offline tokenizers of tiny test models.
DEFAULT_CORPUS = [
    "You are provided the following series of twelve frames from a 0:00:16 [H:MM:SS] video.",
    "Frame from 00:01: Internalize this video for later captioning. Describe the video.",
    "User: What happens in the video? Assistant: A red circle moves left on a blue background.",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
    "What color is the square? Which event came first? How many objects are there? The answer is green.",
    "0123456789 : [ ] . , ? ! - a b c d e f g h i j k l m n o p q r s t u v w x y z",
]


def train_byte_level_tokenizer(
    corpus: Sequence[str] | None,
    vocab_size: int,
    *,
    special_tokens: Sequence[str],
    roles: dict[str, str],
    extra_special_tokens: dict[str, str],
    chat_template: str | None,
):
    """Train a small byte-level BPE offline and wrap it as a `PreTrainedTokenizerFast` (for tiny models).

    Args:
        corpus: training sentences; defaults to `DEFAULT_CORPUS`.
        vocab_size: the vocabulary size, special tokens included.
        special_tokens: tokens added whole, in this order (their ids are 0, 1, ...).
        roles: `bos_token`, `eos_token`, `pad_token` (and optionally `unk_token`) among `special_tokens`.
        extra_special_tokens: named special tokens (`image_token`, `video_token`, ...).
        chat_template: the tokenizer's chat template.

    Returns:
        The tokenizer.

    Example:
        ```python
        tokenizer = train_byte_level_tokenizer(None, 300, special_tokens=["<pad>", "<s>"], roles={"bos_token": "<s>", "eos_token": "<s>", "pad_token": "<pad>"}, extra_special_tokens={}, chat_template=None)
        ```
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    unk = roles.get("unk_token", "<unk>")
    tokenizer = Tokenizer(models.BPE(unk_token=unk if unk in special_tokens else None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus or DEFAULT_CORPUS), trainer=trainer)
    named = {"unk_token": unk} if unk in special_tokens else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, **named, **roles, extra_special_tokens=dict(extra_special_tokens)
    )
    fast.chat_template = chat_template
    return fast
