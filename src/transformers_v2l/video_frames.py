"""Frames given in memory, for `video_io`: arrays, tensors and images brought to `[T, H, W, 3]` uint8 RGB.

Accepted, as one video:

* a `[T, H, W, C]` (channels last) or `[T, C, H, W]` (channels first, the transformers video
  convention) numpy array or torch tensor, with `C` = 1 (grey), 3 (RGB) or 4 (RGBA); when both
  readings fit (frames at most 4 pixels high or wide), channels last;
* a list of frames: PIL images, or `[H, W, C]` / `[C, H, W]` / `[H, W]` arrays or tensors.

Values are uint8, other integers within 0..255, or floats within [0, 1] (scaled by 255 and rounded).
Transparency is composited onto a white background the way transformers' `convert_to_rgb` does
(`alpha * rgb + (1 - alpha) * white`, rounded to uint8): the official video processor blends the same
way, without the final rounding. Grey frames are repeated into three channels. Frames of a list
whose size differs from the first frame's are resized to it (FFmpeg's area filter).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["frames_from_memory", "is_frame_sequence"]

_CHANNELS = (1, 3, 4)


def _kind(item: Any) -> str | None:
    module = type(item).__module__
    if module.startswith("PIL"):
        return "pil"
    if isinstance(item, np.ndarray):
        return "numpy"
    if module.startswith("torch") and hasattr(item, "detach"):
        return "torch"
    return None


def is_frame_sequence(source: Any) -> bool:
    """Whether `source` is frames in memory (an array, a tensor, or a non-empty list of frames).

    Args:
        source: Anything passed as a video.

    Returns:
        `True` for a numpy array, a torch tensor, or a list/tuple whose first item is a PIL image,
        a 2-D/3-D array or a 2-D/3-D tensor.

    Example:
        ```python
        is_frame_sequence([Image.new("RGB", (8, 8))])  # True
        ```
    """
    if _kind(source) in ("numpy", "torch"):
        return True
    if not isinstance(source, (list, tuple)) or not source:
        return False
    kind = _kind(source[0])
    return kind == "pil" or (kind is not None and getattr(source[0], "ndim", 0) in (2, 3))


def _to_numpy(item: Any) -> np.ndarray:
    if _kind(item) == "torch":
        item = item.detach().cpu()
        if item.dtype.is_floating_point:
            item = item.float()  # bfloat16 has no numpy dtype
        return item.numpy()
    return np.asarray(item)


def _channels_last(array: np.ndarray, channel_axis_first: int) -> np.ndarray:
    """Move the channel axis last; `channel_axis_first` is where it is in the channels-first reading."""
    last, first = array.shape[-1] in _CHANNELS, array.shape[channel_axis_first] in _CHANNELS
    if last:
        return array
    if first:
        return np.moveaxis(array, channel_axis_first, -1)
    raise InvalidArgumentError(
        f"Cannot tell the channels of a frame array of shape {list(array.shape)}: expected 1, 3 or 4 "
        "channels, last ([T, H, W, C]) or after the frame axis ([T, C, H, W])."
    )


def _rgb8(array: np.ndarray) -> np.ndarray:
    """`[..., H, W, C]` (C in 1, 3, 4) -> `[..., H, W, 3]` uint8: grey repeated, transparency over white."""
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        if not (np.isfinite(array).all() and low >= 0.0 and high <= 1.0):
            raise InvalidArgumentError(
                f"Float frames must hold values in [0, 1]; got {array.dtype} values in [{low}, {high}]. "
                "Pass uint8 frames, or divide by 255."
            )
        white, array = 1.0, array.astype(np.float64)
    elif np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise InvalidArgumentError(
                f"Integer frames must hold values in 0..255; got {array.dtype} values in [{low}, {high}]."
            )
        white = 255.0
    else:
        raise InvalidArgumentError(f"Frames must be uint8 (or floats in [0, 1]); got dtype {array.dtype}.")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        alpha = array[..., 3:4] / white
        array = alpha * array[..., :3] + (1.0 - alpha) * white  # transformers' convert_to_rgb
    if array.dtype == np.uint8:
        return array
    scale = 255.0 / white
    return np.round(array * scale).astype(np.uint8) if scale != 1.0 else np.round(array).astype(np.uint8)


def _pil_frame(image) -> np.ndarray:
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    return _rgb8(np.asarray(image.convert("RGBA" if has_alpha else "RGB")))


def _array_frame(item: Any) -> np.ndarray:
    array = _to_numpy(item)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or 0 in array.shape:
        raise InvalidArgumentError(
            f"A frame must be a non-empty [H, W, C], [C, H, W] or [H, W] array; got shape {list(array.shape)}."
        )
    return _rgb8(_channels_last(array, 0))


def _fit(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    import av

    image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return image.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()


def frames_from_memory(source: Any) -> tuple[np.ndarray, str]:
    """`([T, H, W, 3] uint8 RGB frames, source name)` from an array, a tensor or a list of frames.

    Args:
        source: See the module docstring for the accepted layouts and dtypes.

    Returns:
        The frames and `"<array>"` or `"<PIL images>"` (for `VideoMetadata.source`).

    Raises:
        InvalidArgumentError: no frames, an unknown layout, or values out of range.

    Example:
        ```python
        frames, name = frames_from_memory(torch.rand(8, 3, 64, 64))  # [T, C, H, W] floats in [0, 1]
        frames.shape  # (8, 64, 64, 3)
        ```
    """
    if isinstance(source, (list, tuple)):
        pil = _kind(source[0]) == "pil" if source else False
        if not source:
            raise InvalidArgumentError("A list of frames must hold at least one frame.")
        frames = [_pil_frame(item) if _kind(item) == "pil" else _array_frame(item) for item in source]
        height, width = frames[0].shape[:2]
        frames = [f if f.shape[:2] == (height, width) else _fit(f, height, width) for f in frames]
        return np.stack(frames), "<PIL images>" if pil else "<array>"  # [T, H, W, 3]
    array = _to_numpy(source)
    if array.ndim != 4 or array.shape[0] == 0 or 0 in array.shape:
        raise InvalidArgumentError(
            f"A video array must be a non-empty [T, H, W, C] or [T, C, H, W] array (C = 1, 3 or 4); got "
            f"{array.dtype} {list(array.shape)}. For a single frame, add the time axis: frame[None]."
        )
    array = _rgb8(_channels_last(array, 1))
    return np.ascontiguousarray(array), "<array>"  # [T, H, W, 3]
