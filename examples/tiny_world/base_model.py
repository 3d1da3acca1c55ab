"""The tiny-world base VLM of each family: tokenizer, architecture, auxiliary-target hook, saved files.

Everything else in the recipe goes through the library (`Video2LoraProcessor`, the family's prompts
and pixels), so a family is added here with one entry in `BASE_MODELS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from transformers_v2l import toy_world
from transformers_v2l.families import family_class


@dataclass(frozen=True)
class BaseModelSpec:
    """What the recipe needs to know about one family's tiny base model.

    Args:
        aux_module: the module whose output holds one vector per image cell (the auxiliary target's input).
        aux_pool: vision patches per auxiliary cell side (SmolVLM's connector merges `scale_factor` x
            `scale_factor` patches; LLaVA-OneVision's projector keeps one vector per patch).
        corpus: tokenizer lines for the family's prompt scaffolding (its chat roles and video text).
        build_fields: `RecipeConfig` fields passed on to the family's `build_tiny_model` under their names.
        text: more text-config fields.
    """

    aux_module: str
    aux_pool: str | int
    corpus: tuple[str, ...]
    build_fields: tuple[str, ...] = ()
    text: tuple[tuple[str, object], ...] = ()


_SMOLVLM_HEADER = (  # SmolVLM2's video intro and timestamps, without the image tokens
    "You are provided the following series of eight frames from a 0:00:08 [H:MM:SS] video.\n"
    + "".join(f"\nFrame from 00:{s:02d}:<fake_token_around_image><global-img><fake_token_around_image>" for s in range(0, 8))
    + "\n\n"
)  # fmt: skip

BASE_MODELS = {
    "smolvlm": BaseModelSpec(
        aux_module="model.connector",
        aux_pool="scale_factor",
        corpus=(
            *[_SMOLVLM_HEADER] * 50,
            *[f"Frame from 00:{s:02d}: 0:00:{s:02d}" for s in range(16)] * 20,
            *["Internalize this video for later captioning.", "User: Assistant:"] * 50,
        ),
        build_fields=("scale_factor",),  # untied embeddings: SmolVLM's builder sets them
    ),
    "llava_onevision": BaseModelSpec(
        aux_module="model.multi_modal_projector",
        aux_pool=1,
        corpus=("Internalize this video for later captioning.", "user\nassistant\nUser: Assistant:") * 50,
        text=(("tie_word_embeddings", False),),  # as the SmolVLM2 base
    ),
}


def spec(cfg) -> BaseModelSpec:
    """The family's `BaseModelSpec`; raises `ValueError` for a family the recipe does not train."""
    if cfg.family not in BASE_MODELS:
        raise ValueError(
            f"The tiny-world recipe trains the families {sorted(BASE_MODELS)}, not {cfg.family!r} (Qwen2.5-VL and "
            "Qwen3-VL place tokens with 3D rotary positions, which the packed batches' 1D position ids do not give)."
        )
    return BASE_MODELS[cfg.family]


def build_base_model(cfg) -> tuple[torch.nn.Module, object]:
    """A randomly initialized base VLM of the recipe's sizes (seeded by `cfg.seed`) and its tokenizer.

    The tokenizer is the family's special tokens and chat template over a BPE vocabulary trained on
    the world's text.
    """
    model_spec = spec(cfg)
    styles = tuple(cfg.caption_styles.split(","))
    corpus = toy_world.corpus(styles, answer_marker=cfg.qa_format == "reasoned") + list(model_spec.corpus)
    text = {"num_attention_heads": cfg.text_heads, "num_key_value_heads": cfg.text_kv_heads,
            "max_position_embeddings": 1024, **dict(model_spec.text)}  # fmt: skip
    vision = {"hidden_size": cfg.vision_hidden, "num_hidden_layers": cfg.vision_layers,
              "num_attention_heads": cfg.vision_heads, "intermediate_size": cfg.vision_intermediate}  # fmt: skip
    model, tokenizer = family_class(cfg.family).build_tiny_model(
        seed=cfg.seed, corpus=corpus, vocab_size=cfg.vocab_size, hidden_size=cfg.text_hidden,
        num_layers=cfg.text_layers, intermediate_size=cfg.text_intermediate, image_size=cfg.image_size,
        patch_size=cfg.patch_size, text=text, vision=vision, **{f: getattr(cfg, f) for f in model_spec.build_fields},
    )  # fmt: skip
    return model.train(), tokenizer


def aux_grid(cfg) -> int:
    """Auxiliary-target cells per frame side."""
    pool = spec(cfg).aux_pool
    return cfg.image_size // cfg.patch_size // (cfg.scale_factor if pool == "scale_factor" else pool)


def capture_aux_tokens(cfg, model, captured: dict):
    """Hook `spec.aux_module` so that each forward leaves its `[frames, cells, H]` output in `captured`."""
    module = model.get_submodule(spec(cfg).aux_module)
    return module.register_forward_hook(lambda _module, _args, output: captured.update(tokens=output))


def save_base(cfg, model, tokenizer, path: Path) -> Path:
    """The model, tokenizer and processor files, with the recipe's frame sampling recorded."""
    family = family_class(cfg.family)
    if cfg.family == "smolvlm":
        family.save_tiny_model(model, tokenizer, path, longest_edge=cfg.image_size)
        config_path = path / "preprocessor_config.json"  # 1 fps, at most `num_frames`
        pre = json.loads(config_path.read_text())
        pre["video_sampling"]["max_frames"] = cfg.num_frames
        config_path.write_text(json.dumps(pre, indent=2))
    else:
        family.save_tiny_model(model, tokenizer, path)
    return path


def load_base(path: Path, dtype: torch.dtype = torch.float32):
    """A saved base model (frozen, eval mode) and its tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    model = family_class(config.model_type).model_class().from_pretrained(path, dtype=dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(path)
