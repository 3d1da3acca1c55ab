"""The tiny-world recipe: the whole Video2LoRA method, trained and measured on a 2-core CPU.

Steps (each writes into `--work-dir` and is skipped when its output exists, unless `--force`):

1. `world`: generate the seeded world (mp4 clips + JSONL manifests) and decode every clip once.
2. `base`: train a tiny VLM of `--set family=...` (SmolVLM2 by default, or LLaVA-OneVision) from
   scratch, with its own tokenizer, to caption and answer questions with the video in its context
   (the "base with video" model).
3. `teacher`: cache the base model's greedy captions of the train and validation clips.
4. `hypernet`: train a `Video2LoraHypernetwork` on captioning only, against the teacher captions.
5. `eval`: evaluate base-with-video against Video2LoRA (zero visual tokens) on the test split.
6. `ship`: copy the base model, its processor files and the hypernetwork into the package assets.

Usage:
    python examples/tiny_world/train.py --work-dir runs/tiny_world            # the full recipe
    python examples/tiny_world/train.py --work-dir /tmp/tw --preset smoke     # minutes, for tests
    python examples/tiny_world/train.py --work-dir runs/tw-llava --set family=llava_onevision
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from base_model import aux_grid, build_base_model, capture_aux_tokens, load_base, save_base, spec
from prompts import PackedTasks, RecipePrompts
from world_data import load_frames, recipe_prompts

from transformers_v2l import toy_world
from transformers_v2l.families import family_class

# ---- settings -------------------------------------------------------------------------------


@dataclass
class RecipeConfig:
    """Every knob of the recipe; presets below change a few of them."""

    seed: int = 0
    family: str = "smolvlm"  # the base VLM's family (a key of base_model.BASE_MODELS)
    caption_styles: str = "video"  # comma-separated toy_world.CAPTION_STYLES: caption rows per clip
    num_train: int = 2400  # clips
    num_validation: int = 200
    num_test: int = 200
    # base VLM (step 1)
    text_hidden: int = 128
    text_layers: int = 4
    text_intermediate: int = 384
    text_heads: int = 4
    text_kv_heads: int = 2
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_intermediate: int = 256
    vision_heads: int = 4
    image_size: int = 64
    patch_size: int = 8
    scale_factor: int = 2
    vocab_size: int = 512
    num_frames: int = 8
    base_steps: int = 600
    base_batch: int = 16  # clips per step, each with all its tasks
    base_lr: float = 2e-3
    aux_weight: float = 1.0  # dense per-cell color/shape target on the connector output (training only)
    # "dialog" (the shipped model): a question is the second user turn, after the model's own answer
    # to the caption prompt (`prompts.dialog_turn`); "direct": the answer alone, with the video in
    # context; "reasoned": "<description> Answer: <answer>". See docs/results.md
    qa_format: str = "dialog"
    # dialog only: who answers Video2LoRA's question turn, after the caption its adapter produced:
    # "frozen" (the frozen model alone, reading that caption) or "adapter" (the adapter stays attached)
    dialog_reader: str = "frozen"
    # reasoned and dialog: per clip and step, questions answered from the given ground-truth caption,
    # without the video (a reasoned answer's description, or a dialog's first assistant turn)
    text_only_tasks: int = 3
    # hypernetwork (steps 3-4)
    lora_rank: int = 8
    latent_size: int = 128
    num_blocks: int = 2
    num_latent_queries: int = 8
    hn_heads: int = 4
    hn_kv_heads: int = 2
    hn_head_dim: int = 32
    hn_input_expansion: int = 1
    hn_steps: int = 1200
    hn_batch: int = 16
    hn_lr: float = 1e-3
    threads: int = 2


PRESETS = {
    "full": RecipeConfig(),
    "smoke": RecipeConfig(
        num_train=160, num_validation=24, num_test=24, base_steps=60, hn_steps=60, base_batch=16
    ),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- step 1: world and decoded frames -------------------------------------------------------


def decode_clip(path: str, cfg: RecipeConfig) -> tuple[np.ndarray, list[int], float, float]:
    """Decode a clip with the library's reader and sample frames with the family's rule.

    Returns:
        `(frames [n, H, W, 3] uint8, indices, native fps, duration in seconds)`.
    """
    from transformers_v2l.video_io import load_video

    family = family_class(cfg.family)
    frames, meta = load_video(path, num_frames=cfg.num_frames, target_fps=family.defaults.fps,
                              skip_secs=family.defaults.skip_secs, sampler=family.sample_frame_indices,
                              compute_sha256=False)  # fmt: skip
    return frames, list(meta.frame_indices), meta.fps, meta.duration


def build_world(work: Path, cfg: RecipeConfig) -> dict[str, Path]:
    manifests = toy_world.generate_world(
        work / "world",
        num_train=cfg.num_train,
        num_validation=cfg.num_validation,
        num_test=cfg.num_test,
        seed=cfg.seed,
        caption_styles=tuple(cfg.caption_styles.split(",")),
    )
    for split, manifest in manifests.items():
        cache = work / "world" / f"{split}_frames.npz"
        if cache.exists():
            continue
        rows = [r for r in toy_world.read_manifest(manifest) if r["id"].endswith("-caption")]  # one per clip
        decoded = [decode_clip(r["video_path"], cfg) for r in rows]
        indices = decoded[0][1]
        assert all(d[1] == indices for d in decoded), "every clip should sample the same frame indices"
        frames = np.stack([d[0] for d in decoded])  # [N, n, H, W, 3]
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, frames=frames, ids=np.array([r["metadata"]["clip_id"] for r in rows]),
                 indices=np.array(indices), fps=decoded[0][2], duration=decoded[0][3])  # fmt: skip
        os.replace(tmp, cache)
    return manifests


# ---- step 2: the base VLM -------------------------------------------------------------------


def _captions(rows: list[dict]) -> dict[str, str]:
    """`{clip_id: caption}` of a manifest's caption rows."""
    return {r["metadata"]["clip_id"]: r["target_text"] for r in rows if r["id"].endswith("-caption")}


def clip_tasks(rows: list[dict], qa_format: str = "direct", dialog=None) -> dict[str, list[tuple[str, str]]]:
    """`{clip_id: [(prompt, target), ...]}` with the caption first.

    With `qa_format="reasoned"`, question targets become `"<caption> Answer: <answer>"`; with
    `"dialog"`, question prompts become `dialog(<caption>, <question>)` (`RecipePrompts.dialog`).
    """
    if qa_format not in ("direct", "reasoned", "dialog"):
        raise ValueError(f"qa_format must be 'direct', 'reasoned' or 'dialog', not {qa_format!r}")
    if qa_format == "dialog" and dialog is None:
        raise ValueError("qa_format='dialog' needs the base model's dialog prompt (RecipePrompts.dialog).")
    tasks: dict[str, list[tuple[str, str]]] = {}
    captions = _captions(rows)
    for row in rows:
        prompt, target = row["prompt"], row["target_text"]
        if row["task_type"] == "qa" and qa_format == "reasoned":
            target = toy_world.reasoned_answer(captions[row["metadata"]["clip_id"]], target)
        if row["task_type"] == "qa" and qa_format == "dialog":
            caption = captions[row["metadata"]["clip_id"]]
            prompt = dialog(caption, prompt)
        tasks.setdefault(row["metadata"]["clip_id"], []).append((prompt, target))
    return tasks


def text_only_questions(rows: list[dict]) -> dict[str, list[tuple[str, str, str]]]:
    """`{clip_id: [(question, caption, answer), ...]}`: the material of text-only reasoned answers."""
    captions = _captions(rows)
    by_clip: dict[str, list[tuple[str, str, str]]] = {}
    for r in rows:
        if r["task_type"] == "qa":
            clip = r["metadata"]["clip_id"]
            by_clip.setdefault(clip, []).append((r["prompt"], captions[clip], r["target_text"]))
    return by_clip


def sample_text_tasks(
    by_clip: dict[str, list[tuple[str, str, str]]], clip_ids, count: int, rng: np.random.Generator
) -> list[list[tuple[str, str, str]]]:
    """`count` random `(question, caption, answer)` of each clip in `clip_ids`."""
    out = []
    for clip in clip_ids:
        options = by_clip.get(clip, [])
        picks = rng.choice(len(options), size=min(count, len(options)), replace=False) if options else []
        out.append([options[j] for j in picks])
    return out


def train_base(work: Path, cfg: RecipeConfig, manifests: dict[str, Path]) -> Path:
    out = work / "base"
    if (out / "model.safetensors").exists():
        return out
    model, tokenizer = build_base_model(cfg)
    log(
        f"base VLM ({cfg.family}): {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"vocab {len(tokenizer)}"
    )
    init = save_base(cfg, model, tokenizer, work / "base.init")  # the processor files the prompts come from
    prompts = recipe_prompts(work, cfg, init)
    train = load_frames(work, "train")
    train_rows = toy_world.read_manifest(manifests["train"])
    tasks = clip_tasks(train_rows, cfg.qa_format, prompts.dialog)
    reading = cfg.qa_format in ("reasoned", "dialog") and cfg.text_only_tasks > 0
    text_questions = text_only_questions(train_rows) if reading else {}  # indexed once, sampled every step
    clip_pixels = [prompts.pixels(frames) for frames in train["frames"]]  # {key: [n, 3, H, W]} per clip
    ids = list(train["ids"])
    rng = np.random.default_rng(cfg.seed)
    # auxiliary dense target (training only, then discarded): what each image cell shows
    meta = {r["metadata"]["clip_id"]: r["metadata"] for r in train_rows if r["task_type"] == "caption"}
    frame_indices = [int(x) for x in train["indices"]]
    targets = torch.from_numpy(
        np.stack([toy_world.grid_targets(meta[i], frame_indices, aux_grid(cfg)) for i in ids])
    )  # [N, frames, cells, attributes]
    aux_head = torch.nn.Linear(cfg.text_hidden, targets.shape[-1])
    captured = {}
    hook = capture_aux_tokens(cfg, model, captured)
    params = [*model.parameters(), *aux_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.base_lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, cfg.base_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.base_steps))),
    )
    model.train()
    start, running, history = time.time(), None, []
    packer = PackedTasks(prompts, cfg.qa_format)
    for step in range(cfg.base_steps):
        batch = rng.choice(len(ids), size=cfg.base_batch, replace=False)
        text_tasks = (
            sample_text_tasks(text_questions, [ids[i] for i in batch], cfg.text_only_tasks, rng)
            if reading
            else None
        )
        inputs = packer.batch([tasks[ids[i]] for i in batch], text_tasks)
        pixels = prompts.batch_pixels([clip_pixels[i] for i in batch])
        loss = lm_loss = model(**pixels, **inputs).loss
        if cfg.aux_weight > 0:
            logits = aux_head(captured["tokens"]).view(
                *targets[batch].shape
            )  # [B, frames, cells, attributes]
            aux = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[batch])
            loss = loss + cfg.aux_weight * aux
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running = lm_loss.item() if running is None else 0.95 * running + 0.05 * lm_loss.item()
        history.append(lm_loss.item())
        if step % 50 == 0 or step == cfg.base_steps - 1:
            log(f"base step {step}/{cfg.base_steps} answer loss {running:.3f} ({time.time() - start:.0f}s)")
    hook.remove()
    model.eval()
    tmp = work / "base.tmp"
    save_base(cfg, model, tokenizer, tmp)
    (tmp / "training_losses.json").write_text(json.dumps(history))
    os.replace(tmp, out)
    log(f"base VLM trained in {time.time() - start:.0f}s")
    return out


@torch.no_grad()
def generate_with_video(
    model,
    prompts: RecipePrompts,
    pixels: dict[str, torch.Tensor],
    questions: list[str],
    max_new_tokens: int = 32,
) -> list[str]:
    """Greedy answers of the base model with the video in context, batched (left padding)."""
    tokenizer = prompts.tokenizer
    rows = [tokenizer(prompts.video_prompt(q), add_special_tokens=False)["input_ids"] for q in questions]
    width = max(len(p) for p in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, p in enumerate(rows):
        input_ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    out = model.generate(
        input_ids=input_ids, attention_mask=mask, **pixels, max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


def quick_eval_base(
    work: Path, cfg: RecipeConfig, manifests: dict[str, Path], split: str, limit: int = 64
) -> dict:
    """Caption token F1 and QA exact match of the base model with the video in context."""
    model, _ = load_base(work / "base")
    prompts = recipe_prompts(work, cfg, work / "base", split)
    data = load_frames(work, split)
    tasks = clip_tasks(toy_world.read_manifest(manifests[split]))
    f1s, ems, by_kind = [], [], {}
    rows = [r for r in toy_world.read_manifest(manifests[split]) if r["task_type"] == "qa"]
    kinds = {(r["metadata"]["clip_id"], r["prompt"]): r["metadata"]["qa_kind"] for r in rows}
    for i, clip_id in enumerate(data["ids"][:limit]):
        pairs = tasks[clip_id]
        pixels = prompts.batch_pixels([prompts.pixels(data["frames"][i])] * len(pairs))
        answers = generate_with_video(model, prompts, pixels, [q for q, _ in pairs], max_new_tokens=48)
        f1s.append(token_f1(answers[0], pairs[0][1]))
        for (q, a), pred in zip(pairs[1:], answers[1:]):
            em = float(normalize(toy_world.final_answer(pred)) == normalize(a))
            ems.append(em)
            by_kind.setdefault(kinds[(clip_id, q)], []).append(em)
        if i < 3:
            log(f"  {pairs[0][1]!r} -> {answers[0]!r}")
    return {"caption_f1": float(np.mean(f1s)), "qa_em": float(np.mean(ems)),
            **{f"qa_{k}": float(np.mean(v)) for k, v in sorted(by_kind.items())}}  # fmt: skip


def normalize(text: str) -> str:
    import re

    text = re.sub(r"[^a-z0-9 ]", " ", text.lower())
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


def token_f1(prediction: str, reference: str) -> float:
    from collections import Counter

    pred, ref = normalize(prediction).split(), normalize(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or not common:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# ---- main -----------------------------------------------------------------------------------


def ship(work: Path, assets: Path) -> Path:
    """Copy the base model (with tokenizer and processor files) and the hypernetwork into the package."""
    import shutil

    tmp = assets.with_name(assets.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(work / "base", tmp / "base")
    (tmp / "hypernet").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(work / "hypernet" / name, tmp / "hypernet" / name)
    config_path = tmp / "hypernet" / "config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = (
        "transformers_v2l/assets/tiny_world/base"  # resolved by load_default_hypernetwork
    )
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in ("recipe.json", "timings.json"):
        if (work / name).exists():
            shutil.copy2(work / name, tmp / name)
    model_class = json.loads((work / "base" / "config.json").read_text())["architectures"][0]
    (tmp / "README.md").write_text(
        "# The tiny-world default model\n\n"
        f"`base/`: a `{model_class}` trained from scratch on `transformers_v2l.toy_world` "
        "(with its tokenizer and processor files); `hypernet/`: a `Video2LoraHypernetwork` trained for it on "
        "captioning only. Produced by `examples/tiny_world/train.py` (settings in `recipe.json`, seconds per step "
        "in `timings.json`); results in `docs/results.md`. Load with "
        "`transformers_v2l.demo.load_default_hypernetwork()`.\n"
    )
    shutil.rmtree(assets, ignore_errors=True)
    os.replace(tmp, assets)
    return assets


ALL_STEPS = ["world", "base", "hypernet", "eval", "ship"]
ASSETS = Path(__file__).resolve().parents[2] / "src" / "transformers_v2l" / "assets" / "tiny_world"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--steps", nargs="+", default=ALL_STEPS, choices=[*ALL_STEPS, "eval-base"])
    parser.add_argument("--set", nargs="*", default=[], help="override recipe fields, e.g. base_steps=200")
    parser.add_argument(
        "--eval-limit", type=int, default=None, help="evaluate on the first N test clips only"
    )
    parser.add_argument("--assets", type=Path, default=ASSETS, help="where `ship` writes the default model")
    parser.add_argument("--results-doc", type=Path, default=None, help="also write the results table here")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(cfg, key):
            parser.error(f"--set {item}: RecipeConfig has no field {key!r}")
        try:
            overrides[key] = type(getattr(cfg, key))(value)
        except ValueError:
            parser.error(f"--set {item}: {key} takes {type(getattr(cfg, key)).__name__} values")
    cfg = replace(cfg, **overrides)
    try:
        spec(cfg)  # an unknown family fails here, before the world is built
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(cfg.threads)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.json").write_text(json.dumps(asdict(cfg), indent=2))
    timings_path = work / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def timed(name, fn, *fn_args):
        start = time.time()
        result = fn(*fn_args)
        timings[name] = round(time.time() - start, 1)
        timings_path.write_text(json.dumps(timings, indent=2))
        return result

    manifests = timed("world", build_world, work, cfg)
    log(f"world ready in {timings['world']:.0f}s")
    if "base" in args.steps:
        timed("base", train_base, work, cfg, manifests)
    if "eval-base" in args.steps:
        for split in ("validation", "test"):
            log(f"base {split}: {quick_eval_base(work, cfg, manifests, split)}")
    hn = None
    if "hypernet" in args.steps or "eval" in args.steps:
        from hypernet import train_hypernetwork

        hn, losses = timed("hypernet", train_hypernetwork, work, cfg)
        log(f"validation caption loss: {losses}")
    if "eval" in args.steps:
        from measure import evaluate

        summary = timed("eval", evaluate, work, cfg, hn, args.eval_limit)
        log(json.dumps({k: v for k, v in summary.items() if k != "report_markdown"}, indent=1))
        from measure import render_results

        command = "python examples/tiny_world/train.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        markdown = render_results(summary, timings, command)
        (work / "eval" / "results.md").write_text(markdown)
        if args.results_doc:
            args.results_doc.write_text(markdown)
            log(f"wrote {args.results_doc}")
    if "ship" in args.steps:
        log(f"shipped to {ship(work, args.assets)}")
    log(f"timings (s): {timings}, total {sum(timings.values()):.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
