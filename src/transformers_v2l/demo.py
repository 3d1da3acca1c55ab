"""`v2l demo` and the embedded default model: the tiny-world VLM and its Video2LoRA hypernetwork.

The package ships a tiny SmolVLM-architecture model trained from scratch on the toy world
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

import torch

__all__ = [
    "DEFAULT_MODEL_DIR",
    "add_demo_subparser",
    "answer_protocol",
    "load_default_hypernetwork",
    "recall_then_answer",
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
    from transformers import SmolVLMForConditionalGeneration

    from .modeling_video2lora import Video2LoraHypernetwork
    from .processing_video2lora import Video2LoraProcessor

    root = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    base_dir, hypernet_dir = root / "base", root / "hypernet"
    if not (base_dir / "config.json").exists() or not (hypernet_dir / "config.json").exists():
        raise FileNotFoundError(
            f"No default model in {root}: expected base/ and hypernet/ folders. Reinstall transformers-v2l "
            "with its package data, or produce them with examples/tiny_world/train.py."
        )
    if num_threads:
        torch.set_num_threads(num_threads)
    base = SmolVLMForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).eval()
    hn = Video2LoraHypernetwork.from_pretrained(hypernet_dir, base_model=base)
    processor = Video2LoraProcessor.from_pretrained(
        base_dir, longest_edge=hn.config.longest_edge, num_frames=hn.config.num_frames
    )
    hn._init_runtime(base, processor)
    hn.config.base_model_name_or_path = str(base_dir)
    return hn.eval()


def answer_protocol(model_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """How a tiny-world model was trained to answer questions, from its `recipe.json`.

    Args:
        model_dir: a tiny-world model folder; defaults to the one shipped inside the package.

    Returns:
        `{"qa_format": ..., "dialog_reader": ...}`: `"direct"` models answer a question as it is;
        `"dialog"` models answer it as the turn after their own caption (see `recall_then_answer`).

    Example:
        ```python
        answer_protocol()["qa_format"]
        ```
    """
    path = (Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR) / "recipe.json"
    recipe = json.loads(path.read_text()) if path.exists() else {}
    return {
        "qa_format": recipe.get("qa_format", "direct"),
        "dialog_reader": recipe.get("dialog_reader", "adapter"),
    }


def recall_then_answer(
    hn,
    questions: Sequence[str],
    *,
    adapter=None,
    video=None,
    reader: str = "frozen",
    max_new_tokens: int = 32,
) -> tuple[str, list[str]]:
    """Answer as a dialog-trained tiny-world model does: caption first, then each question as the next turn.

    With `adapter`, the adapter recalls the caption with zero visual tokens and the question turn is read by
    the frozen model alone (`reader="frozen"`) or with the adapter attached (`reader="adapter"`). With
    `video`, the base model captions and answers with the video in context.

    Args:
        hn: a `Video2LoraHypernetwork` bound to its base model.
        questions: the questions.
        adapter: the video's `GeneratedLora` (Video2LoRA); give this or `video`.
        video: the video itself (the base model with the video in context); give this or `adapter`.
        reader: who answers Video2LoRA's question turn, `"frozen"` or `"adapter"`.
        max_new_tokens: generation budget per answer.

    Returns:
        `(caption, answers)`.

    Example:
        ```python
        caption, answers = recall_then_answer(hn, ["How many objects are there?"], adapter=adapter)
        ```
    """
    from .toy_world import CAPTION_PROMPT, dialog_prompt

    if reader not in ("frozen", "adapter"):
        raise ValueError(f"reader must be 'frozen' or 'adapter', not {reader!r}")
    if (adapter is None) == (video is None):
        raise ValueError("recall_then_answer() takes an adapter or a video, not both and not neither.")
    if video is not None:
        caption = hn.answer_with_video(video, CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS)
        prompts = [dialog_prompt(caption, q) for q in questions]
        return caption, hn.answer_with_video([video] * len(prompts), prompts, max_new_tokens=max_new_tokens)
    caption = hn.answer(adapter, CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS)
    prompts = [dialog_prompt(caption, q) for q in questions]
    if reader == "frozen":
        return caption, hn.answer_plain(prompts, max_new_tokens=max_new_tokens)
    return caption, hn.answer(adapter, prompts, max_new_tokens=max_new_tokens)


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


def _answer_rows(hn, video: str, adapter, questions: list[str], protocol: dict, max_new: int) -> list[tuple]:
    """`(base answer, base TTFT, Video2LoRA answer, Video2LoRA TTFT)` per question, in the model's protocol."""
    from .toy_world import dialog_prompt

    if protocol["qa_format"] == "dialog":
        reader = protocol["dialog_reader"]
        caption_base, answers_base = recall_then_answer(hn, questions, video=video, max_new_tokens=max_new)
        caption_v2l, answers_v2l = recall_then_answer(
            hn, questions, adapter=adapter, reader=reader, max_new_tokens=max_new
        )
        print("This model answers each question as the turn after its own caption (see docs/results.md):")
        print(f"   base, video in context: {caption_base}")
        print(f"   Video2LoRA, no video  : {caption_v2l}  (recalled by the adapter; "
              f"the {'frozen model' if reader == 'frozen' else 'adapter'} answers)\n")  # fmt: skip
        base_prompts = [dialog_prompt(caption_base, q) for q in questions]
        v2l_prompts = [dialog_prompt(caption_v2l, q) for q in questions]
        v2l_answer = hn.answer_plain if reader == "frozen" else partial(hn.answer, adapter)
    else:
        base_prompts = v2l_prompts = list(questions)
        v2l_answer = partial(hn.answer, adapter)
        answers_base = [hn.answer_with_video(video, q, max_new_tokens=max_new) for q in base_prompts]
        answers_v2l = [v2l_answer(q, max_new_tokens=max_new) for q in v2l_prompts]
    return [
        (
            base,
            _median_seconds(partial(hn.answer_with_video, video, base_prompt, max_new_tokens=1)),
            v2l,
            _median_seconds(partial(v2l_answer, v2l_prompt, max_new_tokens=1)),
        )
        for base, base_prompt, v2l, v2l_prompt in zip(answers_base, base_prompts, answers_v2l, v2l_prompts)
    ]


def run_demo(args: argparse.Namespace) -> int:
    """Generate a test clip, internalize it, and compare answers and query latency with the base model.

    The time to first token of each question is the median of three single-token generations: for the
    base model it includes decoding the video and encoding its frames, as answering with the video in
    context does; for Video2LoRA the adapter already exists and the prompt holds only text. A model
    trained to answer after its own caption (`answer_protocol`) gets each question as that turn, for
    both conditions (`recall_then_answer`), and the times are those of the question turn.

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

    from .toy_world import CAPTION_PROMPT, final_answer, make_clip, write_video

    hf_logging.disable_progress_bar()  # the demo prints a table; weight-loading bars would interleave
    seed = getattr(args, "seed", 0)
    hn, load_seconds = _timed(
        load_default_hypernetwork, getattr(args, "model_dir", None), num_threads=getattr(args, "threads", 1)
    )
    clip = make_clip(seed, "test")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(getattr(args, "save_video", None) or Path(tmp) / f"{clip.id}.mp4")
        write_video(clip.frames, path)
        adapter, internalize_seconds = _timed(hn.internalize, str(path))
        questions = _pick_questions(clip.qa, getattr(args, "num_questions", 3))
        max_new = getattr(args, "max_new_tokens", 32)
        print(f"Clip {clip.id} (seed {seed}): {len(clip.frames)} frames, {clip.frames.shape[2]}x{clip.frames.shape[1]} px, "
              f"saved as {path.name}" + (f" -> {path}" if getattr(args, "save_video", None) else ""))  # fmt: skip
        print(f"Ground-truth caption: {clip.caption}")
        print(f"Loaded the tiny-world model in {load_seconds:.2f}s; internalized the clip in {internalize_seconds:.3f}s "
              f"(adapter rank {adapter.rank}, {adapter.nbytes / 1024:.0f} KiB).\n")  # fmt: skip
        protocol = answer_protocol(getattr(args, "model_dir", None))
        rows = _answer_rows(hn, str(path), adapter, [q["question"] for q in questions], protocol, max_new)
        for item, (base_answer, base_ttft, v2l_answer, v2l_ttft) in zip(questions, rows):
            print(f"Q: {item['question']}")
            print(f"   ground truth          : {item['answer']}")
            for label, text, ttft in (
                ("base, video in context", base_answer, base_ttft),
                ("Video2LoRA, no video  ", v2l_answer, v2l_ttft),
            ):
                print(f"   {label}: {final_answer(text):<24} (time to first token {ttft * 1000:6.1f} ms)")
                if final_answer(text) != text:  # a reasoned answer: "<description> Answer: <answer>"
                    print(f"      full answer: {text}")
            print()
        if protocol["qa_format"] != "dialog":  # a dialog model printed its captions first
            caption_v2l = hn.answer(adapter, CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS)
            caption_base = hn.answer_with_video(str(path), CAPTION_PROMPT, max_new_tokens=_CAPTION_TOKENS)
            print(f"{CAPTION_PROMPT}\n   base      : {caption_base}\n   Video2LoRA: {caption_v2l}")
    return 0


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
    parser = subparsers.add_parser(
        "demo",
        help="Offline demo: internalize a generated clip and compare answers with the base model.",
        description="Generate a toy-world test clip, internalize it with the embedded tiny model, ask three "
        "questions, and print the answers next to the base model's (video in context) and the ground truth.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generated test clip.")
    parser.add_argument("--num-questions", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model-dir", help="A tiny-world model folder (default: the one in the package).")
    parser.add_argument("--save-video", help="Also keep the generated clip at this path.")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (the tiny model is fastest on one; default 1)."
    )
    parser.set_defaults(func=run_demo)
    return parser
