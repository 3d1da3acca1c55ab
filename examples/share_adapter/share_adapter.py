"""Share a generated adapter: a standard PEFT folder, loaded by plain PEFT, pushed to and pulled from a Hub.

1. The embedded tiny-world model internalizes a video into an adapter, saved as a PEFT folder
   (`adapter_config.json`, `adapter_model.safetensors`, `README.md` model card).
2. Plain `peft.PeftModel.from_pretrained` loads that folder onto the plain base model, and answers a
   question with no transformers-v2l code in the loop; the library answers the same question.
3. `adapter.push_to_hub` uploads the adapter, and `GeneratedLora.from_pretrained` pulls it back at
   the pushed commit. The embedded model's base model is a folder, which nobody who downloads the
   adapter can load: `--base-model-id` names that base model on the Hub, and the pushed
   `adapter_config.json` and model card record that id, never the folder.

Step 3 needs a Hub: huggingface.co (log in first), or the local test server (see README.md), holding
the base model. The endpoint comes from `--endpoint` or `HF_ENDPOINT`. Without a reachable Hub or
without `--base-model-id`, the script prints the library's error and exits with status 1.

Usage:
    python examples/share_adapter/share_adapter.py --endpoint http://127.0.0.1:8808 \
        --repo-id tester/demo-adapter --base-model-id tester/tiny-world-base

Writes `OUT_DIR/adapter/` (the PEFT folder), `OUT_DIR/hub-cache/` and `OUT_DIR/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the library is imported in main(), once HF_ENDPOINT is set
    from transformers_v2l import GeneratedLora, Video2LoraHypernetwork

QUESTION = "Describe the video."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="A video file (default: a generated tiny-world test clip).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generated clip.")
    parser.add_argument("--question", default=QUESTION, help="The question both loaders answer.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--repo-id",
        default="video2lora-example-adapter",
        help="Hub repository; a bare name goes to the token's own namespace.",
    )
    parser.add_argument(
        "--base-model-id",
        help="The Hub id of the base model, recorded in the pushed files (needed when it was loaded from a "
        "folder, as the embedded model's is).",
    )
    parser.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT, else https://huggingface.co).")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored `hf auth login`).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/share_adapter"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1).")
    return parser.parse_args(argv)


def internalize(hn: Video2LoraHypernetwork, args: argparse.Namespace) -> GeneratedLora:
    """The adapter of `--video`, or of a generated clip written to the output folder."""
    from transformers_v2l.toy_world import make_clip, write_video

    video = args.video
    if video is None:
        clip = make_clip(args.seed)
        video = str(write_video(clip.frames, args.out_dir / f"{clip.id}.mp4"))
        print(f"Generated {video}: {clip.caption}")
    return hn.internalize(video)


def answer_with_plain_peft(folder: Path, question: str, max_new_tokens: int) -> str:
    """Load the adapter folder with transformers and PEFT only, and answer a text-only question."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    base_id = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_id), folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_id)
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def push_and_pull(adapter: GeneratedLora, args: argparse.Namespace) -> dict[str, Any]:
    """Push the adapter, pull it back at the new commit, and check that nothing changed on the way."""
    import torch

    from transformers_v2l import GeneratedLora

    info = adapter.push_to_hub(
        args.repo_id, base_model_id=args.base_model_id, private=args.private, token=args.token
    )
    repo_id = info.repo_url.repo_id
    print(f"Pushed to {info.repo_url} at commit {info.oid}")
    pulled = GeneratedLora.from_pretrained(
        repo_id, revision=info.oid, token=args.token, cache_dir=args.out_dir / "hub-cache"
    )
    identical = all(
        torch.equal(pulled.lora_A[m], adapter.lora_A[m]) and torch.equal(pulled.lora_B[m], adapter.lora_B[m])
        for m in adapter.target_modules
    )
    source = {key: pulled.metadata.get(key) for key in ("source", "sha256", "frame_indices")}
    print(f"Pulled {repo_id}@{info.oid[:8]}: tensors identical: {identical}")
    print(f"Provenance read back from its model card: {source}")
    return {"repo_id": repo_id, "commit": info.oid, "identical": identical, "provenance": pulled.metadata}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.endpoint:  # huggingface_hub reads HF_ENDPOINT once, when it is first imported
        os.environ["HF_ENDPOINT"] = args.endpoint
    from transformers.utils import logging as hf_logging

    from transformers_v2l import Video2LoraError
    from transformers_v2l.demo import load_default_hypernetwork

    hf_logging.disable_progress_bar()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hn = load_default_hypernetwork(num_threads=args.threads)
    adapter = internalize(hn, args)

    folder = adapter.save_pretrained(args.out_dir / "adapter")
    files = {path.name: path.stat().st_size for path in sorted(folder.iterdir())}
    print(f"Saved a PEFT adapter folder {folder}: {files}")

    summary: dict[str, Any] = {"folder": str(folder), "files": files, "question": args.question}
    summary["library_answer"] = hn.answer(adapter, args.question, max_new_tokens=args.max_new_tokens)
    summary["peft_answer"] = answer_with_plain_peft(folder, args.question, args.max_new_tokens)
    print(f"Q: {args.question}")
    print(f"   transformers-v2l: {summary['library_answer']}")
    print(f"   plain PEFT      : {summary['peft_answer']}")

    try:
        summary["hub"] = push_and_pull(adapter, args)
    except Video2LoraError as error:  # BaseModelIdError, HubPushError, HubUnavailableError: says what failed
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        print(
            "The Hub step needs a reachable Hub and the base model's Hub id (--base-model-id): see "
            "examples/share_adapter/README.md.",
            file=sys.stderr,
        )
        return 1
    finally:
        (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
