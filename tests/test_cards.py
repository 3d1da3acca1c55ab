"""Model cards: the usage snippets of a pushed adapter's card run as written against the local Hub.

The tiny base model and a hypernetwork are pushed to the Hub-compatible server of tests/hub_server.py
first, so every name a snippet loads (base model, adapter, hypernetwork) is a real repository there.
Each snippet runs with `exec` in a fresh namespace, so a name it does not define itself fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from fixtures.models import TINY_HYPERNET, randomize_outputs
from transformers_v2l import GeneratedLora, Video2LoraConfig, Video2LoraHypernetwork
from transformers_v2l.hub import push_adapter_to_hub, push_hypernetwork_to_hub

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

VIDEO = Path(__file__).parent / "data" / "frames2lora" / "fixture-A" / "tiny-video.mp4"
QUESTION = "What happens in the video?"


def usage_blocks(card: str) -> list[str]:
    """The Python blocks of the card's "## Usage" section."""
    usage = card.split("## Usage", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", usage, flags=re.S)


def run_snippet(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def assert_peft_model_holds(model, adapter: GeneratedLora) -> None:
    """The PEFT model's LoRA weights are the adapter's: `lora_A` `[R, d_in]`, `lora_B` `[d_out, R]` per layer."""
    from peft import get_peft_model_state_dict

    loaded = get_peft_model_state_dict(model)
    expected = adapter.to_peft_state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k].to(loaded[k].dtype)) for k in expected)


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_the_snippets_of_a_pushed_adapter_card_run_as_written(
    tiny_vlm_path, hub_base_model, local_hub, capsys
):
    # a hypernetwork built on the local base folder, published under the base model's Hub id
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(tiny_vlm_path, **TINY_HYPERNET, num_frames=4, longest_edge=64)
    local_hn = randomize_outputs(Video2LoraHypernetwork(config))
    info = push_hypernetwork_to_hub(local_hn, "tester/video2lora-tiny", base_model_id=hub_base_model)
    pushed = local_hub.files("tester/video2lora-tiny")
    assert f'"base_model_name_or_path": "{hub_base_model}"'.encode() in pushed["config.json"]
    hn_card = front_matter(pushed["README.md"].decode())
    assert hn_card["base_model"] == hub_base_model
    assert {k: hn_card["video2lora"]["settings"][k] for k in ("num_frames", "longest_edge")} == {
        "num_frames": 4,
        "longest_edge": 64,
    }, "the card rewritten for the Hub id keeps the processor's settings"
    assert local_hn.config.base_model_name_or_path == str(tiny_vlm_path), "the model itself is unchanged"

    # what a user does: load the hypernetwork from the Hub, internalize a clip, push the adapter
    hn = Video2LoraHypernetwork.from_pretrained("tester/video2lora-tiny")
    adapter = hn.internalize(VIDEO)
    assert adapter.base_model_name_or_path == hub_base_model
    assert adapter.metadata["hypernetwork"] == "tester/video2lora-tiny"
    assert adapter.metadata["hypernetwork_revision"] == info.oid
    push_adapter_to_hub(adapter, "tester/clip-adapter")
    card = local_hub.files("tester/clip-adapter")["README.md"].decode()

    peft_block, library_block = usage_blocks(card)
    assert f'AutoModelForImageTextToText.from_pretrained("{hub_base_model}")' in peft_block
    assert f'Video2LoraHypernetwork.from_pretrained("tester/video2lora-tiny", revision="{info.oid}")' in (
        library_block
    )
    assert_peft_model_holds(run_snippet(peft_block)["model"], adapter)
    capsys.readouterr()
    namespace = run_snippet(library_block)
    printed = capsys.readouterr().out.strip()
    assert printed == hn.answer(adapter, QUESTION) and printed
    assert torch.equal(namespace["adapter"].lora_B["down_proj"], adapter.lora_B["down_proj"])


def test_an_adapter_of_a_local_base_and_hypernetwork(tiny_vlm_path, hub_base_model, local_hub, tmp_path):
    """Saved locally, the card names no local folder and says what to fill in; pushed with the base
    model's Hub id, both snippets run (the second without a hypernetwork, which is not on the Hub)."""
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(tiny_vlm_path, **TINY_HYPERNET, num_frames=4, longest_edge=64)
    local_hn = randomize_outputs(Video2LoraHypernetwork(config))
    local_hn.save_pretrained(tmp_path / "my-hypernet")
    hn = Video2LoraHypernetwork.from_pretrained(tmp_path / "my-hypernet")
    adapter = hn.internalize(VIDEO)
    assert adapter.metadata["hypernetwork"] == str(tmp_path / "my-hypernet")

    local_card = adapter.save_pretrained(tmp_path / "clip-adapter").joinpath("README.md").read_text()
    assert str(tmp_path) not in local_card and str(tiny_vlm_path) not in local_card
    assert 'from_pretrained("<Hub id of the base model>")' in local_card
    assert "The base model was loaded from a local folder" in local_card and "base_model_id=" in local_card

    push_adapter_to_hub(adapter, "tester/clip-adapter", base_model_id=hub_base_model)
    files = local_hub.files("tester/clip-adapter")
    card = files["README.md"].decode()
    assert str(tmp_path) not in card and "<" not in card.split("## Usage", 1)[1].split("## Limitations")[0]
    assert front_matter(card)["base_model"] == hub_base_model
    peft_block, library_block = usage_blocks(card)
    assert "Video2LoraHypernetwork" not in library_block
    assert_peft_model_holds(run_snippet(peft_block)["model"], adapter)
    pulled = run_snippet(library_block)["adapter"]
    assert pulled.base_model_name_or_path == hub_base_model
    assert torch.equal(pulled.lora_A["down_proj"], adapter.lora_A["down_proj"])
