"""The Perceiver blocks of the Video2LoRA hypernetwork (paper section 3.3, Frames2LoRA SPEC section 2).

Internal building blocks of `Video2LoraHypernetwork` (no public API of their own, like transformers'
layers): their parameter names are the checkpoint's keys.

Shape letters: N rows (layers x videos), S context tokens, K latents, D latent size, h query heads,
g key/value heads, G = h / g query heads per key/value head, d head size.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_video2lora import Video2LoraConfig

#: Tokens per block of the inference-time gated MLPs: small blocks keep their `[tokens, hidden]` intermediates in cache.
_BLOCK_TOKENS = 4096


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
