"""GeneratedLora as a PEFT adapter: config, files, loading plain PEFT adapters, algebra, merging, validation."""

import dataclasses
import json
import re
import warnings

import pytest
import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from transformers_v2l import AdapterMismatchError, inject_lora
from transformers_v2l.cards import read_card_metadata
from transformers_v2l.families import get_family
from transformers_v2l.families.smolvlm import SmolVLMFamily
from transformers_v2l.injection import stack_adapters
from transformers_v2l.lora import GeneratedLora, GeneratedLoraConfig

PROVENANCE = {
    "video_sha256": "5" * 64,
    "frame_indices": [0, 4, 8, 12],
    "resolution": [48, 64],
    "hypernetwork": "tester/video2lora-tiny",
    "hypernetwork_revision": "0123456789abcdef0123456789abcdef01234567",
    "instruction": "Internalize this video for later captioning.",
}


def random_adapter(vlm, rank=6, seed=0, scaling=16.0, modules=("down_proj",), **kwargs):
    generator = torch.Generator().manual_seed(seed)
    shapes = SmolVLMFamily.module_shapes(vlm.config, list(modules))
    layers = vlm.config.text_config.num_hidden_layers
    lora_A = {
        m: 0.2 * torch.randn(layers, rank, d_in, generator=generator) for m, (d_in, _) in shapes.items()
    }
    lora_B = {
        m: 0.2 * torch.randn(layers, rank, d_out, generator=generator) for m, (_, d_out) in shapes.items()
    }
    kwargs.setdefault("base_model_name_or_path", vlm.config._name_or_path)
    kwargs.setdefault("base_model_type", "smolvlm")
    return GeneratedLora(lora_A, lora_B, scaling, **kwargs)


def injected_logits(vlm, adapter, ids):
    lora_A, lora_B, scaling = stack_adapters([adapter])
    with torch.no_grad(), inject_lora(get_family(vlm), lora_A, lora_B, scaling):
        return vlm(input_ids=ids).logits


IDS = torch.tensor([[1, 17, 42, 99, 123, 256, 300]])


# ---- PEFT config and files ------------------------------------------------------------------------
def test_config_is_a_plain_lora_config_with_exact_scaling(tiny_vlm, tmp_path):
    adapter = random_adapter(tiny_vlm, rank=6, scaling=2 * 3**1.5)
    adapter.save_pretrained(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 6
    assert saved["base_model_name_or_path"] == tiny_vlm.config._name_or_path
    assert saved["target_modules"] == SmolVLMFamily.peft_target_regex(["down_proj"])
    assert saved["lora_alpha"] / saved["r"] == pytest.approx(adapter.scaling, rel=1e-12)
    assert set(saved) <= set(LoraConfig.__dataclass_fields__), "only keys PEFT knows"
    assert not set(saved) & {"video2lora", "video_sha256", "instruction"}, (
        "provenance stays out of the config"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftConfig.from_pretrained(str(tmp_path / "a"))
    assert type(loaded) is LoraConfig and loaded.lora_alpha / loaded.r == pytest.approx(adapter.scaling)
    assert not [w for w in caught if "nexpected" in str(w.message)]


def test_target_regex_matches_exactly_the_text_decoder_modules(tiny_vlm):
    modules = ["q_proj", "down_proj"]
    regex = GeneratedLoraConfig.for_generated(
        rank=2, scaling=1.0, target_modules=modules, base_model_type="smolvlm"
    ).target_modules
    matched = {name for name, _ in tiny_vlm.named_modules() if re.fullmatch(regex, name)}
    layers = tiny_vlm.config.text_config.num_hidden_layers
    assert matched == {SmolVLMFamily.module_path(i, m) for i in range(layers) for m in modules}
    assert any("vision" in n and n.endswith("q_proj") for n, _ in tiny_vlm.named_modules())


@pytest.mark.parametrize("modules", [["down_proj"], ["down_proj", "q_proj"]])
def test_target_regex_reads_the_same_in_vllm_and_sglang(modules):
    """vLLM checks a `.bin` adapter's target by `target_modules.split(".")[-1]` (`vllm/lora/models.py`),
    then by the names in a trailing `(a|b)` group; SGLang takes `name.split(".")[-1]` per entry. A
    `(?:...)` group read that way is the module `?:mlp\\.down_proj`, which vLLM refuses."""
    regex = SmolVLMFamily.peft_target_regex(modules)
    assert "(?:" not in regex
    for alternative in regex.split("|"):
        assert alternative.split(".")[-1] in modules
        assert alternative.split(".")[-1] == alternative.rsplit("\\.", 1)[-1]


@pytest.mark.parametrize(
    ("field", "value"), [("use_dora", True), ("lora_dropout", 0.1), ("bias", "all"), ("use_rslora", True)]
)
def test_config_rejects_what_a_generated_adapter_cannot_mean(field, value):
    with pytest.raises(ValueError, match=f"GeneratedLoraConfig.{field} must be"):
        GeneratedLoraConfig(r=4, lora_alpha=8, target_modules="x", **{field: value})


def test_peft_state_dict_keys_and_shapes(tiny_vlm):
    adapter = random_adapter(tiny_vlm, rank=5)
    state = adapter.to_peft_state_dict()
    layers = tiny_vlm.config.text_config.num_hidden_layers
    assert len(state) == 2 * layers
    key = "base_model.model.model.text_model.layers.2.mlp.down_proj"
    assert torch.equal(state[f"{key}.lora_A.weight"], adapter.lora_A["down_proj"][2])  # [R, d_in]
    assert torch.equal(state[f"{key}.lora_B.weight"], adapter.lora_B["down_proj"][2].T)  # [d_out, R]
    assert state[f"{key}.lora_B.weight"].shape == (tiny_vlm.config.text_config.hidden_size, 5)


def test_save_and_load_round_trip_with_provenance_in_the_card(tiny_vlm, tmp_path):
    adapter = random_adapter(tiny_vlm, metadata=dict(PROVENANCE))
    folder = adapter.save_pretrained(tmp_path / "clip-adapter")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["clip-adapter"], "no temporary folders left behind"
    card = read_card_metadata(folder / "README.md")
    assert card["library_name"] == "peft" and "base_model" not in card  # a local folder is never published
    assert tiny_vlm.config._name_or_path not in (folder / "README.md").read_text()
    hub_id = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    published = dataclasses.replace(adapter, base_model_name_or_path=hub_id).model_card().data.to_dict()
    assert published["base_model"] == hub_id and f"base_model:adapter:{hub_id}" in published["tags"]
    assert {"video2lora", "lora"} <= set(card["tags"])
    assert {k: card["video2lora"][k] for k in PROVENANCE} == PROVENANCE
    body = (folder / "README.md").read_text()
    assert PROVENANCE["video_sha256"] in body and PROVENANCE["hypernetwork_revision"] in body
    back = GeneratedLora.from_pretrained(folder)
    assert (
        back.metadata == PROVENANCE and back.scaling == adapter.scaling and back.base_model_type == "smolvlm"
    )
    assert back.base_model_name_or_path == adapter.base_model_name_or_path
    assert torch.equal(back.lora_A["down_proj"], adapter.lora_A["down_proj"])
    assert torch.equal(back.lora_B["down_proj"], adapter.lora_B["down_proj"])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        GeneratedLora.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"has no adapter_model\.safetensors"):
        (folder / "adapter_model.safetensors").unlink()
        GeneratedLora.from_pretrained(folder)


def test_a_failed_save_leaves_the_existing_folder_untouched(tiny_vlm, tmp_path, monkeypatch):
    folder = random_adapter(tiny_vlm, seed=1).save_pretrained(tmp_path / "a")
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken_card(self, repo_id=None):
        raise RuntimeError("disk full")

    monkeypatch.setattr(GeneratedLora, "model_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        random_adapter(tiny_vlm, seed=2).save_pretrained(folder)
    with pytest.raises(RuntimeError, match="disk full"):
        random_adapter(tiny_vlm, seed=2).save_pretrained(tmp_path / "new")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    monkeypatch.undo()
    other = random_adapter(tiny_vlm, seed=3)
    other.save_pretrained(folder)  # overwriting replaces our files and keeps the user's
    assert (folder / "notes.txt").read_text() == "mine"
    assert torch.equal(GeneratedLora.from_pretrained(folder).lora_A["down_proj"], other.lora_A["down_proj"])


def test_loads_adapters_written_by_plain_peft(tiny_vlm, tiny_vlm_path, tmp_path):
    from transformers import SmolVLMForConditionalGeneration

    regex = SmolVLMFamily.peft_target_regex(["down_proj", "up_proj"])
    torch.manual_seed(0)
    base = SmolVLMForConditionalGeneration.from_pretrained(tiny_vlm_path, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=regex, init_lora_weights=False, use_rslora=True)
    peft_model = get_peft_model(base, config).eval()
    peft_model.save_pretrained(tmp_path / "peft")
    with torch.no_grad():
        expected = peft_model(input_ids=IDS).logits
    adapter = GeneratedLora.from_pretrained(tmp_path / "peft")
    assert adapter.target_modules == ["down_proj", "up_proj"] and adapter.rank == 4
    assert adapter.scaling == pytest.approx(8 / 4**0.5)
    assert (injected_logits(tiny_vlm, adapter, IDS) - expected).abs().max() < 1e-5


def test_peft_adapters_it_cannot_represent_raise_a_clear_error(tiny_vlm, tmp_path):
    state = random_adapter(tiny_vlm).to_peft_state_dict()
    config = {"peft_type": "LORA", "r": 6, "lora_alpha": 6}
    vision = dict(state)
    vision["base_model.model.model.vision_model.encoder.layers.0.mlp.fc1.lora_A.weight"] = torch.zeros(6, 8)
    with pytest.raises(AdapterMismatchError, match=r"vision_model.*only targets"):
        GeneratedLora.from_peft_state_dict(vision, config)
    partial = {k: v for k, v in state.items() if ".layers.1." not in k}
    with pytest.raises(AdapterMismatchError, match=r"no down_proj weights for layers \[1\]"):
        GeneratedLora.from_peft_state_dict(partial, config)
    with pytest.raises(AdapterMismatchError, match="use_dora"):
        GeneratedLora.from_peft_state_dict(state, {**config, "use_dora": True})


# ---- algebra -----------------------------------------------------------------------------------------
def test_compose_equals_the_sum_of_deltas(tiny_vlm):
    first = random_adapter(tiny_vlm, rank=4, seed=1, scaling=16.0, metadata={"video_sha256": "a" * 64})
    second = random_adapter(tiny_vlm, rank=3, seed=2, scaling=5.5, metadata={"video_sha256": "b" * 64})
    whole = GeneratedLora.compose([first, second])
    assert whole.rank == 7 and whole.scaling == first.scaling
    assert [p["video_sha256"] for p in whole.metadata["composed_from"]] == ["a" * 64, "b" * 64]
    delta = first.delta_weight("down_proj") + second.delta_weight("down_proj")
    assert (whole.delta_weight("down_proj") - delta).abs().max() < 1e-4 * delta.abs().max()
    linear = get_family(tiny_vlm).target_module(1, "down_proj")
    x = torch.randn(2, 5, linear.in_features)
    lora_A, lora_B, scaling = stack_adapters([whole])
    with torch.no_grad():
        plain = linear(x)
        with inject_lora(get_family(tiny_vlm), lora_A, lora_B, scaling):
            composed = linear(x[:1])
    expected = (
        plain[:1] + x[:1] @ (first.delta_weight("down_proj")[1] + second.delta_weight("down_proj")[1]).T
    )
    assert (composed - expected).abs().max() < 1e-4


def test_compose_refuses_different_shapes_or_base_models(tiny_vlm):
    adapter = random_adapter(tiny_vlm)
    with pytest.raises(AdapterMismatchError, match="different shapes"):
        GeneratedLora.compose([adapter, random_adapter(tiny_vlm, modules=("up_proj",))])
    with pytest.raises(AdapterMismatchError, match="different base models"):
        GeneratedLora.compose([adapter, random_adapter(tiny_vlm, base_model_name_or_path="org/other-model")])


def test_prune_equals_dropping_ranks_by_hand(tiny_vlm):
    adapter = random_adapter(tiny_vlm, rank=8, modules=("down_proj", "gate_proj"))
    pruned = adapter.prune(3)
    assert pruned.rank == 3 and pruned.metadata["rank_selection"] == {"strategy": "top", "k": 3}
    for module in adapter.target_modules:
        for layer in range(adapter.num_layers):
            a, b = adapter.lora_A[module][layer], adapter.lora_B[module][layer]
            scores = [float(a[r].norm() * b[r].norm()) for r in range(8)]
            top = sorted(sorted(range(8), key=lambda r: -scores[r])[:3])
            assert torch.equal(pruned.lora_A[module][layer], a[top])
            assert torch.equal(pruned.lora_B[module][layer], b[top])
            removed = adapter.prune(2, strategy="remove_top")
            rest = [r for r in range(8) if r not in sorted(range(8), key=lambda r: -scores[r])[:2]]
            assert torch.equal(removed.lora_A[module][layer], a[rest])
            bottom = adapter.prune(2, strategy="bottom")
            assert torch.equal(
                bottom.lora_B[module][layer], b[sorted(sorted(range(8), key=lambda r: scores[r])[:2])]
            )


def test_random_selection_is_seeded_and_keep_drop_are_complements(tiny_vlm):
    adapter = random_adapter(tiny_vlm, rank=8)
    assert torch.equal(adapter.prune(4, strategy="random", seed=3).lora_A["down_proj"],
                       adapter.prune(4, strategy="random", seed=3).lora_A["down_proj"])  # fmt: skip
    assert not torch.equal(adapter.prune(4, strategy="random", seed=3).lora_A["down_proj"],
                           adapter.prune(4, strategy="random", seed=4).lora_A["down_proj"])  # fmt: skip
    kept, dropped = adapter.keep_ranks([1, 5]), adapter.drop_ranks([1, 5])
    assert kept.rank == 2 and dropped.rank == 6
    total = GeneratedLora.compose([kept, dropped]).delta_weight("down_proj")
    assert torch.allclose(total, adapter.delta_weight("down_proj"), atol=1e-4)
    with pytest.raises(ValueError, match="k <= 8"):
        adapter.prune(9)
    with pytest.raises(ValueError, match="repeat"):
        adapter.keep_ranks([1, 1])


def test_to_dtype_and_nbytes(tiny_vlm):
    adapter = random_adapter(tiny_vlm, rank=4)
    layers, cfg = adapter.num_layers, tiny_vlm.config.text_config
    assert adapter.nbytes == 4 * layers * 4 * (cfg.intermediate_size + cfg.hidden_size)
    half = adapter.to(torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.nbytes == adapter.nbytes // 2
    assert adapter.dtype == torch.float32, "to() returns a copy"


# ---- applying to a model ----------------------------------------------------------------------------
def test_merge_then_unmerge_restores_weights_bit_exactly(tiny_vlm):
    adapter = random_adapter(tiny_vlm, modules=("down_proj", "q_proj"))
    before = {k: v.clone() for k, v in tiny_vlm.state_dict().items()}
    expected = injected_logits(tiny_vlm, adapter, IDS)
    with adapter.merge_into(tiny_vlm) as merged:
        assert merged.merged
        with torch.no_grad():
            logits = tiny_vlm(input_ids=IDS).logits
        with pytest.raises(RuntimeError, match="already holds"):
            adapter.merge_into(tiny_vlm)
    assert (logits - expected).abs().max() < 1e-4
    assert all(torch.equal(before[k], v) for k, v in tiny_vlm.state_dict().items())
    adapter.merge_into(tiny_vlm)
    GeneratedLora.unmerge(tiny_vlm)
    assert all(torch.equal(before[k], v) for k, v in tiny_vlm.state_dict().items())


def test_merge_into_bf16_weights_unmerges_exactly(tiny_vlm):
    import copy

    vlm = copy.deepcopy(tiny_vlm).to(torch.bfloat16)
    weight = get_family(vlm).target_module(0, "down_proj").weight
    before = weight.clone()
    handle = random_adapter(tiny_vlm).merge_into(vlm)
    assert weight.dtype == torch.bfloat16 and not torch.equal(weight, before)
    handle.unmerge()
    assert torch.equal(weight, before)


def test_mismatched_models_raise_with_expected_and_found(tiny_vlm):
    wrong_width = GeneratedLora(
        {"down_proj": torch.zeros(4, 2, 100)}, {"down_proj": torch.zeros(4, 2, 64)}, 1.0
    )
    with pytest.raises(
        AdapterMismatchError, match=r"4 layers .*\(100, 64\).* has 4 layers and .*\(128, 64\)"
    ):
        wrong_width.check_compatible(tiny_vlm)
    wrong_depth = GeneratedLora(
        {"down_proj": torch.zeros(7, 2, 128)}, {"down_proj": torch.zeros(7, 2, 64)}, 1.0
    )
    before = get_family(tiny_vlm).target_module(0, "down_proj").weight.clone()
    with pytest.raises(AdapterMismatchError, match="7 layers"):
        wrong_depth.merge_into(tiny_vlm)
    assert torch.equal(get_family(tiny_vlm).target_module(0, "down_proj").weight, before)
    llama = random_adapter(tiny_vlm)
    llama.base_model_type = "llama"
    with pytest.raises(AdapterMismatchError, match="'llama' model"):
        llama.check_compatible(tiny_vlm)


def test_a_different_base_model_name_warns_or_raises_when_strict(tiny_vlm):
    adapter = random_adapter(tiny_vlm, base_model_name_or_path="org/another-vlm")
    with pytest.warns(UserWarning, match="generated for 'org/another-vlm'"):
        adapter.check_compatible(tiny_vlm)
    with pytest.raises(AdapterMismatchError, match="another-vlm"):
        adapter.check_compatible(tiny_vlm, strict=True)
    same = random_adapter(
        tiny_vlm, base_model_name_or_path="org/" + tiny_vlm.config._name_or_path.rsplit("/", 1)[-1]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.check_compatible(tiny_vlm)  # a local copy keeps the repository's name


def test_malformed_tensors_are_rejected():
    with pytest.raises(ValueError, match="same L and R"):
        GeneratedLora({"down_proj": torch.zeros(4, 2, 8)}, {"down_proj": torch.zeros(4, 3, 8)}, 1.0)
    with pytest.raises(ValueError, match="same modules"):
        GeneratedLora({"down_proj": torch.zeros(4, 2, 8)}, {"up_proj": torch.zeros(4, 2, 8)}, 1.0)


def test_peft_loads_a_saved_adapter_in_process(tiny_vlm, tiny_vlm_path, tmp_path):
    """The quick in-process check; test_peft_interop.py repeats it in a process without transformers_v2l."""
    from transformers import SmolVLMForConditionalGeneration

    adapter = random_adapter(tiny_vlm, rank=8, modules=("down_proj", "v_proj"), scaling=2 * 4**1.5)
    adapter.save_pretrained(tmp_path / "a")
    base = SmolVLMForConditionalGeneration.from_pretrained(tiny_vlm_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(tmp_path / "a")).eval()
    with torch.no_grad():
        logits = model(input_ids=IDS).logits
    assert (logits - injected_logits(tiny_vlm, adapter, IDS)).abs().max() < 1e-5
    assert (
        load_file(tmp_path / "a" / "adapter_model.safetensors").keys() == adapter.to_peft_state_dict().keys()
    )


def test_card_reads_provenance_as_video_io_names_it(tiny_vlm):
    """`internalize` passes `VideoMetadata.to_dict()` (`sha256`, `width`, `height`, `source`, ...)."""
    meta = {"source": "/home/alice/private/lecture.mp4", "sha256": "e" * 64, "width": 640, "height": 272, "frame_indices": [0, 9],
            "longest_edge": 384, "instruction": "Internalize this video.", "hypernetwork": "tester/hn"}  # fmt: skip
    body = random_adapter(tiny_vlm, metadata=meta).model_card().text
    assert "e" * 64 in body and "lecture.mp4" in body and "640x272 native" in body and "384 px" in body
    assert "alice" not in body, "local folder names are never published"
    assert (
        "`tester/hn`" in body and "not recorded" not in body.split("## Adapter")[0].split("Hypernetwork")[0]
    )


def test_generated_config_works_as_a_lora_config_in_get_peft_model(tiny_vlm, tiny_vlm_path, tmp_path):
    from peft import set_peft_model_state_dict
    from transformers import SmolVLMForConditionalGeneration

    adapter = random_adapter(tiny_vlm, rank=4)
    base = SmolVLMForConditionalGeneration.from_pretrained(tiny_vlm_path, dtype=torch.float32)
    model = get_peft_model(base, adapter.config).eval()
    result = set_peft_model_state_dict(model, adapter.to_peft_state_dict())
    assert not result.unexpected_keys, result.unexpected_keys
    with torch.no_grad():
        logits = model(input_ids=IDS).logits
    assert (logits - injected_logits(tiny_vlm, adapter, IDS)).abs().max() < 1e-5
    model.save_pretrained(tmp_path / "p")  # PEFT's own save of our config: still only known keys
    saved = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert set(saved) <= set(LoraConfig.__dataclass_fields__)
    assert (saved["r"], saved["lora_alpha"], saved["target_modules"]) == (
        4,
        4 * adapter.scaling,
        adapter.config.target_modules,
    )
