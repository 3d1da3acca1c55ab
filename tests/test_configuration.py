"""Video2LoraConfig: defaults from the paper, validation, binding to a base model, serialization."""

import pytest
from transformers import AutoConfig

from transformers_v2l import Video2LoraConfig


def test_defaults_follow_the_paper():
    config = Video2LoraConfig()
    assert config.target_modules == ["down_proj"]
    assert config.lora_rank == 16
    assert config.latent_size == 512
    assert config.use_bias_lora
    assert config.scaling == pytest.approx(128.0)  # Frames2LoRA's raw lora_alpha = 2 r^1.5
    assert config.effective_rank == 32
    # preprocessing is the processor's (saved beside the weights), not the architecture's
    assert not {"num_frames", "longest_edge", "instruction", "video_fps", "resize_mode"} & set(
        config.to_dict()
    )


def test_version_01_preprocessing_fields_move_to_processor_settings(tmp_path):
    config = Video2LoraConfig(
        num_frames=6, longest_edge=48, instruction="Keep it.", video_fps=2.0, resize_mode=None
    )
    assert config.processor_settings == {
        "num_frames": 6,
        "longest_edge": 48,
        "instruction": "Keep it.",
        "fps": 2.0,
    }
    config.save_pretrained(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    assert "num_frames" not in saved and "processor_settings" not in saved
    assert Video2LoraConfig.from_pretrained(tmp_path).processor_settings == {}


def test_every_field_has_help():
    help_text = Video2LoraConfig.field_help()
    for name in ("base_model_name_or_path", "target_modules", "lora_rank", "lora_scaling", "latent_size",
                 "num_latent_queries", "num_blocks", "num_attention_heads", "use_bias_lora"):  # fmt: skip
        assert help_text[name].strip(), name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lora_rank", 0),
        ("latent_size", -1),
        ("num_blocks", 0),
        ("num_self_attn_per_block", -1),
        ("lora_scaling", -2.0),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        Video2LoraConfig(**{field: value})


def test_unknown_target_module_is_refused():
    with pytest.raises(ValueError, match="not linear modules"):
        Video2LoraConfig(target_modules=["mlp.fc9"])
    with pytest.raises(ValueError, match="not linear modules"):
        Video2LoraConfig(target_modules=["fc9"], base_model_type="smolvlm")


def test_heads_must_group():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        Video2LoraConfig(num_attention_heads=6, num_key_value_heads=4)


def test_from_base_model_reads_text_tower_shapes(tiny_vlm_path, tiny_vlm):
    config = Video2LoraConfig.from_base_model(
        tiny_vlm_path, target_modules=["q_proj", "down_proj"], lora_rank=4
    )
    text = tiny_vlm.config.text_config
    assert config.num_hidden_layers == text.num_hidden_layers
    assert config.hidden_size == text.hidden_size
    assert config.target_modules == ["down_proj", "q_proj"]
    layer = tiny_vlm.model.text_model.layers[0]
    assert config.module_shapes["down_proj"] == [
        layer.mlp.down_proj.in_features,
        layer.mlp.down_proj.out_features,
    ]
    assert config.module_shapes["q_proj"] == [
        layer.self_attn.q_proj.in_features,
        layer.self_attn.q_proj.out_features,
    ]
    assert config.base_model_name_or_path == str(tiny_vlm_path)
    # a loaded model or its config give the same shapes
    assert (
        Video2LoraConfig.from_base_model(tiny_vlm, lora_rank=4).module_shapes["down_proj"]
        == config.module_shapes["down_proj"]
    )


def test_round_trip_and_auto_config(tmp_path, tiny_vlm_path):
    config = Video2LoraConfig.from_base_model(tiny_vlm_path, lora_rank=4, latent_size=32, lora_scaling=3.0)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, Video2LoraConfig)
    for key in Video2LoraConfig.field_help():
        assert getattr(loaded, key) == getattr(config, key), key
    assert loaded.scaling == 3.0
