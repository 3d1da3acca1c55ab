"""Internalize many videos in batches, then answer one question per video in a single batched call.

`hn.internalize(videos, batch_size=B)` runs one encoder pass and one hypernetwork pass per batch of
`B` videos and returns one adapter per video. `hn.answer(adapters, questions)` then answers all the
questions in one generation batch, each row with its own adapter and no visual tokens.

Usage:
    python examples/batch_videos/batch_videos.py --num-videos 8 --batch-size 4
    python examples/batch_videos/batch_videos.py --videos a.mp4 b.mp4 c.mp4 --question "What happens?"

Writes `OUT_DIR/results.json`, the generated clips in `OUT_DIR/videos/`, and with `--save-adapters`
one PEFT adapter folder per video in `OUT_DIR/adapters/`.
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


@dataclass
class Row:
    """One video, the question asked about it, and the answer."""

    video: str
    question: str
    ground_truth: str | None = None
    answer: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", help="Video files (default: generated tiny-world test clips).")
    parser.add_argument("--num-videos", type=int, default=8, help="Clips to generate without --videos.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the first generated clip.")
    parser.add_argument("--question", default=CAPTION_PROMPT, help="The question asked about --videos.")
    parser.add_argument("--batch-size", type=int, default=4, help="Videos per internalization pass.")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--save-adapters", action="store_true", help="Save each adapter as a PEFT folder.")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/batch_videos"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1).")
    return parser.parse_args(argv)


def prepare_rows(args: argparse.Namespace) -> list[Row]:
    """The user's videos with `--question`, or generated clips, each asked a different kind of question."""
    if args.videos:
        return [Row(video, args.question) for video in args.videos]
    rows = []
    for i in range(args.num_videos):
        clip = make_clip(args.seed + i)
        path = write_video(clip.frames, args.out_dir / "videos" / f"{clip.id}.mp4")
        qa = clip.qa[i % len(clip.qa)]
        rows.append(Row(str(path), qa["question"], qa["answer"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    hn = load_default_hypernetwork(num_threads=args.threads)
    rows = prepare_rows(args)

    start = time.perf_counter()
    adapters = hn.internalize([row.video for row in rows], batch_size=args.batch_size)
    internalize_seconds = time.perf_counter() - start
    start = time.perf_counter()
    answers = hn.answer(adapters, [row.question for row in rows], max_new_tokens=args.max_new_tokens)
    answer_seconds = time.perf_counter() - start
    for row, answer in zip(rows, answers):
        row.answer = answer

    batches = -(-len(rows) // args.batch_size)
    print(
        f"Internalized {len(rows)} videos, {batches} batches of {args.batch_size}: {internalize_seconds:.2f}s"
    )
    print(f"Answered {len(rows)} questions, one adapter per row, in one batch: {answer_seconds:.2f}s\n")
    for row in rows:
        truth = f"  (ground truth: {row.ground_truth})" if row.ground_truth is not None else ""
        print(f"{Path(row.video).name}: {row.question}\n    -> {row.answer}{truth}")

    if args.save_adapters:
        for row, adapter in zip(rows, adapters):
            adapter.save_pretrained(args.out_dir / "adapters" / Path(row.video).stem)
        print(f"\nSaved {len(adapters)} adapters in {args.out_dir / 'adapters'}")
    report = {
        "batch_size": args.batch_size,
        "internalize_seconds": internalize_seconds,
        "answer_seconds": answer_seconds,
        "rows": [asdict(row) for row in rows],
    }
    path = args.out_dir / "results.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
