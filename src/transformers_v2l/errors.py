"""The exceptions transformers-v2l raises on bad input.

Every error names the offending file, field or tensor and says what was expected, so that a
user can act on the message without reading our code.
"""

from __future__ import annotations

__all__ = [
    "AdapterMismatchError",
    "CheckpointMismatchError",
    "EmptyVideoError",
    "HubPushError",
    "HubUnavailableError",
    "MissingDependencyError",
    "UnsafeCheckpointError",
    "Video2LoraError",
    "VideoDecodeError",
]


class Video2LoraError(Exception):
    """Base class of every error raised by transformers-v2l."""


class VideoDecodeError(Video2LoraError, ValueError):
    """A video file is missing, is not a video, or is corrupt beyond recovery."""


class EmptyVideoError(VideoDecodeError):
    """A video container decoded to zero frames (for example an audio-only file)."""


class AdapterMismatchError(Video2LoraError, ValueError):
    """An adapter does not fit the model it is applied to (shapes, modules or base model)."""


class CheckpointMismatchError(Video2LoraError, ValueError):
    """A hypernetwork checkpoint does not fit the base model or the configuration it is loaded with."""


class UnsafeCheckpointError(Video2LoraError, ValueError):
    """A pickled checkpoint asks for a global that the restricted unpickler does not allow."""


class MissingDependencyError(Video2LoraError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the `{package}` package, which is not installed. "
            f"Install it with: pip install 'transformers-v2l[{extra}]'"
        )
        self.package = package
        self.extra = extra


class HubPushError(Video2LoraError, OSError):
    """Uploading to the Hugging Face Hub failed (the repository, branch, upload or commit was refused)."""


class HubUnavailableError(Video2LoraError, OSError):
    """The Hugging Face Hub could not be reached for a repository that is not cached locally."""


def require(package: str, extra: str, feature: str):
    """Import `package` or raise a `MissingDependencyError` that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise MissingDependencyError(package, extra, feature) from error
