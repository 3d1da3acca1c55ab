"""Steps 3 and 4 of the tiny-world recipe: teacher captions, context features, hypernetwork training.

The frozen base VLM encodes each clip once with the internalization prompt; the layer-wise features
`[L, S, H]` are cached, because the base never changes. The hypernetwork is then trained with
teacher-forced cross-entropy on the base model's own greedy captions (paper section 3.5), while
the answer model sees only the text prompt and the generated adapter.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from base_model import load_base
from train import RecipeConfig, log
from world_data import cached_video_loader, load_processor

from transformers_v2l import Video2LoraConfig, Video2LoraHypernetwork, inject_lora
from transformers_v2l.training.collator import Video2LoraDataCollator
from transformers_v2l.training.trainer import Video2LoraTrainer, Video2LoraTrainingArguments


def run_teacher(work: Path, cfg: RecipeConfig, split: str) -> list[dict]:
    """Step 3: the teacher job caches the base model's greedy captions; returns the caption examples."""
    from transformers_v2l.training import (
        TeacherSettings,
        generate_teacher_targets,
        load_manifest,
        load_teacher_dataset,
    )

    out = work / f"teacher_{split}"
    examples = [e for e in load_manifest(work / "world" / f"{split}.jsonl") if e["task_type"] == "caption"]
    if not (out / "teacher_config.json").exists() or len(list(out.glob("shard-*.parquet"))) == 0:
        start = time.time()
        vlm, _ = load_base(work / "base")
        settings = TeacherSettings(base_model=str(work / "base"), shard_size=512, batch_size=32, max_new_tokens=48,
                                   num_frames=cfg.num_frames, longest_edge=cfg.image_size)  # fmt: skip
        generate_teacher_targets(vlm, load_processor(work / "base", cfg), examples, out, settings,
                                 video_loader=cached_video_loader(work, split), show_progress=False)  # fmt: skip
        log(f"teacher captions for {split}: {len(examples)} in {time.time() - start:.0f}s")
    rows = list(load_teacher_dataset(out))
    for row in rows:
        row["metadata"] = json.loads(row["metadata"])
    return rows


@torch.no_grad()
def cache_features(
    work: Path, cfg: RecipeConfig, split: str, examples: list[dict], batch_size: int = 32
) -> torch.Tensor:
    """Layer-wise features `[N, L, S, H]` (bfloat16) of each example's internalization prompt, in order.

    The base model is frozen, so its features never change: computing them once per clip is exactly
    what the trainer's own encoder pass would compute at every step.
    """
    from transformers_v2l.families import get_family

    path = work / f"features_{split}.pt"
    if path.exists():
        return torch.load(path)
    model, _ = load_base(work / "base")
    family, processor = get_family(model), load_processor(work / "base", cfg)
    loader = cached_video_loader(work, split)
    chunks = []
    for i in range(0, len(examples), batch_size):
        inputs = processor.internalization_inputs([loader(e) for e in examples[i : i + batch_size]])
        tensors = {k: v for k, v in inputs.items() if torch.is_tensor(v)}
        features, _ = family.extract_features(**tensors)
        chunks.append(features.to(torch.bfloat16))
    features = torch.cat(chunks)
    torch.save(features, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return features


def build_hypernetwork(cfg: RecipeConfig, base_model, work: Path, processor=None) -> Video2LoraHypernetwork:
    config = Video2LoraConfig.from_base_model(
        base_model,
        base_model_name_or_path=str(work / "base"),
        lora_rank=cfg.lora_rank,
        latent_size=cfg.latent_size,
        num_blocks=cfg.num_blocks,
        num_latent_queries=cfg.num_latent_queries,
        num_attention_heads=cfg.hn_heads,
        num_key_value_heads=cfg.hn_kv_heads,
        attention_head_dim=cfg.hn_head_dim,
        input_expansion=cfg.hn_input_expansion,
    )
    torch.manual_seed(cfg.seed)
    return Video2LoraHypernetwork(config, base_model=base_model, processor=processor)


class CachedFeatureCollator(Video2LoraDataCollator):
    """The library's collator, with each example's encoder pass replaced by its row in a feature cache."""

    def load_video(self, example: dict) -> int:
        return int(example["feature_index"])

    def context_inputs(self, videos: list) -> dict[str, torch.Tensor]:
        return {"feature_index": torch.tensor(videos, dtype=torch.long)}


class CachedFeatureTrainer(Video2LoraTrainer):
    """`Video2LoraTrainer` reading the frozen encoder's features from a cache (`{split: [N, L, S, H]}`)."""

    def __init__(self, *args, features: torch.Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self.features = features

    def _context_features(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features[inputs["feature_index"].cpu()].float().to(self.args.device)
        return features, torch.ones(
            features.shape[0], features.shape[2], dtype=torch.long, device=features.device
        )


def adapter_loss(hn, features, input_ids, attention_mask, labels) -> torch.Tensor:
    """Mean token cross-entropy of the answer model with the adapter generated from each row's features."""
    mask = torch.ones(features.shape[0], features.shape[2], dtype=torch.long)
    out = hn(context_features=features, context_attention_mask=mask)
    lora_A, lora_B = out.lora_A, out.lora_B
    with inject_lora(hn.family, lora_A, lora_B, hn.config.scaling):
        return hn.vlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss


@torch.no_grad()
def validation_losses(
    hn, collator, examples: list[dict], features: torch.Tensor, batch_size: int = 32
) -> dict:
    """Caption loss on held-out clips with the clip's own adapter, another clip's adapter, and no adapter."""
    hn.eval()
    totals, count = {"correct": 0.0, "wrong": 0.0, "none": 0.0}, 0
    num_clips = features.shape[0]
    for i in range(0, len(examples), batch_size):
        rows = examples[i : i + batch_size]
        batch = collator.text_inputs(rows)
        own = torch.tensor([r["feature_index"] for r in rows])
        ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        for name, index in (("correct", own), ("wrong", (own + 1) % num_clips)):  # the next clip's adapter
            totals[name] += adapter_loss(hn, features[index].float(), ids, attn, labels).item() * len(rows)
        totals["none"] += hn.vlm(input_ids=ids, attention_mask=attn, labels=labels).loss.item() * len(rows)
        count += len(rows)
    return {k: v / count for k, v in totals.items()}


def train_hypernetwork(work: Path, cfg: RecipeConfig) -> tuple[Video2LoraHypernetwork, dict]:
    """Step 4: train the hypernetwork on captioning only, with `Video2LoraTrainer`.

    Returns:
        The trained hypernetwork (bound to the base model) and its validation losses.
    """
    out = work / "hypernet"
    base, _ = load_base(work / "base")
    processor = load_processor(work / "base", cfg)
    train_rows, val_rows = run_teacher(work, cfg, "train"), run_teacher(work, cfg, "validation")
    clips = {}
    for split, rows in (("train", train_rows), ("validation", val_rows)):
        first = {}
        for row in rows:  # every caption style of a clip shares the clip's features
            row["feature_index"] = first.setdefault(row["metadata"]["clip_id"], len(first))
        clips[split] = [next(r for r in rows if r["feature_index"] == i) for i in range(len(first))]
    features = cache_features(work, cfg, "train", clips["train"])
    val_features = cache_features(work, cfg, "validation", clips["validation"])
    collator = CachedFeatureCollator(processor, num_frames=cfg.num_frames, longest_edge=cfg.image_size)
    if (out / "model.safetensors").exists():
        hn = Video2LoraHypernetwork.from_pretrained(out, base_model=base, processor=processor)
        losses_path = out / "validation_losses.json"  # not shipped with the packaged model
        return hn, json.loads(losses_path.read_text()) if losses_path.exists() else {}
    hn = build_hypernetwork(cfg, base, work, processor)
    log(
        f"hypernetwork: {sum(p.numel() for p in hn.parameters()) / 1e6:.2f}M parameters, features {tuple(features.shape)}"
    )
    args = Video2LoraTrainingArguments(
        output_dir=str(work / "hypernet-run"), max_steps=cfg.hn_steps, per_device_train_batch_size=cfg.hn_batch,
        learning_rate=cfg.hn_lr, warmup_steps=0.03, weight_decay=0.01, lr_scheduler_type="cosine",
        max_grad_norm=1.0, logging_steps=max(1, cfg.hn_steps // 10), save_strategy="no", eval_strategy="no",
        report_to="none", use_cpu=True, seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0,
        disable_tqdm=True, eval_num_generations=0,
    )  # fmt: skip
    start = time.time()
    trainer = CachedFeatureTrainer(model=hn, args=args, train_dataset=train_rows, data_collator=collator,
                                   features=features)  # fmt: skip
    trainer.train()
    losses = validation_losses(hn, collator, val_rows, val_features)
    log(f"hypernetwork trained in {time.time() - start:.0f}s; validation caption loss {losses}")
    hn.eval()
    tmp = work / "hypernet.tmp"
    hn.save_pretrained(tmp)
    (tmp / "validation_losses.json").write_text(json.dumps(losses, indent=2))
    os.replace(tmp, out)
    return hn, losses
