"""`v2l demo` and the embedded default model: the tiny-world VLM and its Video2LoRA hypernetwork.

The package ships a tiny VLM trained from scratch on the toy world
(`transformers_v2l.toy_world`) and a hypernetwork trained for it, produced by
`examples/tiny_world/train.py`. They are a few MB, load offline in well under a second, and make
`v2l internalize`, `v2l ask` and `v2l demo` work on a fresh install with no network.

Example:
    ```python
    from transformers_v2l.demo import load_default_hypernetwork

    hn = load_default_hypernetwork()
    adapter = hn.internalize("clip.mp4")
    hn.answer(adapter, "What color is the circle?")
    ```
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODEL_DIR",
    "add_demo_subparser",
    "demo_accuracy",
    "load_default_hypernetwork",
    "run_demo",
]

#: The embedded default model: `base/` (VLM, tokenizer, processor files) and `hypernet/`.
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "tiny_world"
# which questions the demo prefers to ask, in order
_QUESTION_KINDS = ("order", "direction", "color", "event", "shape", "count")
_CAPTION_TOKENS = 48  # enough for the longest toy-world caption


def load_default_hypernetwork(model_dir: str | os.PathLike | None = None, *, num_threads: int | None = None):
    """Load the embedded tiny-world hypernetwork, bound to its base VLM and processor.

    Args:
        model_dir: a folder with `base/` and `hypernet/` as `examples/tiny_world/train.py` writes
            them; defaults to the copy shipped inside the package.
        num_threads: if given, `torch.set_num_threads(num_threads)`.

    Returns:
        A `Video2LoraHypernetwork` in eval mode, ready for `internalize`, `answer` and
        `answer_with_video`.

    Raises:
        FileNotFoundError: the package was installed without its assets.

    Example:
        ```python
        hn = load_default_hypernetwork()
        hn.answer(hn.internalize("clip.mp4"), "How many objects are there?")
        ```
    """
    import torch

    from .families import family_class
    from .modeling_video2lora import Video2LoraHypernetwork

    root = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    base_dir, hypernet_dir = root / "base", root / "hypernet"
    if not (base_dir / "config.json").exists() or not (hypernet_dir / "config.json").exists():
        raise FileNotFoundError(
            f"No default model in {root}: expected base/ and hypernet/ folders. Reinstall transformers-v2l "
            "with its package data, or produce them with examples/tiny_world/train.py."
        )
    if num_threads:
        torch.set_num_threads(num_threads)
    family = family_class(json.loads((base_dir / "config.json").read_text())["model_type"])
    base = family.model_class().from_pretrained(base_dir, dtype=torch.float32).eval()
    processor = None if (hypernet_dir / "processor_config.json").exists() else _legacy_processor(root)
    return Video2LoraHypernetwork.from_pretrained(hypernet_dir, base_model=base, processor=processor).eval()


def _legacy_processor(root: Path):
    """The processor of a tiny-world model written by version 0.1: base files, config settings, recipe protocol."""
    from .configuration_video2lora import Video2LoraConfig
    from .processing_video2lora import Video2LoraProcessor
    from .toy_world import CAPTION_PROMPT

    settings = Video2LoraConfig.from_pretrained(root / "hypernet").processor_settings
    recipe_path = root / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.exists() else {}
    answer = {"protocol": "direct"}
    if recipe.get("qa_format") == "dialog":  # 0.1's dialog models recall their caption first
        reader = recipe.get("dialog_reader", "adapter")
        answer = {"protocol": "recall", "recall_prompt": CAPTION_PROMPT, "reader": reader,
                  "recall_max_new_tokens": _CAPTION_TOKENS}  # fmt: skip
    return Video2LoraProcessor.from_pretrained(root / "base", answer=answer, **settings)


def _pick_questions(qa: list[dict], count: int) -> list[dict]:
    picked: list[dict] = []
    for kind in _QUESTION_KINDS:
        for item in qa:
            if item["kind"] == kind and item not in picked:
                picked.append(item)
                break
        if len(picked) == count:
            break
    return picked


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def _median_seconds(fn, repeats: int = 3) -> float:
    """Median wall time of `fn()` after one warm-up call (time to first token when `fn` generates one token)."""
    fn()
    return sorted(_timed(fn)[1] for _ in range(repeats))[repeats // 2]


def _answer_rows(hn, video: str, adapter, questions: list[str], max_new: int) -> list[tuple]:
    """`(base answer, base TTFT, Video2LoRA answer, Video2LoRA TTFT)` per question."""
    answers_base = [hn.answer_with_video(video, q, max_new_tokens=max_new) for q in questions]
    answers_v2l = [hn.answer(adapter, q, max_new_tokens=max_new) for q in questions]
    return [
        (
            base,
            _median_seconds(partial(hn.answer_with_video, video, q, max_new_tokens=1)),
            v2l,
            _median_seconds(partial(hn.answer, adapter, q, max_new_tokens=1)),
        )
        for base, v2l, q in zip(answers_base, answers_v2l, questions)
    ]


def run_demo(args: argparse.Namespace) -> int:
    """Generate a test clip, internalize it, and compare answers and query latency with the base model.

    Both conditions ask as the checkpoint was trained (its processor's answering protocol). The time to
    first token of each question is the median of three single-token generations: for the base model it
    includes decoding the video and encoding its frames, as answering with the video in context does; for
    Video2LoRA the adapter already exists and the prompt holds only text. For a checkpoint that recalls a
    description before answering, both include that recall.

    Args:
        args: `seed` (clip seed), `num_questions`, `max_new_tokens`, `model_dir` (optional),
            `save_video` (optional path to keep the clip), `threads` (CPU threads, default 1).

    Returns:
        The exit code, 0.

    Example:
        ```python
        import argparse

        run_demo(argparse.Namespace(seed=3, num_questions=2))  # what `v2l demo --seed 3 --num-questions 2` runs
        ```
    """
    from transformers.utils import logging as hf_logging

    from .toy_world import CAPTION_PROMPT, make_clip, write_video

    hf_logging.disable_progress_bar()  # the demo prints a table; weight-loading bars would interleave
    seed = getattr(args, "seed", 0)
    hn, load_seconds = _timed(
        load_default_hypernetwork, getattr(args, "model_dir", None), num_threads=getattr(args, "threads", 1)
    )
    clip = make_clip(seed, "test")
    kept = getattr(args, "save_video", None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(kept or Path(tmp) / f"{clip.id}.mp4")
        write_video(clip.frames, path)
        adapter, internalize_seconds = _timed(hn.internalize, str(path))
        questions = _pick_questions(clip.qa, getattr(args, "num_questions", 3))
        max_new = getattr(args, "max_new_tokens", 32)
        where = (
            f"saved as {path}"
            if kept
            else "in a temporary file, deleted at exit (--save-video PATH keeps it)"
        )
        print(f"Clip {clip.id} (seed {seed}): {len(clip.frames)} frames, "
              f"{clip.frames.shape[2]}x{clip.frames.shape[1]} px, {where}")  # fmt: skip
        print(f"Ground-truth caption: {clip.caption}")
        print(f"Loaded the tiny-world model in {load_seconds:.2f}s; internalized the clip in {internalize_seconds:.3f}s "
              f"(adapter rank {adapter.rank}, {adapter.nbytes / 1024:.0f} KiB).\n")  # fmt: skip
        rows = _answer_rows(hn, str(path), adapter, [q["question"] for q in questions], max_new)
        for item, (base_answer, base_ttft, v2l_answer, v2l_ttft) in zip(questions, rows):
            print(f"Q: {item['question']}")
            print(f"   ground truth          : {item['answer']}")
            for label, text, ttft in (
                ("base, video in context", base_answer, base_ttft),
                ("Video2LoRA, no video  ", v2l_answer, v2l_ttft),
            ):
                print(f"   {label}: {text:<24} (time to first token {ttft * 1000:6.1f} ms)")
            print()
        caption_v2l = hn.answer(adapter, CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS)
        caption_base = hn.answer_with_video(str(path), CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS)
        print(f"{CAPTION_PROMPT}\n   base      : {caption_base}\n   Video2LoRA: {caption_v2l}")
    return 0


def demo_accuracy(
    hn, seeds: Sequence[int], *, num_questions: int = 3, max_new_tokens: int = 32, progress: bool = True
) -> dict[str, Any]:
    """How often the demo's two conditions answer right, over several seeds: what `v2l demo --accuracy N` prints.

    Each seed's clip, questions and greedy answers are exactly the demo's for that seed; answers are scored
    with exact match and the captions with token F1 against the ground truth (`transformers_v2l.evaluation`).

    Args:
        hn: a tiny-world hypernetwork (`load_default_hypernetwork()`).
        seeds: the demo seeds.
        num_questions: questions per clip, as `v2l demo --num-questions`.
        max_new_tokens: the answers' token budget.
        progress: show a progress bar over the seeds.

    Returns:
        `{"questions": [per-question rows], "captions": [per-seed rows], "summary": {...}}`; the summary holds,
        per condition (`base`: video in context, `v2l`: zero visual tokens), the right answers, the exact-match
        rate overall and by question kind, the seeds answered all right, and the mean caption token F1.

    Example:
        ```python
        demo_accuracy(load_default_hypernetwork(), range(20))["summary"]["v2l"]["exact_match"]
        ```
    """
    from tqdm.auto import tqdm

    from .evaluation import exact_match_score, token_f1_score
    from .toy_world import CAPTION_PROMPT, make_clip, write_video

    questions, captions = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in tqdm(list(seeds), desc="Demo seeds", unit="seed", disable=not progress):
            clip = make_clip(seed, "test")
            video = str(write_video(clip.frames, Path(tmp) / f"{clip.id}.mp4"))
            adapter = hn.internalize(video)
            for item in _pick_questions(clip.qa, num_questions):
                base = hn.answer_with_video(video, item["question"], max_new_tokens=max_new_tokens)
                v2l = hn.answer(adapter, item["question"], max_new_tokens=max_new_tokens)
                questions.append({"seed": seed, "kind": item["kind"], "question": item["question"],
                                  "truth": item["answer"], "base": base, "v2l": v2l,
                                  "base_right": exact_match_score(base, item["answer"]),
                                  "v2l_right": exact_match_score(v2l, item["answer"])})  # fmt: skip
            texts = {"base": hn.answer_with_video(video, CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS),
                     "v2l": hn.answer(adapter, CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS)}  # fmt: skip
            captions.append({"seed": seed, "truth": clip.caption, **texts,
                             **{f"{k}_f1": token_f1_score(v, clip.caption) for k, v in texts.items()}})  # fmt: skip
    return {"questions": questions, "captions": captions, "summary": _accuracy_summary(questions, captions)}


def _accuracy_summary(questions: list[dict], captions: list[dict]) -> dict[str, Any]:
    kinds = sorted({q["kind"] for q in questions})
    seeds = sorted({q["seed"] for q in questions})
    summary: dict[str, Any] = {"seeds": len(seeds), "questions": len(questions)}
    for condition in ("base", "v2l"):
        right = [q[f"{condition}_right"] for q in questions]
        by_kind = {k: [q[f"{condition}_right"] for q in questions if q["kind"] == k] for k in kinds}
        summary[condition] = {
            "right": int(sum(right)),
            "exact_match": sum(right) / len(right),
            "by_kind": {k: sum(v) / len(v) for k, v in by_kind.items()},
            "seeds_all_right": sum(
                all(q[f"{condition}_right"] for q in questions if q["seed"] == s) for s in seeds
            ),
            "caption_f1": sum(c[f"{condition}_f1"] for c in captions) / len(captions),
        }
    return summary


def _print_accuracy(result: dict[str, Any]) -> None:
    summary = result["summary"]
    kinds = list(summary["base"]["by_kind"])
    print(f"v2l demo over {summary['seeds']} seeds ({summary['questions']} questions), exact match:\n")
    print("| condition | right | all right (seeds) | " + " | ".join(kinds) + " | caption token F1 |")
    print("|---|---|---|" + "---|" * len(kinds) + "---|")
    for condition, label in (("base", "base, video in context"), ("v2l", "Video2LoRA, no video")):
        row = summary[condition]
        cells = " | ".join(f"{row['by_kind'][k]:.2f}" for k in kinds)
        print(f"| {label} | {row['right']}/{summary['questions']} ({row['exact_match']:.2f}) | "
              f"{row['seeds_all_right']}/{summary['seeds']} | {cells} | {row['caption_f1']:.3f} |")  # fmt: skip


def add_demo_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `v2l demo` on the CLI's subparsers.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `demo` parser.

    Example:
        ```python
        import argparse

        parser = argparse.ArgumentParser(prog="v2l")
        add_demo_subparser(parser.add_subparsers())
        args = parser.parse_args(["demo", "--seed", "3"])
        args.func(args)
        ```
    """
    from .cli_args import int_in_range, non_negative_int, positive_int

    parser = subparsers.add_parser(
        "demo",
        help="Offline demo: internalize a generated clip and compare answers with the base model.",
        description="Generate a toy-world test clip, internalize it with the embedded tiny model, ask three "
        "questions, and print the answers next to the base model's (video in context) and the ground truth.",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="Seed of the generated test clip.")
    parser.add_argument(
        "--num-questions", type=int_in_range(1, len(_QUESTION_KINDS)), default=3,
        help=f"Questions to ask, one per kind (1 to {len(_QUESTION_KINDS)}; default 3).",
    )  # fmt: skip
    parser.add_argument("--max-new-tokens", type=positive_int, default=32)
    parser.add_argument("--model-dir", help="A tiny-world model folder (default: the one in the package).")
    parser.add_argument("--save-video", help="Also keep the generated clip at this path (a new .mp4 file).")
    parser.add_argument(
        "--accuracy", type=positive_int, metavar="N",
        help="Instead of one demo, run seeds 0 to N-1 and print how often each condition answers right.",
    )  # fmt: skip
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads (the tiny model is fastest on one; default 1).",
    )
    parser.set_defaults(func=_checked_run_demo)
    return parser


def _checked_run_demo(args: argparse.Namespace) -> int:
    """`v2l demo`: refuse an existing or unwritable `--save-video` and a missing `--model-dir`, then `run_demo`."""
    from .cli_args import check_writable
    from .errors import InvalidArgumentError

    if args.save_video:
        if Path(args.save_video).exists():
            raise InvalidArgumentError(
                f"--save-video {args.save_video} already exists; choose a new file name."
            )
        check_writable(Path(args.save_video).expanduser().absolute().parent, "--save-video")
    if args.model_dir and not Path(args.model_dir).is_dir():
        raise FileNotFoundError(
            f"--model-dir {args.model_dir} is not a folder (nothing at {Path(args.model_dir).absolute()})."
        )
    if args.accuracy:
        if args.save_video:
            raise InvalidArgumentError("--save-video keeps one demo's clip; it does not go with --accuracy.")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar; the seeds get their own
        hn = load_default_hypernetwork(args.model_dir, num_threads=args.threads)
        result = demo_accuracy(hn, range(args.accuracy), num_questions=args.num_questions,
                               max_new_tokens=args.max_new_tokens)  # fmt: skip
        _print_accuracy(result)
        return 0
    return run_demo(args)
