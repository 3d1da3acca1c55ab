"""The `v2l` command: every subcommand parses, and the core ones run end to end on a tiny model."""

import subprocess
import sys

import pytest
import torch

from fixtures.models import TINY_HYPERNET, randomize_outputs
from transformers_v2l import GeneratedLora, Video2LoraConfig, Video2LoraHypernetwork
from transformers_v2l.cli import EXTERNAL_SUBCOMMANDS, build_parser, main

SUBCOMMANDS = ["internalize", "ask", "push", *EXTERNAL_SUBCOMMANDS]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"v2l {command}" in capsys.readouterr().out


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "transformers_v2l.cli", "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert command in result.stdout


def test_internalize_then_ask(tmp_path, tiny_vlm_path, real_clip, capsys):
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(tiny_vlm_path, **TINY_HYPERNET, num_frames=4, longest_edge=64)
    hypernet = randomize_outputs(Video2LoraHypernetwork(config))
    hypernet.save_pretrained(tmp_path / "hypernet")
    video = real_clip("b.avi")
    args = ["--hypernetwork", str(tmp_path / "hypernet"), "--dtype", "float32"]
    assert main(["internalize", str(video), "--out", str(tmp_path / "adapter"), *args]) == 0
    adapter = GeneratedLora.from_pretrained(tmp_path / "adapter")
    assert adapter.rank == config.effective_rank
    assert adapter.metadata["sha256"]
    assert (
        main(
            [
                "ask",
                str(tmp_path / "adapter"),
                "What happens?",
                "Who is there?",
                "--max-new-tokens",
                "4",
                *args,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Q: What happens?" in out and "Q: Who is there?" in out


def test_parser_rejects_unknown_command():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["frobnicate"])
