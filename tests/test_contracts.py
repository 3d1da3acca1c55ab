"""The contracts transformers and PEFT keep for their models and adapters, checked on ours.

Written for this project after transformers' `ConfigTester` and `ModelTesterMixin` (config round trips,
save/load, loading info, `from_pretrained(None, config=, state_dict=)`, determinism, dtype and device
moves, `push_to_hub(tags=)`) and PEFT's adapter checks (a generated adapter behaves like a PEFT LoRA
adapter: same logits unmerged and merged, `merge_and_unload`, dtype handling).
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from fixtures.models import TINY_HYPERNET, randomize_outputs
from transformers_v2l import GeneratedLora, Video2LoraConfig, Video2LoraHypernetwork
from transformers_v2l.injection import inject_lora, stack_adapters

IDS = torch.tensor([[1, 17, 42, 99, 123, 256, 300]])


def features_for(hn, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    config = hn.config
    features = torch.randn(2, config.num_hidden_layers, 9, config.hidden_size, generator=generator)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return features, mask  # [B, L, S, H], [B, S]


# ---- configuration (ConfigTester) --------------------------------------------------------------------
def test_config_round_trips_through_dict_json_and_files(tiny_vlm_path, tmp_path):
    config = Video2LoraConfig.from_base_model(tiny_vlm_path, **TINY_HYPERNET)
    assert Video2LoraConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    config.to_json_file(tmp_path / "config.json")
    assert Video2LoraConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved")
    assert Video2LoraConfig.from_pretrained(tmp_path / "saved").to_dict() == config.to_dict()
    diff = json.loads(config.to_json_string(use_diff=True))
    assert diff["model_type"] == "video2lora" and diff["lora_rank"] == TINY_HYPERNET["lora_rank"]
    assert config.num_hidden_layers == 4 and config.hidden_size == 64  # the common properties


def test_config_common_kwargs_and_unknown_attributes(tiny_vlm_path):
    config = Video2LoraConfig.from_base_model(tiny_vlm_path, output_hidden_states=True, my_note="kept")
    assert config.output_hidden_states is True and config.my_note == "kept"
    assert "my_note" in config.to_dict()


# ---- the model (ModelTesterMixin) ----------------------------------------------------------------------
def test_save_load_gives_identical_outputs_and_loading_info(tiny_hypernet, tmp_path):
    randomize_outputs(tiny_hypernet).eval()
    features, mask = features_for(tiny_hypernet)
    with torch.no_grad():
        before = tiny_hypernet(features, mask)
    tiny_hypernet.save_pretrained(tmp_path)
    loaded, info = Video2LoraHypernetwork.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, Video2LoraHypernetwork)
    assert all(not info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        after = loaded.eval()(features, mask)
    for module in before.lora_A:
        assert torch.equal(before.lora_A[module], after.lora_A[module])
        assert torch.equal(before.lora_B[module], after.lora_B[module])


def test_from_pretrained_with_no_path_takes_config_and_state_dict(tiny_hypernet):
    randomize_outputs(tiny_hypernet)
    state = tiny_hypernet.state_dict()
    loaded = Video2LoraHypernetwork.from_pretrained(None, config=tiny_hypernet.config, state_dict=state)
    assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())
    assert loaded.runtime.hub_revision is None


def test_sharded_save_loads_back(tiny_hypernet, tmp_path):
    randomize_outputs(tiny_hypernet)
    tiny_hypernet.save_pretrained(tmp_path, max_shard_size="50KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    loaded = Video2LoraHypernetwork.from_pretrained(tmp_path)
    assert all(torch.equal(tiny_hypernet.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_forward_is_deterministic_in_eval_mode_and_batch_rows_are_independent(tiny_hypernet):
    hn = randomize_outputs(tiny_hypernet).eval()
    features, mask = features_for(hn)
    with torch.no_grad():
        a, b = hn(features, mask), hn(features, mask)
        single = hn(features[1:], mask[1:])
    assert torch.equal(a.lora_A["down_proj"], b.lora_A["down_proj"])
    assert torch.allclose(a.lora_B["down_proj"][1:], single.lora_B["down_proj"], atol=1e-6)


def test_every_parameter_gets_a_gradient(tiny_hypernet):
    hn = randomize_outputs(tiny_hypernet).train()
    features, mask = features_for(hn)
    out = hn(features, mask)
    (out.lora_A["down_proj"].square().sum() + out.lora_B["down_proj"].square().sum()).backward()
    missing = [name for name, p in hn.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_dtype_moves_keep_the_model_working(tiny_hypernet):
    hn = randomize_outputs(tiny_hypernet).eval().to(torch.bfloat16)
    assert hn.dtype == torch.bfloat16
    features, mask = features_for(hn)
    with torch.no_grad():
        out = hn(features, mask)  # fp32 features are cast to the hypernetwork's dtype
    assert out.lora_A["down_proj"].dtype == torch.bfloat16 and torch.isfinite(out.lora_A["down_proj"]).all()


def test_to_a_device_moves_the_base_model_too(tiny_hypernet, tiny_vlm_path):
    """`hn.to(device)` places the hypernetwork and the base VLM together (the meta device stands in for a GPU)."""
    from transformers_v2l.families.smolvlm import SmolVLMFamily

    vlm = SmolVLMFamily.model_class().from_pretrained(tiny_vlm_path, dtype=torch.float32)
    hn = Video2LoraHypernetwork(tiny_hypernet.config, base_model=vlm)
    hn.to("meta")
    assert hn.device.type == "meta" and hn.runtime.device.type == "meta"
    assert {p.device.type for p in vlm.parameters()} == {"meta"}
    unloaded = Video2LoraHypernetwork(tiny_hypernet.config)  # no base model yet: it will load there
    unloaded.to("meta")
    assert unloaded.runtime.base_model_kwargs["device_map"] == "meta"


def test_from_pretrained_places_the_base_model_like_the_hypernetwork(tiny_hypernet, tmp_path):
    tiny_hypernet.save_pretrained(tmp_path)
    hn = Video2LoraHypernetwork.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="cpu")
    assert hn.dtype == torch.bfloat16
    assert (
        hn.load_base_model().dtype == torch.bfloat16
    )  # the same dtype, unless base_model_kwargs says otherwise
    fp32 = Video2LoraHypernetwork.from_pretrained(tmp_path, base_model_kwargs={"dtype": torch.float32})
    assert fp32.load_base_model().dtype == torch.float32


def test_push_to_hub_takes_tags(tiny_hypernet, hub_base_model, local_hub):
    from huggingface_hub import ModelCard, hf_hub_download

    tiny_hypernet.config.base_model_name_or_path = hub_base_model
    info = tiny_hypernet.push_to_hub("tester/tagged-hypernet", tags=["lectures", "cooking"])
    card = ModelCard.load(hf_hub_download("tester/tagged-hypernet", "README.md", revision=info.oid))
    assert {"lectures", "cooking", "video2lora"} <= set(card.data.tags)


# ---- adapters (PEFT's own checks) --------------------------------------------------------------------------
def adapter_of(hn, dtype=torch.float32) -> GeneratedLora:
    features, mask = features_for(randomize_outputs(hn).eval())
    with torch.no_grad():
        return hn.adapters_from_output(hn(features[:1], mask[:1]))[0].to(dtype)


def peft_logits(vlm, folder, **kwargs):
    import copy

    model = PeftModel.from_pretrained(copy.deepcopy(vlm), folder, **kwargs).eval()
    with torch.no_grad():
        unmerged = model(input_ids=IDS).logits
        merged = model.merge_and_unload()(input_ids=IDS).logits
    return unmerged, merged


@pytest.mark.parametrize("adapter_dtype", [torch.float32, torch.bfloat16])
def test_generated_adapters_behave_as_peft_lora_adapters(tiny_hypernet, tiny_vlm, tmp_path, adapter_dtype):
    """Hooks, our merge and PEFT (unmerged and `merge_and_unload`) agree; a bf16 adapter on an fp32 model
    computes in fp32, as PEFT does (it upcasts the adapter), not in bf16."""
    adapter = adapter_of(tiny_hypernet, adapter_dtype)
    adapter.save_pretrained(tmp_path)
    with torch.no_grad(), inject_lora(tiny_hypernet.family, *stack_adapters([adapter])):
        hooks = tiny_vlm(input_ids=IDS).logits
    with torch.no_grad(), adapter.merge_into(tiny_vlm):
        ours_merged = tiny_vlm(input_ids=IDS).logits
    unmerged, merged = peft_logits(tiny_vlm, tmp_path)  # PEFT's default: adapters upcast to fp32
    with torch.no_grad():
        plain = tiny_vlm(input_ids=IDS).logits
    assert (hooks - plain).abs().max() > 1e-3  # the adapter changes the logits
    assert (hooks - unmerged).abs().max() <= 1e-5
    assert (ours_merged - merged).abs().max() <= 1e-5
    assert (hooks - ours_merged).abs().max() <= 1e-4


def test_peft_state_dict_loads_without_missing_or_unexpected_keys(tiny_hypernet, tiny_vlm, tmp_path):
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    adapter = adapter_of(tiny_hypernet)
    import copy

    model = get_peft_model(copy.deepcopy(tiny_vlm), adapter.config)
    result = set_peft_model_state_dict(model, adapter.to_peft_state_dict())
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k]
    round_trip = GeneratedLora.from_peft_state_dict(
        get_peft_model_state_dict(model),
        model.peft_config["default"],
        base_model_type=adapter.base_model_type,
    )
    for module in adapter.target_modules:
        assert torch.equal(round_trip.lora_A[module], adapter.lora_A[module])
        assert torch.equal(round_trip.lora_B[module], adapter.lora_B[module])
