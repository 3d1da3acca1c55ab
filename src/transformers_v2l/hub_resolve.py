"""Resolving a name to files: a local folder, or a Hub model repository (downloaded and cached).

* `resolve_repo_files` and `resolve_commit_hash`, which `GeneratedLora.from_pretrained` and
  `Video2LoraHypernetwork.from_pretrained` call before loading anything.
* Names that can be neither get a typed error at once: a URL raises `InvalidRepoIdError` (naming the
  repo id to pass for a URL of the Hub), and a path that cannot be a repo id `FileNotFoundError`.
* When the Hub cannot be reached, one connection attempt of at most `CONNECT_TIMEOUT` seconds decides
  it: cached files are used, or `HubUnavailableError` says that there is no such local folder and
  that the Hub cannot be reached, instead of `huggingface_hub`'s retries for half a minute.
* `hub_unavailable_error` and `hub_unreachable` give errors of other loaders (transformers'
  `from_pretrained`) the same wording.

`transformers_v2l.hub` re-exports everything public here.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from .errors import HubUnavailableError, InvalidArgumentError

__all__ = [
    "CONNECT_TIMEOUT",
    "OFFLINE_MODEL_HINT",
    "InvalidRepoIdError",
    "hub_unavailable_error",
    "hub_unreachable",
    "is_hub_repo_id",
    "resolve_commit_hash",
    "resolve_repo_files",
]


class InvalidRepoIdError(InvalidArgumentError):
    """A name that is neither a local folder nor a Hub repository id, such as a URL (an `InvalidArgumentError`).

    Example:
        ```python
        try:
            GeneratedLora.from_pretrained("https://huggingface.co/me/clip-adapter")
        except InvalidRepoIdError as error:
            print(error)  # URLs are not supported: pass 'me/clip-adapter'
        ```
    """


# ---- why the Hub was not used ------------------------------------------------------------------------------
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
    """Whether `error` (or an error it was raised from) means files were neither cached nor downloadable.

    That is offline mode, `local_files_only`, or a network failure; not an error the Hub answered.

    Args:
        error: an error of `huggingface_hub` or `transformers` (often an `OSError` of `from_pretrained`).

    Returns:
        `True` when the files could not be fetched for want of a Hub.

    Example:
        ```python
        try:
            AutoConfig.from_pretrained(name)
        except OSError as error:
            if hub_unreachable(error):
                raise hub_unavailable_error(name, "config.json", error) from error
            raise
        ```
    """
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
        f"Cannot load {str(name_or_path)!r}: it is not a local folder{_nothing_at(name_or_path)}, {reason}, and "
        f"{filename} is not in the cache. Pass the path of a local folder instead (for example one written by "
        f"`save_pretrained`), {retry}.{_did_you_mean(name_or_path)}{hint}"
    )


def _nothing_at(name_or_path: str | os.PathLike) -> str:
    path = Path(name_or_path).expanduser().absolute()
    return "" if path.exists() else f" (nothing at {path})"


def _did_you_mean(name_or_path: str | os.PathLike) -> str:
    """` Did you mean out/clip?` when `name_or_path` is missing but its folder holds folders of close names."""
    path = Path(name_or_path).expanduser()
    names: list[str] = []
    with contextlib.suppress(OSError):
        if not path.exists() and path.parent.is_dir():
            names = [p.name for p in path.parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(str(path.parent / name) for name in close)}?" if close else ""


# ---- resolving names: local folders, Hub repositories, and what is neither ------------------------------
#: Seconds to wait for a connection to the Hub before saying it cannot be reached (answers may take longer).
CONNECT_TIMEOUT = 1.5
_CONNECTION_ERRORS = ("ConnectError", "ConnectTimeout", "ProxyError")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_hub_repo_id(name: str | os.PathLike | None, *, local_paths: bool = True) -> bool:
    """Whether `name` can only mean a Hub repository: a valid `name` or `namespace/name`, not a path.

    Args:
        name: a model name or path.
        local_paths: also answer `False` when a file or folder of that name exists here (as a loader
            would load it); `False` judges the spelling alone.

    Returns:
        `False` for `None`, URLs, names that start like a path (`/`, `.`, `~`) or hold a backslash,
        names the Hub does not accept, and (with `local_paths`) paths that exist here.

    Example:
        ```python
        is_hub_repo_id("HuggingFaceTB/SmolVLM2-500M-Video-Instruct")  # True
        is_hub_repo_id("/home/me/models/smolvlm")  # False
        ```
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(name) if name is not None else ""
    if not text or "\\" in text or text.startswith(("/", ".", "~")) or _URL.match(text):
        return False
    if local_paths and Path(text).exists():
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _refuse_url(name: str, filenames: Sequence[str]) -> None:
    """Raise `InvalidRepoIdError` for a URL, naming the repo id to pass for a URL of the Hub."""
    if not _URL.match(name):
        return
    from huggingface_hub import constants

    parts = urlsplit(name)
    segments = [segment for segment in parts.path.split("/") if segment]
    hub_hosts = {urlsplit(constants.ENDPOINT).netloc, "huggingface.co", "www.huggingface.co", "hf.co"}
    instead = ""
    if parts.netloc in hub_hosts and len(segments) >= 2 and segments[0] not in ("datasets", "spaces"):
        repo = "/".join(segments[:2])
        pinned = len(segments) >= 4 and segments[2] in ("tree", "blob", "resolve")
        instead = f" For this Hub repository, pass {repo!r}" + (
            f" with revision={segments[3]!r}." if pinned else "."
        )
    raise InvalidRepoIdError(
        f"Cannot load {name!r}: URLs are not supported. Pass a local folder that holds {', '.join(filenames)}, "
        f"or a Hub repo id (`namespace/name`, as in https://huggingface.co/namespace/name).{instead} For files "
        "on another server, download them into a folder first and pass that folder."
    )


def _hub_connection_error(
    name: str, filename: str, *, subfolder: str | None, revision: str | None
) -> BaseException | None:
    """One request to the Hub, without retries: the connection error if it cannot be reached, else `None`.

    The request goes through `huggingface_hub`'s HTTP session (its proxy and certificate settings),
    without credentials and without following redirects: any answer, even an error, shows that the Hub
    can be reached, and `hf_hub_download` then does the real work (retrying transient failures). Only
    a failed connection is reported, after at most `CONNECT_TIMEOUT` seconds.
    """
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import get_session

    url = hf_hub_url(name, filename, subfolder=subfolder, revision=revision)
    read = constants.HF_HUB_ETAG_TIMEOUT
    try:
        get_session().request(
            "HEAD", url, timeout=(CONNECT_TIMEOUT, read, read, read), follow_redirects=False
        )
    except Exception as error:  # httpx errors: a slow answer (a read timeout) is not a failed connection
        return next((e for e in _causes(error) if type(e).__name__ in _CONNECTION_ERRORS), None)
    return None


def _cached_files(
    name: str, required: Sequence[str], optional: Sequence[str], error: BaseException, **location
):
    """The files already in the cache, found without any network call (`try_to_load_from_cache`)."""
    from huggingface_hub import try_to_load_from_cache

    found: dict[str, Path | None] = {}
    prefix = f"{location['subfolder']}/" if location["subfolder"] else ""
    for filename in [*required, *optional]:
        path = try_to_load_from_cache(
            name, prefix + filename, cache_dir=location["cache_dir"], revision=location["revision"]
        )
        if isinstance(path, str):
            found[filename] = Path(path)
        elif filename in optional:
            found[filename] = None
        else:
            raise hub_unavailable_error(name, filename, error) from error
    return found


def _download_files(
    name: str, required: Sequence[str], optional: Sequence[str], **kwargs
) -> dict[str, Path | None]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RemoteEntryNotFoundError

    found: dict[str, Path | None] = {}
    for filename in [*required, *optional]:
        try:
            found[filename] = Path(hf_hub_download(name, filename, **kwargs))
        except (RemoteEntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
            if filename in optional:  # the required files were found; an optional one is absent or not cached
                found[filename] = None
                continue
            if isinstance(error, RemoteEntryNotFoundError):
                raise
            local_only = bool(kwargs.get("local_files_only"))
            raise hub_unavailable_error(name, filename, error, local_files_only=local_only) from error
    return found


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

    A name that is not a local folder is looked up on the Hub. If the Hub cannot be reached, files
    already in the cache are used (as `huggingface_hub` does); otherwise `HubUnavailableError` says
    so after one connection attempt of at most `CONNECT_TIMEOUT` seconds, without the client's
    retries, and names the local folder that does not exist.

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
        FileNotFoundError: a required file is missing from a local folder, or a path that cannot be a
            Hub repo id does not exist.
        InvalidRepoIdError: `name_or_path` is a URL.
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

    name = str(name_or_path)
    _refuse_url(name, filenames)
    if local.exists():
        raise FileNotFoundError(
            f"{name} is not a folder but a file: pass the folder that holds {', '.join(filenames)}."
        )
    if not is_hub_repo_id(name):
        raise FileNotFoundError(
            f"{name} is not a folder (nothing at {local.expanduser().absolute()}) and not a Hub repo id "
            f"(`namespace/name`): check the path.{_did_you_mean(name)}"
        )
    from huggingface_hub import constants

    location = {"subfolder": subfolder, "revision": revision, "cache_dir": cache_dir}
    if not (local_files_only or constants.HF_HUB_OFFLINE):
        unreachable = _hub_connection_error(name, filenames[0], subfolder=subfolder, revision=revision)
        if unreachable is not None:  # the cache at once, where huggingface_hub would retry for half a minute
            return _cached_files(name, filenames, optional, unreachable, **location)
    return _download_files(
        name, filenames, optional, token=token, local_files_only=local_files_only, **location
    )


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
