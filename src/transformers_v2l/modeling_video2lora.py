"""The Video2LoRA Perceiver hypernetwork (paper section 3.3, Frames2LoRA SPEC section 2).

Einsum and shape letters used below:
    B batch (videos)       L text decoder layers     S context tokens    H base hidden size
    N = L * B rows         D latent size             Q encoder queries   P = M * r decoder queries
    M target modules       r generated rank          R = r (+ r bias ranks)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_video2lora import Video2LoraConfig
from .errors import CheckpointMismatchError, HubUnavailableError
from .lora import GeneratedLora
from .modeling_perceiver import (
    Video2LoraGatedMLP,
    Video2LoraResampler,
    Video2LoraResidualMLP,
    Video2LoraRMSNorm,
)
from .pipeline import Video2LoraPipelineMixin
from .runtime import Video2LoraRuntime

__all__ = ["Video2LoraHypernetwork", "Video2LoraOutput", "Video2LoraPreTrainedModel"]


@dataclass
class Video2LoraOutput(ModelOutput):
    """Adapters generated for a batch of videos.

    Args:
        lora_A: `{module: [B, L, R, d_in]}`, generated ranks followed by the bias ranks.
        lora_B: `{module: [B, L, R, d_out]}`, rank-major (transposed relative to `nn.Linear.weight`).
        intermediates: with `output_intermediates=True`, the named activations of every stage.

    Example:
        ```python
        out = hn(context_features=features, context_attention_mask=mask)
        out.lora_A["down_proj"].shape  # [B, L, R, d_in]
        ```
    """

    lora_A: dict[str, torch.Tensor] | None = None
    lora_B: dict[str, torch.Tensor] | None = None
    intermediates: dict[str, torch.Tensor] | None = None


class Video2LoraPreTrainedModel(PreTrainedModel):
    """The `PreTrainedModel` base of `Video2LoraHypernetwork`: config class and weight initialization.

    Args:
        config: a `Video2LoraConfig`.

    Example:
        ```python
        from transformers import AutoModel

        hn = AutoModel.from_pretrained("my-hypernet")  # a Video2LoraHypernetwork (registered by the library)
        isinstance(hn, Video2LoraPreTrainedModel)  # True
        ```
    """

    config_class = Video2LoraConfig
    base_model_prefix = "video2lora"
    main_input_name = "context_features"
    _no_split_modules = ["Video2LoraPerceiverLayer"]
    _supports_sdpa = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        config = self.config
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()
        elif isinstance(module, Video2LoraRMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, Video2LoraResampler):
            module.latents.normal_(0.0, config.initializer_range)
        elif isinstance(module, Video2LoraHypernetwork):
            r, size = config.lora_rank, config.latent_size
            d_lora = module.head.shape[-1]
            module.head.normal_(0.0, 0.5 / math.sqrt(size + d_lora * r))
            for name, (d_in, _) in config.module_shapes.items():
                module.scaler_A[name].fill_(1.0)
                module.scaler_B[name].zero_()  # the initial adapter is exactly zero
                if config.use_bias_lora:
                    module.bias_A[name].normal_(0.0, 0.2 / math.sqrt(d_in * r))
                    module.bias_B[name].zero_()


class Video2LoraHypernetwork(Video2LoraPipelineMixin, Video2LoraPreTrainedModel):
    r"""A Perceiver hypernetwork that turns a frozen VLM's layer-wise hidden states into a LoRA adapter.

    One Perceiver is shared by all layers (the layer axis is folded into the batch): an input projection,
    an encoder resampler with `Q` learned queries, and a decoder resampler with one query per target
    module and rank. A residual MLP, an L2 normalization and a per-layer head map each rank latent to
    `A [r, d_in]` and `B [r, d_out]`, scaled by learned per-layer, per-rank multipliers (one for `A`,
    zero for `B`, so the initial adapter is exactly zero). Learned bias ranks may be appended.

    The frozen base VLM, its family and the processor belong to `hn.runtime` (a `Video2LoraRuntime`):
    held by reference, never saved with the hypernetwork's weights, never trained. The pipeline
    methods (`internalize`, `answer`, `use_adapter`, `answer_with_video`) delegate to it; it loads the
    base model from `config.base_model_name_or_path` when one of them first needs it, unless given.

    Args:
        config: a `Video2LoraConfig`; if it is not bound to a base model yet, `base_model` binds it.
        base_model: an optional loaded VLM to reuse (for example a `SmolVLMForConditionalGeneration`).
        processor: an optional `Video2LoraProcessor`; loaded from the base model's files otherwise.

    Example:
        ```python
        config = Video2LoraConfig.from_base_model("HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        hn = Video2LoraHypernetwork(config)
        adapter = hn.internalize("clip.mp4")
        hn.answer(adapter, "What happens in the video?")
        ```
    """

    def __init__(self, config: Video2LoraConfig, base_model: nn.Module | None = None, processor=None):
        if not config.is_bound:
            source = base_model if base_model is not None else config.base_model_name_or_path
            if source is None:
                raise ValueError(
                    "Video2LoraConfig is not bound to a base model: use Video2LoraConfig.from_base_model(...) "
                    "or pass base_model=."
                )
            bound = Video2LoraConfig.from_base_model(source, **_unbound_fields(config))
            bound.processor_settings = dict(config.processor_settings)
            config = bound
        super().__init__(config)
        shapes = {m: tuple(s) for m, s in config.module_shapes.items()}
        num_layers, hidden, size, r = (
            config.num_hidden_layers,
            config.hidden_size,
            config.latent_size,
            config.lora_rank,
        )
        self.num_modules = len(shapes)
        self.input_projection = Video2LoraGatedMLP(hidden, hidden * config.input_expansion, size)
        self.encoder = Video2LoraResampler(
            config,
            num_queries=config.num_latent_queries,
            num_blocks=config.num_blocks,
            self_attn_per_block=config.num_self_attn_per_block,
        )
        self.decoder = Video2LoraResampler(
            config, num_queries=self.num_modules * r, num_blocks=1, self_attn_per_block=0
        )
        self.pre_head = nn.ModuleList(
            Video2LoraResidualMLP(config) for _ in range(config.num_pre_head_layers)
        )
        d_lora = max(d_in + d_out for d_in, d_out in shapes.values())
        self.head = nn.Parameter(torch.empty(num_layers, self.num_modules, size, d_lora))  # [L, M, D, d_lora]
        self.scaler_A = nn.ParameterDict({m: nn.Parameter(torch.empty(num_layers, r)) for m in shapes})
        self.scaler_B = nn.ParameterDict({m: nn.Parameter(torch.empty(num_layers, r)) for m in shapes})
        if config.use_bias_lora:
            self.bias_A = nn.ParameterDict(
                {m: nn.Parameter(torch.empty(num_layers, r, d[0])) for m, d in shapes.items()}
            )
            self.bias_B = nn.ParameterDict(
                {m: nn.Parameter(torch.empty(num_layers, r, d[1])) for m, d in shapes.items()}
            )
        self.post_init()
        self.runtime = Video2LoraRuntime(config, base_model=base_model, processor=processor)

    # ---- loading, saving, placement ---------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args,
        base_model: nn.Module | None = None,
        processor=None,
        base_model_kwargs: dict | None = None,
        **kwargs,
    ):
        """Load a hypernetwork checkpoint (safetensors + config.json, and its processor) from a folder or a Hub repo.

        The base VLM is loaded when a pipeline method first needs it (or by `load_base_model()`), with
        the same `device_map` and `dtype` as the hypernetwork unless `base_model_kwargs` says otherwise.

        Args:
            pretrained_model_name_or_path: a local folder or a Hub repo id (`None` with `config=` and `state_dict=`).
            base_model: reuse a loaded VLM instead of loading `config.base_model_name_or_path`.
            processor: reuse a `Video2LoraProcessor`; by default the one saved with the checkpoint.
            base_model_kwargs: keyword arguments for loading the base VLM (for example `{"device_map": "auto"}`).
            **kwargs: passed to `PreTrainedModel.from_pretrained` (`revision`, `dtype`, `device_map`,
                `output_loading_info`, ...).

        Returns:
            The `Video2LoraHypernetwork` (with `output_loading_info=True`, the pair `(model, loading_info)`).

        Raises:
            HubUnavailableError: a Hub repo id that is not cached while the Hub cannot be reached.

        Example:
            ```python
            hn = Video2LoraHypernetwork.from_pretrained("my-hypernet", device_map="cuda", dtype=torch.bfloat16)
            ```
        """
        from .hub import OFFLINE_MODEL_HINT, hub_unavailable_error, hub_unreachable, resolve_commit_hash

        path = None if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
        hub = {key: kwargs.get(key) for key in ("revision", "token", "cache_dir")}
        local_files_only = bool(kwargs.get("local_files_only", False))
        revision = None
        if path is not None:
            try:  # before loading: an unreachable Hub gets our error, not transformers' generic OSError
                revision = resolve_commit_hash(path, **hub, local_files_only=local_files_only)
            except HubUnavailableError as error:
                raise HubUnavailableError(f"{error}{OFFLINE_MODEL_HINT}") from error
        try:
            loaded = super().from_pretrained(path, *model_args, **kwargs)
        except OSError as error:
            if path is None or os.path.isdir(path) or not hub_unreachable(error):
                raise
            raise hub_unavailable_error(
                path, "model.safetensors", error, local_files_only=local_files_only, hint=OFFLINE_MODEL_HINT
            ) from error
        model, info = loaded if kwargs.get("output_loading_info") else (loaded, None)
        placement = {key: kwargs[key] for key in ("device_map", "dtype") if kwargs.get(key) is not None}
        source = None
        if path is not None:
            hub_options = {
                k: kwargs[k] for k in ("revision", "token", "cache_dir", "subfolder") if k in kwargs
            }
            source = {"path": path, **hub_options, "local_files_only": local_files_only}
        model.runtime = Video2LoraRuntime(
            model.config,
            base_model=base_model,
            processor=processor,
            base_model_kwargs={**placement, **(base_model_kwargs or {})},
            processor_source=source,
        )
        model.runtime.hub_revision = revision
        return (model, info) if info is not None else model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *args,
        push_to_hub: bool = False,
        model_card_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        """Save the hypernetwork (config.json + safetensors, no base-model weights), its processor and a model card.

        The processor (tokenizer, `processor_config.json` with frames, resolution, instruction and
        answering protocol) is saved beside the weights, so the folder alone says how to use it.

        Args:
            save_directory: the output folder.
            push_to_hub: also upload the hypernetwork, as `push_to_hub` does (`repo_id=`, `base_model_id=`,
                `private=`, `revision=`, ... select where); a failed upload leaves the folder intact.
            model_card_kwargs: extra model-card fields (for example `datasets=`, `training=`).
            **kwargs: passed to `PreTrainedModel.save_pretrained`, except the push options `repo_id`,
                `base_model_id`, `private`, `token`, `revision`, `create_pr`, `commit_message`,
                `commit_description`.

        Raises:
            transformers_v2l.hub.BaseModelIdError: `push_to_hub` with a base model recorded as a local path
                and no `base_model_id` (raised before anything is written).

        Example:
            ```python
            hn.save_pretrained("my-hypernet")
            hn.save_pretrained("my-hypernet", push_to_hub=True, repo_id="me/my-hypernet",
                               base_model_id="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
            ```
        """
        from .cards import save_hypernetwork_card
        from .hub import publishable_base_model, push_hypernetwork_to_hub

        push_keys = ("private", "token", "revision", "create_pr", "commit_message", "commit_description")
        push_kwargs = {key: kwargs.pop(key) for key in push_keys if key in kwargs}
        repo_id = kwargs.pop("repo_id", None)
        base_model_id = kwargs.pop("base_model_id", None)
        if push_to_hub:  # a base model nobody can download is refused before anything is written
            publishable_base_model(self.config.base_model_name_or_path, base_model_id, kind="hypernetwork")
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        processor = self.runtime.saved_processor()
        if processor is not None:
            processor.save_pretrained(save_directory)
        card_kwargs = {"processor": processor, **(model_card_kwargs or {})}
        save_hypernetwork_card(save_directory, self.config, repo_id=repo_id, **card_kwargs)
        if push_to_hub:
            local = f"The local folder {save_directory} is saved and complete; the upload did not change it."
            if "max_shard_size" in kwargs:
                push_kwargs["max_shard_size"] = kwargs["max_shard_size"]
            push_hypernetwork_to_hub(
                self,
                repo_id or Path(save_directory).absolute().name,
                base_model_id=base_model_id,
                model_card_kwargs=model_card_kwargs,
                local_description=local,
                **push_kwargs,
            )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload Video2LoRA hypernetwork",
        commit_description: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        token: str | bool | None = None,
        max_shard_size: str = "5GB",
        tags: list[str] | None = None,
        base_model_id: str | None = None,
        model_card_kwargs: dict | None = None,
    ):
        """Upload config.json, the safetensors weights, the processor and a model card in one commit.

        The pushed config.json and model card name the base model by its Hub id, never by a local path.

        Args:
            repo_id: the Hub repository, created if needed.
            commit_message: the commit title.
            commit_description: the commit body.
            private: create the repository private.
            revision: the branch to push to.
            create_pr: open a pull request instead of committing to the branch.
            token: a Hub token; defaults to the logged-in one.
            max_shard_size: largest safetensors shard.
            tags: extra tags for the model card, as `PreTrainedModel.push_to_hub` takes them.
            base_model_id: the base model's Hub id, needed when the base model was loaded from a folder
                (`config.base_model_name_or_path` is a local path; checked on the Hub first). The pushed
                config.json and card name it; the hypernetwork and its config keep the path.
            model_card_kwargs: extra model-card fields (for example `datasets=`).

        Returns:
            The `CommitInfo` of the upload.

        Raises:
            transformers_v2l.hub.BaseModelIdError: the base model is a local path and no `base_model_id`
                was given, or `base_model_id` is not a model on the Hub (raised before any upload).
            transformers_v2l.hub.HubPushError: the Hub refused or could not be reached; the message says
                how to retry.

        Example:
            ```python
            hn.push_to_hub("me/video2lora-smolvlm2-500m", tags=["lecture-videos"])
            # a hypernetwork whose base model was loaded from a folder: name the base model's Hub id
            hn.push_to_hub("me/video2lora-smolvlm2-500m", base_model_id="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
            ```
        """
        from .hub import push_hypernetwork_to_hub

        card_kwargs = dict(model_card_kwargs or {})
        if tags:
            card_kwargs["tags"] = [*card_kwargs.get("tags", []), *tags]
        return push_hypernetwork_to_hub(
            self,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            revision=revision,
            create_pr=create_pr,
            token=token,
            max_shard_size=max_shard_size,
            base_model_id=base_model_id,
            model_card_kwargs=card_kwargs,
        )

    def to(self, *args, **kwargs):
        """`nn.Module.to` for the hypernetwork; a device also moves the base VLM (unless it is dispatched).

        Args:
            *args: as `torch.nn.Module.to` (a device, a dtype, or both).
            **kwargs: as `torch.nn.Module.to`.

        Returns:
            The hypernetwork.

        Example:
            ```python
            hn.to("cuda")  # the hypernetwork and the base VLM
            ```
        """
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        model = super().to(*args, **kwargs)
        if device is not None:
            self.runtime.to(device)
        return model

    def cuda(self, device: int | torch.device | None = None):
        """Move the hypernetwork and the base VLM to a CUDA device (see `to`).

        Args:
            device: the CUDA device; defaults to the current one.

        Returns:
            The hypernetwork.

        Example:
            ```python
            hn.cuda()
            ```
        """
        return self.to(torch.device("cuda", device) if isinstance(device, int) else (device or "cuda"))

    def cpu(self):
        """Move the hypernetwork and the base VLM to the CPU (see `to`).

        Returns:
            The hypernetwork.

        Example:
            ```python
            hn.cpu()
            ```
        """
        return self.to("cpu")

    # ------------------------------------------------------------------------------------
    def forward(
        self,
        context_features: torch.Tensor,
        context_attention_mask: torch.Tensor | None = None,
        output_intermediates: bool = False,
    ) -> Video2LoraOutput:
        r"""Generate one adapter per video from the base model's layer-wise hidden states.

        Args:
            context_features: `[B, L, S, H]`, the residual stream entering each decoder layer.
            context_attention_mask: `[B, S]`, 1 for real tokens and 0 for padding.
            output_intermediates: also return every stage's activations (for debugging and conversion tests).

        Returns:
            `Video2LoraOutput` with `lora_A[m]` `[B, L, R, d_in]` and `lora_B[m]` `[B, L, R, d_out]`.

        Example:
            ```python
            features, mask = hn.extract_features(**inputs)
            out = hn(context_features=features, context_attention_mask=mask)
            ```
        """
        config = self.config
        batch, num_layers, seq, hidden = context_features.shape
        if num_layers != config.num_hidden_layers or hidden != config.hidden_size:
            raise CheckpointMismatchError(
                f"context_features must be [B, {config.num_hidden_layers}, S, {config.hidden_size}] for this "
                f"hypernetwork, got {list(context_features.shape)}."
            )
        dtype = self.head.dtype
        rows = (
            context_features.to(dtype).transpose(0, 1).reshape(num_layers * batch, seq, hidden)
        )  # [N, S, H]
        mask = None
        if context_attention_mask is not None:
            mask = context_attention_mask.bool().repeat(num_layers, 1)  # [N, S], row n = l * B + b
        projected = self.input_projection(rows)  # [N, S, D]
        encoded = self.encoder(projected, mask)  # [N, Q, D]
        decoded = self.decoder(encoded)  # [N, M * r, D]
        r = config.lora_rank
        latents = decoded.view(num_layers, batch, self.num_modules, r, -1).transpose(0, 1)  # [B, L, M, r, D]
        pre_head = latents
        for block in self.pre_head:
            pre_head = block(pre_head)
        normalized = (
            pre_head / pre_head.norm(dim=-1, keepdim=True) if config.normalize_head_input else pre_head
        )
        generated = torch.einsum("blmrd,lmde->blmre", normalized, self.head)  # [B, L, M, r, d_lora]

        lora_A, lora_B, raw_A, raw_B = {}, {}, {}, {}
        for t, (module, (d_in, d_out)) in enumerate(sorted(config.module_shapes.items())):
            raw_A[module] = (
                generated[:, :, t, :, :d_in] * self.scaler_A[module][None, :, :, None]
            )  # [B, L, r, d_in]
            raw_B[module] = (
                generated[:, :, t, :, d_in : d_in + d_out] * self.scaler_B[module][None, :, :, None]
            )
            lora_A[module], lora_B[module] = raw_A[module], raw_B[module]
            if config.use_bias_lora:
                lora_A[module] = torch.cat(
                    [raw_A[module], self.bias_A[module].expand(batch, -1, -1, -1)], dim=2
                )
                lora_B[module] = torch.cat(
                    [raw_B[module], self.bias_B[module].expand(batch, -1, -1, -1)], dim=2
                )

        intermediates = None
        if output_intermediates:
            intermediates = {
                "input_projection": projected,
                "encoder": encoded,
                "decoder": decoded,
                "pre_head": pre_head,
                "head_input": normalized,
                "head_output": generated,
                **{f"raw_A.{m}": t for m, t in raw_A.items()},
                **{f"raw_B.{m}": t for m, t in raw_B.items()},
            }
        return Video2LoraOutput(lora_A=lora_A, lora_B=lora_B, intermediates=intermediates)

    def adapters_from_output(
        self, output: Video2LoraOutput, metadata: list[dict] | None = None
    ) -> list[GeneratedLora]:
        """Split a batch `Video2LoraOutput` into one `GeneratedLora` per video.

        Args:
            output: what `forward` returned for `B` videos.
            metadata: one provenance dict per video (recorded in the adapters' cards).

        Returns:
            `B` adapters bound to this hypernetwork's base model (`runtime.base_model_name`) and scaling.

        Example:
            ```python
            adapters = hn.adapters_from_output(hn(context_features=features), [{"video": "a.mp4"}])
            ```
        """
        rows = next(iter(output.lora_A.values())).shape[0]
        metadata = metadata if metadata is not None else [{} for _ in range(rows)]
        if len(metadata) != rows:
            raise ValueError(f"adapters_from_output() got {len(metadata)} metadata dicts for {rows} videos.")
        return [
            GeneratedLora(
                lora_A={m: t[row] for m, t in output.lora_A.items()},  # [L, R, d_in]
                lora_B={m: t[row] for m, t in output.lora_B.items()},  # [L, R, d_out]
                scaling=self.config.scaling,
                base_model_name_or_path=self.runtime.base_model_name,
                base_model_type=self.config.base_model_type,
                metadata=meta,
            )
            for row, meta in enumerate(metadata)
        ]


def _unbound_fields(config: Video2LoraConfig) -> dict:
    """The architecture fields of an unbound config, to re-create it bound to a base model."""
    skip = {"base_model_type", "num_hidden_layers", "hidden_size", "module_shapes"}
    return {name: getattr(config, name) for name in Video2LoraConfig.field_help() if name not in skip}


AutoModel.register(Video2LoraConfig, Video2LoraHypernetwork, exist_ok=True)
