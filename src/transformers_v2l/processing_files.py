"""Reading a processor's settings from files: a saved `Video2LoraProcessor`, or a base VLM checkpoint.

A saved processor's `processor_config.json` holds its settings (upgraded from version 0.1's flat keys);
a base checkpoint names its family (`config.json`'s `model_type`, or its official processor's class)
and the family reads its pixel settings from the checkpoint's files. Chat templates come from
`chat_template.jinja` and `additional_chat_templates/`, or the legacy `chat_template.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from .errors import HubUnavailableError
from .families import FAMILIES, Video2LoraFamily, family_class
from .hub import hub_unavailable_error, hub_unreachable

__all__ = [
    "HUB_KEYS",
    "PROCESSOR_CLASS",
    "SETTINGS",
    "load_tokenizer",
    "read_chat_templates",
    "saved_processor_settings",
    "settings_from_files",
]

#: The processor's settings besides the tokenizer and chat template (the keys of `processor_config.json`).
SETTINGS = ("family", "num_frames", "longest_edge", "fps", "skip_secs", "instruction", "vision", "answer")
#: The class name a saved `processor_config.json` records.
PROCESSOR_CLASS = "Video2LoraProcessor"
#: `from_pretrained` options that select files on the Hub rather than settings.
HUB_KEYS = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download")


def settings_from_files(path: str, hub: dict) -> dict[str, Any]:
    """The saved settings of a processor folder, or those of a base checkpoint of a known family.

    Args:
        path: a local folder or a Hub repo id.
        hub: Hub options (`revision`, `cache_dir`, `token`, `local_files_only`, `subfolder`).

    Returns:
        The settings (`family`, `vision`, and whatever else the files say).

    Example:
        ```python
        settings_from_files("my-hypernet", {})["family"]
        ```
    """

    def read_json(name: str) -> dict | None:
        return _read_json(path, name, hub)

    saved = read_json("processor_config.json") or {}
    if saved.get("processor_class") == PROCESSOR_CLASS:
        return _upgrade_saved_settings(saved)
    family = _family_of_checkpoint(read_json, saved, path)
    found = family.vision_settings_from_files(read_json)
    settings: dict[str, Any] = {"family": family.name, "vision": {}}
    for key, value in found.items():
        if key in family.defaults.vision:
            settings["vision"][key] = value
        else:
            settings[key] = value
    return settings


def saved_processor_settings(path: str | os.PathLike, **hub: Any) -> dict[str, Any] | None:
    """The settings of a `Video2LoraProcessor` saved in a folder or Hub repo, or `None` when there is none.

    Args:
        path: a local folder or a Hub repo id (for example a hypernetwork checkpoint).
        **hub: Hub options (`revision`, `cache_dir`, `token`, `local_files_only`, `subfolder`).

    Returns:
        The saved settings (upgraded from older versions), or `None`.

    Example:
        ```python
        saved_processor_settings("my-hypernet")["num_frames"]
        ```
    """
    saved = _read_json(
        os.fspath(path), "processor_config.json", {k: v for k, v in hub.items() if k in HUB_KEYS}
    )
    if not saved or saved.get("processor_class") != PROCESSOR_CLASS:
        return None
    return _upgrade_saved_settings(saved)


def _family_of_checkpoint(read_json, saved: dict, path: str) -> type[Video2LoraFamily]:
    """The family of a base checkpoint: its config.json's `model_type`, else its official processor's class."""
    config = read_json("config.json") or {}
    if "model_type" in config:
        return family_class(config["model_type"])
    names = {
        saved.get("processor_class"),
        (read_json("preprocessor_config.json") or {}).get("processor_class"),
    }
    for family in dict.fromkeys(FAMILIES.values()):
        if names & set(family.processor_classes):
            return family
    raise ValueError(
        f"{path!r} is neither a Video2LoraProcessor folder (processor_config.json) nor a checkpoint of a known "
        f"VLM family (config.json with a model_type, or a processor_class among {sorted(FAMILIES)}'s)."
    )


def _upgrade_saved_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """Settings from a processor_config.json of any version of this class (the flat SmolVLM keys of 0.1 too)."""
    settings = {key: saved[key] for key in SETTINGS if key in saved}
    if "family" not in saved:  # 0.1 (one family): its pixel settings as flat keys
        family = next(cls for cls in FAMILIES.values() if "image_seq_len" in cls.defaults.vision)
        settings["family"] = family.name
        settings["vision"] = {key: saved[key] for key in family.defaults.vision if key in saved}
    return settings


def load_tokenizer(path: str, hub: dict, kwargs: dict):
    """The tokenizer of a folder or Hub repo; an unreachable Hub raises our `HubUnavailableError`.

    Args:
        path: a local folder or a Hub repo id.
        hub: Hub options.
        kwargs: other options for `AutoTokenizer.from_pretrained`.

    Returns:
        The tokenizer.

    Example:
        ```python
        tokenizer = load_tokenizer("my-hypernet", {}, {})
        ```
    """
    try:
        return AutoTokenizer.from_pretrained(path, **hub, **kwargs)
    except OSError as error:
        if os.path.isdir(path):
            raise
        if hub_unreachable(error):
            local = bool(hub.get("local_files_only"))
            raise hub_unavailable_error(path, "its tokenizer", error, local_files_only=local) from error
        raise HubUnavailableError(f"Cannot load the processor of {path!r}: {error}") from error


def _resolve(path: str, filename: str, hub: dict) -> str | None:
    from transformers.utils import cached_file

    return cached_file(
        path,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub,
    )


def _read_json(path: str, filename: str, hub: dict) -> dict | None:
    resolved = _resolve(path, filename, hub)
    if resolved is None:
        return None
    with open(resolved, encoding="utf-8") as handle:
        return json.load(handle)


def read_chat_templates(path: str, hub: dict) -> str | dict[str, str] | None:
    """`chat_template.jinja` plus `additional_chat_templates/*.jinja` (a dict then), or the legacy JSON.

    Args:
        path: a local folder or a Hub repo id.
        hub: Hub options.

    Returns:
        One template, a dict of named templates (with `"default"`), or `None`.

    Example:
        ```python
        read_chat_templates("my-hypernet", {})
        ```
    """
    templates: dict[str, str] = {}
    if resolved := _resolve(path, "chat_template.jinja", hub):
        templates["default"] = Path(resolved).read_text(encoding="utf-8")
    local = Path(path) / hub.get("subfolder", "") / "additional_chat_templates"
    if local.is_dir():
        names = sorted(file.name for file in local.glob("*.jinja"))
    elif os.path.isdir(path) or hub.get("subfolder"):
        names = []
    else:
        from transformers.utils.hub import list_repo_templates

        options = {k: hub.get(k) for k in ("revision", "cache_dir", "token")}
        names = list_repo_templates(path, local_files_only=bool(hub.get("local_files_only")), **options)
    for name in names:
        if resolved := _resolve(path, f"additional_chat_templates/{name}", hub):
            templates[Path(name).stem] = Path(resolved).read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    legacy = _read_json(path, "chat_template.json", hub)
    return legacy.get("chat_template") if legacy else None
