"""Check Video2LoRA on a GPU, in one command: placement, hooks vs merged vs PEFT parity, and TTFT ratios.

On a machine with CUDA, this builds a real checkpoint's shapes with random weights (SmolVLM2-500M by
default) in bf16 on the GPU, places the hypernetwork with `hn.to("cuda")` (which moves the base VLM
too), internalizes a random 12-frame video and answers from the adapter. It then checks that the
three ways of applying the adapter agree on the GPU — our per-row hooks, the adapter merged into the
weights (`hn.use_adapter`), and plain PEFT (`PeftModel.from_pretrained` on a copy of the base model)
— and prints the time to first token of each against the plain text-only query and against the video
in context. Without CUDA it says so and exits 0.

Usage (anyone with a GPU and `pip install transformers-v2l`):

    python benchmarks/gpu_check.py                       # SmolVLM2-500M shapes on cuda:0
    python benchmarks/gpu_check.py --preset 256m --frames 24
    python benchmarks/gpu_check.py --device cpu --preset 256m   # the same checks on the CPU (slow)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

from transformers_v2l.benchmarks.models import BENCH_QUESTION, build_setup, first_token, random_video
from transformers_v2l.injection import inject_lora, stack_adapters


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    samples = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@torch.no_grad()
def _last_logits(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**inputs, logits_to_keep=1).logits[:, -1].float()  # [B, V]


def _peft_copy(vlm, adapter):
    from peft import PeftModel

    with tempfile.TemporaryDirectory() as folder:
        adapter.save_pretrained(folder)
        return PeftModel.from_pretrained(copy.deepcopy(vlm), folder, autocast_adapter_dtype=False).eval()


def run_check(preset: str, device: str, frames: int, repeats: int, tiny: bool = False) -> dict[str, Any]:
    """Build, place, internalize, compare hooks / merged / PEFT, and time the first token.

    Args:
        preset: a real checkpoint's shape (`transformers_v2l.testing.presets()`).
        device: where to run (`"cuda"`, `"cuda:1"`, `"cpu"`).
        frames: frames of the random video.
        repeats: timed repeats per condition (after one warm-up).
        tiny: use the family's tiny test model instead of the real shapes (for a quick self-test).

    Returns:
        The report: devices, parity (max |logit difference| and greedy-token agreement) and timings.
    """
    dtype = torch.float32 if tiny else torch.bfloat16
    setup = build_setup(preset, dtype=dtype, tiny=tiny)
    hn, vlm, processor = setup.hypernet, setup.vlm, setup.processor
    target = torch.device(device)
    hn.to(target)  # the hypernetwork and, with it, the base VLM
    video = random_video(frames, 360, 640)
    adapter = hn.internalize(video)
    query = {k: v.to(target) for k, v in processor.query_inputs([BENCH_QUESTION]).items()}
    with_video = processor.video_in_context_inputs(video, BENCH_QUESTION, return_metadata=False)

    lora_A, lora_B, scaling = stack_adapters([adapter])
    with inject_lora(hn.family, lora_A, lora_B, scaling):
        hooks = _last_logits(vlm, query)
    with hn.use_adapter(adapter):
        merged = _last_logits(vlm, query)
    peft = _last_logits(_peft_copy(vlm, adapter), query)
    plain = _last_logits(vlm, query)
    parity = {
        "hooks_vs_merged_max_abs": float((hooks - merged).abs().max()),
        "hooks_vs_peft_max_abs": float((hooks - peft).abs().max()),
        "adapter_effect_max_abs": float((hooks - plain).abs().max()),
        "same_greedy_token": bool(
            hooks.argmax(-1).eq(merged.argmax(-1)).all() and hooks.argmax(-1).eq(peft.argmax(-1)).all()
        ),
    }

    def unmerged():
        with inject_lora(hn.family, lora_A, lora_B, scaling):
            first_token(vlm, query)

    times = {
        "plain_text_only": _median_seconds(lambda: first_token(vlm, query), target, repeats),
        "v2l_unmerged": _median_seconds(unmerged, target, repeats),
        "video_in_context": _median_seconds(
            lambda: first_token(vlm, with_video), target, max(1, repeats // 2)
        ),
    }
    with hn.use_adapter(adapter):
        times["v2l_merged"] = _median_seconds(lambda: first_token(vlm, query), target, repeats)
    base = times["plain_text_only"]
    return {
        "preset": setup.preset,
        "device": str(target),
        "gpu": torch.cuda.get_device_name(target) if target.type == "cuda" else None,
        "dtype": str(dtype).removeprefix("torch."),
        "placement": {"hypernetwork": str(hn.device), "base_model": str(hn.runtime.device)},
        "frames": frames,
        "tokens": {
            "query": int(query["input_ids"].shape[1]),
            "video_in_context": int(with_video["input_ids"].shape[1]),
        },
        "parity": parity,
        "ttft_seconds": times,
        "ttft_ratio_vs_plain": {name: t / base for name, t in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the check and print the report (JSON); exit 1 on a parity failure.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="500m", help="A real checkpoint's shape (default 500m, SmolVLM2-500M)."
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda).")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--tiny", action="store_true", help="The tiny test model (a self-test of this script)."
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "CUDA is not available on this machine: nothing to check (pass --device cpu to run the checks on the CPU)."
        )
        return 0
    report = run_check(args.preset, args.device, args.frames, args.repeats, tiny=args.tiny)
    print(json.dumps(report, indent=2))
    parity = report["parity"]
    tolerance = 1e-3 if args.tiny else 0.1  # bf16 logits: merged weights round differently from hooks
    ok = parity["same_greedy_token"] and parity["hooks_vs_merged_max_abs"] <= tolerance
    ok = ok and parity["hooks_vs_peft_max_abs"] <= tolerance and parity["adapter_effect_max_abs"] > 0
    print("parity: OK" if ok else "parity: FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
