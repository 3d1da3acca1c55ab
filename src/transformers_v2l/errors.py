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
    "InvalidArgumentError",
    "MissingDependencyError",
    "UnsafeCheckpointError",
    "Video2LoraError",
    "VideoDecodeError",
]


class Video2LoraError(Exception):
    """Base class of every error raised by transformers-v2l.

    Example:
        ```python
        try:
            adapter = hn.internalize("clip.mp4")
        except Video2LoraError as error:  # any of the errors below
            print(error)
        ```
    """


class VideoDecodeError(Video2LoraError, ValueError):
    """A video file is missing, is not a video, or is corrupt beyond recovery.

    Also a `ValueError`, so code that catches bad input generically keeps working.

    Example:
        ```python
        try:
            hn.internalize("notes.txt")
        except VideoDecodeError as error:
            print(error)  # names the file and what is wrong with it
        ```
    """


class EmptyVideoError(VideoDecodeError):
    """A video container decoded to zero frames (for example an audio-only file).

    Example:
        ```python
        from transformers_v2l.video_io import load_video

        try:
            load_video("song.mp3")
        except EmptyVideoError:
            print("no video stream in this file")
        ```
    """


class AdapterMismatchError(Video2LoraError, ValueError):
    """An adapter does not fit the model it is applied to (shapes, modules or base model).

    Example:
        ```python
        try:
            adapter.check_compatible(other_vlm)
        except AdapterMismatchError as error:
            print(error)  # gives the adapter's and the model's layers and shapes
        ```
    """


class CheckpointMismatchError(Video2LoraError, ValueError):
    """A hypernetwork checkpoint does not fit the base model or the configuration it is loaded with.

    Example:
        ```python
        try:
            hn = Video2LoraHypernetwork.from_pretrained("my-hypernet", base_model=other_vlm)
        except CheckpointMismatchError as error:
            print(error)  # the layers and shapes the checkpoint expects, and the ones it got
        ```
    """


class UnsafeCheckpointError(Video2LoraError, ValueError):
    """A pickled checkpoint asks for a global that the restricted unpickler does not allow.

    Example:
        ```python
        try:
            hn = Video2LoraHypernetwork.from_frames2lora("untrusted.pt")
        except UnsafeCheckpointError as error:
            print(error)  # names the global; nothing from the file was run
        ```
    """


class MissingDependencyError(Video2LoraError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it.

    Args:
        package: the missing import name, for example `"accelerate"`.
        extra: the `transformers-v2l` extra that installs it, for example `"training"`.
        feature: what needed it, for the message (for example `"Video2LoraTrainer"`).

    Example:
        ```python
        try:
            from transformers_v2l.training import Video2LoraTrainer
        except MissingDependencyError as error:
            print(error.extra)  # 'training': pip install 'transformers-v2l[training]'
        ```
    """

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the `{package}` package, which is not installed. "
            f"Install it with: pip install 'transformers-v2l[{extra}]'"
        )
        self.package = package
        self.extra = extra


class HubPushError(Video2LoraError, OSError):
    """Uploading to the Hugging Face Hub failed (the repository, branch, upload or commit was refused).

    The local files are left as they were; the message says which step failed and why.

    Example:
        ```python
        try:
            adapter.push_to_hub("me/clip-adapter")
        except HubPushError as error:
            print(error)  # for example: not logged in, or the Hub cannot be reached
        ```
    """


class HubUnavailableError(Video2LoraError, OSError):
    """The Hugging Face Hub could not be reached for a repository that is not cached locally.

    Example:
        ```python
        try:
            adapter = GeneratedLora.from_pretrained("me/clip-adapter")
        except HubUnavailableError:
            adapter = GeneratedLora.from_pretrained("./clip-adapter")  # a local folder works offline
        ```
    """


def require(package: str, extra: str, feature: str):
    """Import `package` or raise a `MissingDependencyError` that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as error:  # name what is really missing: `package` itself, or a module it needs
        missing = (getattr(error, "name", None) or package).split(".")[0]
        raise MissingDependencyError(missing, extra, feature) from error


class InvalidArgumentError(Video2LoraError, ValueError):
    """An argument is out of range or of the wrong type (for example `num_frames=0`); nothing was done.

    Also a `ValueError`, so code that catches bad input generically keeps working.

    Example:
        ```python
        from transformers_v2l.video_io import load_video

        try:
            load_video("clip.mp4", num_frames=0)
        except InvalidArgumentError as error:
            print(error)  # num_frames must be an integer >= 1, got 0.
        ```
    """
