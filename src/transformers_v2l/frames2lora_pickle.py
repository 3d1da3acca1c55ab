"""A restricted unpickler for the `torch.save` archives of the authors' Frames2LoRA checkpoints.

Unpickling can run any code a file names, and `torch.load(weights_only=False)` (what the authors' own
`infer.py` calls) does exactly that. `load_frames2lora_pickle` reads the zip archive itself. Its
`pickle.Unpickler.find_class` resolves only the globals in `ALLOWED_GLOBALS` (SPEC section 1.4) and
refuses any other one with an `UnsafeCheckpointError` before anything runs. Every allowed global
resolves to an inert stand-in:

- the authors' and peft's config dataclasses become `PickledConfig` objects that only hold fields;
- peft's str enums (`PeftType`, `TaskType`) return their string;
- `torch.<Type>Storage` names become dtype tags;
- `_rebuild_tensor_v2` is replaced by a function that checks the layout and reads only inside the
  storage, which `persistent_load` reads from `data/<key>` in the archive onto the CPU.

Neither the authors' package nor peft is imported.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointMismatchError, UnsafeCheckpointError, Video2LoraError

__all__ = ["ALLOWED_GLOBALS", "PickledConfig", "load_frames2lora_pickle"]


class PickledConfig:
    """An inert stand-in for a pickled config dataclass: it stores the pickled fields and runs no code.

    Its fields are in `vars(obj)` or `obj.to_dict()`, and `obj.pickled_name` is the class name the
    file recorded (for example `ctx_to_lora.modeling.hypernet.HypernetConfig`).

    Example:
        ```python
        checkpoint = load_frames2lora_pickle("checkpoint.pt")
        config = checkpoint["hypernet_config"]  # a PickledConfig
        config.pickled_name, config.to_dict()["latent_size"]
        ```
    """

    pickled_name = ""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise CheckpointMismatchError(f"{self.pickled_name} was pickled with a non-dict state.")
        self.__dict__.update(state)

    def to_dict(self) -> dict[str, Any]:
        """The pickled fields.

        Returns:
            A copy of the fields, `{name: value}`.

        Example:
            ```python
            checkpoint["hypernet_config"].to_dict()
            ```
        """
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"PickledConfig({self.pickled_name}: {', '.join(sorted(self.__dict__))})"


def _config_stub(qualified_name: str) -> type[PickledConfig]:
    return type(qualified_name.rpartition(".")[2], (PickledConfig,), {"pickled_name": qualified_name})


def _enum_value(value: Any) -> str:
    """Stand-in for peft's str enums (`PeftType("LORA")` -> `"LORA"`)."""
    if not isinstance(value, str):
        raise CheckpointMismatchError(f"A pickled peft enum holds {type(value).__name__}, not a string.")
    return value


@dataclass(frozen=True)
class _StorageType:
    """What a `torch.<Type>Storage` global resolves to: only a dtype tag for persistent ids."""

    dtype: torch.dtype


@dataclass(frozen=True)
class _Storage:
    flat: torch.Tensor  # 1-D, the storage's elements


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip
_CONFIG_NAMES = (
    "ctx_to_lora.modeling.hypernet.HypernetConfig",
    "ctx_to_lora.modeling.aggregator.AggregatorConfig",
    "ctx_to_lora.configs.CtxEncoderArguments",
    "peft.tuners.lora.config.LoraConfig",
    "peft.tuners.lora.config.LoraRuntimeConfig",
)
_ENUM_NAMES = ("peft.utils.peft_types.PeftType", "peft.utils.peft_types.TaskType")
_MODULE_ALIASES = {"__builtin__": "builtins"}  # protocol-2 spelling
_CHUNK = 1 << 24  # bytes read from the archive at a time


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for `torch._utils._rebuild_tensor_v2`: validates the layout, refuses hooks, reads in bounds."""
    if backward_hooks or metadata:
        raise UnsafeCheckpointError(
            "A tensor in the checkpoint carries backward hooks or metadata; refusing it."
        )
    layout_ok = isinstance(storage, _Storage) and isinstance(size, tuple) and isinstance(stride, tuple)
    layout_ok = layout_ok and len(size) == len(stride)
    layout_ok = layout_ok and all(isinstance(i, int) and i >= 0 for i in (offset, *size, *stride))
    if layout_ok:
        extent = offset + sum((n - 1) * step for n, step in zip(size, stride)) + 1 if all(size) else 0
        layout_ok = extent <= storage.flat.numel()
    if not layout_ok:
        raise CheckpointMismatchError(
            f"Malformed tensor: offset {offset!r}, size {size!r}, stride {stride!r}."
        )
    tensor = torch.empty(0, dtype=storage.flat.dtype)
    return tensor.set_(storage.flat.untyped_storage(), offset, size, stride)


def _allowed_globals() -> dict[str, Any]:
    table: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": builtins.set,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    }
    table.update({f"torch.{name}": _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()})
    table.update({name: _config_stub(name) for name in _CONFIG_NAMES})
    table.update(dict.fromkeys(_ENUM_NAMES, _enum_value))
    return table


#: Every global a Frames2LoRA checkpoint may name, and the inert object it resolves to.
ALLOWED_GLOBALS: dict[str, Any] = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file, encoding="utf-8")
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{_MODULE_ALIASES.get(module, module)}.{name}"
        if qualified not in ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self.path.name} asks the unpickler for the global `{qualified}`, which a Frames2LoRA "
                "checkpoint never needs. Refusing to load it; nothing from the file was executed. "
                f"Allowed globals: {', '.join(sorted(ALLOWED_GLOBALS))}."
            )
        return ALLOWED_GLOBALS[qualified]

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointMismatchError(f"{self.path.name}: unexpected persistent id {pid!r}.")
        _, storage_type, key, _location, numel = pid  # the location (often cuda:0) is ignored: CPU
        if (
            not isinstance(storage_type, _StorageType)
            or not isinstance(key, str)
            or not isinstance(numel, int)
        ):
            raise CheckpointMismatchError(f"{self.path.name}: malformed storage reference {pid!r}.")
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> _Storage:
        name = f"{self.prefix}data/{key}"
        try:
            entry = self.archive.getinfo(name)
        except KeyError:
            raise CheckpointMismatchError(
                f"{self.path.name}: storage `{name}` is missing from the archive."
            ) from None
        nbytes = numel * dtype.itemsize
        if entry.file_size != nbytes:
            raise CheckpointMismatchError(
                f"{self.path.name}: storage `{name}` holds {entry.file_size} bytes, expected {nbytes} "
                f"({numel} x {dtype}). The file is truncated or corrupt."
            )
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        view, read = memoryview(buffer.numpy()), 0
        with self.archive.open(entry) as source:  # in chunks: one big readinto would copy through bytes
            while read < nbytes and (chunk := source.readinto(view[read : read + _CHUNK])):
                read += chunk
        if read != nbytes:
            raise CheckpointMismatchError(f"{self.path.name}: storage `{name}` is truncated.")
        return _Storage(buffer.view(dtype))


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointMismatchError(
            f"{path.name} is a zip archive but not a torch.save checkpoint (no data.pkl)."
        )
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode(errors="replace").strip()
        if byteorder != "little":
            raise CheckpointMismatchError(
                f"{path.name} was saved with {byteorder!r} byte order; only little is supported."
            )
    return prefix


def load_frames2lora_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a `torch.save` zip archive, allowing only the globals in `ALLOWED_GLOBALS`.

    Tensors come back on the CPU whatever device they were saved from. Config dataclasses come back as
    `PickledConfig` stand-ins.

    Args:
        path: a `.pt` file written by `torch.save` (zip format, torch >= 1.6).

    Returns:
        The unpickled top-level object (for a Frames2LoRA file, an `OrderedDict`).

    Raises:
        UnsafeCheckpointError: the pickle names a global outside `ALLOWED_GLOBALS` (it is not run).
        CheckpointMismatchError: the file is not a torch zip archive, or is truncated or malformed.

    Example:
        ```python
        checkpoint = load_frames2lora_pickle("frames2lora-smolvlm2-500m-best-ce.pt")
        checkpoint["hypernet_config"].latent_size  # 512
        ```
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointMismatchError(
            f"{path} is not a torch.save zip archive. Legacy (pre-1.6) and raw pickle files are refused unread."
        )
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive, path)
        data = io.BytesIO(archive.read(prefix + "data.pkl"))
        try:
            return _RestrictedUnpickler(data, archive=archive, prefix=prefix, path=path).load()
        except Video2LoraError:
            raise
        except Exception as error:  # malformed pickle streams raise many kinds of errors
            raise CheckpointMismatchError(f"{path.name} could not be unpickled: {error!r}.") from error
