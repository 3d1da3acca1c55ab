"""Time one per-row LoRA update (`injection.lora_forward`) in float32 and in bf16, at a real checkpoint's shapes.

The per-row hooks of `hn.answer` and `v2l serve` compute the update `output + s * (x A) B` in float32 or
wider, as PEFT does by default. This measures what that costs on the machine at hand, against the same
update computed in bf16 and against the bf16 module itself (`F.linear`), for a prefill (`--tokens`
positions) and for a one-token decoding step, and writes the medians, and the update's share of the
module's multiply-adds, to a JSON file.

Usage:

    python benchmarks/lora_update_dtype.py                 # SmolVLM2-256M's down_proj, rank 32, 44 tokens
    python benchmarks/lora_update_dtype.py --d-in 2560 --d-out 960 --out lora_update_dtype_500m.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from transformers_v2l.benchmarks.common import machine_info, set_threads, write_json
from transformers_v2l.injection import lora_forward


def median_us(fn, repeats: int, warmup: int = 20) -> float:
    """Median wall time of `fn()` in microseconds, over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def measure(tokens: int, d_in: int, d_out: int, rank: int, repeats: int) -> dict[str, float]:
    """Median microseconds of one bf16 module, and of its output updated with the LoRA update in each dtype."""
    generator = torch.Generator().manual_seed(0)
    lora_a = torch.randn(1, rank, d_in, generator=generator)  # [1, R, d_in], as adapters are stored
    lora_b = torch.randn(1, rank, d_out, generator=generator)  # [1, R, d_out]
    weight = torch.randn(d_out, d_in, generator=generator).to(torch.bfloat16)  # the base module's weight
    results = {"update_share_of_module_macs": rank * (d_in + d_out) / (d_in * d_out)}
    for name, length in (("prefill", tokens), ("decode", 1)):
        x = torch.randn(1, length, d_in, generator=generator).to(torch.bfloat16)  # [1, S, d_in]
        output = torch.randn(1, length, d_out, generator=generator).to(torch.bfloat16)  # [1, S, d_out]
        results[f"{name}_module_bfloat16_us"] = median_us(
            lambda x=x: torch.nn.functional.linear(x, weight), repeats
        )
        for dtype in (torch.float32, torch.bfloat16):
            a, b = lora_a.to(dtype).transpose(-1, -2), lora_b.to(dtype)  # [1, d_in, R], [1, R, d_out]
            label = f"{name}_{str(dtype).removeprefix('torch.')}_us"
            results[label] = median_us(lambda a=a, b=b, x=x, o=output: lora_forward(o, x, a, b, 2.0), repeats)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=44, help="prefill positions (a 44-token question)")
    parser.add_argument("--d-in", type=int, default=1536, help="the target module's input width")
    parser.add_argument("--d-out", type=int, default=576, help="the target module's output width")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lora_update_dtype_256m.json"))
    args = parser.parse_args(argv)
    set_threads()
    shapes = {"tokens": args.tokens, "d_in": args.d_in, "d_out": args.d_out, "rank": args.rank}
    result = {"benchmark": "lora_update_dtype", "machine": machine_info(), "settings": shapes,
              "medians": measure(args.tokens, args.d_in, args.d_out, args.rank, args.repeats)}  # fmt: skip
    write_json(args.out, result)  # atomic
    print(json.dumps(result["medians"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
