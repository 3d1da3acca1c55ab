"""The serving package's only door into the hypernetwork's runtime and the base VLM.

The library core is being refactored (the base VLM, its backbone wrapper, the processor and the
merge state move into a runtime object). Every call the server makes into those internals lives in
the small functions below, so a rename touches this file alone. Everything else in
`transformers_v2l.serving` goes through these functions or the public API (`internalize`, `answer`,
`GeneratedLora`, `stack_adapters`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "answer_protocol",
    "answering_model",
    "base_model",
    "base_model_name",
    "build_cache",
    "cache_tensors",
    "eos_token_ids",
    "forward_step",
    "hypernetwork_fingerprint",
    "merged_adapter",
    "model_device",
    "pad_token_id",
    "processor",
    "prompt_ids",
    "target_modules",
    "tokenizer",
    "zero_adapter",
]


def base_model(hn) -> nn.Module:
    """The frozen base VLM the hypernetwork answers with (loaded on first use).

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        The VLM module.

    Example:
        ```python
        vlm = base_model(hn)
        ```
    """
    hn.runtime.ensure_loaded()
    return hn.runtime.vlm


def base_model_name(hn) -> str | None:
    """The base model's name or path as the hypernetwork's config records it.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        `config.base_model_name_or_path`, or `None`.

    Example:
        ```python
        base_model_name(hn)  # for example "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
        ```
    """
    return hn.config.base_model_name_or_path


def tokenizer(hn):
    """The base model's tokenizer (from the hypernetwork's processor).

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        A `PreTrainedTokenizerFast`.

    Example:
        ```python
        tokenizer(hn).decode([1, 2, 3])
        ```
    """
    return processor(hn).tokenizer


def processor(hn):
    """The hypernetwork's processor (prompts, chat template, answering protocol).

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        The `Video2LoraProcessor`.

    Example:
        ```python
        processor(hn).answer["protocol"]  # "direct" or "recall"
        ```
    """
    return hn.processor


def pad_token_id(hn) -> int:
    """The id the processor pads prompts with.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        The pad id (the end-of-sequence id when the tokenizer has no pad token).

    Example:
        ```python
        pad_token_id(hn)
        ```
    """
    return processor(hn).pad_token_id


def eos_token_ids(hn) -> set[int]:
    """The token ids that end an answer: the generation config's and the tokenizer's end of sequence.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        A set of ids (what `generate` stops on).

    Example:
        ```python
        eos_token_ids(hn)  # {2}
        ```
    """
    ids = base_model(hn).generation_config.eos_token_id
    found = {ids} if isinstance(ids, int) else set(ids or [])
    if not found and tokenizer(hn).eos_token_id is not None:  # generate() falls back to the tokenizer's
        found.add(tokenizer(hn).eos_token_id)
    return found


def model_device(hn) -> torch.device:
    """The device of the base VLM's weights.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        A `torch.device`.

    Example:
        ```python
        model_device(hn)  # device(type='cpu')
        ```
    """
    return next(base_model(hn).parameters()).device


def merged_adapter(hn):
    """The adapter merged into the base VLM's weights by `use_adapter`/`merge_into`, or `None`.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        The `MergedAdapter` handle or `None`.

    Example:
        ```python
        merged_adapter(hn) is None
        ```
    """
    hn.runtime.ensure_loaded()
    return hn.runtime.merged


def answering_model(hn) -> nn.Module:
    """A second module tree over the base VLM's own weights, for the serving engine alone.

    Parameters and buffers are shared (no extra memory, merges apply to both); the modules are new
    objects, so hooks registered on one tree never fire in the other. The engine's per-row adapter
    hooks live on this copy, and the library's feature-recording hooks (registered on the original
    while a video internalizes in another thread) never see the engine's forward passes.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        The copy, in eval mode.

    Example:
        ```python
        model = answering_model(hn)
        model.lm_head.weight is base_model(hn).lm_head.weight  # True
        ```
    """
    vlm = base_model(hn)
    shared = {id(tensor): tensor for tensor in itertools.chain(vlm.parameters(), vlm.buffers())}
    shadow = copy.deepcopy(vlm, shared)
    for module in shadow.modules():  # hooks that were on the original at copy time stay there
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    return shadow.eval()


def target_modules(hn, model: nn.Module | None = None) -> list[tuple[int, str, nn.Module]]:
    """Every module a generated adapter changes: `(layer, module name, nn.Linear)`.

    Args:
        hn: a `Video2LoraHypernetwork`.
        model: the VLM whose modules to return (default: the base VLM; or an `answering_model` copy).

    Returns:
        The list, layer-major, modules sorted by name.

    Example:
        ```python
        [(layer, name) for layer, name, _ in target_modules(hn)][:2]  # [(0, 'down_proj'), (1, 'down_proj')]
        ```
    """
    from ..families import get_family

    family = get_family(base_model(hn) if model is None else model)
    names = sorted(hn.config.module_shapes)
    return [
        (layer, name, family.target_module(layer, name))
        for layer in range(family.num_layers)
        for name in names
    ]


def zero_adapter(hn):
    """A rank-1 adapter that changes nothing (scaling 0): the row filler for text-only base-model requests.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        A `GeneratedLora` with zero tensors.

    Example:
        ```python
        zero_adapter(hn).scaling  # 0.0
        ```
    """
    from ..lora import GeneratedLora

    config = hn.config
    layers = config.num_hidden_layers
    return GeneratedLora(
        lora_A={m: torch.zeros(layers, 1, d_in) for m, (d_in, _) in config.module_shapes.items()},
        lora_B={m: torch.zeros(layers, 1, d_out) for m, (_, d_out) in config.module_shapes.items()},
        scaling=0.0,
        base_model_name_or_path=config.base_model_name_or_path,
        base_model_type=config.base_model_type,
    )


def prompt_ids(hn, messages: Sequence[dict]) -> list[int]:
    """Token ids of a text-only chat prompt ending with the assistant's opening, as `hn.answer` builds them.

    Args:
        hn: a `Video2LoraHypernetwork`.
        messages: `[{"role": "system" | "user" | "assistant", "content": str}]`.

    Returns:
        The prompt's token ids (one user message gives exactly `processor.query_inputs`' ids).

    Example:
        ```python
        prompt_ids(hn, [{"role": "user", "content": "What happens in the video?"}])
        ```
    """
    return processor(hn).chat_inputs([list(messages)])["input_ids"][0].tolist()


def answer_protocol(hn) -> dict:
    """How the checkpoint answers (saved with its processor): `{"protocol": "direct"}` or the recall settings.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        `{"protocol": "direct"}`, or `{"protocol": "recall", "recall_prompt", "reader", "recall_max_new_tokens"}`.

    Example:
        ```python
        answer_protocol(hn)["protocol"]
        ```
    """
    return dict(processor(hn).answer or {"protocol": "direct"})


def hypernetwork_fingerprint(hn) -> str:
    """A revision string for the hypernetwork: its Hub commit, or a hash of its weights and configuration.

    Args:
        hn: a `Video2LoraHypernetwork`.

    Returns:
        A hex string; the same weights, configuration and base model give the same string.

    Example:
        ```python
        hypernetwork_fingerprint(hn)[:12]
        ```
    """
    revision = hn.runtime.hub_revision
    digest = hashlib.sha256()
    digest.update(hn.config.to_json_string(use_diff=False).encode())
    digest.update(str(base_model_name(hn)).encode())
    digest.update(processor(hn).to_json_string().encode())  # frames, resolution, instruction, protocol
    if revision:
        digest.update(revision.encode())
        return digest.hexdigest()
    for name, tensor in sorted(hn.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


@torch.no_grad()
def forward_step(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor, cache=None):  # fmt: skip
    """One forward pass of a VLM over text tokens with a KV cache; logits of the last position only.

    Args:
        model: the VLM (the engine's `answering_model`).
        input_ids: `[B, S]` new tokens.
        attention_mask: `[B, T + S]`, 1 for real tokens of the cache and the new tokens, 0 for padding.
        position_ids: `[B, S]` positions of the new tokens.
        cache: the KV cache of the first `T` positions, or `None` for a prefill.

    Returns:
        `(logits [B, V] float32, cache)`, the cache now holding `T + S` positions.

    Example:
        ```python
        logits, cache = forward_step(model, ids, mask, (mask.cumsum(-1) - 1).clamp(min=0))
        ```
    """
    if cache is None:
        cache = build_cache([])
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1].float(), out.cache


def cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The keys and values of every layer of a KV cache.

    Args:
        cache: a `DynamicCache`.

    Returns:
        `[(keys, values)]`, each `[B, heads, T, head_dim]`.

    Example:
        ```python
        keys, values = cache_tensors(cache)[0]
        ```
    """
    return [(layer.keys, layer.values) for layer in cache.layers]


def build_cache(tensors: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """A KV cache holding the given keys and values (an empty one for an empty list).

    Args:
        tensors: `[(keys, values)]` per layer, each `[B, heads, T, head_dim]`.

    Returns:
        A `DynamicCache`.

    Example:
        ```python
        cache = build_cache(cache_tensors(old_cache))
        ```
    """
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(tensors)) if tensors else DynamicCache()
