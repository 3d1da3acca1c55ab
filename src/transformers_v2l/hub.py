"""Hugging Face Hub plumbing shared by generated adapters and hypernetwork checkpoints.

* `atomic_folder`: write a folder in a temporary sibling and rename it into place, so a crash or an
  error never leaves a half-written folder behind.
* `push_folder_to_hub`: create the repository (and branch), upload a folder in one commit, and turn
  every failure into a `HubPushError` that says what failed and that nothing local was changed.
* `resolve_repo_files`: find files in a local folder or download them from a Hub repository, with
  `HubUnavailableError` when the Hub cannot be reached and the files are not cached.
* `push_saved_to_hub`: save into a temporary folder, then push it (nothing is written locally); what
  `GeneratedLora.push_to_hub` and `Video2LoraHypernetwork.push_to_hub` call.

Model cards live in `cards.py`.

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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import HubPushError, HubUnavailableError

__all__ = [
    "HubPushError",
    "atomic_folder",
    "push_folder_to_hub",
    "push_hypernetwork_to_hub",
    "push_saved_to_hub",
    "resolve_commit_hash",
    "resolve_repo_files",
]


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


# ---- Hub errors ------------------------------------------------------------------------------------
_NETWORK_ERRORS = (
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "TimeoutException",
    "NetworkError",
    "ProxyError",
)

#: Appended to errors about hypernetworks and base models: what works without the Hub.
OFFLINE_MODEL_HINT = (
    " Without the Hub, the embedded tiny-world model works offline: "
    "`transformers_v2l.demo.load_default_hypernetwork()`, which `v2l demo`, `v2l internalize` and `v2l ask` use "
    "when no --hypernetwork is given."
)


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _network_error(error: BaseException | None) -> BaseException | None:
    """The connection or timeout error behind `error`, if any."""
    return next((e for e in _causes(error) if type(e).__name__ in _NETWORK_ERRORS), None)


def hub_unreachable(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) means files were neither cached nor downloadable:
    offline mode, `local_files_only`, or a network failure. Not for errors the Hub itself answered."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    unavailable = (LocalEntryNotFoundError, OfflineModeIsEnabled, HubUnavailableError)
    return any(isinstance(e, unavailable) for e in _causes(error)) or _network_error(error) is not None


def hub_unavailable_error(
    name_or_path: str | os.PathLike,
    filename: str,
    error: BaseException | None = None,
    *,
    local_files_only: bool = False,
    hint: str = "",
) -> HubUnavailableError:
    """A `HubUnavailableError` that says why the Hub was not used and how to do without it.

    Args:
        name_or_path: what the user asked for (a Hub repo id that is not a local folder).
        filename: the file that could not be found, for the message.
        error: the error of `huggingface_hub` or `transformers`, for the cause of a network failure.
        local_files_only: whether the caller asked for the cache only.
        hint: a sentence appended to the message (for example `OFFLINE_MODEL_HINT`).

    Returns:
        The error, to raise `from error`.

    Example:
        ```python
        try:
            path = hf_hub_download("me/clip-adapter", "adapter_config.json")
        except LocalEntryNotFoundError as error:
            raise hub_unavailable_error("me/clip-adapter", "adapter_config.json", error) from error
        ```
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        reason, retry = (
            "HF_HUB_OFFLINE is set, so the Hub was not contacted",
            "or unset HF_HUB_OFFLINE to download it",
        )
    elif local_files_only:
        reason, retry = "local_files_only=True, so the Hub was not contacted", "or drop local_files_only=True"
    else:
        network = _network_error(error)
        cause = f" ({type(network).__name__}: {network})" if network is not None else ""
        reason = f"the Hugging Face Hub at {constants.ENDPOINT} could not be reached{cause}"
        retry = "or check your network connection (and HF_ENDPOINT or proxy settings) and try again"
    return HubUnavailableError(
        f"Cannot load {str(name_or_path)!r}: it is not a local folder, {reason}, and {filename} is not in the "
        f"cache. Pass the path of a local folder instead (for example one written by `save_pretrained`), "
        f"{retry}.{hint}"
    )


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
            f"Pushing to the Hub repository {repo_id!r} at {api.endpoint} failed: could not {step} ({reason}). "
            f"{local}{_push_advice(error, token)}"
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
                raise FileNotFoundError(
                    f"{folder} has no {name}; expected {', '.join(filenames)}, as `save_pretrained` writes them."
                )
            found[name] = path if path.is_file() else None
        return found

    if local.exists() or str(name_or_path).startswith(("/", "./", "../", "~", "\\")):
        if local.exists():
            raise FileNotFoundError(
                f"{name_or_path} is not a folder but a file: pass the folder that holds {', '.join(filenames)}."
            )
        raise FileNotFoundError(
            f"{name_or_path} is not a folder (nothing at {local.expanduser().absolute()}) and not a Hub repo id "
            "(`namespace/name`): check the path."
        )
    from huggingface_hub import hf_hub_download
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
            raise hub_unavailable_error(
                name_or_path, name, error, local_files_only=local_files_only
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


def push_saved_to_hub(save: Callable[[Path], Any], repo_id: str, **push_kwargs):
    """Save into a temporary folder with `save(folder)`, then push that folder in one commit.

    Nothing is written locally, so a failed push leaves nothing behind.

    Args:
        save: writes the files into the (empty, existing) folder it is given.
        repo_id: the Hub repository.
        **push_kwargs: `commit_message`, `commit_description`, `private`, `revision`, `create_pr`, `token`.

    Returns:
        The `huggingface_hub.CommitInfo`.

    Example:
        ```python
        push_saved_to_hub(lambda folder: adapter.save_pretrained(folder), "me/clip-adapter")
        ```
    """
    with tempfile.TemporaryDirectory(prefix="v2l-push-") as tmp:
        folder = Path(tmp) / repo_id.rsplit("/", 1)[-1]
        folder.mkdir()
        save(folder)
        return push_folder_to_hub(
            folder, repo_id, local_description="Nothing was written locally.", **push_kwargs
        )


def push_hypernetwork_to_hub(
    model,
    repo_id: str,
    *,
    commit_message: str = "Upload Video2LoRA hypernetwork",
    max_shard_size: str | int = "5GB",
    model_card_kwargs: dict[str, Any] | None = None,
    **push_kwargs,
):
    """Push a hypernetwork checkpoint (config.json, safetensors weights, README.md model card).

    Unlike `PreTrainedModel.push_to_hub`, it never downloads the repository's existing card to reuse
    it; it writes `hypernetwork_model_card(model.config, **model_card_kwargs)`.

    Args:
        model: a `Video2LoraHypernetwork`.
        repo_id: the Hub repository.
        commit_message: the commit title.
        max_shard_size: passed to `save_pretrained`.
        model_card_kwargs: `datasets`, `training`, `license` for the model card.
        **push_kwargs: `commit_description`, `private`, `revision`, `create_pr`, `token`.

    Returns:
        The `huggingface_hub.CommitInfo`.

    Example:
        ```python
        push_hypernetwork_to_hub(hn, "me/video2lora-smolvlm2-500m", model_card_kwargs={"datasets": ["HuggingFaceFV/finevideo"]})
        ```
    """
    return push_saved_to_hub(
        lambda folder: model.save_pretrained(
            folder, max_shard_size=max_shard_size, repo_id=repo_id, model_card_kwargs=model_card_kwargs
        ),
        repo_id,
        commit_message=commit_message,
        **push_kwargs,
    )
