"""Generated LoRA adapters: the tensors one video becomes, as standard PEFT adapters.

A `GeneratedLora` holds, for every target module `m`, `lora_A[m]` `[L, R, d_in]` and `lora_B[m]`
`[L, R, d_out]` (rank-major, as the paper writes them) and a scaling `s`; layer `l` of module `m`
adds `s * (x @ A[l].T) @ B[l]` to its output. On disk it is a plain PEFT LoRA adapter
(SPEC section 3.3): `lora_A.weight = A[l]` `[R, d_in]`, `lora_B.weight = B[l].T` `[d_out, R]`,
`r = R` and `lora_alpha = s * R`, so that PEFT's `lora_alpha / r` is `s`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from . import adapter_ops, peft_state_dict
from .configuration_generated_lora import GeneratedLoraConfig

__all__ = ["GeneratedLora", "GeneratedLoraConfig"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
CARD_NAME = "README.md"


def _validate_tensors(adapter: GeneratedLora) -> None:
    modules_a, modules_b = set(adapter.lora_A), set(adapter.lora_B)
    if not modules_a or modules_a != modules_b:
        raise ValueError(
            f"GeneratedLora.lora_A and lora_B must cover the same modules, got {sorted(modules_a)} and {sorted(modules_b)}."
        )
    layers_ranks = None
    for module in sorted(modules_a):
        a, b = adapter.lora_A[module], adapter.lora_B[module]
        if a.dim() != 3 or b.dim() != 3 or a.shape[:2] != b.shape[:2]:
            raise ValueError(
                f"GeneratedLora.lora_A[{module!r}] must be [L, R, d_in] and lora_B[{module!r}] [L, R, d_out] with the same "
                f"L and R, got {list(a.shape)} and {list(b.shape)}."
            )
        if layers_ranks is not None and a.shape[:2] != layers_ranks:
            raise ValueError(
                f"Every module of a GeneratedLora must have the same [L, R], got {list(a.shape[:2])} and {list(layers_ranks)}."
            )
        layers_ranks = a.shape[:2]


@dataclass(eq=False)
class GeneratedLora:
    """The LoRA adapter generated for one video, a standard PEFT LoRA adapter on disk.

    For every target module `m`, `lora_A[m]` is `[L, R, d_in]` and `lora_B[m]` is `[L, R, d_out]`
    (rank-major, as the paper writes them), and the update of layer `l` is
    `delta_y = scaling * (x @ lora_A[m][l].T) @ lora_B[m][l]`.

    Args:
        lora_A: `{module: [L, R, d_in]}`.
        lora_B: `{module: [L, R, d_out]}`.
        scaling: the multiplier `s` of the update.
        base_model_name_or_path: the base VLM the adapter was generated for.
        base_model_type: that VLM's family (`transformers_v2l.families`), which gives the PEFT module paths.
        metadata: provenance, written to the model card and never to `adapter_config.json`:
            `video_sha256`, `frame_indices`, `resolution`, `hypernetwork`, `hypernetwork_revision`,
            `instruction`, and any other JSON-friendly entries.

    Example:
        ```python
        adapter = hn.internalize("clip.mp4")
        adapter.save_pretrained("clip-adapter")
        adapter.push_to_hub("me/clip-adapter", private=True)
        GeneratedLora.from_pretrained("me/clip-adapter").prune(8)
        ```
    """

    lora_A: dict[str, torch.Tensor]
    lora_B: dict[str, torch.Tensor]
    scaling: float
    base_model_name_or_path: str | None = None
    base_model_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _validate_tensors(self)
        self.scaling = float(self.scaling)
        if self.base_model_type is not None:
            from .families import family_class

            self.base_model_type = family_class(self.base_model_type).name

    # ---- shape and size ---------------------------------------------------------------------------
    @property
    def target_modules(self) -> list[str]:
        """Sorted names of the target modules, for example `["down_proj"]`."""
        return sorted(self.lora_A)

    @property
    def num_layers(self) -> int:
        """Number of text decoder layers `L` the adapter covers."""
        return next(iter(self.lora_A.values())).shape[0]

    @property
    def rank(self) -> int:
        """Rank `R` of every layer and module (generated plus bias ranks)."""
        return next(iter(self.lora_A.values())).shape[1]

    @property
    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """`{module: (d_in, d_out)}` of every target module."""
        return {m: (self.lora_A[m].shape[-1], self.lora_B[m].shape[-1]) for m in self.target_modules}

    @property
    def nbytes(self) -> int:
        """Bytes held by the adapter tensors."""
        tensors = [*self.lora_A.values(), *self.lora_B.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the adapter tensors."""
        return next(iter(self.lora_A.values())).dtype

    @property
    def device(self) -> torch.device:
        """The device of the adapter tensors."""
        return next(iter(self.lora_A.values())).device

    def _replace(self, lora_A=None, lora_B=None, scaling=None, metadata=None) -> GeneratedLora:
        return GeneratedLora(
            lora_A=self.lora_A if lora_A is None else lora_A,
            lora_B=self.lora_B if lora_B is None else lora_B,
            scaling=self.scaling if scaling is None else scaling,
            base_model_name_or_path=self.base_model_name_or_path,
            base_model_type=self.base_model_type,
            metadata=dict(self.metadata) if metadata is None else metadata,
        )

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> GeneratedLora:
        """A copy with tensors cast to `dtype` and/or moved to `device`.

        Args:
            dtype: the new dtype; `None` keeps the current one.
            device: the new device; `None` keeps the current one.

        Returns:
            A new `GeneratedLora` (the metadata is copied).

        Example:
            ```python
            small = adapter.to(torch.bfloat16)  # half the bytes
            ```
        """
        return self._replace(
            lora_A={m: t.to(device=device, dtype=dtype) for m, t in self.lora_A.items()},
            lora_B={m: t.to(device=device, dtype=dtype) for m, t in self.lora_B.items()},
        )

    def delta_weight(self, module: str) -> torch.Tensor:
        """The dense update `s * B[l]^T A[l]` of every layer, in float32 or wider.

        Args:
            module: a target module name, for example `"down_proj"`.

        Returns:
            A `[L, d_out, d_in]` tensor, the change of each layer's `weight`.

        Example:
            ```python
            delta = adapter.delta_weight("down_proj")  # [L, d_out, d_in]
            ```
        """
        dtype = torch.promote_types(self.dtype, torch.float32)
        a, b = self.lora_A[module].to(dtype), self.lora_B[module].to(dtype)
        return self.scaling * b.transpose(1, 2) @ a

    # ---- PEFT format ------------------------------------------------------------------------------
    @property
    def config(self) -> GeneratedLoraConfig:
        """The PEFT config written to `adapter_config.json`."""
        return GeneratedLoraConfig.for_generated(
            rank=self.rank,
            scaling=self.scaling,
            target_modules=self.target_modules,
            base_model_type=self.base_model_type,
            base_model_name_or_path=self.base_model_name_or_path,
        )

    def to_peft_state_dict(self) -> dict[str, torch.Tensor]:
        """The PEFT state dict: `base_model.model.<module path>.lora_A.weight` `[R, d_in]` and `.lora_B.weight` `[d_out, R]`.

        Returns:
            `{PEFT key: tensor}`, with copies of the adapter's tensors.

        Example:
            ```python
            sd = adapter.to_peft_state_dict()
            sd["base_model.model.model.text_model.layers.0.mlp.down_proj.lora_B.weight"].shape  # [d_out, R]
            ```
        """
        return peft_state_dict.build(self)

    @classmethod
    def from_peft_state_dict(
        cls,
        state_dict: dict[str, torch.Tensor],
        config: LoraConfig | dict[str, Any],
        *,
        metadata: dict[str, Any] | None = None,
        base_model_type: str | None = None,
    ) -> GeneratedLora:
        """Rebuild a `GeneratedLora` from a PEFT LoRA state dict and its config.

        Works for adapters written by plain PEFT when every text decoder layer from 0 to the last one
        has the same rank for every module, and the update is `lora_alpha / r` (or `lora_alpha / sqrt(r)`
        with rsLoRA), with no DoRA, no LoRA bias and no extra saved modules.

        Args:
            state_dict: PEFT keys and tensors.
            config: the adapter's `LoraConfig` or `adapter_config.json` content.
            metadata: provenance to attach.
            base_model_type: the VLM family; inferred from the module paths by default.

        Returns:
            The `GeneratedLora`.

        Raises:
            AdapterMismatchError: the adapter cannot be represented (names what and why).

        Example:
            ```python
            from peft import get_peft_model_state_dict

            adapter = GeneratedLora.from_peft_state_dict(
                get_peft_model_state_dict(peft_model), peft_model.peft_config["default"]
            )
            ```
        """
        lora_A, lora_B, scaling, family = peft_state_dict.parse(state_dict, config, base_model_type)
        cfg = config if isinstance(config, dict) else config.to_dict()
        return cls(
            lora_A=lora_A,
            lora_B=lora_B,
            scaling=scaling,
            base_model_name_or_path=cfg.get("base_model_name_or_path"),
            base_model_type=family,
            metadata=dict(metadata or {}),
        )

    # ---- files and the Hub --------------------------------------------------------------------------
    def model_card(self, repo_id: str | None = None):
        """The `huggingface_hub.ModelCard` written as README.md (see `cards.adapter_model_card`).

        Args:
            repo_id: the Hub repository the card will live in, for the usage snippet; `None` uses a
                placeholder.

        Returns:
            A `huggingface_hub.ModelCard` with the `video2lora:` provenance block.

        Example:
            ```python
            print(adapter.model_card("me/clip-adapter").content)
            ```
        """
        from .cards import adapter_model_card

        return adapter_model_card(
            base_model=self.base_model_name_or_path,
            target_regex=self.config.target_modules,
            target_modules=self.target_modules,
            num_layers=self.num_layers,
            rank=self.rank,
            scaling=self.scaling,
            dtype=str(self.dtype).removeprefix("torch."),
            nbytes=self.nbytes,
            provenance={"base_model_type": self.base_model_type, **self.metadata},
            repo_id=repo_id,
        )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **push_kwargs,
    ) -> Path:
        """Write `adapter_config.json`, `adapter_model.safetensors` and `README.md`, atomically.

        Args:
            save_directory: the folder (created, or updated in place with a rename).
            push_to_hub: also upload the adapter, as `push_to_hub` does; a failed upload leaves the folder intact.
            repo_id: the Hub repository; defaults to the folder name.
            **push_kwargs: `base_model_id`, `private`, `revision`, `commit_message`, `create_pr`, `token`.

        Returns:
            The folder.

        Raises:
            transformers_v2l.hub.BaseModelIdError: `push_to_hub` with a base model loaded from a folder and
                no `base_model_id` (raised before anything is written).

        Example:
            ```python
            adapter.save_pretrained("clip-adapter")
            ```
        """
        from .hub import atomic_folder, publishable_base_model, push_adapter_to_hub

        target = Path(save_directory)
        if push_to_hub:  # a base model nobody can download is refused before anything is written
            publishable_base_model(self.base_model_name_or_path, push_kwargs.get("base_model_id"))
        with atomic_folder(target) as tmp:
            save_file(self.to_peft_state_dict(), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            self.config.save_pretrained(str(tmp))
            self.model_card(repo_id).save(tmp / CARD_NAME)
        if push_to_hub:
            local = f"The local folder {target} is saved and complete; the upload did not change it."
            push_adapter_to_hub(
                self, repo_id or target.absolute().name, local_description=local, **push_kwargs
            )
        return target

    def push_to_hub(
        self,
        repo_id: str,
        *,
        base_model_id: str | None = None,
        commit_message: str = "Upload Video2LoRA adapter",
        commit_description: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        token: str | bool | None = None,
    ):
        """Upload the adapter (PEFT files plus model card) to a Hub model repository in one commit.

        The pushed `adapter_config.json` and model card name the base model by its Hub id, never by a
        local path; the adapter itself is not changed.

        Args:
            repo_id: `"namespace/name"`; created if missing.
            base_model_id: the base model's Hub id, needed when the base model was loaded from a folder
                (checked on the Hub first). Defaults to the recorded `base_model_name_or_path` when
                that is a Hub id.
            commit_message: the commit title.
            commit_description: the commit body.
            private: make a new repository private.
            revision: the branch to commit to (created from `main` if missing).
            create_pr: open a pull request instead of committing to the branch.
            token: a Hub token; defaults to `HF_TOKEN` or the stored login.

        Returns:
            The `huggingface_hub.CommitInfo` (`.oid` is the new revision).

        Raises:
            transformers_v2l.hub.BaseModelIdError: the base model is a local path and no `base_model_id`
                was given, or `base_model_id` is not a model on the Hub (raised before any upload).
            transformers_v2l.hub.HubPushError: the Hub refused or could not be reached; the message says
                how to retry.

        Example:
            ```python
            info = adapter.push_to_hub("me/clip-adapter", private=True)
            # an adapter of a base model loaded from a folder: name the base model's Hub id
            adapter.push_to_hub("me/clip-adapter", base_model_id="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
            GeneratedLora.from_pretrained("me/clip-adapter", revision=info.oid)
            ```
        """
        from .hub import push_adapter_to_hub

        return push_adapter_to_hub(
            self,
            repo_id,
            base_model_id=base_model_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            revision=revision,
            create_pr=create_pr,
            token=token,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        subfolder: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> GeneratedLora:
        """Load an adapter from a folder or a Hub repository (ours, or a plain PEFT LoRA with per-layer A/B).

        Provenance is read back from the model card's `video2lora:` YAML block when there is one.

        Args:
            name_or_path: a local folder or a Hub repo id.
            revision: a branch, tag or commit of the Hub repository.
            subfolder: a folder inside the repository.
            token: a Hub token for private repositories.
            cache_dir: the Hub cache; defaults to `HF_HUB_CACHE`.
            local_files_only: only use the local cache.
            device: where to put the tensors.
            dtype: cast the tensors; default keeps the stored dtype.

        Returns:
            The `GeneratedLora`.

        Raises:
            HubUnavailableError: the Hub cannot be reached and the files are not cached.
            AdapterMismatchError: the files are not a LoRA adapter a generated adapter can represent.

        Example:
            ```python
            adapter = GeneratedLora.from_pretrained("me/clip-adapter", revision="main")
            ```
        """
        from .cards import read_card_metadata
        from .hub import resolve_repo_files

        files = resolve_repo_files(
            name_or_path,
            [CONFIG_NAME, WEIGHTS_NAME],
            optional=[CARD_NAME],
            subfolder=subfolder,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        config = json.loads(files[CONFIG_NAME].read_text())
        state = load_file(str(files[WEIGHTS_NAME]), device=str(device))
        if dtype is not None:
            state = {k: v.to(dtype) for k, v in state.items()}
        block = dict(read_card_metadata(files[CARD_NAME]).get("video2lora") or {})
        for key in ("target_modules", "num_layers", "rank", "scaling"):  # derived from the tensors
            block.pop(key, None)
        family = block.pop("base_model_type", None)
        return cls.from_peft_state_dict(state, config, metadata=block, base_model_type=family)

    # ---- algebra (paper section 5.6 and appendix C); implementations in adapter_ops.py ---------------
    @classmethod
    def compose(cls, adapters: Sequence[GeneratedLora]) -> GeneratedLora:
        """Concatenate adapters in rank space: the result's update is the sum of their updates.

        This is the paper's chunk composition (section 5.6): internalize chunks of one video
        separately and concatenate their ranks. Different scalings are folded into `B`
        (`B_i * s_i / s_0`), so the result keeps the first adapter's scaling.

        Args:
            adapters: adapters for the same base model, layers and modules.

        Returns:
            An adapter of rank `sum(R_i)`; its metadata lists the parts under `composed_from`.

        Raises:
            AdapterMismatchError: the adapters differ in family, layers, shapes or base model.

        Example:
            ```python
            whole = GeneratedLora.compose(hn.internalize([first_half, second_half]))
            ```
        """
        return adapter_ops.compose(adapters)

    def rank_scores(self) -> dict[str, torch.Tensor]:
        """The importance `||A_r|| * ||B_r||` of every rank slice (paper appendix C).

        Returns:
            `{module: [L, R]}` float32 norm products.

        Example:
            ```python
            adapter.rank_scores()["down_proj"].argmax(dim=1)  # the strongest rank of each layer
            ```
        """
        return adapter_ops.rank_scores(self)

    def keep_ranks(self, index: adapter_ops.RankIndex) -> GeneratedLora:
        """The adapter restricted to some rank slices.

        Args:
            index: rank indices shared by every layer and module (`[k]`), or `{module: [k] or [L, k]}`.

        Returns:
            An adapter of rank `k`, slices in the given order.

        Example:
            ```python
            adapter.keep_ranks([0, 3, 7])
            ```
        """
        return adapter_ops.keep_ranks(self, index)

    def drop_ranks(self, index: adapter_ops.RankIndex) -> GeneratedLora:
        """The adapter without some rank slices (the complement of `keep_ranks`, order kept).

        Args:
            index: rank indices shared by every layer and module (`[k]`), or `{module: [k] or [L, k]}`.

        Returns:
            An adapter of rank `R - k`.

        Example:
            ```python
            adapter.drop_ranks([0, 1])
            ```
        """
        return adapter_ops.drop_ranks(self, index)

    def prune(self, k: int, *, strategy: str = "top", seed: int | None = None) -> GeneratedLora:
        """Select rank slices per layer and module by their norm product (paper appendix C).

        Args:
            k: how many slices to keep (for `"remove_top"`: how many to remove).
            strategy: `"top"` (keep the k highest scores), `"bottom"` (the k lowest), `"random"`
                (k at random, reproducible with `seed`) or `"remove_top"` (drop the k highest).
            seed: the random generator's seed for `"random"` (default 0).

        Returns:
            The pruned adapter, kept slices in their original order; `metadata["rank_selection"]`
            records the strategy.

        Example:
            ```python
            small = adapter.prune(8)  # top-8 per layer and module
            ablation = adapter.prune(1, strategy="remove_top")
            ```
        """
        return adapter_ops.prune(self, k, strategy=strategy, seed=seed)

    # ---- applying to a model --------------------------------------------------------------------------
    def check_compatible(self, model: torch.nn.Module, *, strict: bool = False) -> None:
        """Raise `AdapterMismatchError` unless the adapter fits `model`: family, modules, layers and shapes.

        A different `base_model_name_or_path` with identical shapes only warns (`UserWarning`): names
        differ for the same weights (a local path and a Hub id, a mirror), and the shapes already
        guarantee the adapter runs. With `strict=True` it raises.

        Args:
            model: the base VLM.
            strict: also require the base model names to match.

        Example:
            ```python
            adapter.check_compatible(vlm)
            ```
        """
        adapter_ops.check_compatible(self, model, strict=strict)

    def merge_into(self, model: torch.nn.Module, *, strict: bool = False) -> adapter_ops.MergedAdapter:
        """Add `s * B[l]^T A[l]` to the target weights, for answering with zero adapter overhead.

        The sum is computed in float32 and stored in the weight's dtype. The original weights are
        kept (one copy of the target weights), so unmerging restores them bit-exactly.

        Args:
            model: the base VLM (changed in place; `check_compatible` first).
            strict: see `check_compatible`.

        Returns:
            A `MergedAdapter`: a context manager, or call `.unmerge()` (or `GeneratedLora.unmerge(model)`).

        Example:
            ```python
            with adapter.merge_into(vlm):
                out = vlm.generate(**inputs)
            ```
        """
        return adapter_ops.merge_into(self, model, strict=strict)

    @staticmethod
    def unmerge(model: torch.nn.Module) -> None:
        """Restore the weights that `merge_into` changed in `model`, bit-exactly.

        Args:
            model: a model that holds an adapter merged by `merge_into`.

        Raises:
            RuntimeError: no adapter is merged into `model`.

        Example:
            ```python
            adapter.merge_into(vlm)
            GeneratedLora.unmerge(vlm)
            ```
        """
        adapter_ops.unmerge(model)
