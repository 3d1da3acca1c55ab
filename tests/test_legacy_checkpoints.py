"""Checkpoints written by version 0.1 load and give the same adapters (and answers) as 0.1 gave.

The fixtures in `tests/data/legacy-0.1/` were written by 0.1 itself (`make_fixtures.py` there says how):
its embedded tiny-world model, a saved hypernetwork whose config still held the preprocessing settings,
a converted Frames2LoRA checkpoint and a saved adapter, with the adapters 0.1 made from one clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformers_v2l import GeneratedLora, Video2LoraHypernetwork
from transformers_v2l.demo import load_default_hypernetwork
from transformers_v2l.families.smolvlm import SmolVLMFamily

LEGACY = Path(__file__).parent / "data" / "legacy-0.1"
VIDEO = str(LEGACY / "video.mp4")
FIXTURE_A = Path(__file__).parent / "data" / "frames2lora" / "fixture-A"


@pytest.fixture(scope="module")
def expected():
    return load_file(LEGACY / "expected.safetensors")


def assert_adapter(adapter: GeneratedLora, expected: dict, name: str, atol: float = 1e-6) -> None:
    for module in adapter.target_modules:
        for which, tensors in (("lora_A", adapter.lora_A), ("lora_B", adapter.lora_B)):
            diff = (tensors[module] - expected[f"{name}.{which}.{module}"]).abs().max().item()
            assert diff <= atol, (name, which, module, diff)
    assert adapter.scaling == pytest.approx(expected[f"{name}.scaling"].item())


def test_tiny_world_model_of_01_same_adapter_and_answers(expected):
    hn = load_default_hypernetwork(LEGACY / "tiny_world")
    assert hn.processor.num_frames == 8 and hn.processor.longest_edge == 64  # from 0.1's config.json
    assert hn.processor.answer["protocol"] == "recall"  # from 0.1's recipe.json: recall, then answer
    adapter = hn.internalize(VIDEO)
    assert_adapter(adapter, expected, "tiny_world")
    answers = json.loads((LEGACY / "expected_answers.json").read_text())
    assert hn.answer(adapter, answers["questions"], max_new_tokens=32) == answers["answers"]
    assert hn.answer(adapter, hn.processor.answer["recall_prompt"]) == answers["recalled_caption"]
    weight = hn.family.target_module(0, "down_proj").weight.clone()
    with hn.use_adapter(adapter):  # merged: the frozen reader runs on the original weights for its turn
        assert hn.answer(adapter, answers["questions"], max_new_tokens=32) == answers["answers"]
    assert torch.equal(hn.family.target_module(0, "down_proj").weight, weight)


def test_hypernetwork_saved_by_01_uses_its_config_settings_and_resaves_in_the_new_layout(expected, tmp_path):
    base = SmolVLMFamily.model_class().from_pretrained(LEGACY / "base", dtype=torch.float32)
    hn = Video2LoraHypernetwork.from_pretrained(LEGACY / "hypernet", base_model=base)
    hn.config.base_model_name_or_path = str(LEGACY / "base")  # 0.1 saved a relative name
    assert hn.config.processor_settings == {
        "instruction": "Remember this clip.", "num_frames": 6, "longest_edge": 48, "skip_secs": 1.0
    }  # fmt: skip
    adapter = hn.internalize(VIDEO)
    assert_adapter(adapter, expected, "hypernet")
    assert (adapter.metadata["instruction"], adapter.metadata["longest_edge"]) == ("Remember this clip.", 48)
    hn.save_pretrained(tmp_path)  # the new layout: preprocessing in processor_config.json, not config.json
    assert "num_frames" not in json.loads((tmp_path / "config.json").read_text())
    assert json.loads((tmp_path / "processor_config.json").read_text())["num_frames"] == 6
    again = Video2LoraHypernetwork.from_pretrained(tmp_path, base_model=base)
    assert_adapter(again.internalize(VIDEO), expected, "hypernet")


def test_converted_frames2lora_checkpoint_of_01(expected):
    base = SmolVLMFamily.model_class().from_pretrained(FIXTURE_A / "tiny-smolvlm", dtype=torch.float32)
    hn = Video2LoraHypernetwork.from_pretrained(LEGACY / "frames2lora", base_model=base)
    hn.config.base_model_name_or_path = str(FIXTURE_A / "tiny-smolvlm")
    assert hn.processor.vision["resize_mode"] == "frames2lora"
    assert_adapter(hn.internalize(VIDEO), expected, "frames2lora")


def test_adapter_saved_by_01_loads_with_its_family(expected):
    adapter = GeneratedLora.from_pretrained(LEGACY / "adapter")
    assert adapter.base_model_type == "smolvlm"
    assert_adapter(adapter, expected, "hypernet", atol=0.0)
