"""Hugging Face Hub plumbing shared by generated adapters and hypernetwork checkpoints.

* `atomic_folder`: write a folder in a temporary sibling and rename it into place, so a crash or an
  error never leaves a half-written folder behind; it gets the permissions a plain `mkdir` would.
* `push_folder_to_hub`: create the repository (and branch), upload a folder in one commit, and turn
  every failure into a `HubPushError` that says what failed, that nothing local was changed, and
  what to run to retry.
* `resolve_repo_files`: find files in a local folder or download them from a Hub repository. It
  refuses URLs (`InvalidRepoIdError`) and, when the Hub cannot be reached, says so within a couple
  of seconds (`HubUnavailableError`) instead of retrying for half a minute.
* `push_adapter_to_hub`, `push_hypernetwork_to_hub`: push a `GeneratedLora` or a hypernetwork under
  the Hub id of its base model (`BaseModelIdError` when that is a local path and no id is given).
* `push_saved_to_hub`: save into a temporary folder, then push it (nothing is written locally).

Model cards live in `cards.py`.

Everything goes through the real `huggingface_hub` client, which reads `HF_ENDPOINT`, `HF_TOKEN` and
`HF_HUB_OFFLINE` as usual.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import HubPushError, InvalidArgumentError
from .hub_resolve import (
    CONNECT_TIMEOUT,
    OFFLINE_MODEL_HINT,
    InvalidRepoIdError,
    _network_error,
    hub_unavailable_error,
    hub_unreachable,
    is_hub_repo_id,
    resolve_commit_hash,
    resolve_repo_files,
)
from .training.utils import set_plain_permissions

__all__ = [
    "CONNECT_TIMEOUT",
    "OFFLINE_MODEL_HINT",
    "BaseModelIdError",
    "HubPushError",
    "InvalidRepoIdError",
    "atomic_folder",
    "hub_unavailable_error",
    "hub_unreachable",
    "is_hub_repo_id",
    "publishable_base_model",
    "push_adapter_to_hub",
    "push_folder_to_hub",
    "push_hypernetwork_to_hub",
    "push_saved_to_hub",
    "resolve_commit_hash",
    "resolve_repo_files",
]


class BaseModelIdError(InvalidArgumentError):
    """A push (adapter or hypernetwork) would publish a base model that others cannot load (a local path, or none).

    Raised before anything is uploaded; the message says how to pass the base model's Hub id.

    Example:
        ```python
        try:
            push_adapter_to_hub(adapter, "me/clip-adapter")
        except BaseModelIdError:
            push_adapter_to_hub(adapter, "me/clip-adapter", base_model_id="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        ```
    """


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
    untouched. The folder gets the permissions a plain `mkdir` would give it (`0o777 & ~umask`), or
    keeps those of the folder it replaces.

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
        set_plain_permissions(tmp, target)  # mkdtemp makes 0700 folders; a plain mkdir follows the umask
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


def _push_advice(error: BaseException, token: str | bool | None) -> str:
    """What to do after a failed push, from the HTTP status or the kind of failure."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return " Unset HF_HUB_OFFLINE to push."
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401 or (status == 403 and not _has_token(token)):
        return " Log in with `hf auth login`, set HF_TOKEN, or pass token= (a token with write access)."
    if status == 403:
        return " The token cannot write there: use a token with write access to that namespace."
    if _network_error(error) is not None:
        return (
            f" The Hub at {constants.ENDPOINT} could not be reached: check your network connection (and "
            "HF_ENDPOINT or proxy settings), or keep the adapter local with `save_pretrained` and push it later."
        )
    return ""


def _has_token(token: str | bool | None) -> bool:
    if token is False:
        return False
    if isinstance(token, str):
        return True
    from huggingface_hub import get_token

    return get_token() is not None


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
    retry: str | None = None,
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
        retry: how to retry, for error messages: a command or call in backticks; default this call.

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
    if retry is None:
        named = (("revision", revision), ("private", private), ("create_pr", create_pr))
        options = "".join(f", {k}={v!r}" for k, v in named if v)
        retry = (
            f"`push_folder_to_hub({str(folder)!r}, {repo_id!r}, commit_message={commit_message!r}{options})`"
        )
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
            f"Pushing to the Hub repository {repo_id!r} at {api.endpoint} failed: could not {step} ({reason}). "
            f"{local}{_push_advice(error, token)} To retry: {retry}."
        ) from error


def push_saved_to_hub(save: Callable[[Path], Any], repo_id: str, **push_kwargs):
    """Save into a temporary folder with `save(folder)`, then push that folder in one commit.

    Nothing is written locally, so a failed push leaves nothing behind.

    Args:
        save: writes the files into the (empty, existing) folder it is given.
        repo_id: the Hub repository.
        **push_kwargs: `commit_message`, `commit_description`, `private`, `revision`, `create_pr`, `token`,
            `retry`, `local_description`, as for `push_folder_to_hub`.

    Returns:
        The `huggingface_hub.CommitInfo`.

    Example:
        ```python
        push_saved_to_hub(lambda folder: adapter.save_pretrained(folder), "me/clip-adapter")
        ```
    """
    push_kwargs.setdefault("local_description", "Nothing was written locally.")
    push_kwargs.setdefault("retry", "run the same push again (there is nothing to clean up)")
    with tempfile.TemporaryDirectory(prefix="v2l-push-") as tmp:
        folder = Path(tmp) / repo_id.rsplit("/", 1)[-1]
        folder.mkdir()
        save(folder)
        return push_folder_to_hub(folder, repo_id, **push_kwargs)


def push_hypernetwork_to_hub(
    model,
    repo_id: str,
    *,
    base_model_id: str | None = None,
    commit_message: str = "Upload Video2LoRA hypernetwork",
    max_shard_size: str | int = "5GB",
    model_card_kwargs: dict[str, Any] | None = None,
    **push_kwargs,
):
    """Push a hypernetwork checkpoint (config.json, safetensors weights, processor, README.md model card).

    The pushed `config.json` and card name the base model by its Hub id, never by a local path: a
    hypernetwork bound to a base model loaded from a folder needs `base_model_id`. Unlike
    `PreTrainedModel.push_to_hub`, it never downloads the repository's existing card to reuse it; it
    writes `hypernetwork_model_card(config, **model_card_kwargs)`. The files are saved into a temporary
    folder and uploaded from there, so nothing local changes.

    Args:
        model: a `Video2LoraHypernetwork`.
        repo_id: the Hub repository.
        base_model_id: the Hub id of the base model, needed when `model.config.base_model_name_or_path`
            is a local path (checked on the Hub first); written to the pushed `config.json` and card.
            The model and its config are not changed.
        commit_message: the commit title.
        max_shard_size: passed to `save_pretrained`.
        model_card_kwargs: `datasets`, `training`, `license`, `tags` for the model card.
        **push_kwargs: `commit_description`, `private`, `revision`, `create_pr`, `token`, `retry`,
            `local_description`.

    Returns:
        The `huggingface_hub.CommitInfo`.

    Raises:
        BaseModelIdError: the base model is a local path (or missing) and no `base_model_id` was given,
            or `base_model_id` is not a Hub repo id or not a model on the Hub (raised before any upload).
        HubPushError: the Hub refused or could not be reached; the message says how to retry.

    Example:
        ```python
        push_hypernetwork_to_hub(hn, "me/video2lora-smolvlm2-500m", model_card_kwargs={"datasets": ["HuggingFaceFV/finevideo"]})
        # a hypernetwork whose base model was loaded from a folder: name the base model's Hub id
        push_hypernetwork_to_hub(hn, "me/video2lora-smolvlm2-500m", base_model_id="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        ```
    """
    from .cards import save_hypernetwork_card

    recorded = model.config.base_model_name_or_path
    base = publishable_base_model(recorded, base_model_id, kind="hypernetwork")
    if base_model_id is not None:
        _check_base_model_id(base_model_id, push_kwargs.get("token"))
    config = None
    if base != recorded:  # publish the Hub id; the model keeps its own config
        config = copy.deepcopy(model.config)
        config.base_model_name_or_path = base

    def save(folder: Path) -> None:
        model.save_pretrained(
            folder, max_shard_size=max_shard_size, repo_id=repo_id, model_card_kwargs=model_card_kwargs
        )
        if config is not None:  # the published base model, in config.json and the card
            config.save_pretrained(folder)
            card_kwargs = {"processor": model.runtime.saved_processor(), **(model_card_kwargs or {})}
            save_hypernetwork_card(folder, config, repo_id=repo_id, **card_kwargs)

    named = (("base_model_id", base_model_id), *((k, push_kwargs.get(k)) for k in ("private", "revision")))
    options = "".join(f", {k}={v!r}" for k, v in named if v)
    push_kwargs.setdefault("retry", f"`hn.push_to_hub({repo_id!r}{options})`")
    push_kwargs.setdefault(
        "local_description", "Nothing was written locally, and the hypernetwork is unchanged."
    )
    return push_saved_to_hub(save, repo_id, commit_message=commit_message, **push_kwargs)


# ---- adapters: published under the Hub id of their base model -----------------------------------------
def _refuse_bad_spelling(base_model_id: str) -> None:
    if not is_hub_repo_id(base_model_id, local_paths=False):
        raise BaseModelIdError(
            f"base_model_id={base_model_id!r} is not a Hub repo id: pass the `namespace/name` under which others "
            "load the base model."
        )


def _check_base_model_id(base_model_id: str, token: str | bool | None) -> None:
    """Refuse a `base_model_id` that is a path, a URL, or a model the Hub does not have."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    _refuse_bad_spelling(base_model_id)
    api = HfApi(token=token)
    try:
        api.model_info(base_model_id)
    except RepositoryNotFoundError as error:
        raise BaseModelIdError(
            f"base_model_id={base_model_id!r}: the Hub at {api.endpoint} has no such model (or it is private and "
            "the token cannot read it). Check the id: others will load the base model from it."
        ) from error
    except Exception:  # offline, unreachable, ...: the push itself reports that, with its advice
        return


_BASE_MODEL_ID_HINTS = {
    "adapter": (
        "`push_to_hub(repo_id, base_model_id='namespace/name')` in Python, or `v2l push ADAPTER REPO_ID "
        "--base-model-id namespace/name`. The pushed adapter_config.json and model card then name that id; the "
        "local adapter keeps its path."
    ),
    "hypernetwork": (
        "`hn.push_to_hub(repo_id, base_model_id='namespace/name')`, or `hn.save_pretrained(folder, "
        "push_to_hub=True, repo_id=repo_id, base_model_id='namespace/name')`. The pushed config.json and model "
        "card then name that id; the local hypernetwork and its config keep the path."
    ),
}


def publishable_base_model(
    base_model_name_or_path: str | None, base_model_id: str | None = None, *, kind: str = "adapter"
) -> str:
    """The base model to record in a pushed adapter or hypernetwork: `base_model_id`, else the recorded Hub id.

    Args:
        base_model_name_or_path: the base model the adapter or hypernetwork records (a Hub id or a local path).
        base_model_id: the Hub id to publish instead, for a base model loaded from a folder.
        kind: what is pushed, `"adapter"` or `"hypernetwork"`: the error names that and how to push it.

    Returns:
        The Hub id to write to the pushed `adapter_config.json` or `config.json`, and model card.

    Raises:
        BaseModelIdError: the recorded base model is a local path (or missing) and no `base_model_id`
            was given, or `base_model_id` is not a Hub repo id.

    Example:
        ```python
        publishable_base_model("/home/me/smolvlm", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        publishable_base_model(hn.config.base_model_name_or_path, kind="hypernetwork")
        ```
    """
    if kind not in _BASE_MODEL_ID_HINTS:
        raise InvalidArgumentError(f"kind={kind!r}: use one of {sorted(_BASE_MODEL_ID_HINTS)}.")
    if base_model_id is not None:
        _refuse_bad_spelling(base_model_id)
        return base_model_id
    if is_hub_repo_id(base_model_name_or_path):
        return str(base_model_name_or_path)
    recorded = f"the local path {base_model_name_or_path}" if base_model_name_or_path else "no base model"
    raise BaseModelIdError(
        f"The {kind} records {recorded}, which nobody who downloads it can load. Pass the base model's Hub id: "
        f"{_BASE_MODEL_ID_HINTS[kind]}"
    )


def push_adapter_to_hub(
    adapter,
    repo_id: str,
    *,
    base_model_id: str | None = None,
    commit_message: str = "Upload Video2LoRA adapter",
    commit_description: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | bool | None = None,
    retry: str | None = None,
    local_description: str | None = None,
):
    """Push a `GeneratedLora` (PEFT files plus model card) in one commit, under its base model's Hub id.

    The files are saved into a temporary folder and uploaded from there, so nothing local changes
    and a failed upload raises a `HubPushError` that says what to run to retry.

    Args:
        adapter: the `GeneratedLora`.
        repo_id: `"namespace/name"`; created if missing.
        base_model_id: the Hub id of the base model, for an adapter whose base model was loaded from
            a folder; written to the pushed `adapter_config.json` and card (checked on the Hub first).
        commit_message: the commit title.
        commit_description: the commit body.
        private: make a new repository private.
        revision: the branch to commit to (created from `main` if missing).
        create_pr: open a pull request instead of committing to the branch.
        token: a Hub token; defaults to `HF_TOKEN` or the stored login.
        retry: how to retry, for the error message (a command in backticks); default the Python call.
        local_description: what the error says about local files; default that nothing was written.

    Returns:
        The `huggingface_hub.CommitInfo` (`.oid` is the new revision).

    Raises:
        BaseModelIdError: the adapter's base model is a local path and no `base_model_id` was given.
        HubPushError: the Hub refused or could not be reached.

    Example:
        ```python
        push_adapter_to_hub(adapter, "me/clip-adapter", base_model_id="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        ```
    """
    base = publishable_base_model(adapter.base_model_name_or_path, base_model_id)
    if base_model_id is not None:
        _check_base_model_id(base_model_id, token)
    if base != adapter.base_model_name_or_path:
        adapter = dataclasses.replace(adapter, base_model_name_or_path=base)  # shares the tensors
    if retry is None:
        named = (("base_model_id", base_model_id), ("private", private), ("revision", revision),
                 ("create_pr", create_pr))  # fmt: skip
        options = "".join(f", {k}={v!r}" for k, v in named if v)
        if commit_message != "Upload Video2LoRA adapter":
            options += f", commit_message={commit_message!r}"
        retry = f"`adapter.push_to_hub({repo_id!r}{options})`"
    return push_saved_to_hub(
        lambda folder: adapter.save_pretrained(folder, repo_id=repo_id),
        repo_id,
        commit_message=commit_message,
        commit_description=commit_description,
        private=private,
        revision=revision,
        create_pr=create_pr,
        token=token,
        retry=retry,
        local_description=local_description or "Nothing was written locally, and the adapter is unchanged.",
    )
