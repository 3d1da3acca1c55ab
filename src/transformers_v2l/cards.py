"""Model cards with YAML front matter for generated adapters and hypernetwork checkpoints.

* `adapter_model_card`: `library_name: peft`, the base model, and the adapter's provenance (video
  SHA-256, frame indices, resolution, hypernetwork repository and revision, instruction) both in a
  machine-readable `video2lora:` block and in the body.
* `hypernetwork_model_card`: what a `Video2LoraHypernetwork` checkpoint is and how to use it.
* `read_card_metadata`: the front matter back as a dict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "LIBRARY_URL",
    "PAPER_URL",
    "adapter_model_card",
    "hypernetwork_model_card",
    "read_card_metadata",
    "save_hypernetwork_card",
]

PAPER_URL = "https://arxiv.org/abs/2606.04351"
LIBRARY_URL = "https://github.com/huggingface/transformers-v2l"


def _plain(value: Any) -> Any:
    """Convert tensors, arrays, tuples and paths into YAML-safe builtins."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _card(data: dict[str, Any], body: str):
    from huggingface_hub import ModelCard, ModelCardData

    yaml = ModelCardData(**_plain(data)).to_yaml()
    return ModelCard(f"---\n{yaml}\n---\n\n{body.strip()}\n")


def read_card_metadata(path: str | os.PathLike | None) -> dict[str, Any]:
    """The YAML front matter of a model card.

    Args:
        path: a README.md file; `None` or a missing file gives `{}`.

    Returns:
        The front matter as a dict (`{}` if there is none).

    Example:
        ```python
        read_card_metadata("clip-adapter/README.md")["video2lora"]["video_sha256"]
        ```
    """
    if path is None or not Path(path).is_file():
        return {}
    from huggingface_hub import metadata_load

    return metadata_load(path) or {}


def _format(value: Any, unknown: str = "not recorded") -> str:
    if value is None or value == [] or value == "":
        return unknown
    if isinstance(value, (list, tuple)):
        if len(value) > 24:
            return f"{len(value)} values: {', '.join(map(str, value[:12]))}, ..."
        return ", ".join(map(str, value))
    return str(value)


def _resolution(provenance: dict[str, Any]) -> str | None:
    """`resolution` as recorded, else the native `width`x`height` and the `longest_edge` resize."""
    if provenance.get("resolution") is not None:
        return _format(provenance["resolution"])
    parts = []
    if provenance.get("width") and provenance.get("height"):
        parts.append(f"{provenance['width']}x{provenance['height']} native")
    if provenance.get("longest_edge"):
        parts.append(f"longest edge resized to {provenance['longest_edge']} px")
    return ", ".join(parts) or None


def _provenance_rows(provenance: dict[str, Any]) -> str:
    sha = provenance.get("video_sha256") or provenance.get(
        "sha256"
    )  # `sha256` as video_io.VideoMetadata names it
    hypernetwork = provenance.get("hypernetwork")
    revision = provenance.get("hypernetwork_revision")
    rows = [
        ("Source video SHA-256", f"`{sha}`" if sha else None),
        ("Source video", provenance.get("source")),
        ("Frame indices", provenance.get("frame_indices")),
        ("Resolution", _resolution(provenance)),
        (
            "Hypernetwork",
            f"`{hypernetwork}`" + (f" @ `{revision}`" if revision else "") if hypernetwork else None,
        ),
        ("Instruction", f'"{provenance["instruction"]}"' if provenance.get("instruction") else None),
    ]
    return "\n".join(f"| {name} | {_format(value)} |" for name, value in rows)


def _hub_id(name: str | None) -> str | None:
    """`name` if it can be a Hub repository id (`name` or `namespace/name`), else `None` (a local path)."""
    from .hub_resolve import is_hub_repo_id

    return name if is_hub_repo_id(name) else None


def _usage(base_model: str | None, base_shown: str | None, repo_id: str | None, provenance: dict) -> str:
    """The card's usage section: runnable as written once the adapter, its base model (and the
    hypernetwork, when the provenance names one on the Hub) are on the Hub."""
    base = base_model or "<Hub id of the base model>"
    repo = repo_id or "<this adapter's repo or folder>"
    note = ""
    if base_model is None:
        where = f"was loaded from a local folder (`{base_shown}`)" if base_shown else "is not recorded"
        note = (
            f"\nThe base model {where}: put its Hub id in the snippets, or push the adapter with "
            "`push_to_hub(repo_id, base_model_id=...)` (`v2l push --base-model-id`) to record it.\n"
        )
    hypernetwork = _hub_id(provenance.get("hypernetwork"))
    if hypernetwork:
        revision = provenance.get("hypernetwork_revision")
        pinned = f', revision="{revision}"' if revision else ""
        library = f"""```python
from transformers_v2l import GeneratedLora, Video2LoraHypernetwork

hn = Video2LoraHypernetwork.from_pretrained("{hypernetwork}"{pinned})  # the hypernetwork that made it
adapter = GeneratedLora.from_pretrained("{repo}")
print(hn.answer(adapter, "What happens in the video?"))
```"""
    else:
        library = f"""```python
from transformers_v2l import GeneratedLora

adapter = GeneratedLora.from_pretrained("{repo}")
print(adapter.rank, adapter.target_modules)
```

Answer with it through `Video2LoraHypernetwork.answer` (any hypernetwork for `{base}`), or merge it
into a plainly loaded base model with `adapter.merge_into(vlm)`."""
    return f"""## Usage
{note}
With PEFT alone:

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText

base = AutoModelForImageTextToText.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{repo}")
```

With transformers-v2l (batched answering with many adapters, composition, pruning, merging):

{library}
"""


def adapter_model_card(
    *,
    base_model: str | None,
    target_regex: str,
    target_modules: Sequence[str],
    num_layers: int,
    rank: int,
    scaling: float,
    dtype: str,
    nbytes: int,
    provenance: dict[str, Any],
    repo_id: str | None = None,
):
    """The model card of a generated adapter: YAML front matter plus a human-readable body.

    The front matter uses `library_name: peft`, because the folder is a plain PEFT LoRA adapter that
    loads without transformers-v2l; the Hub then lists it as an adapter of `base_model` and shows
    the PEFT loading snippet. Provenance is stored machine-readably under `video2lora:`.

    Args:
        base_model: the base VLM's Hub id or path.
        target_regex: the PEFT `target_modules` regex.
        target_modules: the short module names (for example `["down_proj"]`).
        num_layers: text decoder layers the adapter covers.
        rank: the effective rank `R`.
        scaling: the multiplier `s` (= PEFT's `lora_alpha / r`).
        dtype: the tensors' dtype, as a string.
        nbytes: bytes of the adapter tensors.
        provenance: source video SHA-256, frame indices, resolution, hypernetwork repo and revision,
            instruction, and anything else recorded (for example `composed_from` or `rank_selection`).
            Local paths (`source`, `hypernetwork`, a local `base_model`) are reduced to their last
            component, so local folder names are never published in the card.
        repo_id: the Hub repository, for the usage snippet.

    Returns:
        A `huggingface_hub.ModelCard`.

    Example:
        ```python
        card = adapter_model_card(
            base_model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
            target_regex=SmolVLMBackbone.peft_target_regex(["down_proj"]),
            target_modules=["down_proj"],
            num_layers=32,
            rank=32,
            scaling=128.0,
            dtype="bfloat16",
            nbytes=7_208_960,
            provenance={"video_sha256": "9f2c...", "frame_indices": [0, 30, 60]},
        )
        card.save("clip-adapter/README.md")  # GeneratedLora.save_pretrained writes this for you
        ```
    """
    if base_model and _hub_id(base_model) is None:
        base_model_shown = PurePath(base_model.replace("\\", "/")).name
    else:
        base_model_shown = base_model
    base = base_model_shown or "<base model>"
    meta = dict(provenance)
    for key in ("source", "hypernetwork"):  # never publish local folder names
        if isinstance(meta.get(key), str) and _hub_id(meta[key]) is None:
            meta[key] = PurePath(meta[key].replace("\\", "/")).name
    base_model = _hub_id(base_model)  # the Hub's `base_model` metadata must be a repository id
    data = {
        "base_model": base_model,
        "library_name": "peft",
        "pipeline_tag": "image-text-to-text",
        "tags": [
            "video2lora",
            "transformers-v2l",
            "lora",
            "peft",
            *([f"base_model:adapter:{base_model}"] if base_model else []),
        ],
        "video2lora": {
            **meta,
            "target_modules": list(target_modules),
            "num_layers": num_layers,
            "rank": rank,
            "scaling": scaling,
        },
    }
    parts = meta.get("composed_from") or []
    composed = ""
    if parts:
        composed = (
            "\n## Composed from\n\nThis adapter concatenates the ranks of these adapters (paper section 5.6):\n\n"
            + "\n".join(
                f"{i + 1}. video SHA-256 `{_format(p.get('video_sha256') or p.get('sha256'))}`, "
                f"frames {_format(p.get('frame_indices'))}"
                for i, p in enumerate(parts)
            )
        )
    selection = meta.get("rank_selection")
    pruned = f"\nRanks kept by `{selection}` (paper appendix C).\n" if selection else ""
    body = f"""
# Video2LoRA adapter

A LoRA adapter that a [Video2LoRA]({PAPER_URL}) hypernetwork generated from one video. The video's
content lives in these weights, so questions about it are answered from the adapter alone, without
visual tokens in the prompt. It is a standard PEFT LoRA adapter for `{base}`.

## Provenance

| | |
|---|---|
{_provenance_rows(meta)}
{composed}
## Adapter

- Target modules: `{", ".join(target_modules)}` in all {num_layers} text decoder layers (regex `{target_regex}`)
- Effective rank R = {rank} (generated ranks plus learned bias ranks), scaling s = lora_alpha / r = {scaling:g}
- Tensors: {dtype}, {nbytes / 1e6:.2f} MB
{pruned}
{_usage(base_model, base_model_shown, repo_id, provenance)}
## Limitations

The adapter encodes what the hypernetwork extracted from the video. Share it only where you may
share the video itself. Answers can be wrong or generic, as the paper's evaluation shows.
"""
    return _card(data, body)


def hypernetwork_model_card(
    config,
    *,
    datasets: Sequence[str] | None = None,
    training: dict[str, Any] | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    processor=None,
    tags: Sequence[str] = (),
):
    """The model card of a hypernetwork checkpoint: base model, training data and the paper's settings.

    Args:
        config: the hypernetwork's `Video2LoraConfig`.
        datasets: Hub ids of the training datasets (for example `["HuggingFaceFV/finevideo"]`).
        training: training settings to record (steps, batch size, learning rate, ...).
        license: an SPDX license id.
        repo_id: the Hub repository, for the usage snippet.
        processor: the `Video2LoraProcessor` saved with it, for the preprocessing settings (frames,
            resolution, instruction, answering protocol).
        tags: extra Hub tags.

    Returns:
        A `huggingface_hub.ModelCard` with `library_name: transformers-v2l`.

    Example:
        ```python
        card = hypernetwork_model_card(hn.config, datasets=["HuggingFaceFV/finevideo"], training={"steps": 9000})
        card.save("my-hypernet/README.md")
        ```
    """
    base = config.base_model_name_or_path
    settings = {
        "base_model_type": config.base_model_type,
        "target_modules": list(config.target_modules),
        "lora_rank": config.lora_rank,
        "effective_rank": config.effective_rank,
        "lora_scaling": config.scaling,
        "use_bias_lora": config.use_bias_lora,
        "latent_size": config.latent_size,
        "num_latent_queries": config.num_latent_queries,
        "num_blocks": config.num_blocks,
    }
    if processor is not None:
        settings.update(num_frames=processor.num_frames, longest_edge=processor.longest_edge,
                        instruction=processor.instruction, answer_protocol=processor.answer["protocol"])  # fmt: skip
    data = {
        "base_model": base,
        # The hypernetwork never changes the base model's weights; it is used beside the frozen base,
        # which is what the Hub's "adapter" relation means.
        "base_model_relation": "adapter" if base else None,
        "library_name": "transformers-v2l",
        "license": license,
        "datasets": list(datasets) if datasets else None,
        "tags": list(
            dict.fromkeys(["video2lora", "hypernetwork", "lora", "video", "transformers-v2l", *tags])
        ),
        "video2lora": {"settings": settings, "training": training or None, "source": config.source},
    }
    rows = "\n".join(f"| `{k}` | {_format(v)} |" for k, v in settings.items())
    train_rows = (
        "\n".join(f"| {k} | {_format(v)} |" for k, v in (training or {}).items()) or "| | not recorded |"
    )
    data_line = (
        ", ".join(f"[`{d}`](https://huggingface.co/datasets/{d})" for d in datasets)
        if datasets
        else "not recorded"
    )
    source = f"\nConverted from `{_format(config.source)}`.\n" if config.source else ""
    repo = repo_id or "<this repo or folder>"
    body = f"""
# Video2LoRA hypernetwork for {base or "a vision-language model"}

A Perceiver hypernetwork ([Video2LoRA]({PAPER_URL})) that turns a video into a LoRA adapter for the frozen
base model `{base or "not recorded"}` in one forward pass. Only the hypernetwork is stored here
(safetensors); the base model is loaded from its own repository.
{source}
## Settings

| setting | value |
|---|---|
{rows}

## Training

Training data: {data_line}

| | |
|---|---|
{train_rows}

## Usage

```python
from transformers_v2l import Video2LoraHypernetwork

hn = Video2LoraHypernetwork.from_pretrained("{repo}")
adapter = hn.internalize("video.mp4")       # a GeneratedLora, a standard PEFT LoRA adapter
hn.answer(adapter, "What happens in the video?")
adapter.push_to_hub("me/video-adapter")
```
"""
    return _card(data, body)


def save_hypernetwork_card(save_directory: str | os.PathLike, config, **card_kwargs) -> Path:
    """Write `hypernetwork_model_card(config, **card_kwargs)` to `save_directory/README.md`.

    Args:
        save_directory: an existing folder, usually the one `save_pretrained` wrote.
        config: the hypernetwork's `Video2LoraConfig`.
        **card_kwargs: `datasets`, `training`, `license`, `repo_id`, `processor` or `tags`, as for
            `hypernetwork_model_card`.

    Returns:
        The path of the README.md written.

    Example:
        ```python
        save_hypernetwork_card("my-hypernet", hn.config, datasets=["HuggingFaceFV/finevideo"])
        ```
    """
    path = Path(save_directory) / "README.md"
    hypernetwork_model_card(config, **card_kwargs).save(path)
    return path
