"""`Video2LoraFamily`: the template every VLM family fills in, and nothing family-specific.

A family is everything transformers-v2l knows about one kind of vision-language model, in one module
(`families/<name>.py`). It answers, for the rest of the library:

| what | override point |
|---|---|
| which configs and model classes it covers | `model_types`, `model_class_name` |
| where the text decoder layers and the adaptable linear modules are | `layers_path`, `module_subpaths` |
| their shapes, from a config alone | `text_config`, `module_shapes` |
| the residual stream entering every decoder layer | `extract_features` (default: pre-hooks) |
| the encoder's video input keys | `video_input_keys` |
| the video prompt and pixels (internalization, video in context) | `video_text`, `video_pixels`, `collate_video_pixels` |
| the text-only query prompt | `query_text` |
| the token that ends an assistant turn (training labels) | `end_of_turn_token` |
| the settings a base checkpoint ships (tile size, mean, std, ...) | `vision_settings_from_files` |
| the defaults (frames, resolution, fps, instruction) | `defaults` |
| tiny and real-shape random models for tests and benchmarks | `build_tiny_model`, `build_random_model` |

PEFT keys, target regexes and shape checks are derived from `layers_path` and `module_subpaths`; the
registry (`families/__init__.py`) maps `config.model_type` to the family. A family class holds static
knowledge in class attributes and classmethods; an instance wraps one live model (`family(model)`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .live import LiveModelMixin

if TYPE_CHECKING:
    import numpy as np

    from ..processing_video2lora import Video2LoraProcessor
    from ..video_sampling import VideoMetadata

__all__ = ["PEFT_PREFIX", "FamilyDefaults", "Video2LoraFamily"]

#: The prefix PEFT gives every key of a saved adapter (`PeftModel` wraps `LoraModel` wraps the model).
PEFT_PREFIX = "base_model.model."
#: The internalization instruction of the paper (placed after the video in the encoder prompt).
DEFAULT_INSTRUCTION = "Internalize this video for later captioning."


@dataclass(frozen=True)
class FamilyDefaults:
    """A family's preprocessing defaults, used when neither a checkpoint nor the caller sets them.

    Args:
        num_frames: maximum frames sampled per video.
        longest_edge: frames are resized so that their longest edge is this many pixels.
        fps: frames sampled per second of video.
        skip_secs: seconds skipped at each end of a long video.
        instruction: the internalization instruction placed after the video.
        vision: family-specific pixel settings (tile size, mean, std, ...).

    Example:
        ```python
        FamilyDefaults(num_frames=12, longest_edge=384, fps=1.0, skip_secs=1.0)
        ```
    """

    num_frames: int = 12
    longest_edge: int = 384
    fps: float = 1.0
    skip_secs: float = 1.0
    instruction: str = DEFAULT_INSTRUCTION
    vision: dict[str, Any] = field(default_factory=dict)


class Video2LoraFamily(LiveModelMixin):
    """One VLM family: static knowledge in classmethods, and a wrapper of one live model.

    Subclasses set the class attributes and override the methods marked *override* below; the
    derived methods (module paths, PEFT keys and regexes, shape checks, feature capture) work for
    any decoder whose layers sit in one `nn.ModuleList`.

    Args:
        model: the full generative model (for example a `...ForConditionalGeneration`).

    Example:
        ```python
        from transformers_v2l.families import get_family

        family = get_family(vlm)  # the family instance wrapping the live model
        features, mask = family.extract_features(**inputs)  # [B, L, S, H], [B, S]
        ```
    """

    #: the registry key, also written to configs and adapters as `base_model_type`
    name: ClassVar[str] = ""
    #: every `config.model_type` this family covers (the first one is `name`'s canonical type)
    model_types: ClassVar[tuple[str, ...]] = ()
    #: the transformers class that loads a checkpoint of the family
    model_class_name: ClassVar[str] = ""
    #: the official processor classes (`processor_class` in a processor-only folder names the family)
    processor_classes: ClassVar[tuple[str, ...]] = ()
    #: attribute path from the generative model to the decoder layer list
    layers_path: ClassVar[str] = ""
    #: module name -> sub-path inside one decoder layer
    module_subpaths: ClassVar[dict[str, str]] = {}
    #: the encoder's video inputs besides `input_ids` and `attention_mask`
    video_input_keys: ClassVar[tuple[str, ...]] = ()
    #: the token that closes an assistant turn (the last label of a training response)
    end_of_turn_token: ClassVar[str] = ""
    #: preprocessing defaults
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults()

    def __init__(self, model: nn.Module):
        self.model = model

    # ---- static knowledge, from the config alone --------------------------------------------------
    @classmethod
    def text_config(cls, config) -> Any:
        """*Override.* The text decoder's sub-config of a VLM config.

        Args:
            config: the VLM's `PreTrainedConfig`.

        Returns:
            The config holding `num_hidden_layers`, `hidden_size` and the decoder's module sizes.

        Example:
            ```python
            family.text_config(vlm.config).num_hidden_layers
            ```
        """
        return config.text_config

    @classmethod
    def module_shapes(cls, config, target_modules: Sequence[str]) -> dict[str, tuple[int, int]]:
        """The `(d_in, d_out)` of each target module, for the usual Llama/Qwen2 decoder layer.

        Override for a decoder whose layers differ.

        Args:
            config: the VLM's `PreTrainedConfig`.
            target_modules: module names, for example `["down_proj"]`.

        Returns:
            `{module: (d_in, d_out)}`, sorted by module name.

        Example:
            ```python
            family.module_shapes(vlm.config, ["down_proj"])  # {'down_proj': (2560, 960)}
            ```
        """
        cls.check_module_names(target_modules)
        text = cls.text_config(config)
        hidden, inter = text.hidden_size, text.intermediate_size
        head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
        q_dim = text.num_attention_heads * head_dim
        kv_dim = (getattr(text, "num_key_value_heads", None) or text.num_attention_heads) * head_dim
        table = {
            "q_proj": (hidden, q_dim),
            "k_proj": (hidden, kv_dim),
            "v_proj": (hidden, kv_dim),
            "o_proj": (q_dim, hidden),
            "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }
        return {name: table[name] for name in sorted(target_modules)}

    @classmethod
    def module_path(cls, layer: int, module: str) -> str:
        """Dotted path of one target module, relative to the generative model.

        Args:
            layer: the decoder layer index.
            module: the target module name.

        Returns:
            The path, for `model.get_submodule`.

        Example:
            ```python
            family.module_path(0, "down_proj")  # '<layers_path>.0.mlp.down_proj'
            ```
        """
        cls.check_module_names([module])
        return f"{cls.layers_path}.{layer}.{cls.module_subpaths[module]}"

    @classmethod
    def peft_key(cls, layer: int, module: str) -> str:
        """The key prefix of one module in a saved PEFT adapter (without `.lora_A.weight`).

        Args:
            layer: the decoder layer index.
            module: the target module name.

        Returns:
            `"base_model.model.<module path>"`, the name PEFT and vLLM's LoRA loader expect.

        Example:
            ```python
            family.peft_key(0, "down_proj") + ".lora_A.weight"
            ```
        """
        return PEFT_PREFIX + cls.module_path(layer, module)

    @classmethod
    def peft_target_regex(cls, target_modules: Sequence[str]) -> str:
        """A `target_modules` regex that matches exactly these text-decoder modules.

        Vision towers have modules of the same names, so plain names would match them too. The
        pattern uses only plain alternation (no `(?:...)` groups), which PEFT's `re.fullmatch`,
        vLLM's and SGLang's regex target checks all read the same way.

        Args:
            target_modules: module names, for example `["down_proj"]`.

        Returns:
            A regular expression for `LoraConfig(target_modules=...)`.

        Example:
            ```python
            family.peft_target_regex(["down_proj"])  # '.*<layers>\\.\\d+\\.mlp\\.down_proj'
            ```
        """
        cls.check_module_names(target_modules)
        layers = re.escape(cls.layers_path)
        subpaths = [re.escape(cls.module_subpaths[m]) for m in sorted(target_modules)]
        return "|".join(rf".*{layers}\.\d+\.{subpath}" for subpath in subpaths)

    @classmethod
    def check_module_names(cls, target_modules: Sequence[str]) -> None:
        """Raise `ValueError` unless every name is a linear module of this family's decoder layers.

        Args:
            target_modules: module names, for example `["down_proj"]`.

        Raises:
            ValueError: a name is unknown; the message lists the valid ones.

        Example:
            ```python
            family.check_module_names(["down_proj", "q_proj"])
            ```
        """
        unknown = sorted(set(target_modules) - set(cls.module_subpaths))
        if unknown:
            raise ValueError(
                f"target_modules {unknown} are not linear modules of a {cls.name} text decoder layer; "
                f"choose from {sorted(cls.module_subpaths)}."
            )

    @classmethod
    def module_from_path(cls, path: str) -> tuple[int, str] | None:
        """`(layer, module)` of a module path inside this family's decoder, or `None`.

        Args:
            path: a module path relative to the generative model (PEFT prefix removed).

        Returns:
            The layer index and module name, or `None` when the path is not a target module here.

        Example:
            ```python
            family.module_from_path(family.module_path(3, "down_proj"))  # (3, 'down_proj')
            ```
        """
        prefix = cls.layers_path + "."
        if not path.startswith(prefix):
            return None
        layer, _, subpath = path[len(prefix) :].partition(".")
        by_subpath = {sub: name for name, sub in cls.module_subpaths.items()}
        if not layer.isdigit() or subpath not in by_subpath:
            return None
        return int(layer), by_subpath[subpath]

    # ---- loading ------------------------------------------------------------------------------------
    @classmethod
    def model_class(cls) -> type[nn.Module]:
        """The transformers class of the family's generative model.

        Returns:
            The class named `model_class_name`, imported from `transformers`.

        Example:
            ```python
            vlm = family.model_class().from_pretrained(path)
            ```
        """
        import transformers

        return getattr(transformers, cls.model_class_name)

    # ---- processing (override) ---------------------------------------------------------------------
    @classmethod
    def sample_frame_indices(
        cls, total_num_frames: int, fps: float, *, num_frames: int, target_fps: float, skip_secs: float
    ) -> list[int]:
        """The frames the family's official processor samples from a constant-rate clip (default: SmolVLM2's rule).

        Override when the family samples differently; `video_io.load_video(sampler=...)` applies it.

        Args:
            total_num_frames: frames in the clip.
            fps: its frame rate.
            num_frames: maximum frames to sample.
            target_fps: frames to sample per second.
            skip_secs: seconds skipped at each end of a long clip.

        Returns:
            Sorted, unique frame indices.

        Example:
            ```python
            family.sample_frame_indices(64, 4.0, num_frames=12, target_fps=1.0, skip_secs=1.0)
            ```
        """
        from ..video_sampling import sample_frame_indices

        return sample_frame_indices(
            total_num_frames, fps, num_frames=num_frames, target_fps=target_fps, skip_secs=skip_secs
        )

    @classmethod
    def vision_settings_from_files(cls, read_json: Callable[[str], dict | None]) -> dict[str, Any]:
        """*Override.* The pixel settings a base checkpoint ships, from its JSON files.

        Args:
            read_json: returns the content of one of the checkpoint's JSON files by name, or `None`.

        Returns:
            A dict merged over `defaults.vision` (for example the tile size and normalization).

        Example:
            ```python
            family.vision_settings_from_files(lambda name: json.load(open(f"{path}/{name}")))
            ```
        """
        return {}

    @classmethod
    def vision_settings_for(cls, config: Any, **overrides: Any) -> dict[str, Any]:
        """*Override.* The pixel settings that fit a model config (for models built in memory, not loaded).

        Args:
            config: the VLM's `PreTrainedConfig`.
            **overrides: settings to change, for example a smaller tile.

        Returns:
            A dict over `defaults.vision`.

        Example:
            ```python
            Video2LoraProcessor(tokenizer, family.name, vision=family.vision_settings_for(vlm.config))
            ```
        """
        return {**cls.defaults.vision, **overrides}

    @classmethod
    def tokens_per_frame(cls, processor: Video2LoraProcessor) -> int:
        """*Override.* Visual tokens one frame adds to the prompt at the processor's settings.

        Args:
            processor: the processor.

        Returns:
            The token count (for reports and token budgets).

        Example:
            ```python
            family.tokens_per_frame(processor) * 12  # the visual tokens of a 12-frame clip
            ```
        """
        raise NotImplementedError

    @classmethod
    def check_vision_settings(cls, vision: dict[str, Any]) -> None:
        """*Override.* Raise `ValueError` naming the key when a pixel setting is invalid.

        Args:
            vision: the processor's family-specific pixel settings.

        Example:
            ```python
            family.check_vision_settings(processor.vision)
            ```
        """

    @classmethod
    def video_pixels(
        cls, processor: Video2LoraProcessor, frames: np.ndarray, longest_edge: int
    ) -> dict[str, torch.Tensor]:
        """*Override.* The vision inputs of one clip.

        Args:
            processor: the processor, for its settings (`processor.vision`).
            frames: `[T, H, W, 3]` uint8 RGB frames.
            longest_edge: the resize target of this call.

        Returns:
            The clip's tensors, keyed by the model's input names.

        Example:
            ```python
            family.video_pixels(processor, frames, 384)
            ```
        """
        raise NotImplementedError

    @classmethod
    def collate_video_pixels(cls, clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """*Override.* Batch the vision inputs of several clips (`video_pixels` outputs).

        Args:
            clips: one dict per clip.

        Returns:
            The batch's tensors, keyed by `video_input_keys`.

        Example:
            ```python
            family.collate_video_pixels([family.video_pixels(processor, f, 384) for f in clips])
            ```
        """
        raise NotImplementedError

    @classmethod
    def video_batch_inputs(
        cls, processor: Video2LoraProcessor, input_ids: torch.Tensor, metadata: Sequence[VideoMetadata]
    ) -> dict[str, torch.Tensor]:
        """*Override.* Video inputs that need the tokenized batch or the clips' timing (default: none).

        The processor calls it after tokenizing the prompts and `collate_video_pixels`; for example
        Qwen2.5-VL's per-token modality ids (`mm_token_type_ids`) and seconds per temporal patch.

        Args:
            processor: the processor.
            input_ids: `[B, S]` the padded prompts.
            metadata: one `VideoMetadata` per clip.

        Returns:
            More tensors keyed by `video_input_keys`.

        Example:
            ```python
            family.video_batch_inputs(processor, batch["input_ids"], batch["video_metadata"])
            ```
        """
        return {}

    @classmethod
    def video_text(
        cls,
        processor: Video2LoraProcessor,
        metadata: VideoMetadata,
        pixels: dict[str, torch.Tensor],
        text: str,
        add_generation_prompt: bool,
    ) -> str:
        """*Override.* The prompt of one user turn `[video, text]`, with the video's tokens expanded.

        Args:
            processor: the processor (tokenizer and settings).
            metadata: the clip's metadata (sampled frames, timestamps, duration).
            pixels: the clip's `video_pixels` (some families count tokens from the pixel grid).
            text: the instruction or question after the video.
            add_generation_prompt: append the assistant turn's opening.

        Returns:
            The prompt string the tokenizer turns into `input_ids`.

        Example:
            ```python
            family.video_text(processor, meta, pixels, "Describe the video.", True)
            ```
        """
        raise NotImplementedError

    @classmethod
    def query_text(cls, processor: Video2LoraProcessor, question: str) -> str:
        """The text-only prompt of one user turn plus the assistant's opening (zero visual tokens).

        The default renders the tokenizer's chat template; override when the family's official
        processor renders text-only turns differently.

        Args:
            processor: the processor (tokenizer and chat template).
            question: the user's question.

        Returns:
            The prompt string.

        Example:
            ```python
            family.query_text(processor, "What happens in the video?")
            ```
        """
        return cls.render_turn(processor, question)

    @classmethod
    def render_turn(
        cls,
        processor: Video2LoraProcessor,
        text: str,
        *,
        video_token: str | None = None,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
    ) -> str:
        """One user turn rendered by the chat template: `[text]`, or `[video, text]` with its slot unexpanded.

        Args:
            processor: the processor (tokenizer and chat template).
            text: the instruction or question.
            video_token: the token the template renders for the video item; `None` for a text-only turn.
            add_generation_prompt: append the assistant turn's opening.
            chat_template: a template to use instead of the processor's text chat template.

        Returns:
            The prompt string, the video slot holding one `video_token`.

        Raises:
            ValueError: the template renders no `video_token`, so the video would be left out of the prompt.

        Example:
            ```python
            family.render_turn(processor, "Describe the video.", video_token="<video>")
            ```
        """
        video = [{"type": "video"}] if video_token is not None else []
        conversation = [{"role": "user", "content": [*video, {"type": "text", "text": text}]}]
        rendered = processor.tokenizer.apply_chat_template(
            conversation,
            chat_template=chat_template or processor.text_chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        if video_token is not None and video_token not in rendered:
            raise ValueError(
                f"The processor's chat template renders no {video_token!r} for a video item, so the video would be "
                f"left out of the prompt; use the checkpoint's template ({cls.__name__}.default_chat_template())."
            )
        return rendered

    @classmethod
    def default_chat_template(cls) -> str | None:
        """*Override.* The family's chat template, for a tokenizer that ships none.

        Returns:
            A Jinja template, or `None` to require the tokenizer's own.

        Example:
            ```python
            template = tokenizer.chat_template or family.default_chat_template()
            ```
        """
        return None

    # ---- tiny and real-shape models (override) ------------------------------------------------------
    #: preset name -> real checkpoint shapes, for `build_random_model` (benchmarks)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def build_tokenizer(cls, corpus: list[str] | None = None, vocab_size: int = 400) -> Any:
        """*Override.* An offline tokenizer with the family's special tokens and chat template.

        Args:
            corpus: sentences to train on; defaults to `DEFAULT_CORPUS`.
            vocab_size: the vocabulary size, special tokens included.

        Returns:
            A `PreTrainedTokenizerFast`.

        Example:
            ```python
            tokenizer = family.build_tokenizer(vocab_size=300)
            ```
        """
        raise NotImplementedError

    @classmethod
    def build_tiny_model(cls, *, seed: int = 0, **sizes: Any) -> tuple[nn.Module, Any]:
        """*Override.* A tiny random model of the family and its tokenizer, built offline in well under a second.

        Args:
            seed: the seed of the random weights.
            **sizes: family-specific sizes (hidden size, layers, image size, ...).

        Returns:
            `(model, tokenizer)`.

        Example:
            ```python
            model, tokenizer = family.build_tiny_model(seed=0)
            ```
        """
        raise NotImplementedError

    @classmethod
    def save_tiny_model(cls, model: nn.Module, tokenizer: Any, path: Any, **kwargs: Any) -> Any:
        """*Override.* Save a tiny model with its tokenizer and preprocessing files, as Hub repos ship them.

        Args:
            model: a model from `build_tiny_model`.
            tokenizer: its tokenizer.
            path: the output folder.
            **kwargs: family-specific options.

        Returns:
            The folder, loadable with `from_pretrained` (model, tokenizer and `Video2LoraProcessor`).

        Example:
            ```python
            path = family.save_tiny_model(*family.build_tiny_model(), "tiny-vlm")
            ```
        """
        raise NotImplementedError

    @classmethod
    def build_random_model(
        cls, preset: str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0, tokenizer: Any = None
    ) -> nn.Module:
        """*Override.* A model with a real checkpoint's shapes and random weights, built directly in `dtype`.

        Args:
            preset: a key of `presets`.
            dtype: the weights' dtype.
            seed: the seed of the random weights.
            tokenizer: an offline tokenizer (`build_tokenizer`) whose special-token ids the model should use.

        Returns:
            The model in eval mode.

        Example:
            ```python
            vlm = family.build_random_model(next(iter(family.presets)))
            ```
        """
        raise NotImplementedError
