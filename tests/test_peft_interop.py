"""A generated adapter is a standard PEFT adapter: plain PEFT, in a process that never imports
transformers_v2l, reproduces the in-library injection's logits and greedy tokens, from a folder and
from the (local) Hub, without PEFT's unknown-key warning."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fixtures.models import randomize_outputs
from transformers_v2l import inject_lora
from transformers_v2l.families import get_family
from transformers_v2l.injection import stack_adapters
from transformers_v2l.lora import GeneratedLora

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

PEFT_ONLY = r"""
import json, sys, warnings
import torch
from peft import PeftModel
from transformers import SmolVLMForConditionalGeneration

args = json.loads(sys.argv[1])
ids = torch.tensor(args["ids"])
report = {}
for name, source in args["sources"].items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = SmolVLMForConditionalGeneration.from_pretrained(args["base"], dtype=torch.float32)
        model = PeftModel.from_pretrained(base, source).eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        tokens = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **args["generate"])
    torch.save({"logits": logits, "tokens": tokens}, f"{args['out']}/{name}.pt")
    report[name] = [str(w.message) for w in caught]
report["imported_transformers_v2l"] = sorted(m for m in sys.modules if m.startswith("transformers_v2l"))
print(json.dumps(report))
"""

GENERATE = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}


def hypernetwork_adapter(hypernet) -> GeneratedLora:
    """A real hypernetwork output (generated ranks plus bias ranks), from random layer features."""
    randomize_outputs(hypernet, seed=1)
    config = hypernet.config
    features = torch.randn(
        1, config.num_hidden_layers, 6, config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        out = hypernet(context_features=features, context_attention_mask=torch.ones(1, 6, dtype=torch.long))
    metadata = {
        "video_sha256": "c" * 64,
        "frame_indices": [0, 1, 2],
        "instruction": "Internalize this video.",
    }
    return hypernet.adapters_from_output(out, [metadata])[0]


def test_plain_peft_in_a_fresh_process_matches_injection(
    tiny_hypernet, tiny_vlm, tiny_vlm_path, hub_base_model, local_hub, tmp_path
):
    adapter = hypernetwork_adapter(tiny_hypernet)
    assert adapter.rank == 2 * tiny_hypernet.config.lora_rank  # bias ranks included in r
    assert float(adapter.lora_B["down_proj"].abs().max()) > 0
    folder = adapter.save_pretrained(tmp_path / "lecture-adapter")
    adapter.push_to_hub("tester/lecture-adapter", base_model_id=hub_base_model)  # the base is a folder here

    ids = torch.tensor([[1, 17, 42, 99, 123, 256, 300, 12]])
    lora_A, lora_B, scaling = stack_adapters([adapter])
    with torch.no_grad(), inject_lora(get_family(tiny_vlm), lora_A, lora_B, scaling):
        logits = tiny_vlm(input_ids=ids).logits
        tokens = tiny_vlm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **GENERATE)
    with torch.no_grad():
        plain = tiny_vlm(input_ids=ids).logits
    assert (logits - plain).abs().max() > 1e-2, (
        "the adapter must change the output for the test to mean anything"
    )

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(
        {"HF_HOME": str(tmp_path / "child-home"), "HF_HUB_CACHE": str(tmp_path / "child-home" / "hub")}
    )
    args = {
        "base": str(tiny_vlm_path),
        "ids": ids.tolist(),
        "generate": GENERATE,
        "out": str(tmp_path),
        "sources": {"folder": str(folder), "hub": "tester/lecture-adapter"},
    }
    result = subprocess.run(
        [sys.executable, "-c", PEFT_ONLY, json.dumps(args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("imported_transformers_v2l") == []
    for name, caught in report.items():
        assert not [w for w in caught if "nexpected" in w or "unknown" in w.lower()], (name, caught)
        peft = torch.load(tmp_path / f"{name}.pt")
        diff = float((peft["logits"] - logits).abs().max())
        print(f"{name}: max |PEFT logits - injection logits| = {diff:.3g}")
        assert diff <= 1e-5
        assert torch.equal(peft["tokens"], tokens)
    assert "Unexpected keyword" not in result.stderr
