"""Video2LoraHypernetwork: shapes, zero init, gradients, batching, masking, save and load."""

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

from fixtures.models import TINY_HYPERNET, randomize_outputs
from transformers_v2l import (
    CheckpointMismatchError,
    Video2LoraConfig,
    Video2LoraHypernetwork,
    inject_lora,
)
from transformers_v2l.families.smolvlm import SmolVLMFamily
from transformers_v2l.modeling_perceiver import Video2LoraAttention


def text_features(hypernet, texts):
    """Features of right-padded token rows (text only: no processor needed)."""
    ids = [torch.tensor(t) for t in texts]
    length = max(len(t) for t in ids)
    input_ids = torch.zeros(len(ids), length, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for row, t in enumerate(ids):
        input_ids[row, : len(t)] = t
        mask[row, : len(t)] = 1
    return hypernet.extract_features(input_ids=input_ids, attention_mask=mask)


def test_output_shapes(tiny_hypernet):
    config = tiny_hypernet.config
    features, mask = text_features(tiny_hypernet, [[5, 9, 12, 40, 41], [7, 8, 9]])
    assert features.shape == (2, config.num_hidden_layers, 5, config.hidden_size)
    out = tiny_hypernet(context_features=features, context_attention_mask=mask)
    d_in, d_out = config.module_shapes["down_proj"]
    assert out.lora_A["down_proj"].shape == (2, config.num_hidden_layers, config.effective_rank, d_in)
    assert out.lora_B["down_proj"].shape == (2, config.num_hidden_layers, config.effective_rank, d_out)


def test_initial_adapter_is_exactly_zero(tiny_hypernet, tiny_vlm):
    features, mask = text_features(tiny_hypernet, [[5, 9, 12, 40, 41]])
    out = tiny_hypernet(context_features=features, context_attention_mask=mask)
    assert torch.count_nonzero(out.lora_B["down_proj"]) == 0
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    with torch.no_grad():
        base = tiny_vlm(input_ids=ids).logits
        with inject_lora(tiny_hypernet.family, out.lora_A, out.lora_B, tiny_hypernet.config.scaling):
            adapted = tiny_vlm(input_ids=ids).logits
    assert torch.equal(base, adapted)


def test_one_step_changes_logits_and_only_trains_the_hypernetwork(tiny_hypernet, tiny_vlm):
    for p in tiny_vlm.parameters():
        p.requires_grad_(False)
    try:
        features, mask = text_features(tiny_hypernet, [[5, 9, 12, 40, 41]])
        ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
        with torch.no_grad():
            base = tiny_vlm(input_ids=ids).logits
        optimizer = torch.optim.AdamW(tiny_hypernet.parameters(), lr=1e-2)
        out = tiny_hypernet(context_features=features, context_attention_mask=mask)
        with inject_lora(tiny_hypernet.family, out.lora_A, out.lora_B, tiny_hypernet.config.scaling):
            loss = tiny_vlm(input_ids=ids, labels=ids).loss
        loss.backward()
        assert all(p.grad is None for p in tiny_vlm.parameters())
        grads = {n: p.grad for n, p in tiny_hypernet.named_parameters()}
        assert grads["scaler_B.down_proj"] is not None and grads["scaler_B.down_proj"].abs().sum() > 0
        optimizer.step()
        out = tiny_hypernet(context_features=features, context_attention_mask=mask)
        with (
            torch.no_grad(),
            inject_lora(tiny_hypernet.family, out.lora_A, out.lora_B, tiny_hypernet.config.scaling),
        ):
            adapted = tiny_vlm(input_ids=ids).logits
        assert (adapted - base).abs().max() > 1e-4
    finally:
        for p in tiny_vlm.parameters():
            p.requires_grad_(True)


def test_batch_equals_single_rows_and_padding_is_ignored(tiny_hypernet):
    randomize_outputs(tiny_hypernet)
    rows = [[5, 9, 12, 40, 41, 42, 43], [7, 8, 9], [30, 31, 32, 33, 34]]
    features, mask = text_features(tiny_hypernet, rows)
    with torch.no_grad():
        batched = tiny_hypernet(context_features=features, context_attention_mask=mask)
        for row, tokens in enumerate(rows):
            f, m = text_features(tiny_hypernet, [tokens])
            single = tiny_hypernet(context_features=f, context_attention_mask=m)
            for name in ("lora_A", "lora_B"):
                diff = (
                    (getattr(batched, name)["down_proj"][row] - getattr(single, name)["down_proj"][0])
                    .abs()
                    .max()
                )
                assert diff < 1e-5, (name, row, diff)
        # garbage in padded positions changes nothing
        noisy = features.clone()
        noisy[mask[:, None, :, None].expand_as(noisy) == 0] = 1e3
        again = tiny_hypernet(context_features=noisy, context_attention_mask=mask)
    assert torch.allclose(again.lora_A["down_proj"], batched.lora_A["down_proj"], atol=1e-6)


def test_save_writes_no_base_weights_and_load_restores_outputs(tiny_hypernet, tiny_vlm, tmp_path):
    randomize_outputs(tiny_hypernet)
    tiny_hypernet.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    processor_files = [
        "chat_template.jinja",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert files == sorted(["README.md", "config.json", "model.safetensors", *processor_files])
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert keys == set(tiny_hypernet.state_dict())
    assert not any("text_model" in k or "vision" in k or "lm_head" in k for k in keys)

    loaded = Video2LoraHypernetwork.from_pretrained(tmp_path, base_model=tiny_vlm)
    auto = AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto, Video2LoraHypernetwork)
    features, mask = text_features(tiny_hypernet, [[5, 9, 12, 40, 41]])
    with torch.no_grad():
        a = tiny_hypernet(context_features=features, context_attention_mask=mask)
        b = loaded(context_features=features, context_attention_mask=mask)
    assert torch.equal(a.lora_A["down_proj"], b.lora_A["down_proj"])
    assert torch.equal(a.lora_B["down_proj"], b.lora_B["down_proj"])
    assert loaded.vlm is tiny_vlm


def test_base_model_loaded_lazily_by_path(tiny_hypernet, tmp_path):
    tiny_hypernet.save_pretrained(tmp_path)
    loaded = Video2LoraHypernetwork.from_pretrained(tmp_path, base_model_kwargs={"dtype": torch.float32})
    assert not loaded.runtime.is_loaded
    with pytest.raises(RuntimeError, match="load_base_model"):
        loaded.vlm  # noqa: B018 (no property loads a model)
    assert loaded.load_base_model().config.text_config.hidden_size == loaded.config.hidden_size
    assert loaded.vlm.dtype == torch.float32


def test_checkpoint_on_a_base_model_of_other_shapes(tiny_hypernet, tmp_path):
    tiny_hypernet.save_pretrained(tmp_path)
    other, _ = SmolVLMFamily.build_tiny_model(hidden_size=96, intermediate_size=160)
    with pytest.raises(CheckpointMismatchError, match="layers and module shapes"):
        Video2LoraHypernetwork.from_pretrained(tmp_path, base_model=other)


def test_features_of_wrong_shape_are_refused(tiny_hypernet):
    config = tiny_hypernet.config
    with pytest.raises(CheckpointMismatchError, match="context_features"):
        tiny_hypernet(context_features=torch.zeros(1, config.num_hidden_layers + 1, 3, config.hidden_size))


def test_unbound_config_binds_to_the_given_base_model(tiny_vlm):
    config = Video2LoraConfig(**TINY_HYPERNET)
    hypernet = Video2LoraHypernetwork(config, base_model=tiny_vlm)
    assert hypernet.config.hidden_size == tiny_vlm.config.text_config.hidden_size
    with pytest.raises(ValueError, match="not bound"):
        Video2LoraHypernetwork(Video2LoraConfig(**TINY_HYPERNET))


@pytest.mark.parametrize("num_queries, absorbed", [(2, True), (40, False)])
def test_attention_matches_repeated_key_value_heads_over_context_and_latents(num_queries, absorbed):
    config = Video2LoraConfig(
        latent_size=32, num_attention_heads=4, num_key_value_heads=2, attention_head_dim=8, lora_rank=2
    )
    attention = Video2LoraAttention(config)
    assert attention.absorbs_context(num_queries) is absorbed  # both code paths are exercised
    torch.manual_seed(0)
    k = num_queries
    latents, context, scale = torch.randn(3, k, 32), torch.randn(3, 7, 32), torch.rand(32) + 0.5
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    got = attention(latents, context, mask, context_scale=scale)

    # reference: keys and values of [scale * context; latents], each key/value head repeated for its group
    source = torch.cat([context * scale, latents], dim=1)  # [N, S + K, D]
    key_mask = torch.cat([mask, torch.ones(3, k, dtype=torch.bool)], dim=1)
    q = attention.q_proj(latents).view(3, k, 4, 8).transpose(1, 2)  # [N, h, K, d]
    keys = attention.k_proj(source).view(3, 7 + k, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    values = attention.v_proj(source).view(3, 7 + k, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    scores = (q @ keys.transpose(2, 3)) / 8**0.5
    scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    expected = attention.o_proj((scores.softmax(-1) @ values).transpose(1, 2).reshape(3, k, 32))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # self-attention: the latents alone
    self_scores = (q @ keys[:, :, 7:].transpose(2, 3)) / 8**0.5
    expected_self = attention.o_proj(
        (self_scores.softmax(-1) @ values[:, :, 7:]).transpose(1, 2).reshape(3, k, 32)
    )
    torch.testing.assert_close(attention(latents), expected_self, atol=1e-5, rtol=1e-5)


def test_features_are_the_decoder_layer_inputs_and_the_last_layer_is_skipped(tiny_hypernet, tiny_vlm):
    ids = torch.tensor([[5, 9, 12, 40, 41], [7, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        reference = tiny_vlm.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states
    layers = tiny_hypernet.family.decoder_layers()
    calls = []
    handle = layers[-1].mlp.register_forward_hook(lambda *args: calls.append(1))
    try:
        features, _ = tiny_hypernet.extract_features(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    assert calls == []  # the last layer's output is not a feature: it never runs
    assert features.shape[1] == len(layers) == len(reference) - 1
    for layer in range(len(layers)):
        torch.testing.assert_close(features[:, layer], reference[layer], atol=0, rtol=0)
    assert all(not layer._forward_pre_hooks for layer in layers)  # the recording hooks are removed


def test_inference_input_projection_in_blocks_matches_training_form(tiny_hypernet, monkeypatch):
    import transformers_v2l.modeling_perceiver as modeling

    config = tiny_hypernet.config
    rows = torch.randn(3, 7, config.hidden_size)
    expected = tiny_hypernet.input_projection(rows)  # grad enabled: one block, out-of-place
    monkeypatch.setattr(modeling, "_BLOCK_TOKENS", 4)  # 21 tokens: 6 blocks, the last one short
    with torch.no_grad():
        got = tiny_hypernet.input_projection(rows)
    torch.testing.assert_close(
        got, expected, atol=1e-6, rtol=1e-5
    )  # up to the matmul kernels' summation order
