"""The `v2l` command: bad inputs end in one line before any model loads; nothing is lost or overwritten.

Most tests run the real command in a subprocess (`python -m transformers_v2l.cli`), because the exit
code, stderr and what was imported are what matter; a small wrapper reports whether torch,
transformers or peft were imported, i.e. whether any model could have been loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixtures.models import TINY_HYPERNET, randomize_outputs
from fixtures.videos import corrupt_packet, write_video
from transformers_v2l import GeneratedLora, Video2LoraConfig, Video2LoraHypernetwork
from transformers_v2l.cli import EXTERNAL_SUBCOMMANDS, build_parser, main
from transformers_v2l.toy_world import make_clip
from transformers_v2l.toy_world import write_video as write_toy_video

SUBCOMMANDS = ["internalize", "ask", "push", "convert", *EXTERNAL_SUBCOMMANDS]
LEGACY = Path(__file__).parent / "data" / "legacy-0.1"
HEAVY = ("torch", "transformers", "peft")
# runs `v2l ARGS`, then reports on stderr which heavy packages the run imported
RUNNER = f"""
import sys
from transformers_v2l.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("@@heavy@@" + ",".join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


class Run:
    def __init__(self, result: subprocess.CompletedProcess, seconds: float):
        lines = result.stderr.splitlines()
        marker = [line for line in lines if line.startswith("@@heavy@@")]
        self.code, self.stdout, self.seconds = result.returncode, result.stdout, seconds
        self.heavy = (
            marker[-1].removeprefix("@@heavy@@").split(",") if marker and marker[-1] != "@@heavy@@" else []
        )
        self.lines = [line for line in lines if not line.startswith("@@heavy@@")]
        self.stderr = "\n".join(self.lines)


def v2l(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> Run:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=cwd, env=environment,
                            capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return Run(result, time.perf_counter() - start)


def toy_clip(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_toy_video(make_clip(seed, "test").frames, path)
    return path


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder with a toy clip `qs/a.mp4`, a plain file and an adapter folder."""
    toy_clip(tmp_path / "qs" / "a.mp4")
    (tmp_path / "notes.txt").write_text("not a folder\n")
    return tmp_path


# ---- issue 17's table: one line, a non-zero exit code, no model --------------------------------------------
TABLE = [
    # (id, argv, exit code, the line's prefix, words it must hold)
    ("batch-size-negative", ["internalize", "qs/a.mp4", "--out", "o", "--batch-size", "-1"], 2,
     "v2l internalize: argument --batch-size", "expected an integer >= 1, got '-1'"),
    ("batch-size-zero", ["internalize", "qs/a.mp4", "--out", "o", "--batch-size", "0"], 2,
     "v2l internalize: argument --batch-size", "got '0'"),
    ("ask-max-new-tokens-zero", ["ask", "qs", "Q?", "--max-new-tokens", "0"], 2,
     "v2l ask: argument --max-new-tokens", "expected an integer >= 1"),
    ("ask-max-new-tokens-negative", ["ask", "qs", "Q?", "--max-new-tokens", "-5"], 2,
     "v2l ask: argument --max-new-tokens", "got '-5'"),
    ("demo-max-new-tokens-zero", ["demo", "--max-new-tokens", "0"], 2,
     "v2l demo: argument --max-new-tokens", "expected an integer >= 1"),
    ("ask-url", ["ask", "https://example.com/adapter", "Q?"], 1,
     "v2l ask: InvalidRepoIdError", "URLs are not supported"),
    ("internalize-url", ["internalize", "https://example.com/a.mp4", "--out", "o"], 1,
     "v2l internalize: VideoDecodeError", "it is a URL"),
    ("out-is-a-file", ["internalize", "qs/a.mp4", "--out", "notes.txt"], 1,
     "v2l internalize: InvalidArgumentError: --out notes.txt", "it is a file, not a folder"),
    ("out-unwritable", ["internalize", "qs/a.mp4", "--out", "/proc/nope"], 1,
     "v2l internalize: InvalidArgumentError: --out /proc/nope", "cannot write in /proc"),
    ("train-without-arguments", ["train"], 1,
     "v2l train: InvalidArgumentError", "`train` is missing `base_model` and `train_data`: give a YAML file"),
    ("adapter-as-hypernetwork", ["ask", str(LEGACY / "adapter"), "Q?", "--hypernetwork", str(LEGACY / "adapter")], 1,
     "v2l ask: InvalidArgumentError: --hypernetwork", "is an adapter (adapter_config.json), not a hypernetwork"),
    ("hypernetwork-as-adapter", ["ask", str(LEGACY / "frames2lora"), "Q?"], 1,
     "v2l ask: InvalidArgumentError", "is a hypernetwork folder (config.json), not an adapter"),
    ("demo-negative-seed", ["demo", "--seed", "-1"], 2, "v2l demo: argument --seed", "expected an integer >= 0"),
    ("demo-no-questions", ["demo", "--num-questions", "0"], 2,
     "v2l demo: argument --num-questions", "expected an integer from 1 to 6"),
    ("demo-accuracy-zero", ["demo", "--accuracy", "0"], 2, "v2l demo: argument --accuracy", "expected an integer >= 1"),
    ("demo-accuracy-save-video", ["demo", "--accuracy", "2", "--save-video", "new.mp4"], 1,
     "v2l demo: InvalidArgumentError", "--save-video keeps one demo's clip; it does not go with --accuracy"),
    ("bench-negative-frames", ["bench", "ttft", "--frames", "-5"], 2,
     "v2l bench: argument --frames", "expected an integer >= 1"),
    ("bench-negative-repeats", ["bench", "ttft", "--repeats", "-1"], 2,
     "v2l bench: argument --repeats", "expected an integer >= 1"),
    ("internalize-typo", ["internalize", "qs/b.mp4", "--out", "o"], 1,
     "v2l internalize: VideoDecodeError", "the file does not exist"),
    ("missing-yaml", ["train", "nope.yaml"], 1, "v2l train: FileNotFoundError", "nope.yaml is not a file"),
]  # fmt: skip


@pytest.mark.parametrize(
    "argv, code, prefix, words", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_bad_input_is_one_line_before_any_model(argv, code, prefix, words, workdir):
    if "/proc/nope" in argv and not os.path.isdir("/proc"):
        pytest.skip("needs Linux's /proc")
    run = v2l(*argv, cwd=workdir)
    assert run.code == code, run.stderr
    assert len(run.lines) == 1, run.stderr  # one line, no usage block, no traceback
    assert run.lines[0].startswith(prefix) and words in run.lines[0], run.stderr
    assert run.heavy == [], f"{run.heavy} imported: a model could have been loaded"
    assert run.stdout == "" and not (workdir / "o").exists()


def test_bench_refuses_a_clip_that_cannot_fit_in_memory(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")  # `v2l bench` names its missing extra first
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "ttft", "--preset", "256m", "--frames", "100000", "--out-dir", "results"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("v2l bench: InvalidArgumentError: --frames 100000 needs at least ")
    assert "GiB for one 256m clip at 512 px" in captured.err and "GiB available" in captured.err
    assert not (tmp_path / "results").exists()  # refused before any work


def test_bench_estimate_follows_the_preset_shapes():
    from transformers_v2l.benchmarks.cli import estimate_memory_gib

    small, large = estimate_memory_gib("500m", 12, 384), estimate_memory_gib("500m", 100_000, 384)
    assert large == pytest.approx(small * 100_000 / 12)  # linear in frames
    assert small < 0.2 and large > 24  # 12 frames fit anywhere; 100,000 frames fit nowhere here
    # 64 tokens x 33 hidden states x 960 wide x 2 bytes per frame, on top of the frames and pixels
    per_frame = (720 * 1280 * 3 + 3 * 512 * 512 * 4 + 64 * 33 * 960 * 2) / 2**30
    assert small == pytest.approx(12 * per_frame)
    assert estimate_memory_gib("256m", 12, 384) < small  # fewer, narrower layers


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_a_typo_in_a_local_path_fails_fast_when_the_hub_is_unreachable(hub, tmp_path):
    (tmp_path / "out").mkdir()
    env = {"HF_HUB_OFFLINE": "1"} if hub == "offline" else {
        "HF_HUB_OFFLINE": None, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}  # fmt: skip
    run = v2l("ask", "out/nope", "What happens?", cwd=tmp_path, env=env)
    assert run.code == 1 and len(run.lines) == 1, run.stderr
    line = run.lines[0]
    assert line.startswith("v2l ask: HubUnavailableError: Cannot load 'out/nope': it is not a local folder")
    assert f"nothing at {tmp_path / 'out' / 'nope'}" in line
    assert ("HF_HUB_OFFLINE is set" if hub == "offline" else "could not be reached") in line
    assert run.heavy == [] and run.seconds < 10  # issue 17: six retries and 28 s before the message


def test_several_bad_videos_are_all_listed_before_any_model(workdir):
    (workdir / "empty.mp4").write_bytes(b"")
    run = v2l("internalize", "qs/a.mp4", "missing.mp4", "empty.mp4", "notes.txt", "--out", "o", cwd=workdir)
    assert run.code == 1 and run.heavy == [], run.stderr
    assert [line.split(":")[1].strip() for line in run.lines[:3]] == ["VideoDecodeError"] * 3
    assert "missing.mp4" in run.lines[0] and "empty.mp4" in run.lines[1] and "notes.txt" in run.lines[2]
    assert run.lines[3] == (
        "v2l internalize: InvalidArgumentError: 3 of 4 videos cannot be read (listed above); nothing was done. "
        "Fix them or leave them out, and run again."
    )
    assert len(run.lines) == 4 and not (workdir / "o").exists()


def test_nothing_is_overwritten_without_overwrite(workdir):
    adapter = workdir / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    run = v2l("internalize", "qs/a.mp4", "--out", "adapter", cwd=workdir)
    assert run.code == 1 and run.heavy == [] and len(run.lines) == 1, run.stderr
    assert "--out adapter already holds a result (adapter_config.json); pass --overwrite" in run.lines[0]
    (workdir / "full").mkdir()
    (workdir / "full" / "keep.txt").write_text("mine")
    run = v2l("internalize", "qs/a.mp4", "--out", "full", cwd=workdir)
    assert run.code == 1 and "is a folder that is not empty" in run.stderr
    run = v2l("internalize", "qs/a.mp4", "qs/a.mp4", "--out", "several", cwd=workdir)
    assert run.code == 1 and "qs/a.mp4 is given twice; give each video once." in run.stderr
    assert (adapter / "adapter_config.json").read_text() == "{}" and (workdir / "full" / "keep.txt").exists()


def test_internalize_keeps_every_adapter_and_reports_each_failure(workdir):
    """`qs/a.mp4` and `dup2/a.mp4` get distinct folders; a file that fails mid-run costs only its own adapter."""
    toy_clip(workdir / "dup2" / "a.mp4", seed=1)
    broken = write_video(workdir / "broken.avi", 12, codec="mjpeg", pix_fmt="yuvj420p")
    for index in range(12):  # every frame damaged: the probe passes, decoding fails
        corrupt_packet(broken, index)
    plain = write_video(workdir / "grey.mp4", 10, size=(240, 320))  # a real video, not a toy-world clip
    run = v2l("internalize", "qs/a.mp4", "broken.avi", "grey.mp4", "dup2/a.mp4", "--out", "out",
              "--batch-size", "2", cwd=workdir)  # fmt: skip
    assert run.code == 1, run.stderr
    folders = sorted(p.name for p in (workdir / "out").iterdir())
    assert folders == ["a", "a-2", "grey"]  # no `broken`; nothing half-written
    videos = {"a": workdir / "qs" / "a.mp4", "a-2": workdir / "dup2" / "a.mp4", "grey": plain}
    for name, video in videos.items():  # each folder holds the adapter of its own video
        adapter = GeneratedLora.from_pretrained(workdir / "out" / name)
        assert adapter.metadata["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert run.stdout.splitlines() == [
        "qs/a.mp4 -> out/a (rank 16, 0.1 MiB)", "grey.mp4 -> out/grey (rank 16, 0.1 MiB)",
        "dup2/a.mp4 -> out/a-2 (rank 16, 0.1 MiB)",
    ]  # fmt: skip
    failure = [line for line in run.lines if "broken.avi failed" in line]
    assert failure == ["v2l internalize: broken.avi failed: EmptyVideoError: Video 'broken.avi': no frame could "
                       "be decoded; the file is probably damaged. Download or export it again."]  # fmt: skip
    assert run.lines[-1] == "v2l internalize: 3 of 4 videos internalized; 1 failed (broken.avi): see above."
    notes = [line for line in run.lines if "toy-world clip" in line]
    assert len(notes) == 1 and notes[0].startswith(
        "v2l internalize: note: broken.avi (and 1 more) do not look"
    )
    assert "`v2l convert" in notes[0] and "--hypernetwork" in notes[0]
    # quiet: no progress bars, no source lines of warnings, no traceback; repeated warnings are cut short
    assert all(line.startswith("v2l internalize: ") for line in run.lines), run.stderr
    assert "Loading weights" not in run.stderr and "Traceback" not in run.stderr
    assert sum("skipped undecodable frame" in line for line in run.lines) == 2
    assert "v2l internalize: warning: more warnings like the one above are not shown." in run.lines


def test_ask_the_embedded_model_about_a_real_video_says_so_once(workdir, monkeypatch, capsys):
    """In-process (the subprocess tests above cover exit codes): a note for a real video's adapter only."""
    monkeypatch.chdir(workdir)
    write_video(workdir / "grey.mp4", 10, size=(240, 320))
    assert main(["internalize", "grey.mp4", "qs/a.mp4", "--out", "out"]) == 0
    assert capsys.readouterr().err.count("note: grey.mp4 does not look like a toy-world clip") == 1
    assert main(["ask", "out/grey", "What happens?", "How many objects?", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("Q: ") == 2 and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(
        "v2l ask: note: the video of out/grey (320x240 px) does not look like a toy-world"
    )
    assert main(["ask", "out/a", "What color is the circle?", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("Q: What color is the circle?\nA: ")


# ---- in-process: every parser, the --hypernetwork path, typed errors ---------------------------------------
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"v2l {command}" in capsys.readouterr().out


def test_internalize_then_ask_with_a_saved_hypernetwork(tmp_path, tiny_vlm_path, real_clip, capsys):
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
    captured = capsys.readouterr()
    assert "Q: What happens?" in captured.out and "Q: Who is there?" in captured.out
    assert "toy-world" not in captured.err  # the note is about the embedded model only
    assert main(["internalize", str(video), "--out", str(tmp_path / "adapter"), "--overwrite", *args]) == 0


def test_parser_rejects_unknown_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["frobnicate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("v2l: argument COMMAND: invalid choice: 'frobnicate'") and err.count("\n") == 1


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
    video = toy_clip(tmp_path / "clip.mp4")
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


def test_version():
    run = v2l("--version", cwd=Path.cwd())
    from transformers_v2l import __version__

    assert run.code == 0 and run.stdout == f"v2l (transformers-v2l) {__version__}\n" and run.heavy == []


def test_the_lazy_listing_matches_the_full_parsers():
    """`v2l --help` lists each subcommand without importing it: its one-line help must be the module's own."""
    import argparse

    def summaries(parser):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {choice.dest: choice.help for choice in action._choices_actions}

    assert summaries(build_parser(())) == summaries(build_parser())
    assert build_parser(()).format_help() == build_parser().format_help()
    assert json.dumps(sorted(summaries(build_parser()))) == json.dumps(sorted(SUBCOMMANDS))


def test_serve_says_once_that_the_embedded_model_knows_only_the_toy_world(capsys):
    import argparse

    from transformers_v2l.serving.cli import _load_hypernetwork

    hn = _load_hypernetwork(argparse.Namespace(random_weights=None, hypernetwork=None, dtype=None))
    assert hn.processor.family == "smolvlm"
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "toy world" in err and "--hypernetwork" in err
