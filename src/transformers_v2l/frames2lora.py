"""Reading the authors' released Frames2LoRA checkpoints safely, and converting them.

The Video2LoRA authors released their trained hypernetworks as `torch.save` files
(`MananSuri27/Frames2LoRA-SmolVLM-ckpts`). A `.pt` file is a zip archive whose `data.pkl` is a
pickle, and unpickling can run any code the file names. The authors' own loader calls
`torch.load(weights_only=False)`. This module never does: a restricted unpickler resolves only the
globals the format needs (`ALLOWED_GLOBALS`) and refuses any other one with an
`UnsafeCheckpointError` before anything runs. The authors' config dataclasses become inert
`PickledConfig` stand-ins, so neither their package nor peft is imported.

`convert_frames2lora` (and `v2l convert`) reads the file, builds a `Video2LoraConfig` from the sizes
recorded in the file, maps every key onto `Video2LoraHypernetwork` and checks every shape. It also
records the provenance in `config.source`, and the preprocessing the checkpoints were trained with
in the processor settings (`resize_mode="frames2lora"`), saved with the converted hypernetwork.
The converter depends on the model, never the reverse.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from .configuration_video2lora import LEGACY_PROCESSOR_FIELDS, Video2LoraConfig
from .errors import CheckpointMismatchError, HubUnavailableError
from .frames2lora_checkpoint import Frames2LoraInfo, read_frames2lora
from .frames2lora_pickle import ALLOWED_GLOBALS, PickledConfig, load_frames2lora_pickle
from .modeling_video2lora import Video2LoraHypernetwork
from .runtime import Video2LoraRuntime

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_GLOBALS",
    "Frames2LoraInfo",
    "PickledConfig",
    "check_frames2lora_supported",
    "convert_frames2lora",
    "frames2lora_key",
    "frames2lora_to_config",
    "load_frames2lora_pickle",
    "read_frames2lora",
    "run_convert",
]

# --------------------------------------------------------------------------------------------
# Configuration and key mapping
# --------------------------------------------------------------------------------------------

#: (flag, the value transformers-v2l implements, what that value means)
_SUPPORTED_FLAGS = (
    ("hypernet_config.per_rank_gen", True, "one decoder query per module and rank"),
    ("hypernet_config.use_light_weight_lora", False, "the full head"),
    ("hypernet_config.use_per_rank_bias", False, "no per-rank head bias"),
    ("hypernet_config.per_layer_processing", False, "one pre-head MLP shared across layers"),
    ("hypernet_config.use_token_mixing", False, "no token mixing"),
    ("aggregator_config.aggregator_type", "perceiver", "the Perceiver aggregator"),
    ("aggregator_config.shared_weights", False, "separate encoder layer weights"),
    ("aggregator_config.layer_to_layer_ctx_encoder", True, "one context slice per decoder layer"),
    ("aggregator_config.num_extra_modules", 0, "no extra modules"),
    ("ctx_encoder_args.ctx_encoder_type", "per_layer_activations", "per-layer hidden states"),
)


def check_frames2lora_supported(info: Frames2LoraInfo) -> None:
    """Raise `CheckpointMismatchError` naming every flag of the file that transformers-v2l does not implement.

    Args:
        info: what `read_frames2lora` returned.

    Example:
        ```python
        check_frames2lora_supported(read_frames2lora("model.pt")[1])
        ```
    """
    problems = []
    for flag, supported, meaning in _SUPPORTED_FLAGS:
        if flag in info.flags and info.flags[flag] != supported:
            problems.append(f"{flag}={info.flags[flag]!r} (only {supported!r}: {meaning})")
    if info.flags.get("hypernet_config.extra_modules"):
        problems.append(
            f"hypernet_config.extra_modules={info.flags['hypernet_config.extra_modules']!r} (only None)"
        )
    if info.layer_indices != list(range(info.num_layers)):
        problems.append(f"layer_indices={info.layer_indices} (only all layers 0..{info.num_layers - 1})")
    for flag, value in (("num_modules", len(info.target_modules)), ("lora_r", info.lora_r),
                        ("feature_size", info.hidden_size), ("output_size", info.latent_size)):  # fmt: skip
        found = info.flags.get(f"aggregator_config.{flag}", value)
        if found != value:
            problems.append(
                f"aggregator_config.{flag}={found!r} disagrees with the hypernet config ({value!r})"
            )
    if problems:
        raise CheckpointMismatchError(
            "This Frames2LoRA checkpoint uses features transformers-v2l does not implement:\n  "
            + "\n  ".join(problems)
        )


def frames2lora_to_config(
    info: Frames2LoraInfo,
    base_model: Any = None,
    *,
    base_model_name_or_path: str | None = None,
    source: dict[str, Any] | None = None,
    **fields: Any,
) -> Video2LoraConfig:
    """The `Video2LoraConfig` that expresses a Frames2LoRA checkpoint's architecture exactly.

    Every size comes from the file. With `base_model`, the base VLM's text tower must have the
    shapes the checkpoint was trained for.

    Args:
        info: what `read_frames2lora` returned.
        base_model: optional base VLM to check against: a Hub id or local path (only `config.json`
            is read), a VLM config, or a loaded VLM.
        base_model_name_or_path: the base model name to record. By default this is `base_model`
            when it is a string, else the name stored in the file.
        source: provenance to store in `config.source`.
        **fields: preprocessing settings (`instruction`, `num_frames`, `longest_edge`, `video_fps`,
            `skip_secs`), kept in `config.processor_settings` with `resize_mode="frames2lora"` for the
            processor.

    Returns:
        A bound `Video2LoraConfig`.

    Raises:
        CheckpointMismatchError: unsupported flags, or a base model of other shapes.

    Example:
        ```python
        state_dict, info = read_frames2lora("model.pt")
        config = frames2lora_to_config(info, base_model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
        ```
    """
    check_frames2lora_supported(info)
    base_model_type = "smolvlm"  # Frames2LoRA supports SmolVLM2 only
    if base_model is not None:
        bound = Video2LoraConfig.from_base_model(base_model, target_modules=info.target_modules)
        _check_base_model(info, bound, base_model)
        base_model_type = bound.base_model_type
    if base_model_name_or_path is None:
        is_name = isinstance(base_model, (str, os.PathLike))
        base_model_name_or_path = str(base_model) if is_name else info.base_model_name_or_path
    return Video2LoraConfig(
        base_model_name_or_path=base_model_name_or_path,
        base_model_type=base_model_type,
        num_hidden_layers=info.num_layers,
        hidden_size=info.hidden_size,
        module_shapes={m: list(shape) for m, shape in info.feature_sizes.items()},
        target_modules=list(info.target_modules),
        lora_rank=info.lora_r,
        lora_scaling=info.lora_alpha,
        use_bias_lora=info.use_bias,
        latent_size=info.latent_size,
        num_latent_queries=info.n_latent_queries,
        num_blocks=info.num_blocks,
        num_self_attn_per_block=info.num_self_attn_per_block,
        num_pre_head_layers=info.num_pre_head_layers,
        # fixed in the authors' code (SPEC sections 1.5, 2.2-2.8)
        num_attention_heads=16, num_key_value_heads=4, attention_head_dim=128, input_expansion=4,
        mlp_expansion=4, rms_norm_eps=1e-6, layer_norm_eps=1e-5, normalize_head_input=True,
        source=source,
        # the pixels the released checkpoints were trained on, and any other preprocessing asked for
        **{"resize_mode": "frames2lora", **{k: v for k, v in fields.items() if k in LEGACY_PROCESSOR_FIELDS}},
    )  # fmt: skip


def _check_base_model(info: Frames2LoraInfo, bound: Video2LoraConfig, base_model: Any) -> None:
    found_shapes = {m: list(s) for m, s in bound.module_shapes.items()}
    if (bound.num_hidden_layers, bound.hidden_size, found_shapes) == (
        info.num_layers,
        info.hidden_size,
        info.feature_sizes,
    ):
        return
    name = base_model if isinstance(base_model, (str, os.PathLike)) else bound.base_model_name_or_path
    raise CheckpointMismatchError(
        f"The Frames2LoRA checkpoint was trained for {info.base_model_name_or_path!r}: {info.num_layers} text layers, "
        f"hidden size {info.hidden_size}, module (d_in, d_out) {info.feature_sizes}. The base model {name!r} has "
        f"{bound.num_hidden_layers} layers, hidden size {bound.hidden_size} and {found_shapes}."
    )


_LAYER_RENAMES = {"input_latents_norm": "input_latents_layernorm", "input_context_norm": "input_context_layernorm",
                  "post_attention_norm": "post_attention_layernorm", "pre_ff_norm": "pre_ff_layernorm",
                  "post_ff_norm": "post_ff_layernorm", "attn": "self_attn", "mlp": "mlp"}  # fmt: skip
_PRE_HEAD_RENAMES = {
    "norm_in": "0",
    "fc1": "2",
    "fc2": "5",
    "norm_out": "6",
}  # indices in their nn.Sequential


def frames2lora_key(name: str) -> str:
    """The authors' state-dict key of one `Video2LoraHypernetwork` parameter name.

    Args:
        name: a parameter name of `Video2LoraHypernetwork.state_dict()`.

    Returns:
        The key of the same tensor in a Frames2LoRA checkpoint (shapes may differ; see the converter).

    Example:
        ```python
        frames2lora_key("encoder.latents")  # 'aggregator.perceiver.encoder.latents_q'
        frames2lora_key("head")  # 'head.weight'
        ```
    """
    if name.startswith("input_projection."):
        return "aggregator.perceiver.modality_projection." + name.removeprefix("input_projection.")
    if match := re.fullmatch(r"(encoder|decoder)\.latents", name):
        return f"aggregator.perceiver.{match[1]}.latents_q"
    if match := re.fullmatch(r"(encoder|decoder)\.norm\.weight", name):
        return f"aggregator.perceiver.{match[1]}.layernorm.weight"
    if match := re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(\w+)\.(.+)", name):
        return f"aggregator.perceiver.{match[1]}.layers.{match[2]}.{_LAYER_RENAMES[match[3]]}.{match[4]}"
    if match := re.fullmatch(r"pre_head\.(\d+)\.(\w+)\.(weight|bias)", name):
        return f"layers.{match[1]}.mlp.{_PRE_HEAD_RENAMES[match[2]]}.{match[3]}"
    if name == "head":
        return "head.weight"
    return name  # scaler_{A,B}.<m>, bias_{A,B}.<m>


def _their_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if name == "head" and shape[1] == 1:  # [L, 1, D, d_lora] is stored as [L, D, d_lora]
        return (shape[0], *shape[2:])
    if name.startswith(("scaler_A.", "scaler_B.")):  # [L, r] is stored as [1, L, r, 1]
        return (1, *shape, 1)
    return shape


def _build_hypernetwork(config: Video2LoraConfig, state_dict: dict[str, torch.Tensor], file: str):
    """Create the hypernetwork without allocating, check every key and shape, and load the tensors."""
    with torch.device("meta"):
        model = Video2LoraHypernetwork(config)
    expected = {}  # their key -> (our name, their shape, our shape)
    for name, param in model.state_dict().items():
        expected[frames2lora_key(name)] = (name, _their_shape(name, tuple(param.shape)), tuple(param.shape))
    problems = [f"missing key {key} (expected shape {list(shape)})" for key, (_, shape, _) in expected.items()
                if key not in state_dict]  # fmt: skip
    problems += [
        f"unexpected key {key} (shape {list(state_dict[key].shape)})"
        for key in state_dict
        if key not in expected
    ]
    problems += [
        f"shape of {key}: expected {list(shape)}, found {list(state_dict[key].shape)}"
        for key, (_, shape, _) in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    if problems:
        shown = problems[:25] + ([f"... and {len(problems) - 25} more"] if len(problems) > 25 else [])
        raise CheckpointMismatchError(
            f"{file} does not match the architecture its own hypernet_config describes "
            f"({len(problems)} problems):\n  " + "\n  ".join(shown)
        )
    ours = {}
    for key, (name, _, shape) in expected.items():
        tensor = state_dict[key]
        ours[name] = tensor.reshape(shape).to(torch.float32).contiguous()
    model.load_state_dict(ours, strict=True, assign=True)
    return model


# --------------------------------------------------------------------------------------------
# Local files and Hub repositories
# --------------------------------------------------------------------------------------------

_HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download")
_RUNTIME_FIELDS = tuple(LEGACY_PROCESSOR_FIELDS)  # the preprocessing settings a conversion may set
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _single_checkpoint(names: list[str], where: str) -> str:
    found = sorted(n for n in names if n.endswith(_CHECKPOINT_SUFFIXES))
    if len(found) != 1:
        raise ValueError(
            f"{where} holds {len(found)} checkpoint files {found}; pass filename= to choose one."
        )
    return found[0]


def _resolve_checkpoint(
    repo_or_path: str | os.PathLike, filename: str | None, revision: str | None, hub_kwargs: dict
):
    """`(local path, provenance)` of a `.pt` given as a file, a folder, or a Hub repo id."""
    local = Path(repo_or_path)
    if local.is_dir():
        local = local / (filename or _single_checkpoint(os.listdir(local), str(local)))
    if local.is_file():
        return local, {"file": local.name, "repo": None, "revision": None, "commit": None}
    text = str(repo_or_path)
    if (
        text.endswith(_CHECKPOINT_SUFFIXES)
        or os.path.isabs(text)
        or text.startswith(".")
        or text.count("/") > 1
    ):
        raise FileNotFoundError(f"No Frames2LoRA checkpoint at {text} (not a file, and not a Hub repo id).")
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        if filename is None:
            files = HfApi().list_repo_files(text, revision=revision, token=hub_kwargs.get("token"))
            filename = _single_checkpoint(files, f"The Hub repo {text}")
        path = hf_hub_download(text, filename, revision=revision, **hub_kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        raise HubUnavailableError(
            f"Could not fetch {filename or 'the checkpoint'} from the Hub repo {text} (offline or unreachable), and "
            f"it is not in the local cache. Download the .pt elsewhere and pass its path. ({error})"
        ) from error
    parts = Path(path).parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    return Path(path), {"file": filename, "repo": text, "revision": revision, "commit": commit}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 23):
            digest.update(chunk)
    return digest.hexdigest()


def convert_frames2lora(
    repo_or_path: str | os.PathLike,
    filename: str | None = None,
    *,
    base_model: Any = None,
    base_model_name_or_path: str | None = None,
    revision: str | None = None,
    **kwargs: Any,
) -> Video2LoraHypernetwork:
    """Load one of the authors' Frames2LoRA `.pt` checkpoints as a `Video2LoraHypernetwork`, safely.

    Args:
        repo_or_path: a `.pt` file, a folder holding one, or a Hub repo id (for example
            `"MananSuri27/Frames2LoRA-SmolVLM-ckpts"`).
        filename: the file inside the folder or repo; needed when there are several.
        base_model: a loaded VLM to attach (its shapes are checked), or a Hub id / local path / VLM
            config whose text-tower shapes are checked against the checkpoint.
        base_model_name_or_path: the base model name to record in the config. By default this is
            `base_model` when it is a string, else the name stored in the file.
        revision: Hub revision (branch, tag or commit).
        **kwargs: `processor=`, `base_model_kwargs=`, Hub options (`cache_dir`, `token`,
            `local_files_only`, `force_download`) and preprocessing settings (`instruction`,
            `num_frames`, `longest_edge`, `video_fps`, `skip_secs`).

    Returns:
        The hypernetwork in eval mode, float32. `config.source` records the file, repo, revision,
        commit and SHA-256.

    Raises:
        UnsafeCheckpointError: the file names a global outside `ALLOWED_GLOBALS`.
        CheckpointMismatchError: unsupported flags, missing or unexpected keys, wrong shapes, or a
            base model of other shapes.
        HubUnavailableError: the Hub cannot be reached and the file is not cached.

    Example:
        ```python
        hn = convert_frames2lora(
            "MananSuri27/Frames2LoRA-SmolVLM-ckpts", filename="frames2lora-smolvlm2-500m-best-ce.pt"
        )
        hn.save_pretrained("v2l-smolvlm2-500m")  # config.json, model.safetensors, the processor
        ```
    """
    hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
    processor = kwargs.pop("processor", None)
    base_model_kwargs = kwargs.pop("base_model_kwargs", None)
    unknown = sorted(set(kwargs) - set(_RUNTIME_FIELDS))
    if unknown:
        raise TypeError(
            f"convert_frames2lora() got unexpected arguments {unknown}. The architecture comes from the checkpoint; "
            f"only {list(_RUNTIME_FIELDS)} may be set."
        )
    path, location = _resolve_checkpoint(repo_or_path, filename, revision, hub_kwargs)
    state_dict, info = read_frames2lora(path)
    source = {"kind": "frames2lora", **location, "sha256": _sha256(path),
              "base_model_name_or_path": info.base_model_name_or_path, "peft_version": info.peft_version}  # fmt: skip
    config = frames2lora_to_config(
        info, base_model, base_model_name_or_path=base_model_name_or_path, source=source, **kwargs
    )
    model = _build_hypernetwork(config, state_dict, path.name)
    live = base_model if isinstance(base_model, torch.nn.Module) else None
    if processor is None:  # from the base model's local files, with the checkpoints' preprocessing
        files = getattr(live.config, "_name_or_path", None) if live is not None else base_model
        if files is not None and os.path.isdir(files):
            from .processing_video2lora import Video2LoraProcessor

            processor = Video2LoraProcessor.from_pretrained(files, **config.processor_settings)
    model.runtime = Video2LoraRuntime(
        config, base_model=live, processor=processor, base_model_kwargs=base_model_kwargs
    )
    return model.eval()


# --------------------------------------------------------------------------------------------
# `v2l convert`
# --------------------------------------------------------------------------------------------


def run_convert(args: argparse.Namespace) -> int:
    """Run `v2l convert`: convert the checkpoint and save it with `save_pretrained`.

    Args:
        args: parsed arguments with `source`, `out`, `filename`, `base_model` and `revision`.

    Returns:
        The exit status (0).

    Example:
        ```python
        run_convert(argparse.Namespace(source="model.pt", out="v2l", filename=None, base_model=None, revision=None))
        ```
    """
    hypernet = convert_frames2lora(
        args.source, args.filename, base_model=args.base_model, revision=args.revision
    )
    hypernet.save_pretrained(args.out)
    config, source = hypernet.config, hypernet.config.source
    params = sum(p.numel() for p in hypernet.parameters())
    print(
        f"{source['file']} (sha256 {source['sha256'][:16]}...) -> {args.out}\n"
        f"  {params / 1e6:.2f}M parameters; base model {config.base_model_name_or_path}; "
        f"{config.num_hidden_layers} layers; {config.target_modules} at rank {config.lora_rank}"
        f"{' + ' + str(config.lora_rank) + ' bias ranks' if config.use_bias_lora else ''}; scaling {config.scaling:g}"
    )
    return 0
