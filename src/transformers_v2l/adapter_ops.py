"""Adapter algebra the paper uses, and validation against a live model.

* `compose`: concatenate adapters in rank space (paper section 5.6, chunk composition).
* `rank_scores`, `keep_ranks`, `drop_ranks`, `prune`: rank-slice selection by the norm product
  `||A_r|| * ||B_r||` (paper appendix C: top-k, bottom-k, random-k, remove-top-k).
* `check_compatible`: family, target modules, layers, shapes and base model name of a model.
* `merge_into` / `MergedAdapter.unmerge`: fold an adapter into the base weights and restore them
  bit-exactly. The handle of a live merge is kept on the model it changed (`model.video2lora_merged`),
  beside the weights it describes, so every user of that model sees it.

`GeneratedLora` exposes all of these as methods; this module holds the implementations.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from .errors import AdapterMismatchError
from .families import family_class, get_family

if TYPE_CHECKING:
    from .lora import GeneratedLora

__all__ = [
    "PRUNE_STRATEGIES",
    "MergedAdapter",
    "check_compatible",
    "compose",
    "drop_ranks",
    "keep_ranks",
    "merge_into",
    "prune",
    "rank_scores",
    "same_base_model",
    "unmerge",
]

PRUNE_STRATEGIES = ("top", "bottom", "random", "remove_top")
RankIndex = Sequence[int] | torch.Tensor | dict[str, torch.Tensor]


def same_base_model(a: str | None, b: str | None) -> bool:
    """Whether two base model names may denote the same model (unknown names match anything).

    `"/models/SmolVLM2-500M-Video-Instruct"` and `"HuggingFaceTB/SmolVLM2-500M-Video-Instruct"` match:
    a local copy of a Hub model keeps the repository's name.

    Args:
        a: a Hub id or local path, or `None` when unknown.
        b: another Hub id or local path, or `None` when unknown.

    Returns:
        `True` when either name is unknown, the names are equal, or their last path components match
        (case-insensitively).

    Example:
        ```python
        same_base_model("/models/SmolVLM2-500M-Video-Instruct", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct")  # True
        same_base_model("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "HuggingFaceTB/SmolVLM2-2.2B-Instruct")  # False
        ```
    """
    if not a or not b:
        return True
    a, b = str(a).rstrip("/"), str(b).rstrip("/")
    return a == b or a.rsplit("/", 1)[-1].lower() == b.rsplit("/", 1)[-1].lower()


# ---- composition -------------------------------------------------------------------------------------
def compose(adapters: Sequence[GeneratedLora]) -> GeneratedLora:
    """Concatenate adapters in rank space; see `GeneratedLora.compose`.

    Args:
        adapters: adapters for the same base model, layers and modules.

    Returns:
        An adapter of rank `sum(R_i)` whose update is the sum of the adapters' updates.

    Raises:
        AdapterMismatchError: the adapters differ in family, layers, shapes or base model.

    Example:
        ```python
        whole = compose([adapter_first_half, adapter_second_half])
        ```
    """
    adapters = list(adapters)
    if not adapters:
        raise ValueError("compose() needs at least one adapter.")
    first = adapters[0]
    signature = (first.base_model_type, first.num_layers, first.module_shapes)
    for other in adapters[1:]:
        if (other.base_model_type, other.num_layers, other.module_shapes) != signature:
            raise AdapterMismatchError(
                f"Cannot compose adapters of different shapes: {first.base_model_type} with {first.num_layers} "
                f"layers {first.module_shapes} and {other.base_model_type} with {other.num_layers} layers "
                f"{other.module_shapes}."
            )
        if not same_base_model(first.base_model_name_or_path, other.base_model_name_or_path):
            raise AdapterMismatchError(
                f"Cannot compose adapters of different base models: {first.base_model_name_or_path!r} and "
                f"{other.base_model_name_or_path!r}."
            )
    dtype = first.dtype
    for other in adapters[1:]:
        dtype = torch.promote_types(dtype, other.dtype)

    def folded_b(adapter: GeneratedLora, module: str) -> torch.Tensor:
        b = adapter.lora_B[module].to(dtype)
        return b if adapter.scaling == first.scaling else b * (adapter.scaling / first.scaling)

    modules = first.target_modules
    lora_A = {m: torch.cat([a.lora_A[m].to(dtype) for a in adapters], dim=1) for m in modules}
    lora_B = {m: torch.cat([folded_b(a, m) for a in adapters], dim=1) for m in modules}
    shared = {
        key: value
        for key, value in first.metadata.items()
        if key in ("hypernetwork", "hypernetwork_revision", "instruction")
        and all(a.metadata.get(key) == value for a in adapters)
    }
    metadata = {**shared, "composed_from": [dict(a.metadata) for a in adapters]}
    return first._replace(lora_A=lora_A, lora_B=lora_B, metadata=metadata)


# ---- rank selection ----------------------------------------------------------------------------------
def rank_scores(adapter: GeneratedLora) -> dict[str, torch.Tensor]:
    """The importance `||A_r|| * ||B_r||` of every rank slice (paper appendix C).

    Args:
        adapter: the adapter to score.

    Returns:
        `{module: [L, R]}` float32 norm products.

    Example:
        ```python
        scores = rank_scores(adapter)["down_proj"]  # [L, R]
        ```
    """
    return {
        m: adapter.lora_A[m].float().norm(dim=-1) * adapter.lora_B[m].float().norm(dim=-1)
        for m in adapter.target_modules
    }


def _rank_index(adapter: GeneratedLora, index: RankIndex) -> dict[str, torch.Tensor]:
    """`{module: LongTensor [L, k]}` from shared rank indices `[k]` or a `{module: [k] or [L, k]}` mapping."""
    layers, rank = adapter.num_layers, adapter.rank
    if isinstance(index, dict):
        raw = {m: index[m] for m in adapter.target_modules}
    else:
        raw = dict.fromkeys(adapter.target_modules, index)
    out = {}
    for module, value in raw.items():
        idx = torch.as_tensor(value if torch.is_tensor(value) else list(value), dtype=torch.long).cpu()
        if idx.dim() == 1:
            idx = idx.expand(layers, -1)
        in_range = idx.numel() == 0 or (idx.min() >= 0 and idx.max() < rank)
        if idx.dim() != 2 or idx.shape[0] != layers or not in_range:
            raise ValueError(
                f"Rank indices for {module!r} must be [k] or [{layers}, k] with values in [0, {rank}), "
                f"got {idx.tolist() if idx.numel() < 20 else list(idx.shape)}."
            )
        if idx.shape[1] > 1 and (idx.sort(dim=1).values.diff(dim=1) == 0).any():
            raise ValueError(f"Rank indices for {module!r} repeat a rank.")
        out[module] = idx
    return out


def keep_ranks(adapter: GeneratedLora, index: RankIndex) -> GeneratedLora:
    """The adapter restricted to the given rank slices, in the given order.

    Args:
        adapter: the adapter to slice.
        index: rank indices shared by every layer and module (`[k]`), or `{module: [k] or [L, k]}`.

    Returns:
        An adapter of rank `k`.

    Example:
        ```python
        keep_ranks(adapter, [0, 3, 7]).rank  # 3
        ```
    """
    idx = _rank_index(adapter, index)
    if next(iter(idx.values())).shape[1] == 0:
        raise ValueError("keep_ranks() must keep at least one rank.")

    def take(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:  # [L, R, d] -> [L, k, d]
        return torch.gather(t, 1, i.to(t.device)[..., None].expand(-1, -1, t.shape[-1]))

    modules = adapter.target_modules
    return adapter._replace(
        lora_A={m: take(adapter.lora_A[m], idx[m]) for m in modules},
        lora_B={m: take(adapter.lora_B[m], idx[m]) for m in modules},
    )


def drop_ranks(adapter: GeneratedLora, index: RankIndex) -> GeneratedLora:
    """The adapter without the given rank slices, the others in their original order.

    Args:
        adapter: the adapter to slice.
        index: rank indices shared by every layer and module (`[k]`), or `{module: [k] or [L, k]}`.

    Returns:
        An adapter of rank `R - k`.

    Example:
        ```python
        drop_ranks(adapter, [0]).rank == adapter.rank - 1  # True
        ```
    """
    keep = {}
    for module, idx in _rank_index(adapter, index).items():
        mask = torch.ones(adapter.num_layers, adapter.rank, dtype=torch.bool)
        mask.scatter_(1, idx, False)
        keep[module] = mask.nonzero()[:, 1].view(adapter.num_layers, -1)
    return keep_ranks(adapter, keep)


def prune(adapter: GeneratedLora, k: int, *, strategy: str = "top", seed: int | None = None) -> GeneratedLora:
    """Select rank slices per layer and module by their norm product; see `GeneratedLora.prune`.

    Args:
        adapter: the adapter to prune.
        k: how many slices to keep (for `"remove_top"`: how many to remove).
        strategy: one of `PRUNE_STRATEGIES`: `"top"`, `"bottom"`, `"random"` or `"remove_top"`.
        seed: the random generator's seed for `"random"` (default 0).

    Returns:
        The pruned adapter; `metadata["rank_selection"]` records the strategy.

    Example:
        ```python
        small = prune(adapter, 4)  # the top 4 ranks of every layer and module
        ```
    """
    if strategy not in PRUNE_STRATEGIES:
        raise ValueError(f"prune(strategy=...) must be one of {PRUNE_STRATEGIES}, got {strategy!r}.")
    lower, upper = (0, adapter.rank - 1) if strategy == "remove_top" else (1, adapter.rank)
    if isinstance(k, bool) or not isinstance(k, int) or not lower <= k <= upper:
        raise ValueError(
            f"prune(k, strategy={strategy!r}) needs {lower} <= k <= {upper} for a rank-{adapter.rank} "
            f"adapter, got k={k!r}."
        )
    selection = {"strategy": strategy, "k": k}
    if strategy == "random":
        selection["seed"] = 0 if seed is None else seed
        generator = torch.Generator().manual_seed(selection["seed"])
        shape = (adapter.num_layers, adapter.rank)
        chosen = {
            m: torch.rand(shape, generator=generator).argsort(dim=1)[:, :k] for m in adapter.target_modules
        }
    else:
        largest = strategy != "bottom"
        chosen = {m: s.cpu().topk(k, dim=1, largest=largest).indices for m, s in rank_scores(adapter).items()}
    if strategy == "remove_top":
        pruned = drop_ranks(adapter, chosen)
    else:
        pruned = keep_ranks(adapter, {m: i.sort(dim=1).values for m, i in chosen.items()})
    pruned.metadata["rank_selection"] = selection
    return pruned


# ---- validation and merging ----------------------------------------------------------------------------
def check_compatible(adapter: GeneratedLora, model: torch.nn.Module, *, strict: bool = False) -> None:
    """Raise `AdapterMismatchError` unless `adapter` fits `model`; see `GeneratedLora.check_compatible`.

    Args:
        adapter: the adapter to check.
        model: the base VLM.
        strict: also require the base model names to match (otherwise a mismatch only warns).

    Raises:
        AdapterMismatchError: the family, target modules, layers or shapes differ.

    Example:
        ```python
        check_compatible(adapter, vlm, strict=True)
        ```
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        found = family_class(model_type)
        # an adapter that does not record its family is checked against the model's shapes only
        expected = family_class(adapter.base_model_type) if adapter.base_model_type else found
    except ValueError as error:
        raise AdapterMismatchError(
            f"The adapter was generated for a {adapter.base_model_type!r} model, and cannot be applied to a "
            f"{model_type!r} model: {error}"
        ) from None
    if expected is not found:
        raise AdapterMismatchError(
            f"The adapter was generated for a {adapter.base_model_type!r} model (text decoder at "
            f"{expected.layers_path}), but this model is a {model_type!r} model."
        )
    try:
        found.check_module_names(adapter.target_modules)
    except ValueError as error:
        raise AdapterMismatchError(str(error)) from None
    get_family(model).check_shapes(adapter.num_layers, adapter.module_shapes, "The adapter")
    name = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    if not same_base_model(adapter.base_model_name_or_path, name):
        message = (
            f"The adapter was generated for {adapter.base_model_name_or_path!r} but is applied to {name!r}; "
            "the shapes match, but a different base model gives different answers."
        )
        if strict:
            raise AdapterMismatchError(message)
        warnings.warn(message + " Pass strict=True to make this an error.", UserWarning, stacklevel=3)


#: the attribute of a model that holds the handle of the adapter merged into it
MERGED_ATTRIBUTE = "video2lora_merged"


class MergedAdapter:
    """What `GeneratedLora.merge_into` returns: it restores the original weights bit-exactly.

    Use it as a context manager, or call `unmerge()`.

    Args:
        model: the model whose weights were changed.
        backups: `{module path: original weight}` to copy back on `unmerge()`.
        adapter: the merged adapter, for reference.

    Example:
        ```python
        with adapter.merge_into(vlm):
            vlm.generate(**inputs)  # zero adapter overhead
        ```
    """

    def __init__(
        self, model: torch.nn.Module, backups: dict[str, torch.Tensor], adapter: GeneratedLora | None = None
    ):
        self.model = model
        self.adapter = adapter
        self._backups = backups

    @property
    def merged(self) -> bool:
        """Whether the adapter is still merged."""
        return bool(self._backups)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Copy the saved original weights back (a no-op once done).

        Example:
            ```python
            handle = adapter.merge_into(vlm)
            handle.unmerge()
            assert not handle.merged
            ```
        """
        for path, original in self._backups.items():
            self.model.get_submodule(path).weight.copy_(original)
        self._backups = {}
        if getattr(self.model, MERGED_ATTRIBUTE, None) is self:
            setattr(self.model, MERGED_ATTRIBUTE, None)

    @contextlib.contextmanager
    @torch.no_grad()
    def suspended(self) -> Iterator[None]:
        """Inside the block the model has its original weights; the merged ones come back after, bit-exactly.

        For a pass of the frozen model while an adapter is merged (for example a checkpoint whose
        answering protocol has the frozen model read what the adapter recalled).

        Returns:
            A context manager.

        Example:
            ```python
            with adapter.merge_into(vlm) as handle, handle.suspended():
                vlm.generate(**inputs)  # the frozen model
            ```
        """
        merged = {path: self.model.get_submodule(path).weight.detach().clone() for path in self._backups}
        try:
            for path, original in self._backups.items():
                self.model.get_submodule(path).weight.copy_(original)
            yield
        finally:
            for path, weight in merged.items():
                self.model.get_submodule(path).weight.copy_(weight)

    def __enter__(self) -> MergedAdapter:
        return self

    def __exit__(self, *exc) -> None:
        self.unmerge()


@torch.no_grad()
def merge_into(adapter: GeneratedLora, model: torch.nn.Module, *, strict: bool = False) -> MergedAdapter:
    """Add `s * B[l]^T A[l]` to the target weights; see `GeneratedLora.merge_into`.

    Args:
        adapter: the adapter to merge.
        model: the base VLM, changed in place.
        strict: see `check_compatible`.

    Returns:
        A `MergedAdapter` that restores the original weights.

    Raises:
        RuntimeError: the model already holds a merged adapter.

    Example:
        ```python
        with merge_into(adapter, vlm):
            out = vlm.generate(**inputs)
        ```
    """
    check_compatible(adapter, model, strict=strict)
    if merged_adapter(model) is not None:
        raise RuntimeError("This model already holds a merged adapter; unmerge it first.")
    family = get_family(model)
    handle = MergedAdapter(model, {}, adapter)
    try:
        for module in adapter.target_modules:
            for layer in range(adapter.num_layers):
                weight = family.target_module(layer, module).weight  # [d_out, d_in]
                compute = torch.promote_types(weight.dtype, torch.float32)
                a = adapter.lora_A[module][layer].to(weight.device, compute)  # [R, d_in]
                b = adapter.lora_B[module][layer].to(weight.device, compute)  # [R, d_out]
                handle._backups[family.module_path(layer, module)] = weight.detach().clone()
                weight.copy_((weight.to(compute) + adapter.scaling * (b.T @ a)).to(weight.dtype))
    except BaseException:
        handle.unmerge()
        raise
    setattr(model, MERGED_ATTRIBUTE, handle)
    return handle


def merged_adapter(model: torch.nn.Module) -> MergedAdapter | None:
    """The handle of the adapter merged into `model` by `merge_into`, or `None`."""
    return getattr(model, MERGED_ATTRIBUTE, None)


def unmerge(model: torch.nn.Module) -> None:
    """Restore the weights that `merge_into` changed in `model`, bit-exactly.

    Args:
        model: a model that holds an adapter merged by `merge_into`.

    Raises:
        RuntimeError: no adapter is merged into `model`.

    Example:
        ```python
        merge_into(adapter, vlm)
        unmerge(vlm)
        ```
    """
    handle = merged_adapter(model)
    if handle is None:
        raise RuntimeError("This model holds no adapter merged by GeneratedLora.merge_into().")
    handle.unmerge()
