"""`v2l train` configuration: the paper presets parse, overrides win, and a bf16 run goes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_training_utils import (
    TINY_HYPERNET,
    one_torch_thread,  # noqa: F401 (module-wide fixture)
    toy_world_rows,
    write_manifest,
)
from transformers_v2l.training.cli import Video2LoraScriptArguments, _read_yaml, main, parse_config
from transformers_v2l.training.trainer import Video2LoraTrainingArguments

yaml = pytest.importorskip("yaml")
PRESETS = Path(__file__).resolve().parents[1] / "examples" / "training" / "presets"
TYPES = (Video2LoraScriptArguments, Video2LoraTrainingArguments)


@pytest.mark.parametrize(
    "name, steps, batch, accumulation",
    [("smolvlm2-500m.yaml", 9000, 48, 2), ("smolvlm2-2.2b.yaml", 7000, 8, 5)],
)
def test_paper_presets_match_table_6(name, steps, batch, accumulation):
    config = yaml.safe_load((PRESETS / name).read_text())
    script, args = parse_config(TYPES, config, ["--output_dir", "/tmp/unused"])
    assert (args.max_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        steps, batch, accumulation,
    )  # fmt: skip
    assert (args.learning_rate, args.warmup_steps, args.weight_decay, args.bf16) == (1e-4, 0.03, 0.01, True)
    assert script.hypernetwork == {"target_modules": ["down_proj"], "lora_rank": 16, "latent_size": 512,
                                   "num_frames": 12, "longest_edge": 384}  # fmt: skip
    assert args.output_dir == "/tmp/unused"  # the command line overrides the file


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"Unknown configuration key\(s\) \['lora_rnak'\]"):
        parse_config(TYPES, {"base_model": "m", "train_data": "t.jsonl", "lora_rnak": 3})
    with pytest.raises(ValueError, match="needs `train_data`"):
        parse_config(TYPES, {"base_model": "m"})


def test_v2l_train_bf16_end_to_end_then_resume(tmp_path, tiny_vlm_path, capsys, caplog):
    manifest = write_manifest(tmp_path, toy_world_rows(tmp_path, count=2))
    config = {"base_model": str(tiny_vlm_path), "train_data": str(manifest), "hypernetwork": TINY_HYPERNET,
              "output_dir": str(tmp_path / "run"), "max_steps": 2, "per_device_train_batch_size": 2,
              "bf16": True, "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 1, "report_to": "none",
              "disable_tqdm": True}  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--max_steps", "1"]) == 0
    assert (tmp_path / "run" / "checkpoint-1" / "v2l_training_state.json").exists()
    assert main(["train", str(path), "--resume_from_checkpoint", "last"]) == 0
    assert "Hypernetwork saved to" in capsys.readouterr().out
    from transformers_v2l import Video2LoraHypernetwork

    hn = Video2LoraHypernetwork.from_pretrained(tmp_path / "run", base_model=None)
    assert hn.config.lora_rank == TINY_HYPERNET["lora_rank"]
    state = (tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text()
    assert '"global_step": 2' in state
    # `Trainer.train` aligns a language model's config with the tokenizer; the hypernetwork's keeps no token ids
    for folder in ("run", "run/checkpoint-1", "run/checkpoint-2"):
        saved = json.loads((tmp_path / folder / "config.json").read_text())
        assert not {"bos_token_id", "eos_token_id", "pad_token_id"} & set(saved), folder
    assert "PAD/BOS/EOS" not in caplog.text + capsys.readouterr().err


def test_missing_extras_name_the_training_extra(monkeypatch, tmp_path):
    import sys

    from transformers_v2l.errors import MissingDependencyError
    from transformers_v2l.training.cli import _read_yaml
    from transformers_v2l.training.data import load_examples
    from transformers_v2l.training.teacher import teacher_features

    monkeypatch.setitem(sys.modules, "yaml", None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'transformers-v2l\[training\]'"):
        _read_yaml(str(tmp_path / "config.yaml"))
    with pytest.raises(MissingDependencyError, match="datasets"):
        teacher_features()
    with pytest.raises(MissingDependencyError, match="datasets"):
        load_examples(tmp_path)
    manifest = write_manifest(tmp_path, [{"id": "a", "video_path": "a.mp4", "prompt": "Q?"}])
    assert load_examples(manifest)[0]["id"] == "a"  # JSONL manifests need no extra


def test_overrides_without_a_yaml_file_parse():
    from transformers_v2l.cli import _optional_config, build_parser

    argv = _optional_config(["train", "--base_model", "m", "--train_data", "t.jsonl", "--max_steps", "3"])
    args = build_parser().parse_args(argv)
    assert args.config == ""
    script, train = parse_config(TYPES, _read_yaml(args.config), args.overrides)
    assert (script.base_model, script.train_data, train.max_steps) == ("m", "t.jsonl", 3)
    with_file = build_parser().parse_args(_optional_config(["train", "c.yaml", "--max_steps", "3"]))
    assert (with_file.config, with_file.overrides) == ("c.yaml", ["--max_steps", "3"])
