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


def test_typed_errors_end_with_a_message_not_a_traceback(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert main(["internalize", str(empty), "--out", str(tmp_path / "adapter")]) == 1
    err = capsys.readouterr().err
    assert "v2l internalize: VideoDecodeError:" in err and "the file is empty" in err
    assert "Traceback" not in err
    assert not (tmp_path / "adapter").exists()


def test_a_hub_model_without_the_hub_points_to_local_folders(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # never read: the hypernetwork fails to load first
    args = [
        "internalize",
        str(video),
        "--out",
        str(tmp_path / "adapter"),
        "--hypernetwork",
        "org/does-not-exist",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "HubUnavailableError" in err and "'org/does-not-exist': it is not a local folder" in err
    assert "load_default_hypernetwork()" in err and "Traceback" not in err
    assert (
        main(["ask", "me/adapter", "What happens?"]) == 1
    )  # the default tiny model, an adapter from the Hub
    err = capsys.readouterr().err
    assert "'me/adapter': it is not a local folder" in err and "Pass the path of a local folder" in err


def test_a_missing_adapter_folder_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["ask", "./clip-adaptr", "What happens?"]) == 1
    err = capsys.readouterr().err
    assert f"./clip-adaptr is not a folder (nothing at {tmp_path / 'clip-adaptr'})" in err
    assert "check the path" in err and "Traceback" not in err
