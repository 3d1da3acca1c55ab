"""`v2l teacher`: cache the frozen VLM's own answers (with the video in context) as training targets.

The paper trains on "cached offline teacher generations from a frozen SmolVLM2 teacher conditioned
on the sampled video frames and downstream prompt" (section 4.1). This job decodes each example's
span, asks the frozen VLM its prompt greedily and in batches, and stores the answer text, its token
ids and (optionally) the top-k log-probabilities of every generated position for a KL loss.

Output folder layout:

```
teacher_config.json            settings + fingerprint of the example list (a rerun must match it)
shard-00000-of-00012.parquet   examples [0, shard_size), written to a temporary file then renamed
...
```

Each shard is written atomically, so a job killed at any moment and rerun resumes at the first missing
shard and loses at most the shards in flight. Under `accelerate launch`, process `p` of `n` takes the
shards `j` with `j % n == p`. A video that cannot be decoded is kept as a row with its `error` set
(and no target), so every example appears exactly once; `load_teacher_dataset` drops those rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import VideoDecodeError
from ..families import get_family
from .teacher_outputs import CONFIG_FILE, load_teacher_dataset, shard_path, teacher_features
from .utils import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["TeacherSettings", "generate_teacher_targets", "load_teacher_dataset", "teacher_features"]


@dataclass
class TeacherSettings:
    """What a teacher job generates; stored in `teacher_config.json` and checked on every rerun.

    Args:
        base_model: the teacher VLM (Hub id or path), normally the frozen base of the hypernetwork.
        shard_size: examples per shard (the unit of resumption).
        batch_size: examples per `generate` call.
        max_new_tokens: generation budget per answer.
        top_k: store this many teacher log-probabilities per generated token (0: none).
        num_frames: frames sampled per span.
        longest_edge: frame resize target in pixels.

    Example:
        ```python
        settings = TeacherSettings(base_model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct", batch_size=4, top_k=8)
        generate_teacher_targets(vlm, processor, rows, "teacher", settings)
        ```
    """

    base_model: str | None = None
    shard_size: int = 256
    batch_size: int = 8
    max_new_tokens: int = 256
    top_k: int = 0
    num_frames: int = 12
    longest_edge: int = 384

    def __post_init__(self):
        for name in ("shard_size", "batch_size", "max_new_tokens", "num_frames", "longest_edge"):
            if getattr(self, name) < 1:
                raise ValueError(f"TeacherSettings.{name} must be >= 1, got {getattr(self, name)!r}.")
        if self.top_k < 0:
            raise ValueError(f"TeacherSettings.top_k must be >= 0, got {self.top_k!r}.")


def _fingerprint(examples: Sequence[dict]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        key = [
            example["id"],
            example["video_path"],
            example["prompt"],
            example.get("start"),
            example.get("end"),
        ]
        digest.update(json.dumps(key).encode())
    return digest.hexdigest()


def _check_config(output_dir: Path, config: dict) -> None:
    path = output_dir / CONFIG_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != config:
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            raise ValueError(
                f"{output_dir} holds a teacher job with different settings ({changed}); use another output_dir."
            )
    else:
        atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True))


# ---- generation ------------------------------------------------------------------------------------
def _trim(tokens: list[int], eos_ids: set[int], pad_id: int | None) -> list[int]:
    """The generated ids up to and including the first end-of-turn token, without padding."""
    out = []
    for token in tokens:
        if token in eos_ids:
            out.append(token)
            break
        if token == pad_id and pad_id not in eos_ids:
            break
        out.append(token)
    return out


@torch.no_grad()
def _generate_batch(
    vlm, processor, videos: list, prompts: list[str], settings: TeacherSettings
) -> list[dict]:
    """Greedy answers with the video in context; token ids and optional top-k log-probs per position."""
    inputs = processor.video_in_context_inputs(
        videos, prompts, num_frames=settings.num_frames, longest_edge=settings.longest_edge
    )
    device = next(vlm.parameters()).device
    tensors = {k: v.to(device) for k, v in inputs.items() if torch.is_tensor(v)}
    tokenizer = processor.tokenizer
    output = vlm.generate(
        **get_family(vlm).generation_inputs(**tensors),
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        return_dict_in_generate=True,
        output_logits=settings.top_k > 0,
    )
    new_tokens = output.sequences[:, tensors["input_ids"].shape[1] :]  # [B, T]
    eos = vlm.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    results = []
    for row in range(new_tokens.shape[0]):
        ids = _trim(new_tokens[row].tolist(), eos_ids, tokenizer.pad_token_id)
        result = {
            "target_text": tokenizer.decode(ids, skip_special_tokens=True).strip(),
            "target_token_ids": ids,
            "teacher_topk_ids": None,
            "teacher_topk_logprobs": None,
        }
        if settings.top_k > 0:
            logits = torch.stack([step[row] for step in output.logits[: len(ids)]]).float()  # [T, V]
            values, indices = torch.log_softmax(logits, dim=-1).topk(settings.top_k, dim=-1)  # [T, k]
            result["teacher_topk_ids"] = indices.tolist()
            result["teacher_topk_logprobs"] = values.tolist()
        results.append(result)
    return results


def _shard_rows(
    vlm, processor, examples: Sequence[dict], settings: TeacherSettings, load_video
) -> list[dict]:
    rows = []
    for start in range(0, len(examples), settings.batch_size):
        batch = examples[start : start + settings.batch_size]
        videos, kept, outputs = [], [], {}
        for example in batch:
            try:
                videos.append(load_video(example))
                kept.append(example)
            except VideoDecodeError as error:
                logger.warning("Teacher: skipping %s: %s", example["id"], error)
                outputs[example["id"]] = {"error": f"{type(error).__name__}: {error}"}
        if kept:
            answers = _generate_batch(vlm, processor, videos, [e["prompt"] for e in kept], settings)
            outputs.update({e["id"]: answer for e, answer in zip(kept, answers)})
        for example in batch:
            row = {
                "id": example["id"], "video_path": example["video_path"], "task_type": example.get("task_type"),
                "prompt": example["prompt"], "dataset": example.get("dataset"), "split": example.get("split"),
                "metadata": json.dumps(example.get("metadata") or {}), "start": example.get("start"),
                "end": example.get("end"), "target_text": None, "target_token_ids": None,
                "teacher_topk_ids": None, "teacher_topk_logprobs": None, "error": None,
            }  # fmt: skip
            row.update(outputs[example["id"]])
            rows.append(row)
    return rows


def generate_teacher_targets(
    vlm,
    processor,
    examples: Sequence[dict],
    output_dir: str | os.PathLike,
    settings: TeacherSettings | None = None,
    *,
    process_index: int = 0,
    num_processes: int = 1,
    video_loader: Callable[[dict], Any] | None = None,
    on_shard_written: Callable[[int], None] | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """Generate and store teacher targets for `examples`, resuming from the shards already on disk.

    Args:
        vlm: the frozen teacher VLM.
        processor: its `Video2LoraProcessor` (`video_in_context_inputs`, `tokenizer`).
        examples: normalized examples with their spans already drawn (see `expand_spans`).
        output_dir: the shard folder (created if needed).
        settings: generation settings; they must equal those of an earlier run in the same folder.
        process_index: this process's rank; it writes the shards `j` with `j % num_processes == process_index`.
        num_processes: number of processes sharing the job.
        video_loader: `(example) -> video` decoding one span; defaults to `load_example_video`.
        on_shard_written: called with the shard index after each shard lands on disk.
        show_progress: show a progress bar over this process's shards.

    Returns:
        The paths of the shards this process wrote in this call.

    Example:
        ```python
        rows = expand_spans(load_manifest("finevideo.jsonl"), SpanSampler(seed=0))
        generate_teacher_targets(vlm, processor, rows, "teacher-out", TeacherSettings(top_k=20))
        ```
    """
    settings = settings or TeacherSettings()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    examples = list(examples)
    num_shards = max(1, -(-len(examples) // settings.shard_size))
    config = {**asdict(settings), "num_examples": len(examples), "num_shards": num_shards,
              "fingerprint": _fingerprint(examples)}  # fmt: skip
    _check_config(output_dir, config)
    if video_loader is None:
        from .data import load_example_video

        def video_loader(example):
            return load_example_video(example, processor, settings.num_frames)

    features = teacher_features()
    from datasets import Dataset

    mine = [j for j in range(num_shards) if j % num_processes == process_index]
    todo = [j for j in mine if not shard_path(output_dir, j, num_shards).exists()]
    if len(todo) < len(mine):
        logger.info(
            "Teacher: %d of this process's %d shards already exist; resuming.",
            len(mine) - len(todo),
            len(mine),
        )
    written = []
    for shard in tqdm(todo, desc="Teacher shards", disable=not show_progress, unit="shard"):
        chunk = examples[shard * settings.shard_size : (shard + 1) * settings.shard_size]
        rows = _shard_rows(vlm, processor, chunk, settings, video_loader)
        path = shard_path(output_dir, shard, num_shards)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        Dataset.from_list(rows, features=features).to_parquet(str(tmp))
        os.replace(tmp, path)
        written.append(path)
        if on_shard_written is not None:
            on_shard_written(shard)
    return written
