"""Internalize one video, then ask it several questions with no visual tokens in the prompt.

The embedded tiny-world model internalizes the video into a LoRA adapter (one encoder pass and one
hypernetwork pass). `hn.use_adapter(adapter)` merges the adapter into the frozen model for a session
of questions, so each question costs what a plain text-only query costs. For comparison, the same
model then answers the same questions with the video in its context.

Usage:
    python examples/internalize_and_ask/internalize_and_ask.py
    python examples/internalize_and_ask/internalize_and_ask.py --video my_clip.mp4 --question "What moves?"

Writes `OUT_DIR/answers.json` (and the generated clip, when no `--video` is given).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers.utils import logging as hf_logging

from transformers_v2l.demo import load_default_hypernetwork
from transformers_v2l.toy_world import CAPTION_PROMPT, make_clip, write_video

DEFAULT_QUESTIONS = (CAPTION_PROMPT, "How many objects are there?")


@dataclass
class Question:
    """A question about the video, and its ground truth when the video is a generated clip."""

    question: str
    ground_truth: str | None = None
    video2lora: str = ""
    video_in_context: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="A video file (default: a generated tiny-world test clip).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generated clip.")
    parser.add_argument(
        "--question", action="append", help="A question (repeat for several; default: the clip's own)."
    )
    parser.add_argument("--num-questions", type=int, default=4, help="Questions about a generated clip.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/internalize_and_ask"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1).")
    return parser.parse_args(argv)


def prepare_video(args: argparse.Namespace) -> tuple[str, list[Question]]:
    """The video path and the questions: the user's, or a generated clip with its ground truth."""
    if args.video:
        return args.video, [Question(q) for q in args.question or DEFAULT_QUESTIONS]
    clip = make_clip(args.seed)
    path = write_video(clip.frames, args.out_dir / f"{clip.id}.mp4")
    print(f"Generated {path} ({len(clip.frames)} frames): {clip.caption}")
    if args.question:
        return str(path), [Question(q) for q in args.question]
    pairs = [(CAPTION_PROMPT, clip.caption)] + [(qa["question"], qa["answer"]) for qa in clip.qa]
    return str(path), [Question(q, truth) for q, truth in pairs[: args.num_questions]]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    hn = load_default_hypernetwork(num_threads=args.threads)
    video, questions = prepare_video(args)

    start = time.perf_counter()
    adapter = hn.internalize(video)
    internalize_seconds = time.perf_counter() - start
    size = f"rank {adapter.rank}, {adapter.nbytes / 1024:.0f} KiB"
    print(f"Internalized {video} in {internalize_seconds:.3f}s into an adapter of {size}")

    # A session of questions: the adapter is merged once, and every answer runs the plain model.
    start = time.perf_counter()
    with hn.use_adapter(adapter):
        for item in questions:
            item.video2lora = hn.answer(adapter, item.question, max_new_tokens=args.max_new_tokens)
    answer_seconds = (time.perf_counter() - start) / len(questions)

    # The reference condition (outside the block: the base model must hold its original weights).
    prompts = [item.question for item in questions]
    with_video = hn.answer_with_video(video, prompts, max_new_tokens=args.max_new_tokens)
    for item, answer in zip(questions, with_video):
        item.video_in_context = answer

    for item in questions:
        print(f"\nQ: {item.question}")
        if item.ground_truth is not None:
            print(f"   ground truth          : {item.ground_truth}")
        print(f"   Video2LoRA, no video  : {item.video2lora}")
        print(f"   base, video in context: {item.video_in_context}")
    print(f"\nVideo2LoRA answered in {answer_seconds:.3f}s per question (adapter merged).")

    report = {
        "video": video,
        "adapter": {"rank": adapter.rank, "nbytes": adapter.nbytes},
        "internalize_seconds": internalize_seconds,
        "questions": [asdict(q) for q in questions],
    }
    path = args.out_dir / "answers.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
