"""Hugging Face Hub plumbing shared by generated adapters and hypernetwork checkpoints.

* `atomic_folder`: write a folder in a temporary sibling and rename it into place, so a crash or an
  error never leaves a half-written folder behind.
* `push_folder_to_hub`: create the repository (and branch), upload a folder in one commit, and turn
  every failure into a `HubPushError` that says what failed and that nothing local was changed.
* `resolve_repo_files`: find files in a local folder or download them from a Hub repository, with
  `HubUnavailableError` when the Hub cannot be reached and the files are not cached.
* Model cards with YAML front matter: `adapter_model_card` for generated adapters (`library_name: peft`,
  provenance in a machine-readable `video2lora:` block and in the body) and `hypernetwork_model_card`.
* `push_hypernetwork_to_hub`: what `Video2LoraHypernetwork.push_to_hub` calls.

Everything goes through the real `huggingface_hub` client, which reads `HF_ENDPOINT`, `HF_TOKEN` and
`HF_HUB_OFFLINE` as usual.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any

from .errors import HubPushError, HubUnavailableError

__all__ = [
    "PAPER_URL",
    "HubPushError",
    "adapter_model_card",
    "atomic_folder",
    "hypernetwork_model_card",
    "push_folder_to_hub",
    "push_hypernetwork_to_hub",
    "read_card_metadata",
    "resolve_commit_hash",
    "resolve_repo_files",
    "save_hypernetwork_card",
]

PAPER_URL = "https://arxiv.org/abs/2606.04351"
LIBRARY_URL = "https://github.com/huggingface/transformers-v2l"


# ---- atomic folder writes ---------------------------------------------------------------------------
def _link_or_copy_tree(source: Path, target: Path) -> None:
    """Hard-link (or copy) every entry of `source` that `target` does not have yet into `target`."""
    for entry in source.iterdir():
        destination = target / entry.name
        if destination.exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            destination.mkdir()
            _link_or_copy_tree(entry, destination)
            continue
        try:
            os.link(entry, destination, follow_symlinks=False)
        except OSError:
            shutil.copy2(entry, destination, follow_symlinks=False)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary sibling, then rename it to `path` on success.

    If `path` already exists, the files written in the block replace the files of the same name,
    other files in it are kept (hard-linked into the new folder, never moved), and the old folder is
    swapped out with two renames. If the block raises, the temporary folder is removed and `path` is
    untouched.

    Args:
        path: the folder to create or update.

    Yields:
        The temporary folder to write into.

    Example:
        ```python
        with atomic_folder("my-adapter") as tmp:
            (tmp / "adapter_config.json").write_text("{}")
        ```
    """
    target = Path(path).absolute()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"Cannot save into {target}: it exists and is not a folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            _link_or_copy_tree(target, tmp)
            backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, backup)
            os.rename(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---- Hub transfers ---------------------------------------------------------------------------------
def _hub_error_reason(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if response is not None and getattr(response, "status_code", None) is not None:
        server = getattr(error, "server_message", None)
        text = server or (str(error).strip().splitlines() or [""])[0]
        return (
            f"HTTP {response.status_code} from {response.request.method} {response.request.url.path}: {text}"
        )
    return f"{type(error).__name__}: {error}"


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str,
    commit_description: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | bool | None = None,
    allow_patterns: Sequence[str] | None = None,
    local_description: str | None = None,
):
    """Upload the files of `folder` to a Hub model repository in one commit.

    The repository is created if needed (`private` applies only then, as on the Hub), and so is the
    branch `revision`. The folder is only read.

    Args:
        folder: the local folder to upload.
        repo_id: `"namespace/name"`, or `"name"` for the token's own namespace.
        commit_message: the commit title.
        commit_description: the commit body.
        private: make a new repository private.
        revision: the branch to commit to (created from `main` if missing); default `main`.
        create_pr: open a pull request instead of committing to the branch.
        token: a Hub token; defaults to `HF_TOKEN` or the stored login.
        allow_patterns: upload only files matching these glob patterns; default all.
        local_description: how to describe the local files in error messages.

    Returns:
        The `huggingface_hub.CommitInfo` of the commit (`.oid`, `.commit_url`, `.pr_url`).

    Raises:
        HubPushError: the Hub could not be reached, or refused the repository, branch, upload or commit.

    Example:
        ```python
        push_folder_to_hub("my-adapter", "me/my-adapter", commit_message="Upload adapter", private=True)
        ```
    """
    from huggingface_hub import HfApi, constants

    api = HfApi(token=token)
    local = local_description or f"The push did not change the local folder {Path(folder)}."
    step = "create the repository"
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and not revision.startswith("refs/pr/"):
            step = f"create the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "upload and commit the files"
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            allow_patterns=list(allow_patterns) if allow_patterns else None,
        )
    except Exception as error:  # the client raises HTTP, connection and offline-mode errors
        if constants.HF_HUB_OFFLINE:
            reason = "HF_HUB_OFFLINE is set, so huggingface_hub makes no network calls"
        else:
            reason = _hub_error_reason(error)
        raise HubPushError(
            f"Pushing to the Hub repository {repo_id!r} at {api.endpoint} failed: could not {step} ({reason}). {local}"
        ) from error


def resolve_repo_files(
    name_or_path: str | os.PathLike,
    filenames: Sequence[str],
    *,
    optional: Sequence[str] = (),
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> dict[str, Path | None]:
    """Local paths of files from a folder or a Hub model repository (downloaded and cached).

    Args:
        name_or_path: a local folder or a Hub repo id.
        filenames: files that must exist.
        optional: files that may be missing (their value is `None`).
        subfolder: a folder inside the repository.
        revision: a branch, tag or commit of the Hub repository.
        token: a Hub token for private repositories.
        cache_dir: the Hub cache folder; defaults to `HF_HUB_CACHE`.
        local_files_only: only use the local cache.

    Returns:
        `{filename: path or None}`.

    Raises:
        FileNotFoundError: a required file is missing from a local folder.
        HubUnavailableError: the Hub cannot be reached and the files are not cached.
        huggingface_hub.errors.RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError: the Hub says so.

    Example:
        ```python
        paths = resolve_repo_files("me/my-adapter", ["adapter_config.json"], optional=["README.md"])
        ```
    """
    local = Path(name_or_path)
    if local.is_dir():
        folder = local / subfolder if subfolder else local
        found: dict[str, Path | None] = {}
        for name in [*filenames, *optional]:
            path = folder / name
            if not path.is_file() and name not in optional:
                raise FileNotFoundError(f"{folder} has no {name}; expected {', '.join(filenames)}.")
            found[name] = path if path.is_file() else None
        return found

    if local.exists() or str(name_or_path).startswith(("/", "./", "../", "~", "\\")):
        raise FileNotFoundError(f"{name_or_path} is not a folder (and not a Hub repo id).")
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RemoteEntryNotFoundError

    found = {}
    for name in [*filenames, *optional]:
        try:
            path = hf_hub_download(
                str(name_or_path),
                name,
                subfolder=subfolder,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
            found[name] = Path(path)
        except (RemoteEntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
            if name in optional:  # the required files were found; an optional one is absent or not cached
                found[name] = None
                continue
            if isinstance(error, RemoteEntryNotFoundError):
                raise
            why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{type(error).__name__}: {error}"
            raise HubUnavailableError(
                f"{name_or_path!r} is not a local folder, and {name} could not be fetched from the Hub at "
                f"{constants.ENDPOINT} and is not in the cache ({why})."
            ) from error
    return found


def resolve_commit_hash(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    filename: str = "config.json",
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> str | None:
    """The commit that a Hub repository's `revision` resolves to, or `None` for a local folder.

    transformers 5 no longer sets `config._commit_hash`; this reads the commit from the cached
    snapshot of `filename` (downloading it if needed), so it also works offline from the cache.

    Args:
        name_or_path: a local folder or a Hub repo id.
        revision: a branch, tag or commit; default `main`.
        filename: a file of the repository to resolve.
        token: a Hub token for private repositories.
        cache_dir: the Hub cache.
        local_files_only: only use the local cache.

    Returns:
        The 40-character commit hash, or `None`.

    Example:
        ```python
        resolve_commit_hash("me/video2lora-smolvlm2-500m", revision="main")
        ```
    """
    if Path(name_or_path).is_dir():
        return None
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    path = resolve_repo_files(
        name_or_path,
        [filename],
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )[filename]
    match = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", str(path))
    return match[1] if match else None


# ---- model cards -----------------------------------------------------------------------------------
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
    """The YAML front matter of a README.md as a dict (`{}` if there is none)."""
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
            A `source` path is reduced to its file name, so local folder names are never published.
        repo_id: the Hub repository, for the usage snippet.

    Returns:
        A `huggingface_hub.ModelCard`.
    """
    base = base_model or "<base model>"
    repo = repo_id or "<this adapter's repo or folder>"
    meta = dict(provenance)
    if isinstance(meta.get("source"), str) and ("/" in meta["source"] or "\\" in meta["source"]):
        meta["source"] = PurePath(meta["source"].replace("\\", "/")).name  # never publish local folder names
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
## Usage

With PEFT alone:

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText

base = AutoModelForImageTextToText.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{repo}")
```

With transformers-v2l (batched answering with many adapters, composition, pruning, merging):

```python
from transformers_v2l import GeneratedLora, Video2LoraHypernetwork

adapter = GeneratedLora.from_pretrained("{repo}")
hn.answer(adapter, "What happens in the video?")
```

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
):
    """The model card of a hypernetwork checkpoint: base model, training data and the paper's settings.

    Args:
        config: the hypernetwork's `Video2LoraConfig`.
        datasets: Hub ids of the training datasets (for example `["HuggingFaceFV/finevideo"]`).
        training: training settings to record (steps, batch size, learning rate, ...).
        license: an SPDX license id.
        repo_id: the Hub repository, for the usage snippet.

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
        "num_frames": config.num_frames,
        "longest_edge": config.longest_edge,
        "instruction": config.instruction,
    }
    data = {
        "base_model": base,
        # The hypernetwork never changes the base model's weights; it is used beside the frozen base,
        # which is what the Hub's "adapter" relation means.
        "base_model_relation": "adapter" if base else None,
        "library_name": "transformers-v2l",
        "license": license,
        "datasets": list(datasets) if datasets else None,
        "tags": ["video2lora", "hypernetwork", "lora", "video", "transformers-v2l"],
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
# Video2LoRA hypernetwork for {base or "a SmolVLM model"}

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
    """Write `hypernetwork_model_card(config, **card_kwargs)` to `save_directory/README.md`."""
    path = Path(save_directory) / "README.md"
    hypernetwork_model_card(config, **card_kwargs).save(path)
    return path


def push_hypernetwork_to_hub(
    model,
    repo_id: str,
    *,
    commit_message: str = "Upload Video2LoRA hypernetwork",
    commit_description: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | bool | None = None,
    max_shard_size: str | int = "5GB",
    model_card_kwargs: dict[str, Any] | None = None,
):
    """Push a hypernetwork checkpoint (config.json, safetensors weights, README.md model card).

    Unlike `PreTrainedModel.push_to_hub`, it never downloads the repository's existing card to reuse
    it; it writes `hypernetwork_model_card(model.config, **model_card_kwargs)`.

    Args:
        model: a `Video2LoraHypernetwork`.
        repo_id: the Hub repository.
        commit_message: the commit title.
        commit_description: the commit body.
        private: make a new repository private.
        revision: the branch to commit to (created if missing).
        create_pr: open a pull request instead.
        token: a Hub token.
        max_shard_size: passed to `save_pretrained`.
        model_card_kwargs: `datasets`, `training`, `license` for the model card.

    Returns:
        The `huggingface_hub.CommitInfo`.

    Example:
        ```python
        push_hypernetwork_to_hub(hn, "me/video2lora-smolvlm2-500m", model_card_kwargs={"datasets": ["HuggingFaceFV/finevideo"]})
        ```
    """
    with tempfile.TemporaryDirectory(prefix="v2l-push-") as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        save_hypernetwork_card(tmp, model.config, **kwargs)
        return push_folder_to_hub(
            tmp,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            revision=revision,
            create_pr=create_pr,
            token=token,
            local_description="Nothing was written locally.",
        )
