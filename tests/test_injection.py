"""Functional per-row LoRA injection: exact math, per-row independence, clean removal, validation."""

import pytest
import torch

from transformers_v2l import AdapterMismatchError, inject_lora
from transformers_v2l.families import get_family


def random_adapters(vlm, batch, rank=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    layers = vlm.config.text_config.num_hidden_layers
    d_in, d_out = vlm.config.text_config.intermediate_size, vlm.config.text_config.hidden_size
    lora_A = {"down_proj": 0.1 * torch.randn(batch, layers, rank, d_in, generator=generator)}
    lora_B = {"down_proj": 0.1 * torch.randn(batch, layers, rank, d_out, generator=generator)}
    return lora_A, lora_B


def test_hook_adds_exactly_the_lora_update(tiny_vlm):
    backbone = get_family(tiny_vlm)
    lora_A, lora_B = random_adapters(tiny_vlm, 1)
    linear = backbone.target_module(2, "down_proj")
    x = torch.randn(1, 5, linear.in_features)
    with torch.no_grad():
        plain = linear(x)
        with inject_lora(backbone, lora_A, lora_B, 2.5):
            adapted = linear(x)
    expected = plain + 2.5 * (x @ lora_A["down_proj"][0, 2].T) @ lora_B["down_proj"][0, 2]
    assert torch.allclose(adapted, expected, atol=1e-6)


def test_rows_use_their_own_adapter(tiny_vlm):
    backbone = get_family(tiny_vlm)
    lora_A, lora_B = random_adapters(tiny_vlm, 3)
    ids = torch.tensor([[1, 20, 30, 40], [1, 50, 60, 70], [1, 22, 33, 44]])
    with torch.no_grad(), inject_lora(backbone, lora_A, lora_B, 1.0):
        batched = tiny_vlm(input_ids=ids).logits
    for row in range(3):
        single_A = {k: v[row : row + 1] for k, v in lora_A.items()}
        single_B = {k: v[row : row + 1] for k, v in lora_B.items()}
        with torch.no_grad(), inject_lora(backbone, single_A, single_B, 1.0):
            single = tiny_vlm(input_ids=ids[row : row + 1]).logits
        assert (batched[row] - single[0]).abs().max() < 1e-5


def test_hooks_are_removed_even_on_error(tiny_vlm):
    backbone = get_family(tiny_vlm)
    lora_A, lora_B = random_adapters(tiny_vlm, 1)
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        before = tiny_vlm(input_ids=ids).logits
        with pytest.raises(RuntimeError, match="boom"), inject_lora(backbone, lora_A, lora_B, 1.0):
            raise RuntimeError("boom")
        after = tiny_vlm(input_ids=ids).logits
    assert torch.equal(before, after)
    assert all(not layer.mlp.down_proj._forward_hooks for layer in backbone.decoder_layers())


def test_wrong_shapes_raise_adapter_mismatch(tiny_vlm):
    backbone = get_family(tiny_vlm)
    lora_A, lora_B = random_adapters(tiny_vlm, 1)
    bad_A = {"down_proj": lora_A["down_proj"][..., :-1]}
    with pytest.raises(AdapterMismatchError, match="lora_A"), inject_lora(backbone, bad_A, lora_B, 1.0):
        pass
    bad_B = {"down_proj": lora_B["down_proj"][:, :-1]}
    with pytest.raises(AdapterMismatchError, match="lora_B"), inject_lora(backbone, lora_A, bad_B, 1.0):
        pass


def test_row_count_must_divide_the_batch(tiny_vlm):
    backbone = get_family(tiny_vlm)
    lora_A, lora_B = random_adapters(tiny_vlm, 2)
    ids = torch.tensor([[1, 20, 30], [1, 2, 3], [4, 5, 6]])
    with pytest.raises(AdapterMismatchError, match="multiple"), inject_lora(backbone, lora_A, lora_B, 1.0):
        tiny_vlm(input_ids=ids)
