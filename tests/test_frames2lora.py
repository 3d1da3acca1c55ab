"""Frames2LoRA checkpoints: safe loading, exact conversion, mismatches, `v2l convert`, Hub route.

Fixture A (`tests/data/frames2lora/fixture-A`, see the README.md beside it) holds a tiny checkpoint
that the authors' own code wrote, and the tensors their code computed from it. Other configurations
are written with `frames2lora_writer` and checked against `reference_frames2lora` below. That
function is a direct transcription of SPEC section 2, with plain loops over layers, rows, ranks and
heads in float64, and it does not use `transformers_v2l`.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from frames2lora_writer import TinyArch, random_frames2lora_state_dict, write_frames2lora_checkpoint
from transformers_v2l import (
    CheckpointMismatchError,
    HubUnavailableError,
    UnsafeCheckpointError,
    Video2LoraHypernetwork,
    inject_lora,
)
from transformers_v2l.cli import add_convert_subparser
from transformers_v2l.families import get_family
from transformers_v2l.families.smolvlm import SmolVLMFamily
from transformers_v2l.frames2lora import (
    convert_frames2lora,
    frames2lora_to_config,
    read_frames2lora,
)

# in the repository, so a fresh clone runs these tests; V2L_FRAMES2LORA_FIXTURE points at another copy
DEFAULT_FIXTURE = Path(__file__).resolve().parent / "data" / "frames2lora" / "fixture-A"
FIXTURE = Path(os.environ.get("V2L_FRAMES2LORA_FIXTURE", DEFAULT_FIXTURE))
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "tiny-ref.pt").exists(), reason=f"Frames2LoRA fixture A not found at {FIXTURE}"
)

# --------------------------------------------------------------------------------------------
# Independent reference: SPEC section 2, one decoder layer and one row at a time
# --------------------------------------------------------------------------------------------
NEG = torch.finfo(torch.float32).min


def _rms(x, w):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6))


def _layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5) * w + b


def _silu(x):
    return x * torch.sigmoid(x)


def _gated(W, x, p):
    return (_silu(x @ W[p + "gate_proj.weight"].T) * (x @ W[p + "up_proj.weight"].T)) @ W[
        p + "down_proj.weight"
    ].T


def _perceiver_layer(W, h, context, key_mask, p):
    a = _rms(h, W[p + "input_latents_layernorm.weight"])
    kv = a if context is None else torch.cat([_rms(context, W[p + "input_context_layernorm.weight"]), a])
    q, k, v = (t @ W[p + f"self_attn.{n}_proj.weight"].T for t, n in ((a, "q"), (kv, "k"), (kv, "v")))
    heads = []
    for j in range(16):  # 16 query heads of 128; query head j reads key/value head j // 4
        g = j // 4
        scores = q[:, 128 * j : 128 * (j + 1)] @ k[:, 128 * g : 128 * (g + 1)].T / math.sqrt(128)
        if key_mask is not None:
            bias = torch.zeros(kv.shape[0], dtype=scores.dtype)
            bias[: key_mask.shape[0]][key_mask == 0] = NEG  # latent keys (after the context) are always open
            scores = scores + bias
        heads.append(torch.softmax(scores, dim=-1) @ v[:, 128 * g : 128 * (g + 1)])
    o = torch.cat(heads, dim=-1) @ W[p + "self_attn.o_proj.weight"].T
    h = h + _rms(o, W[p + "post_attention_layernorm.weight"])
    return h + _rms(
        _gated(W, _rms(h, W[p + "pre_ff_layernorm.weight"]), p + "mlp."), W[p + "post_ff_layernorm.weight"]
    )


def reference_frames2lora(state_dict, features, mask, arch: TinyArch):
    """`(lora_A, lora_B, raw_A, raw_B)`, each `{module: [B, L, rank, d]}`, computed per SPEC section 2."""
    W = {k: v.double() for k, v in state_dict.items()}
    P = "aggregator.perceiver."
    batch, num_layers = features.shape[:2]
    r, modules, period = arch.lora_r, arch.modules, 1 + arch.num_self_attn_per_block
    out = {
        name: {m: [[None] * num_layers for _ in range(batch)] for m in modules}
        for name in ("A", "B", "rA", "rB")
    }
    for b in range(batch):
        for layer in range(num_layers):
            z = _gated(W, features[b, layer].double(), P + "modality_projection.")
            h = W[P + "encoder.latents_q"]
            for i in range(arch.num_blocks * period):
                cross = i % period == 0
                h = _perceiver_layer(
                    W, h, z if cross else None, mask[b] if cross else None, f"{P}encoder.layers.{i}."
                )
            e = _rms(h, W[P + "encoder.layernorm.weight"])
            d = _perceiver_layer(W, W[P + "decoder.latents_q"], e, None, P + "decoder.layers.0.")
            d = _rms(d, W[P + "decoder.layernorm.weight"])
            for t, m in enumerate(modules):
                d_in, d_out = arch.feature_sizes[m]
                rows_A, rows_B = [], []
                for k in range(r):
                    y = d[t * r + k]
                    for n in range(arch.num_pre_head_layers):
                        p = f"layers.{n}.mlp."
                        hidden = _silu(
                            _layer_norm(y, W[p + "0.weight"], W[p + "0.bias"]) @ W[p + "2.weight"].T
                            + W[p + "2.bias"]
                        )
                        y = y + _layer_norm(
                            hidden @ W[p + "5.weight"].T + W[p + "5.bias"], W[p + "6.weight"], W[p + "6.bias"]
                        )
                    head = W["head.weight"][layer] if len(modules) == 1 else W["head.weight"][layer, t]
                    g = (y / y.norm()) @ head
                    rows_A.append(g[:d_in] * W[f"scaler_A.{m}"][0, layer, k, 0])
                    rows_B.append(g[d_in : d_in + d_out] * W[f"scaler_B.{m}"][0, layer, k, 0])
                out["rA"][m][b][layer], out["rB"][m][b][layer] = torch.stack(rows_A), torch.stack(rows_B)
                bias_A = [W[f"bias_A.{m}"][layer]] if arch.use_bias else []
                bias_B = [W[f"bias_B.{m}"][layer]] if arch.use_bias else []
                out["A"][m][b][layer] = torch.cat([out["rA"][m][b][layer], *bias_A])
                out["B"][m][b][layer] = torch.cat([out["rB"][m][b][layer], *bias_B])
    stack = {
        n: {m: torch.stack([torch.stack(rows) for rows in per_b]) for m, per_b in v.items()}
        for n, v in out.items()
    }
    return stack["A"], stack["B"], stack["rA"], stack["rB"]


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


# --------------------------------------------------------------------------------------------
# Fixture A: the authors' own checkpoint and outputs
# --------------------------------------------------------------------------------------------
FIXTURE_ARCH = TinyArch()  # r=4, down_proj, D=32, NB=2, Q=8, NS=0, L=4, H=64, I=128


@pytest.fixture(scope="module")
def expected():
    from safetensors.torch import load_file

    return load_file(FIXTURE / "expected.safetensors")


def load_fixture_vlm():
    from transformers import SmolVLMForConditionalGeneration

    return SmolVLMForConditionalGeneration.from_pretrained(
        FIXTURE / "tiny-smolvlm", dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def fixture_vlm():
    return load_fixture_vlm()


@pytest.fixture(scope="module")
def fixture_hn(fixture_vlm):
    return convert_frames2lora(FIXTURE / "tiny-ref.pt", base_model=fixture_vlm)


#: fixture key -> our intermediate
DEBUG_KEYS = {
    "ctx.debug.modality_projection_out": "input_projection",
    "ctx.debug.encoder_out": "encoder",
    "ctx.debug.decoder_out": "decoder",
    "ctx.debug.pre_head_mlp_out": "pre_head",
    "ctx.debug.head_in_normalized": "head_input",
    "ctx.debug.head_out": "head_output",
}


@needs_fixture
def test_fixture_a_reproduces_every_ctx_tensor(fixture_hn, expected):
    with torch.no_grad():
        out = fixture_hn(
            expected["inputs.ctx_features"], expected["inputs.ctx_attn_mask"], output_intermediates=True
        )
    ours = {key: out.intermediates[name] for key, name in DEBUG_KEYS.items()}
    for m in fixture_hn.config.target_modules:
        ours |= {f"ctx.lora.{m}.A": out.lora_A[m], f"ctx.lora.{m}.B": out.lora_B[m]}
        ours |= {
            f"ctx.lora_raw.{m}.A": out.intermediates[f"raw_A.{m}"],
            f"ctx.lora_raw.{m}.B": out.intermediates[f"raw_B.{m}"],
        }
    assert set(ours) == {k for k in expected if k.startswith("ctx.")}  # every ctx.* key is checked
    diffs = {key: max_diff(ours[key], expected[key]) for key in sorted(ours)}
    assert all(ours[k].shape == expected[k].shape for k in ours)
    assert max(diffs.values()) < 1e-5, diffs


@needs_fixture
def test_reference_implementation_reproduces_fixture_a(expected):
    state_dict, _ = read_frames2lora(FIXTURE / "tiny-ref.pt")
    lora_A, lora_B, raw_A, _ = reference_frames2lora(
        state_dict, expected["inputs.ctx_features"], expected["inputs.ctx_attn_mask"], FIXTURE_ARCH
    )
    assert max_diff(lora_A["down_proj"], expected["ctx.lora.down_proj.A"]) < 1e-5
    assert max_diff(lora_B["down_proj"], expected["ctx.lora.down_proj.B"]) < 1e-5
    assert max_diff(raw_A["down_proj"], expected["ctx.lora_raw.down_proj.A"]) < 1e-5


@needs_fixture
def test_fixture_a_config_and_provenance(fixture_hn):
    config = fixture_hn.config
    assert (config.lora_rank, config.effective_rank, config.scaling) == (4, 8, 16.0)  # raw lora_alpha
    assert (
        config.latent_size,
        config.num_latent_queries,
        config.num_blocks,
        config.num_self_attn_per_block,
    ) == (32, 8, 2, 0)
    assert (config.num_hidden_layers, config.hidden_size, config.module_shapes) == (
        4,
        64,
        {"down_proj": [128, 64]},
    )
    assert config.base_model_name_or_path == "tiny-smolvlm"  # the name stored in the file
    source = config.source
    assert source["kind"] == "frames2lora" and source["file"] == "tiny-ref.pt" and source["repo"] is None
    assert source["sha256"] == hashlib.sha256((FIXTURE / "tiny-ref.pt").read_bytes()).hexdigest()
    assert source["peft_version"] == "0.19.1"
    assert not fixture_hn.training
    assert "ctx_to_lora" not in sys.modules


@needs_fixture
def test_fixture_a_adapted_logits_through_injection(fixture_hn, fixture_vlm, expected):
    ids, mask = expected["text.input_ids"], expected["text.attention_mask"]
    with torch.no_grad():
        out = fixture_hn(expected["inputs.ctx_features"], expected["inputs.ctx_attn_mask"])
        with inject_lora(get_family(fixture_vlm), out.lora_A, out.lora_B, fixture_hn.config.scaling):
            logits = fixture_vlm(input_ids=ids, attention_mask=mask).logits
    assert max_diff(logits, expected["text.logits_adapted_fp32model"]) < 1e-4


@needs_fixture
def test_fixture_a_adapted_logits_through_a_peft_adapter(fixture_hn, expected):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    config = fixture_hn.config
    with torch.no_grad():
        out = fixture_hn(expected["inputs.ctx_features"], expected["inputs.ctx_attn_mask"])
    rank, s = config.effective_rank, config.scaling
    lora_config = LoraConfig(r=rank, lora_alpha=s * rank, lora_dropout=0.0, bias="none",
                             target_modules=SmolVLMFamily.peft_target_regex(config.target_modules))  # fmt: skip
    model = get_peft_model(load_fixture_vlm(), lora_config).eval()
    weights = {}
    for m in config.target_modules:
        for layer in range(config.num_hidden_layers):
            path = f"base_model.model.{SmolVLMFamily.module_path(layer, m)}"
            weights[f"{path}.lora_A.weight"] = out.lora_A[m][0, layer]  # [R, d_in]
            weights[f"{path}.lora_B.weight"] = out.lora_B[m][0, layer].T  # [d_out, R]
    result = set_peft_model_state_dict(model, weights)
    assert not result.unexpected_keys
    assert len([k for k in model.state_dict() if "lora_" in k]) == len(weights)
    with torch.no_grad():
        logits = model(
            input_ids=expected["text.input_ids"], attention_mask=expected["text.attention_mask"]
        ).logits
    assert max_diff(logits, expected["text.logits_adapted_fp32model"]) < 1e-4


@needs_fixture
def test_fixture_a_adapted_logits_through_generated_lora_save_pretrained(fixture_hn, expected, tmp_path):
    from peft import PeftModel

    with torch.no_grad():
        out = fixture_hn(expected["inputs.ctx_features"], expected["inputs.ctx_attn_mask"])
    adapter = fixture_hn.adapters_from_output(out)[0]
    adapter.save_pretrained(tmp_path / "adapter")
    model = PeftModel.from_pretrained(load_fixture_vlm(), tmp_path / "adapter").eval()
    with torch.no_grad():
        logits = model(
            input_ids=expected["text.input_ids"], attention_mask=expected["text.attention_mask"]
        ).logits
    assert max_diff(logits, expected["text.logits_adapted_fp32model"]) < 1e-4


@needs_fixture
def test_fixture_a_video_features_and_lora_from_stored_inputs(fixture_hn, fixture_vlm, expected):
    inputs = {
        "input_ids": expected["video.input_ids"],
        "attention_mask": expected["video.attention_mask"],
        "pixel_values": expected["video.pixel_values_bf16"],
        "pixel_attention_mask": expected["video.pixel_attention_mask"].bool(),
    }
    features, mask = fixture_hn.extract_features(**inputs)
    assert max_diff(features, expected["video.ctx_features_fp32model"]) < 1e-4
    with torch.no_grad():
        out = fixture_hn(features, mask, output_intermediates=True)
        for m in fixture_hn.config.target_modules:
            assert max_diff(out.lora_A[m], expected[f"video_fp32model.lora.{m}.A"]) < 1e-4
            assert max_diff(out.lora_B[m], expected[f"video_fp32model.lora.{m}.B"]) < 1e-4
            assert (
                max_diff(out.intermediates[f"raw_A.{m}"], expected[f"video_fp32model.lora_raw.{m}.A"]) < 1e-4
            )
        with inject_lora(get_family(fixture_vlm), out.lora_A, out.lora_B, fixture_hn.config.scaling):
            logits = fixture_vlm(input_ids=expected["text.input_ids"][:1]).logits
    assert max_diff(logits, expected["video_fp32model.text_logits_adapted"]) < 1e-4


@needs_fixture
def test_fixture_a_real_video_through_our_processor(fixture_hn, expected):
    """tiny-video.mp4 -> our processor -> features (fp32 base) -> LoRA, against the authors' pipeline.

    The authors resized with transformers 4.51.3 (PIL; our `resize_mode="frames2lora"`) and cast every
    processor float output to bf16, also in front of the fp32 base model (SPEC sections 4.1 and 4.3).
    """
    module = pytest.importorskip("transformers_v2l.processing_video2lora")
    processor = module.Video2LoraProcessor.from_pretrained(
        FIXTURE / "tiny-smolvlm", resize_mode="frames2lora"
    )
    inputs = processor.internalization_inputs(
        str(FIXTURE / "tiny-video.mp4"),
        instruction="Internalize this video for later captioning.",
        num_frames=12,
        longest_edge=384,
    )
    meta = inputs.pop("video_metadata")[0]
    assert list(meta.frame_indices) == expected["video.frame_indices"].tolist()
    assert torch.equal(inputs["input_ids"], expected["video.input_ids"])
    assert torch.equal(inputs["attention_mask"], expected["video.attention_mask"])
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)  # what their pipeline feeds the model
    assert torch.equal(inputs["pixel_values"].float(), expected["video.pixel_values_bf16"])
    features, mask = fixture_hn.extract_features(**inputs)
    assert max_diff(features, expected["video.ctx_features_fp32model"]) < 1e-4
    with torch.no_grad():
        out = fixture_hn(features, mask)
    for m in fixture_hn.config.target_modules:
        assert max_diff(out.lora_A[m], expected[f"video_fp32model.lora.{m}.A"]) < 1e-4
        assert max_diff(out.lora_B[m], expected[f"video_fp32model.lora.{m}.B"]) < 1e-4


# --------------------------------------------------------------------------------------------
# Checkpoints of our own, in the authors' format, against the reference
# --------------------------------------------------------------------------------------------
ARCHES = {
    "two-modules": TinyArch(feature_sizes={"down_proj": (128, 64), "q_proj": (64, 64)}),
    "self-attention": TinyArch(num_self_attn_per_block=1, n_latent_queries=4),
    "three-modules-deep": TinyArch(
        feature_sizes={"down_proj": (128, 64), "gate_proj": (64, 128), "k_proj": (64, 32)},
        num_self_attn_per_block=2, num_blocks=1, num_pre_head_layers=2, use_bias=False, lora_r=2,
    ),
}  # fmt: skip


def padded_batch(arch: TinyArch, seed: int = 0, lengths=(9, 6)):
    """A right-padded batch of two: `[2, L, S, H]` features (noise at padded positions) and the mask."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), arch.num_layers, max(lengths), arch.hidden_size, generator=g)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return features, mask


@pytest.mark.parametrize("name", list(ARCHES))
def test_own_checkpoints_match_the_reference(name, tmp_path):
    arch = ARCHES[name]
    state_dict = random_frames2lora_state_dict(arch, seed=1)
    path = write_frames2lora_checkpoint(
        tmp_path / "ckpt.pt", arch, state_dict, compiled=name == "three-modules-deep"
    )
    hn = convert_frames2lora(path)
    assert hn.config.target_modules == arch.modules and hn.config.scaling == arch.lora_alpha
    features, mask = padded_batch(arch)
    with torch.no_grad():
        out = hn(features, mask, output_intermediates=True)
    lora_A, lora_B, raw_A, raw_B = reference_frames2lora(state_dict, features, mask, arch)
    for m in arch.modules:
        assert out.lora_A[m].shape == lora_A[m].shape and out.lora_B[m].shape == lora_B[m].shape
        assert max_diff(out.lora_A[m], lora_A[m]) < 1e-5
        assert max_diff(out.lora_B[m], lora_B[m]) < 1e-5
        assert max_diff(out.intermediates[f"raw_A.{m}"], raw_A[m]) < 1e-5
        assert max_diff(out.intermediates[f"raw_B.{m}"], raw_B[m]) < 1e-5
        assert lora_B[m].abs().max() > 0.05  # non-trivial adapters


def test_padding_does_not_leak_into_the_adapters(tmp_path):
    arch = ARCHES["two-modules"]
    hn = convert_frames2lora(
        write_frames2lora_checkpoint(tmp_path / "c.pt", arch, random_frames2lora_state_dict(arch))
    )
    features, mask = padded_batch(arch)
    changed = features.clone()
    changed[1, :, 6:] = 100.0 * torch.randn_like(changed[1, :, 6:])
    with torch.no_grad():
        batched, perturbed = hn(features, mask), hn(changed, mask)
        alone = hn(features[1:, :, :6], mask[1:, :6])
    for m in arch.modules:
        assert torch.equal(batched.lora_A[m], perturbed.lora_A[m])
        assert max_diff(batched.lora_B[m][1:], alone.lora_B[m]) < 1e-5


def test_task_type_enum_and_extra_peft_fields_are_tolerated(tmp_path):
    arch = TinyArch()
    extra = {"peft_version": "0.99.0", "future_field": {"nested": [1, 2]}, "target_parameters": None}
    path = write_frames2lora_checkpoint(tmp_path / "c.pt", arch, random_frames2lora_state_dict(arch),
                                        lora=extra, task_type_enum=True, extra_entries={"train_step": 7})  # fmt: skip
    state_dict, info = read_frames2lora(path)
    assert info.peft_version == "0.99.0" and info.extra_entries == ["train_step"]
    assert info.feature_sizes == {"down_proj": [128, 64]} and info.lora_alpha == 16.0
    assert len(state_dict) == len(random_frames2lora_state_dict(arch))


# --------------------------------------------------------------------------------------------
# Malicious pickles are refused, and nothing runs
# --------------------------------------------------------------------------------------------
class Exploit:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def write_zip(path: Path, data_pkl: bytes) -> Path:
    """A torch-style zip archive around an arbitrary data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


def exploit_payloads(marker: Path):
    """(name, global the file asks for, data.pkl bytes): every payload creates `marker` when unpickled."""
    touch = f"open({str(marker)!r}, 'w').close()"
    return [
        ("exec-protocol-2", "builtins.exec", pickle.dumps(Exploit(exec, touch), protocol=2)),
        ("eval-stack-global", "builtins.eval", pickle.dumps(Exploit(eval, touch), protocol=4)),
        ("os-system", "system", pickle.dumps(Exploit(os.system, f"touch {marker}"), protocol=2)),
        (
            "subprocess",
            "subprocess.call",
            pickle.dumps(Exploit(subprocess.call, ["touch", str(marker)]), protocol=4),
        ),
        ("inst-opcode", "os.system", f"(S'touch {marker}'\nios\nsystem\n.".encode()),
    ]


@pytest.mark.parametrize("index", range(5))
def test_malicious_data_pkl_is_refused_without_running(index, tmp_path):
    marker = tmp_path / "pwned"
    name, global_name, payload = exploit_payloads(marker)[index]
    if name != "os-system":  # prove the payload is live: plain pickle runs it
        pickle.loads(payload)
        assert marker.exists()
        marker.unlink()
    path = write_zip(tmp_path / f"{name}.pt", payload)
    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")):
        read_frames2lora(path)
    assert not marker.exists()


def test_malicious_global_inside_a_real_checkpoint_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    arch = TinyArch()
    payload = {
        "callback": Exploit(os.system, f"touch {marker}"),
        "other": Exploit(exec, f"open({str(marker)!r},'w')"),
    }
    path = write_frames2lora_checkpoint(
        tmp_path / "evil.pt", arch, random_frames2lora_state_dict(arch), hypernet=payload
    )
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not be used"))
    with pytest.raises(UnsafeCheckpointError, match=r"system.*nothing from the file was executed"):
        convert_frames2lora(path)
    assert not marker.exists()


def test_raw_pickle_outside_a_zip_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps(Exploit(exec, f"open({str(marker)!r}, 'w').close()")))
    with pytest.raises(CheckpointMismatchError, match=r"not a torch\.save zip archive"):
        read_frames2lora(path)
    assert not marker.exists()


def test_tensor_reading_past_its_storage_is_refused(tmp_path):
    arch = TinyArch()
    path = write_frames2lora_checkpoint(tmp_path / "c.pt", arch, random_frames2lora_state_dict(arch))
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    (name,) = [n for n in entries if n.endswith("data/0")]
    entries[name] = entries[name][:-4]  # truncate one storage
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(broken, "w") as archive:
        for n, data in entries.items():
            archive.writestr(n, data)
    with pytest.raises(CheckpointMismatchError, match="truncated or corrupt"):
        read_frames2lora(broken)


# --------------------------------------------------------------------------------------------
# Mismatches and unsupported flags
# --------------------------------------------------------------------------------------------
def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path):
    arch = TinyArch()
    state_dict = random_frames2lora_state_dict(arch)
    del state_dict["aggregator.perceiver.encoder.layers.1.mlp.up_proj.weight"]
    state_dict["head.weight"] = state_dict["head.weight"][..., :190]
    state_dict["layers.1.mlp.0.weight"] = torch.ones(32)
    path = write_frames2lora_checkpoint(tmp_path / "c.pt", arch, state_dict)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_frames2lora(path)
    message = str(error.value)
    assert (
        "missing key aggregator.perceiver.encoder.layers.1.mlp.up_proj.weight (expected shape [128, 32])"
        in message
    )
    assert "shape of head.weight: expected [4, 32, 192], found [4, 32, 190]" in message
    assert "unexpected key layers.1.mlp.0.weight" in message


def test_config_that_disagrees_with_the_tensors_is_reported(tmp_path):
    arch = TinyArch()
    path = write_frames2lora_checkpoint(tmp_path / "c.pt", arch, random_frames2lora_state_dict(arch),
                                        aggregator={"num_blocks": 3})  # fmt: skip
    with pytest.raises(
        CheckpointMismatchError, match=r"missing key aggregator\.perceiver\.encoder\.layers\.2\."
    ):
        convert_frames2lora(path)


@needs_fixture
def test_base_model_of_other_shapes_is_refused():
    from transformers_v2l.families.smolvlm import SmolVLMFamily

    _, info = read_frames2lora(FIXTURE / "tiny-ref.pt")
    other, _ = SmolVLMFamily.build_tiny_model(num_layers=2, intermediate_size=96)
    with pytest.raises(
        CheckpointMismatchError, match=r"4 text layers.*has 2 layers.*'down_proj': \[96, 64\]"
    ):
        frames2lora_to_config(info, base_model=other.config)
    with pytest.raises(CheckpointMismatchError, match="has 2 layers"):
        convert_frames2lora(FIXTURE / "tiny-ref.pt", base_model=other)


@pytest.mark.parametrize(
    ("section", "flag", "value"),
    [
        ("hypernet", "per_rank_gen", False),
        ("hypernet", "per_layer_processing", True),
        ("hypernet", "use_light_weight_lora", True),
        ("hypernet", "use_per_rank_bias", True),
        ("hypernet", "use_token_mixing", True),
        ("aggregator", "shared_weights", True),
        ("aggregator", "aggregator_type", "pooler"),
    ],
)
def test_unsupported_flags_are_named(section, flag, value, tmp_path):
    arch = TinyArch()
    path = write_frames2lora_checkpoint(tmp_path / "c.pt", arch, random_frames2lora_state_dict(arch),
                                        **{section: {flag: value}})  # fmt: skip
    with pytest.raises(CheckpointMismatchError, match=rf"{flag}={value!r}"):
        convert_frames2lora(path)


def test_malformed_config_field_is_a_mismatch(tmp_path):
    arch = TinyArch()
    path = write_frames2lora_checkpoint(tmp_path / "c.pt", arch, random_frames2lora_state_dict(arch),
                                        hypernet={"latent_size": "wide"})  # fmt: skip
    with pytest.raises(CheckpointMismatchError, match="malformed hypernet_config"):
        read_frames2lora(path)


def test_not_a_frames2lora_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(CheckpointMismatchError, match="without `hypernet_config`"):
        read_frames2lora(path)


# --------------------------------------------------------------------------------------------
# `v2l convert`, the classmethod, folders and the Hub route
# --------------------------------------------------------------------------------------------
def convert_parser():
    parser = argparse.ArgumentParser(prog="v2l")
    add_convert_subparser(parser.add_subparsers(dest="command"))
    return parser


@needs_fixture
def test_v2l_convert_writes_a_loadable_folder(tmp_path, fixture_vlm, fixture_hn, expected, capsys):
    out = tmp_path / "converted"
    args = convert_parser().parse_args(["convert", str(FIXTURE / "tiny-ref.pt"), str(out)])
    assert args.func(args) == 0
    assert "tiny-ref.pt" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]  # card, config, weights
    loaded = Video2LoraHypernetwork.from_pretrained(out, base_model=fixture_vlm)
    assert loaded.config.source == fixture_hn.config.source
    features, mask = expected["inputs.ctx_features"], expected["inputs.ctx_attn_mask"]
    with torch.no_grad():
        a, b = loaded(features, mask), fixture_hn(features, mask)
    assert torch.equal(a.lora_A["down_proj"], b.lora_A["down_proj"])
    assert torch.equal(a.lora_B["down_proj"], b.lora_B["down_proj"])


@needs_fixture
def test_v2l_convert_checks_and_records_the_base_model(tmp_path):
    out = tmp_path / "converted"
    base = str(FIXTURE / "tiny-smolvlm")
    args = convert_parser().parse_args(
        ["convert", str(FIXTURE / "tiny-ref.pt"), str(out), "--base-model", base]
    )
    args.func(args)
    loaded = Video2LoraHypernetwork.from_pretrained(out)
    assert loaded.config.base_model_name_or_path == base
    assert loaded.config.source["base_model_name_or_path"] == "tiny-smolvlm"


@needs_fixture
def test_convert_a_folder_with_overrides(tmp_path, fixture_vlm):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(FIXTURE / "tiny-ref.pt", folder / "tiny-ref.pt")
    hn = convert_frames2lora(folder, base_model=fixture_vlm, base_model_name_or_path="me/base",
                                                 num_frames=8)  # fmt: skip
    assert isinstance(hn, Video2LoraHypernetwork) and hn.vlm is fixture_vlm
    assert (hn.config.base_model_name_or_path, hn.processor.num_frames) == ("me/base", 8)
    assert hn.processor.vision["resize_mode"] == "frames2lora"  # the pixels the checkpoints were trained on
    shutil.copy(FIXTURE / "tiny-ref.pt", folder / "other.pt")
    with pytest.raises(ValueError, match="pass filename="):
        convert_frames2lora(folder)
    with pytest.raises(TypeError, match="latent_size"):
        convert_frames2lora(folder / "tiny-ref.pt", latent_size=64)


def _fake_hub_cache(cache: Path, repo: str, commit: str, files: dict[str, Path]) -> None:
    """The layout huggingface_hub's cache uses, so the repo route runs offline."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    for name, source in files.items():
        shutil.copy(source, root / "snapshots" / commit / name)


@needs_fixture
def test_hub_repo_route_resolves_from_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_cache(tmp_path, "authors/frames2lora-tiny", commit, {"tiny-ref.pt": FIXTURE / "tiny-ref.pt"})
    hn = convert_frames2lora("authors/frames2lora-tiny", "tiny-ref.pt", cache_dir=tmp_path)
    source = hn.config.source
    assert (source["repo"], source["file"], source["commit"], source["revision"]) == (
        "authors/frames2lora-tiny", "tiny-ref.pt", commit, None)  # fmt: skip
    with pytest.raises(HubUnavailableError, match="not in the local cache"):
        convert_frames2lora("authors/other-repo", "x.pt", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        convert_frames2lora(tmp_path / "missing.pt")


@needs_fixture
def test_hub_repo_route_through_a_local_hub_server(local_hub, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=local_hub.token)
    repo = "tester/frames2lora-tiny"
    api.create_repo(repo)
    commit = api.upload_file(
        path_or_fileobj=FIXTURE / "tiny-ref.pt", path_in_repo="tiny-ref.pt", repo_id=repo
    )
    first = commit.oid
    hn = convert_frames2lora(repo)  # the only .pt in the repo
    assert (hn.config.source["repo"], hn.config.source["file"], hn.config.source["commit"]) == (
        repo,
        "tiny-ref.pt",
        first,
    )
    api.upload_file(path_or_fileobj=FIXTURE / "tiny-ref.pt", path_in_repo="copy.pt", repo_id=repo)
    with pytest.raises(ValueError, match="holds 2 checkpoint files"):
        convert_frames2lora(repo)
    pinned = convert_frames2lora(repo, "tiny-ref.pt", revision=first)
    assert (pinned.config.source["revision"], pinned.config.source["commit"]) == (first, first)
    out = tmp_path / "converted"
    args = convert_parser().parse_args(
        ["convert", repo, str(out), "--filename", "copy.pt", "--revision", "main"]
    )
    assert args.func(args) == 0
    assert Video2LoraHypernetwork.from_pretrained(out).config.source["file"] == "copy.pt"


def test_archive_prefix_and_cuda_locations_do_not_matter(tmp_path):
    """The folder name inside the zip is whatever the file was called; storage locations may say cuda:0."""
    arch = TinyArch()
    state_dict = random_frames2lora_state_dict(arch)
    path = write_frames2lora_checkpoint(tmp_path / "best-ce.pt", arch, state_dict)
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    renamed = tmp_path / "renamed.pt"
    with zipfile.ZipFile(renamed, "w") as archive:
        for name, data in entries.items():
            if name.endswith("data.pkl"):
                data = data.replace(b"\x58\x03\x00\x00\x00cpu", b"\x58\x06\x00\x00\x00cuda:0")
                assert b"cuda:0" in data
            archive.writestr("frames2lora-smolvlm2-500m/" + name.split("/", 1)[1], data)
    loaded, _ = read_frames2lora(renamed)
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())
