"""Internalize a long video chunk by chunk, then ask the composed adapter about it.

A hypernetwork is trained on short clips (8 frames for the tiny-world model). `hn.internalize(video,
chunk_frames=N)` splits a longer video into consecutive chunks of `N / fps` seconds (the processor
samples 1 frame per second), internalizes each chunk like a clip of its own while decoding the file
once, and concatenates the chunk adapters in rank space (paper section 5.6): the composed update is
the sum of the chunk updates, and its rank is the number of chunks times the adapter rank.

By default the long video is several tiny-world test clips played one after the other, so each chunk
lines up with one clip and its ground-truth caption. `--video` takes any file instead. To show what
each chunk holds, every chunk adapter (`long_video.iter_chunk_adapters`) also describes its own chunk.

Usage:
    python examples/long_video/long_video.py --num-clips 6 --chunk-frames 8
    python examples/long_video/long_video.py --video film.mp4 --chunk-frames 8

Writes `OUT_DIR/summary.json` (the plan, every chunk and the answers), and the generated video.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging as hf_logging

from transformers_v2l import Video2LoraHypernetwork
from transformers_v2l.demo import load_default_hypernetwork
from transformers_v2l.long_video import iter_chunk_adapters
from transformers_v2l.toy_world import CAPTION_PROMPT, make_clip, write_video
from transformers_v2l.video_io import probe_video

DEFAULT_QUESTIONS = (CAPTION_PROMPT, "How many objects are there?")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="A video file (default: tiny-world clips played back to back).")
    parser.add_argument("--num-clips", type=int, default=6, help="Clips in the generated video (8 s each).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the first generated clip.")
    parser.add_argument("--chunk-frames", type=int, default=8, help="Frames sampled per chunk.")
    parser.add_argument("--question", action="append", help="A question (repeat for several).")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/long_video"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1).")
    return parser.parse_args(argv)


def make_long_video(args: argparse.Namespace) -> tuple[str, list[str]]:
    """Concatenate generated clips into one file; returns its path and each clip's caption."""
    clips = [make_clip(args.seed + i) for i in range(args.num_clips)]
    path = write_video(np.concatenate([clip.frames for clip in clips]), args.out_dir / "long_video.mp4")
    return str(path), [clip.caption for clip in clips]


def chunk_plan(video: str, chunk_frames: int, fps: float) -> dict[str, Any]:
    """How `internalize(chunk_frames=...)` will split the video: chunks of `chunk_frames / fps` seconds."""
    meta = probe_video(video)
    chunk_seconds = chunk_frames / fps
    chunk_length = max(1, round(chunk_seconds * meta.fps))  # in frames of the file
    return {
        "duration": meta.duration,
        "native_fps": meta.fps,
        "total_frames": meta.total_num_frames,
        "chunk_seconds": chunk_seconds,
        "chunks": math.ceil(meta.total_num_frames / chunk_length),
    }


def describe_chunks(
    hn: Video2LoraHypernetwork, video: str, chunk_frames: int, max_new_tokens: int
) -> list[str]:
    """Each chunk's own adapter describes its chunk (all chunks answered in one batch)."""
    adapters = list(iter_chunk_adapters(hn, video, chunk_frames=chunk_frames))
    return hn.answer(adapters, [CAPTION_PROMPT] * len(adapters), max_new_tokens=max_new_tokens)


def print_chunks(chunks: list[dict[str, Any]], descriptions: list[str], captions: list[str] | None) -> None:
    for i, (chunk, description) in enumerate(zip(chunks, descriptions)):
        start = chunk["start_frame"] / chunk["fps"]
        end, frames = start + chunk["duration"], len(chunk["frame_indices"])
        print(f"chunk {i}: {start:5.1f}s - {end:5.1f}s, {frames} frames")
        if captions and i < len(captions):
            print(f"    ground truth         : {captions[i]}")
        print(f"    its adapter describes: {description}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    hn = load_default_hypernetwork(num_threads=args.threads)
    video, captions = (args.video, None) if args.video else make_long_video(args)

    plan = chunk_plan(video, args.chunk_frames, hn.processor.fps)
    print(f"{video}: {plan['duration']:.1f}s, {plan['total_frames']} frames at {plan['native_fps']:g} fps")
    print(
        f"Plan: {plan['chunks']} chunks of {plan['chunk_seconds']:g}s, up to {args.chunk_frames} frames each"
    )
    print(f"(the hypernetwork was trained on clips of {hn.processor.num_frames} frames)")

    start = time.perf_counter()
    adapter = hn.internalize(video, chunk_frames=args.chunk_frames, show_progress=False)
    internalize_seconds = time.perf_counter() - start
    chunks, composition = adapter.metadata["chunks"], adapter.metadata["composition"]
    done = (
        f"{composition['num_chunks']} chunks ({composition['frames']} frames) in {internalize_seconds:.2f}s"
    )
    print(f"\nInternalized {done} into one adapter of rank {adapter.rank}:")
    descriptions = describe_chunks(hn, video, args.chunk_frames, args.max_new_tokens)
    print_chunks(chunks, descriptions, captions)

    # The composed adapter has a high rank: merge it once, then every question runs the plain model.
    questions = args.question or list(DEFAULT_QUESTIONS)
    with hn.use_adapter(adapter):
        answers = hn.answer(adapter, questions, max_new_tokens=args.max_new_tokens)
    for question, answer in zip(questions, answers):
        print(f"\nQ: {question}\nA: {answer}")

    summary = {
        "video": video,
        "plan": plan,
        "internalize_seconds": internalize_seconds,
        "rank": adapter.rank,
        "composition": composition,
        "chunks": [
            {**{key: chunk[key] for key in ("start_frame", "duration", "frame_indices")}, "description": text}
            for chunk, text in zip(chunks, descriptions)
        ],
        "answers": dict(zip(questions, answers)),
    }
    path = args.out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nWrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
