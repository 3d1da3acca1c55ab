"""Writes the version-0.1 checkpoint fixtures of `tests/test_legacy_checkpoints.py`.

Run once with transformers-v2l 0.1 (commit 4cf3ee8) on the import path; later versions must load
what it wrote and give the same adapters:

    git worktree add /tmp/v01 4cf3ee8
    PYTHONPATH=/tmp/v01/src python tests/data/legacy-0.1/make_fixtures.py tests/data/legacy-0.1

It writes:

* `tiny_world/`: the embedded tiny-world model shipped with 0.1 (`base/`, `hypernet/`, `recipe.json`);
* `base/` and `hypernet/`: a tiny SmolVLM and a hypernetwork saved by 0.1's `save_pretrained`, with
  non-default preprocessing settings in its config (0.1 kept them there);
* `frames2lora/`: the authors' fixture-A checkpoint converted by 0.1's `convert_frames2lora`;
* `adapter/`: an adapter saved by 0.1's `GeneratedLora.save_pretrained`;
* `video.mp4`: a toy-world clip; `expected.safetensors`: the adapters 0.1 made from it;
  `expected_answers.json`: the tiny-world model's recall-then-answer answers to three questions.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import transformers_v2l
from transformers_v2l import Video2LoraConfig, Video2LoraHypernetwork
from transformers_v2l.demo import load_default_hypernetwork, recall_then_answer
from transformers_v2l.frames2lora import convert_frames2lora
from transformers_v2l.testing import build_tiny_smolvlm, save_tiny_smolvlm
from transformers_v2l.toy_world import make_clip, write_video

out = Path(sys.argv[1])
fixture_a = (
    Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parents[1] / "frames2lora" / "fixture-A"
)
assets = Path(transformers_v2l.__file__).parent / "assets" / "tiny_world"
torch.manual_seed(0)
expected = {}


def record(name, adapter):
    for module in adapter.target_modules:
        expected[f"{name}.lora_A.{module}"] = adapter.lora_A[module].contiguous()
        expected[f"{name}.lora_B.{module}"] = adapter.lora_B[module].contiguous()
    expected[f"{name}.scaling"] = torch.tensor(adapter.scaling)


video = out / "video.mp4"
write_video(make_clip(0, "test").frames, video)

shutil.copytree(assets, out / "tiny_world", dirs_exist_ok=True, ignore=shutil.ignore_patterns("timings.json"))
hn = load_default_hypernetwork(out / "tiny_world")
tiny_world_adapter = hn.internalize(str(video))
record("tiny_world", tiny_world_adapter)
questions = [item["question"] for item in make_clip(0, "test").qa[:3]]
caption, answers = recall_then_answer(hn, questions, adapter=tiny_world_adapter, max_new_tokens=32)
answers_json = {"questions": questions, "recalled_caption": caption, "answers": answers}

base_model, tokenizer = build_tiny_smolvlm(seed=0)
base = save_tiny_smolvlm(base_model, tokenizer, out / "base")
config = Video2LoraConfig.from_base_model(
    str(base), lora_rank=4, latent_size=32, num_latent_queries=4, num_blocks=2, num_attention_heads=4,
    num_key_value_heads=2, attention_head_dim=16, num_frames=6, longest_edge=48, instruction="Remember this clip.",
)  # fmt: skip
tiny = Video2LoraHypernetwork(config, base_model=base_model)
with torch.no_grad():  # non-zero adapters
    generator = torch.Generator().manual_seed(0)
    for name in tiny.scaler_B:
        tiny.scaler_B[name].copy_(torch.randn(tiny.scaler_B[name].shape, generator=generator))
        tiny.bias_B[name].copy_(0.05 * torch.randn(tiny.bias_B[name].shape, generator=generator))
adapter = tiny.internalize(str(video))
record("hypernet", adapter)
adapter.save_pretrained(out / "adapter")
tiny.config.base_model_name_or_path = "base"  # relative: the test passes the base model
tiny.save_pretrained(out / "hypernet")

converted = convert_frames2lora(fixture_a / "tiny-ref.pt", base_model=str(fixture_a / "tiny-smolvlm"))
converted.config.base_model_name_or_path = "tiny-smolvlm"
converted.save_pretrained(out / "frames2lora")
from transformers import SmolVLMForConditionalGeneration  # noqa: E402

f2l_base = SmolVLMForConditionalGeneration.from_pretrained(fixture_a / "tiny-smolvlm", dtype=torch.float32)
converted.attach_base_model(f2l_base)
converted._processor = None
converted.config.base_model_name_or_path = str(fixture_a / "tiny-smolvlm")
record("frames2lora", converted.internalize(str(video)))

save_file(expected, str(out / "expected.safetensors"))
(out / "expected_answers.json").write_text(json.dumps(answers_json, indent=2) + "\n")
print("wrote", sorted(p.name for p in out.iterdir()))
