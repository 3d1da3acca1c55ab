"""Where a hypernetwork training step spends its time, on the real SmolVLM2-500M shapes (random weights).

One step of `Video2LoraTrainer` is split into its phases, each timed on its own:

1. `encode`: the frozen VLM's internalization pass (vision tower + text decoder, `output_hidden_states`, no grad);
2. `hypernetwork_forward`: features `[B, L, S, H]` -> adapters;
3. `answer_forward`: the adapted answer model on the text-only prompt + response (teacher forcing), CE;
4. `answer_backward`: backward through the frozen answer model down to the adapter tensors;
5. `hypernetwork_backward`: from the adapter tensors into the hypernetwork's parameters;
6. `optimizer`: one AdamW step on the hypernetwork.

The answer backward and the hypernetwork backward are separated exactly with `torch.autograd.grad` on the
adapter tensors, then a second backward from those tensors. Autocast bf16 as in `bf16=True` training; the frozen
VLM is built in bf16, the hypernetwork keeps fp32 master weights. Inputs are synthetic: `frames` frames of
`image_size` px tiles (64 tokens each for SmolVLM2-500M) and random token ids.

Usage:
    python benchmarks/train_throughput.py --steps 3 --frames 12 --output benchmarks/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from transformers_v2l import Video2LoraConfig, Video2LoraHypernetwork
from transformers_v2l.injection import inject_lora
from transformers_v2l.testing import build_random_vlm

PHASES = [
    "encode",
    "hypernetwork_forward",
    "answer_forward",
    "answer_backward",
    "hypernetwork_backward",
    "optimizer",
]


def synthetic_inputs(vlm, batch: int, frames: int, prompt_tokens: int, response_tokens: int, seed: int = 0):
    """Encoder inputs (`frames` tiles per video) and a teacher-forced text batch, with random ids."""
    config = vlm.config
    vision = config.vision_config
    per_frame = (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2
    generator = torch.Generator().manual_seed(seed)
    vocab = config.text_config.vocab_size

    def text(n):
        return torch.randint(100, 49000, (batch, n), generator=generator)

    chunks = [text(30)]
    for _ in range(frames):  # "\nFrame from 00:01:" + <fake><global-img><image> x 64 <fake>
        chunks += [text(8), torch.full((batch, per_frame), config.image_token_id)]
    chunks.append(text(12))
    context_ids = torch.cat(chunks, dim=1)  # [B, S]
    pixel_values = torch.randn(batch, frames, 3, vision.image_size, vision.image_size, generator=generator)
    encoder = {
        "input_ids": context_ids,
        "attention_mask": torch.ones_like(context_ids),
        "pixel_values": pixel_values.to(torch.bfloat16),
        "pixel_attention_mask": torch.ones(
            batch, frames, vision.image_size, vision.image_size, dtype=torch.long
        ),
    }
    ids = torch.randint(100, min(vocab, 49000), (batch, prompt_tokens + response_tokens), generator=generator)
    labels = ids.clone()
    labels[:, :prompt_tokens] = -100
    return encoder, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_step(hn, optimizer, encoder: dict, text: dict) -> dict[str, float]:
    """One training step, phase by phase; returns seconds per phase."""
    vlm, times = hn.vlm, {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (features, mask), times["encode"] = timed(lambda: hn.extract_features(**encoder))
        out, times["hypernetwork_forward"] = timed(
            lambda: hn(context_features=features, context_attention_mask=mask)
        )
        tensors = [*out.lora_A.values(), *out.lora_B.values()]

        def answer():
            with inject_lora(hn.family, out.lora_A, out.lora_B, hn.config.scaling):
                hidden = vlm.model(
                    input_ids=text["input_ids"], attention_mask=text["attention_mask"]
                ).last_hidden_state
            labels = text["labels"][:, 1:]
            selected = labels != -100
            logits = vlm.lm_head(hidden[:, :-1][selected]).float()  # [N, V]
            return torch.nn.functional.cross_entropy(logits, labels[selected])

        loss, times["answer_forward"] = timed(answer)
    grads, times["answer_backward"] = timed(lambda: torch.autograd.grad(loss, tensors))
    _, times["hypernetwork_backward"] = timed(lambda: torch.autograd.backward(tensors, grads))

    def step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    _, times["optimizer"] = timed(step)
    times["loss"] = float(loss.detach())
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        default="500m",
        help="Real shapes: a SmolVLM2 preset of transformers_v2l.testing.presets().",
    )
    parser.add_argument("--steps", type=int, default=3, help="Timed steps (after one warm-up step).")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--response-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--output", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    vlm = build_random_vlm(args.preset, dtype=torch.bfloat16)
    vlm.requires_grad_(False)
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(vlm)  # the paper's hypernetwork: rank 16, latent 512, down_proj
    hn = Video2LoraHypernetwork(config, base_model=vlm).float()  # fp32 master weights, autocast bf16
    torch.nn.init.normal_(hn.scaler_B["down_proj"], std=0.01)  # a non-zero adapter, as after a few steps
    optimizer = torch.optim.AdamW(hn.parameters(), lr=1e-4, weight_decay=0.01)
    encoder, text = synthetic_inputs(
        vlm, args.batch_size, args.frames, args.prompt_tokens, args.response_tokens
    )

    run_step(hn, optimizer, encoder, text)  # warm-up
    steps = [run_step(hn, optimizer, encoder, text) for _ in range(args.steps)]
    median = {phase: statistics.median(s[phase] for s in steps) for phase in PHASES}
    total = sum(median.values())
    hypernetwork = median["hypernetwork_forward"] + median["hypernetwork_backward"] + median["optimizer"]
    frozen_fwd_bwd = median["encode"] + median["answer_forward"] + median["answer_backward"]
    result = {
        "preset": args.preset,
        "setting": {
            "frames": args.frames,
            "tokens_per_frame": 64,
            "context_tokens": encoder["input_ids"].shape[1],
            "batch_size": args.batch_size,
            "prompt_tokens": args.prompt_tokens,
            "response_tokens": args.response_tokens,
            "dtype": "bf16 autocast, frozen VLM in bf16",
            "steps": args.steps,
            "threads": torch.get_num_threads(),
        },
        "hypernetwork_parameters": sum(p.numel() for p in hn.parameters()),
        "median_seconds": median,
        "step_seconds": total,
        "hypernetwork_share_of_step": hypernetwork / total,
        "hypernetwork_vs_frozen_forward_backward": hypernetwork / frozen_fwd_bwd,
        "hypernetwork_share_excluding_encode": hypernetwork / (total - median["encode"]),
        "per_step": steps,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor(),
        },
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "per_step"}, indent=2))
    return result


if __name__ == "__main__":
    main()
