"""The Video2LoRA Perceiver hypernetwork (paper section 3.3, Frames2LoRA SPEC section 2).

Einsum and shape letters used below:
    B batch (videos)       L text decoder layers     S context tokens    H base hidden size
    N = L * B rows         D latent size             Q encoder queries   P = M * r decoder queries
    M target modules       r generated rank          R = r (+ r bias ranks)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_video2lora import Video2LoraConfig
from .frames2lora import from_frames2lora
from .inference import Video2LoraInferenceMixin

__all__ = ["Video2LoraHypernetwork", "Video2LoraOutput", "Video2LoraPreTrainedModel"]

#: Tokens per block of the inference-time gated MLPs: small blocks keep their `[tokens, hidden]` intermediates in cache.
_BLOCK_TOKENS = 4096


@dataclass
class Video2LoraOutput(ModelOutput):
    """Adapters generated for a batch of videos.

    Args:
        lora_A: `{module: [B, L, R, d_in]}`, generated ranks followed by the bias ranks.
        lora_B: `{module: [B, L, R, d_out]}`, rank-major (transposed relative to `nn.Linear.weight`).
        intermediates: with `output_intermediates=True`, the named activations of every stage.

    Example:
        ```python
        out = hn(context_features=features, context_attention_mask=mask)
        out.lora_A["down_proj"].shape  # [B, L, R, d_in]
        ```
    """

    lora_A: dict[str, torch.Tensor] | None = None
    lora_B: dict[str, torch.Tensor] | None = None
    intermediates: dict[str, torch.Tensor] | None = None


class Video2LoraRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """`x / rms(x)` in float32, cast back to `x.dtype`: the weight-free part of `forward`."""
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * self.normalize(x)


class Video2LoraGatedMLP(nn.Module):
    """`down(silu(gate(x)) * up(x))`, no biases."""

    def __init__(self, size_in: int, size_hidden: int, size_out: int):
        super().__init__()
        self.gate_proj = nn.Linear(size_in, size_hidden, bias=False)
        self.up_proj = nn.Linear(size_in, size_hidden, bias=False)
        self.down_proj = nn.Linear(size_hidden, size_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))
        # inference: blocks of tokens and an in-place activation keep the [tokens, hidden] intermediates
        # small (row-wise: the same values, up to the matmul kernels' summation order)
        flat = x.reshape(-1, x.shape[-1])  # [tokens, size_in]
        blocks = [self._inference_block(block) for block in flat.split(_BLOCK_TOKENS)]
        out = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
        return out.view(*x.shape[:-1], -1)

    def _inference_block(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.gate_proj(x)
        return self.down_proj(nn.functional.silu(hidden, inplace=True).mul_(self.up_proj(x)))


class Video2LoraAttention(nn.Module):
    """Grouped-query attention from latents to `[context; latents]` (or to the latents alone).

    When it costs fewer FLOPs (few latent queries, a long context), the key and value projections of
    the context are absorbed into the queries and the output (`q·(W_k c) = (W_kᵀ q)·c`), so the
    context tokens are never projected. Both forms compute the same attention.
    """

    def __init__(self, config: Video2LoraConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.attention_head_dim
        self.scaling = self.head_dim**-0.5
        latent = config.latent_size
        self.q_proj = nn.Linear(latent, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(latent, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(latent, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, latent, bias=False)

    def absorbs_context(self, num_queries: int) -> bool:
        """Whether absorbing the context projections into `num_queries` queries saves FLOPs."""
        heads, kv_width, latent = self.num_heads, self.num_kv_heads * self.head_dim, self.k_proj.in_features
        # per context token, keys and values alike: h·K·D absorbed against g·d·D + h·K·d projected
        return heads * num_queries * latent < kv_width * latent + heads * num_queries * self.head_dim

    def forward(
        self,
        latents: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        context_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n, k, _ = latents.shape
        g, groups, d = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        # query head h uses key/value head h // groups: group the query heads by their key/value head
        # instead of repeating keys and values (no [N, h, S, d] copies)
        q = self.q_proj(latents).view(n, k, g, groups, d).permute(0, 2, 3, 1, 4).reshape(n, g, groups * k, d)
        keys = self.k_proj(latents).view(n, k, g, d).transpose(1, 2)  # [N, g, K, d]
        values = self.v_proj(latents).view(n, k, g, d).transpose(1, 2)  # [N, g, K, d]
        scores = torch.matmul(q, keys.transpose(2, 3))  # [N, g, G * K, K]
        if context is None:
            out = torch.matmul(self._softmax(scores), values)  # [N, g, G * K, d]
        else:
            # context: [N, S, D], RMS-normalized; context_scale: [D], the norm's weight
            if context_scale is not None:
                context_scale = context_scale.to(context.dtype)
            absorbed = self.absorbs_context(k)
            context_scores = self._context_scores(q, context, context_scale, absorbed)  # [N, g, G * K, S]
            if context_mask is not None:  # [N, S] bool, True = attend
                min_value = torch.finfo(context_scores.dtype).min
                context_scores = context_scores.masked_fill(~context_mask[:, None, None, :], min_value)
            weights = self._softmax(torch.cat([context_scores, scores], dim=-1))  # [N, g, G * K, S + K]
            s = context.shape[1]
            out = torch.matmul(weights[..., s:], values)  # [N, g, G * K, d]
            out = out + self._context_output(weights[..., :s], context, context_scale, absorbed)
        out = out.view(n, g, groups, k, d).permute(0, 3, 1, 2, 4).reshape(n, k, -1)  # [N, K, h * d]
        return self.o_proj(out)

    def _softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return nn.functional.softmax(scores * self.scaling, dim=-1, dtype=torch.float32).to(scores.dtype)

    def _context_scores(self, q, context, scale, absorbed: bool) -> torch.Tensor:
        n, g, rows, d = q.shape  # q: [N, g, G * K, d]
        if absorbed:
            absorbed_q = torch.matmul(q, self._context_weight(self.k_proj, scale))  # [N, g, G * K, D]
            scores = torch.matmul(absorbed_q.view(n, g * rows, -1), context.transpose(1, 2))  # [N, h * K, S]
            return scores.view(n, g, rows, -1)
        scaled = context if scale is None else context * scale
        keys = self.k_proj(scaled).view(n, -1, g, d).transpose(1, 2)  # [N, g, S, d]
        return torch.matmul(q, keys.transpose(2, 3))

    def _context_output(self, weights, context, scale, absorbed: bool) -> torch.Tensor:
        n, g, rows, s = weights.shape  # weights: [N, g, G * K, S]
        if absorbed:
            mixed = torch.matmul(weights.reshape(n, g * rows, s), context)  # [N, h * K, D]
            mixed = mixed.view(n, g, rows, -1)  # [N, g, G * K, D]
            return torch.matmul(mixed, self._context_weight(self.v_proj, scale).transpose(1, 2))
        scaled = context if scale is None else context * scale
        values = self.v_proj(scaled).view(n, s, g, self.head_dim).transpose(1, 2)  # [N, g, S, d]
        return torch.matmul(weights, values)

    def _context_weight(self, proj: nn.Linear, scale: torch.Tensor | None) -> torch.Tensor:
        """`proj.weight` per key/value head, with the context norm's weight folded in: `[g, d, D]`."""
        weight = proj.weight.view(self.num_kv_heads, self.head_dim, -1)
        return weight if scale is None else weight * scale


class Video2LoraPerceiverLayer(nn.Module):
    """One Perceiver layer: latents attend to `[context; latents]` (cross) or to themselves (self)."""

    def __init__(self, config: Video2LoraConfig, *, cross_attention: bool):
        super().__init__()
        size, eps = config.latent_size, config.rms_norm_eps
        self.cross_attention = cross_attention
        self.input_latents_norm = Video2LoraRMSNorm(size, eps)
        self.input_context_norm = Video2LoraRMSNorm(size, eps) if cross_attention else None
        self.attn = Video2LoraAttention(config)
        self.post_attention_norm = Video2LoraRMSNorm(size, eps)
        self.pre_ff_norm = Video2LoraRMSNorm(size, eps)
        self.mlp = Video2LoraGatedMLP(size, size * config.mlp_expansion, size)
        self.post_ff_norm = Video2LoraRMSNorm(size, eps)

    def forward(
        self,
        latents: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        normalized_context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        normed = self.input_latents_norm(latents)  # [N, K, D]
        scale = None
        if self.cross_attention:
            if normalized_context is None:  # the resampler passes it, computed once for all its layers
                normalized_context = self.input_context_norm.normalize(context)  # [N, S, D]
            scale = self.input_context_norm.weight  # input_context_norm(context) = scale * normalized
        else:
            normalized_context = context_mask = None
        attended = self.attn(normed, normalized_context, context_mask, context_scale=scale)
        latents = latents + self.post_attention_norm(attended)
        return latents + self.post_ff_norm(self.mlp(self.pre_ff_norm(latents)))


class Video2LoraResampler(nn.Module):
    """Learned latent queries refined by Perceiver layers over a context, then an RMSNorm."""

    def __init__(
        self, config: Video2LoraConfig, *, num_queries: int, num_blocks: int, self_attn_per_block: int
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.empty(num_queries, config.latent_size))
        period = 1 + self_attn_per_block
        self.layers = nn.ModuleList(
            Video2LoraPerceiverLayer(config, cross_attention=i % period == 0)
            for i in range(num_blocks * period)
        )
        self.norm = Video2LoraRMSNorm(config.latent_size, config.rms_norm_eps)

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(context.shape[0], -1, -1).to(context.dtype)  # [N, K, D]
        # every cross-attention layer RMS-normalizes the same context (same eps): do it once
        cross = [layer for layer in self.layers if layer.cross_attention]
        normalized = cross[0].input_context_norm.normalize(context) if cross else None  # [N, S, D]
        for layer in self.layers:
            latents = layer(latents, context, context_mask, normalized_context=normalized)
        return self.norm(latents)


class Video2LoraResidualMLP(nn.Module):
    """`y = x + LN_out(fc2(silu(fc1(LN_in(x)))))`, the pre-head block."""

    def __init__(self, config: Video2LoraConfig):
        super().__init__()
        size, eps = config.latent_size, config.layer_norm_eps
        self.norm_in = nn.LayerNorm(size, eps=eps)
        self.fc1 = nn.Linear(size, size * config.mlp_expansion)
        self.fc2 = nn.Linear(size * config.mlp_expansion, size)
        self.norm_out = nn.LayerNorm(size, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm_out(self.fc2(nn.functional.silu(self.fc1(self.norm_in(x)))))


class Video2LoraPreTrainedModel(PreTrainedModel):
    """The `PreTrainedModel` base of `Video2LoraHypernetwork`: config class and weight initialization.

    Args:
        config: a `Video2LoraConfig`.

    Example:
        ```python
        from transformers import AutoModel

        hn = AutoModel.from_pretrained("my-hypernet")  # a Video2LoraHypernetwork (registered by the library)
        isinstance(hn, Video2LoraPreTrainedModel)  # True
        ```
    """

    config_class = Video2LoraConfig
    base_model_prefix = "video2lora"
    main_input_name = "context_features"
    _no_split_modules = ["Video2LoraPerceiverLayer"]
    _supports_sdpa = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        config = self.config
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()
        elif isinstance(module, Video2LoraRMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, Video2LoraResampler):
            module.latents.normal_(0.0, config.initializer_range)
        elif isinstance(module, Video2LoraHypernetwork):
            r, size = config.lora_rank, config.latent_size
            d_lora = module.head.shape[-1]
            module.head.normal_(0.0, 0.5 / math.sqrt(size + d_lora * r))
            for name, (d_in, _) in config.module_shapes.items():
                module.scaler_A[name].fill_(1.0)
                module.scaler_B[name].zero_()  # the initial adapter is exactly zero
                if config.use_bias_lora:
                    module.bias_A[name].normal_(0.0, 0.2 / math.sqrt(d_in * r))
                    module.bias_B[name].zero_()


class Video2LoraHypernetwork(Video2LoraInferenceMixin, Video2LoraPreTrainedModel):
    r"""A Perceiver hypernetwork that turns a frozen VLM's layer-wise hidden states into a LoRA adapter.

    One Perceiver is shared by all layers (the layer axis is folded into the batch): an input projection,
    an encoder resampler with `Q` learned queries, and a decoder resampler with one query per target
    module and rank. A residual MLP, an L2 normalization and a per-layer head map each rank latent to
    `A [r, d_in]` and `B [r, d_out]`, scaled by learned per-layer, per-rank multipliers (one for `A`,
    zero for `B`, so the initial adapter is exactly zero). Learned bias ranks may be appended.

    The frozen base VLM is held by reference (`hn.vlm`), never saved with the hypernetwork, and never
    receives gradients. It is loaded from `config.base_model_name_or_path` on first use unless given.

    Args:
        config: a `Video2LoraConfig`; if it is not bound to a base model yet, `base_model` binds it.
        base_model: an optional loaded VLM to reuse (for example a `SmolVLMForConditionalGeneration`).
        processor: an optional `Video2LoraProcessor`; loaded from the base model's files otherwise.

    Example:
        ```python
        config = Video2LoraConfig.from_base_model("HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        hn = Video2LoraHypernetwork(config)
        adapter = hn.internalize("clip.mp4")
        hn.answer(adapter, "What happens in the video?")
        ```
    """

    def __init__(self, config: Video2LoraConfig, base_model: nn.Module | None = None, processor=None):
        if not config.is_bound:
            source = base_model if base_model is not None else config.base_model_name_or_path
            if source is None:
                raise ValueError(
                    "Video2LoraConfig is not bound to a base model: use Video2LoraConfig.from_base_model(...) "
                    "or pass base_model=."
                )
            bound = Video2LoraConfig.from_base_model(source, **_unbound_fields(config))
            config = bound
        super().__init__(config)
        shapes = {m: tuple(s) for m, s in config.module_shapes.items()}
        num_layers, hidden, size, r = (
            config.num_hidden_layers,
            config.hidden_size,
            config.latent_size,
            config.lora_rank,
        )
        self.num_modules = len(shapes)
        self.input_projection = Video2LoraGatedMLP(hidden, hidden * config.input_expansion, size)
        self.encoder = Video2LoraResampler(
            config,
            num_queries=config.num_latent_queries,
            num_blocks=config.num_blocks,
            self_attn_per_block=config.num_self_attn_per_block,
        )
        self.decoder = Video2LoraResampler(
            config, num_queries=self.num_modules * r, num_blocks=1, self_attn_per_block=0
        )
        self.pre_head = nn.ModuleList(
            Video2LoraResidualMLP(config) for _ in range(config.num_pre_head_layers)
        )
        d_lora = max(d_in + d_out for d_in, d_out in shapes.values())
        self.head = nn.Parameter(torch.empty(num_layers, self.num_modules, size, d_lora))  # [L, M, D, d_lora]
        self.scaler_A = nn.ParameterDict({m: nn.Parameter(torch.empty(num_layers, r)) for m in shapes})
        self.scaler_B = nn.ParameterDict({m: nn.Parameter(torch.empty(num_layers, r)) for m in shapes})
        if config.use_bias_lora:
            self.bias_A = nn.ParameterDict(
                {m: nn.Parameter(torch.empty(num_layers, r, d[0])) for m, d in shapes.items()}
            )
            self.bias_B = nn.ParameterDict(
                {m: nn.Parameter(torch.empty(num_layers, r, d[1])) for m, d in shapes.items()}
            )
        self._init_runtime(base_model, processor)
        self.post_init()

    from_frames2lora = classmethod(from_frames2lora)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *args,
        push_to_hub: bool = False,
        model_card_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        """Save the hypernetwork (config.json + safetensors, no base-model weights) and a README.md model card.

        Args:
            save_directory: the output folder.
            push_to_hub: also upload the folder (`repo_id=`, `private=`, `revision=`, ... select where).
            model_card_kwargs: extra model-card fields (for example `datasets=`, `training=`).
            **kwargs: passed to `PreTrainedModel.save_pretrained`.

        Example:
            ```python
            hn.save_pretrained("my-hypernet")
            ```
        """
        from .cards import save_hypernetwork_card
        from .hub import push_folder_to_hub

        push_keys = ("private", "token", "revision", "create_pr", "commit_message", "commit_description")
        push_kwargs = {key: kwargs.pop(key) for key in push_keys if key in kwargs}
        repo_id = kwargs.pop("repo_id", None)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            save_hypernetwork_card(save_directory, self.config, repo_id=repo_id, **(model_card_kwargs or {}))
            if push_to_hub:
                push_kwargs.setdefault("commit_message", "Upload Video2LoRA hypernetwork")
                push_folder_to_hub(
                    save_directory, repo_id or Path(save_directory).absolute().name, **push_kwargs
                )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload Video2LoRA hypernetwork",
        commit_description: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        token: str | bool | None = None,
        max_shard_size: str = "5GB",
        model_card_kwargs: dict | None = None,
    ):
        """Upload config.json, the safetensors weights and a model card in one commit.

        Args:
            repo_id: the Hub repository, created if needed.
            commit_message: the commit title.
            commit_description: the commit body.
            private: create the repository private.
            revision: the branch to push to.
            create_pr: open a pull request instead of committing to the branch.
            token: a Hub token; defaults to the logged-in one.
            max_shard_size: largest safetensors shard.
            model_card_kwargs: extra model-card fields (for example `datasets=`).

        Returns:
            The `CommitInfo` of the upload.

        Example:
            ```python
            hn.push_to_hub("me/video2lora-smolvlm2-500m")
            ```
        """
        from .hub import push_hypernetwork_to_hub

        return push_hypernetwork_to_hub(
            self,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            revision=revision,
            create_pr=create_pr,
            token=token,
            max_shard_size=max_shard_size,
            model_card_kwargs=model_card_kwargs,
        )

    # ------------------------------------------------------------------------------------
    def forward(
        self,
        context_features: torch.Tensor,
        context_attention_mask: torch.Tensor | None = None,
        output_intermediates: bool = False,
    ) -> Video2LoraOutput:
        r"""Generate one adapter per video from the base model's layer-wise hidden states.

        Args:
            context_features: `[B, L, S, H]`, the residual stream entering each decoder layer.
            context_attention_mask: `[B, S]`, 1 for real tokens and 0 for padding.
            output_intermediates: also return every stage's activations (for debugging and conversion tests).

        Returns:
            `Video2LoraOutput` with `lora_A[m]` `[B, L, R, d_in]` and `lora_B[m]` `[B, L, R, d_out]`.

        Example:
            ```python
            features, mask = hn.extract_features(**inputs)
            out = hn(context_features=features, context_attention_mask=mask)
            ```
        """
        config = self.config
        batch, num_layers, seq, hidden = context_features.shape
        if num_layers != config.num_hidden_layers or hidden != config.hidden_size:
            from .errors import CheckpointMismatchError

            raise CheckpointMismatchError(
                f"context_features must be [B, {config.num_hidden_layers}, S, {config.hidden_size}] for this "
                f"hypernetwork, got {list(context_features.shape)}."
            )
        dtype = self.head.dtype
        rows = (
            context_features.to(dtype).transpose(0, 1).reshape(num_layers * batch, seq, hidden)
        )  # [N, S, H]
        mask = None
        if context_attention_mask is not None:
            mask = context_attention_mask.bool().repeat(num_layers, 1)  # [N, S], row n = l * B + b
        projected = self.input_projection(rows)  # [N, S, D]
        encoded = self.encoder(projected, mask)  # [N, Q, D]
        decoded = self.decoder(encoded)  # [N, M * r, D]
        r = config.lora_rank
        latents = decoded.view(num_layers, batch, self.num_modules, r, -1).transpose(0, 1)  # [B, L, M, r, D]
        pre_head = latents
        for block in self.pre_head:
            pre_head = block(pre_head)
        normalized = (
            pre_head / pre_head.norm(dim=-1, keepdim=True) if config.normalize_head_input else pre_head
        )
        generated = torch.einsum("blmrd,lmde->blmre", normalized, self.head)  # [B, L, M, r, d_lora]

        lora_A, lora_B, raw_A, raw_B = {}, {}, {}, {}
        for t, (module, (d_in, d_out)) in enumerate(sorted(config.module_shapes.items())):
            raw_A[module] = (
                generated[:, :, t, :, :d_in] * self.scaler_A[module][None, :, :, None]
            )  # [B, L, r, d_in]
            raw_B[module] = (
                generated[:, :, t, :, d_in : d_in + d_out] * self.scaler_B[module][None, :, :, None]
            )
            lora_A[module], lora_B[module] = raw_A[module], raw_B[module]
            if config.use_bias_lora:
                lora_A[module] = torch.cat(
                    [raw_A[module], self.bias_A[module].expand(batch, -1, -1, -1)], dim=2
                )
                lora_B[module] = torch.cat(
                    [raw_B[module], self.bias_B[module].expand(batch, -1, -1, -1)], dim=2
                )

        intermediates = None
        if output_intermediates:
            intermediates = {
                "input_projection": projected,
                "encoder": encoded,
                "decoder": decoded,
                "pre_head": pre_head,
                "head_input": normalized,
                "head_output": generated,
                **{f"raw_A.{m}": t for m, t in raw_A.items()},
                **{f"raw_B.{m}": t for m, t in raw_B.items()},
            }
        return Video2LoraOutput(lora_A=lora_A, lora_B=lora_B, intermediates=intermediates)


def _unbound_fields(config: Video2LoraConfig) -> dict:
    """The architecture fields of an unbound config, to re-create it bound to a base model."""
    skip = {"base_model_type", "num_hidden_layers", "hidden_size", "module_shapes"}
    return {name: getattr(config, name) for name in Video2LoraConfig.field_help() if name not in skip}
