"""The runnable examples in `examples/<task>/`: each script runs in a fresh process.

Most tests run the command that the example's README shows, from a temporary folder (so the outputs
land in `runs/<task>/` there, as the README prints them), check what the example produced (files that
load, answers, counts), and check that the README's sample output is what the run printed, line for
line: every number and answer, with only the figures that vary between runs masked (timings, Hub
commit ids, the local Hub's port). The examples are deterministic on the embedded tiny-world model on
one CPU thread (fixed seeds, greedy decoding), so a README that disagrees with a fresh run fails here.
The share example runs against the local Hub server (`tests/hub_server.py`), and once more against an
endpoint where nothing listens, where it must fail with the library's message and no traceback.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from transformers_v2l.demo import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TASKS = (
    "internalize_and_ask",
    "share_adapter",
    "batch_videos",
    "long_video",
    "train_from_manifest",
    "evaluate_benchmark",
)

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "hypernet" / "config.json").exists(),
    reason="the tiny-world assets are not built",
)


def example_env(**overrides: str) -> dict[str, str]:
    """The current environment (offline unless a fixture changed it), one thread, this checkout first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **overrides}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def run_script(
    task: str,
    args: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    returncode: int = 0,
) -> subprocess.CompletedProcess:
    """Run `examples/<task>/<task>.py ARGS` (from `cwd`) and check its exit status."""
    script = EXAMPLES / task / f"{task}.py"
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env or example_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == returncode, (
        f"{task} exited with {result.returncode}:\n{result.stderr[-3000:]}"
    )
    return result


def run_example(
    task: str,
    options: str,
    out_dir: Path,
    *paths: str,
    env: dict[str, str] | None = None,
    returncode: int = 0,
) -> subprocess.CompletedProcess:
    """Run `examples/<task>/<task>.py OPTIONS [PATHS...] --out-dir OUT_DIR` and check its exit status."""
    args = [*options.split(), *paths, "--out-dir", str(out_dir)]
    return run_script(task, args, env=env, returncode=returncode)


def readme_options(task: str) -> list[str]:
    """The options of the first `python examples/<task>/<task>.py ...` command in the task's README."""
    command = f"python examples/{task}/{task}.py"
    lines = iter((EXAMPLES / task / "README.md").read_text().splitlines())
    for line in lines:
        if line == command or line.startswith(command + " "):
            while line.endswith("\\"):
                line = line[:-1] + next(lines)
            return shlex.split(line[len(command) :], comments=True)
    raise AssertionError(f"examples/{task}/README.md shows no `{command}` command")


def run_readme_example(
    task: str, tmp_path: Path, *, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the README's command from `tmp_path`, as from the repository root; returns the run, its out dir."""
    return run_script(task, readme_options(task), cwd=tmp_path, env=env), tmp_path / "runs" / task


def readme_block(task: str, heading: str = "Output") -> list[str]:
    """The lines of the first fenced block under `## HEADING` in the task's README."""
    section = (EXAMPLES / task / "README.md").read_text().partition(f"\n## {heading}\n")[2]
    before, fence, rest = section.partition("\n```")
    assert fence and "\n## " not in before, f"examples/{task}/README.md has no block under '## {heading}'"
    return rest.partition("\n")[2].partition("\n```")[0].splitlines()


def check_readme_output(
    task: str, printed: str, volatile: tuple[str, ...] = (), heading: str = "Output"
) -> None:
    """The README's sample output is what the run printed: each part (parts are split at `...` lines)
    is a run of consecutive printed lines, in order. Matches of the `volatile` patterns (timings, Hub
    commit ids) become `<varies>` on both sides first; every other number and word must be equal.
    """

    def mask(line: str) -> str:
        for pattern in volatile:
            line = re.sub(pattern, "<varies>", line)
        return line.rstrip()

    readme = [mask(line) for line in readme_block(task, heading)]
    output = [mask(line) for line in printed.splitlines()]
    parts: list[list[str]] = [[]]
    for line in readme:
        if line == "...":
            parts.append([])
        else:
            parts[-1].append(line)
    start = 0
    for part in filter(None, parts):
        found = next(
            (i for i in range(start, len(output) - len(part) + 1) if output[i : i + len(part)] == part), None
        )
        if found is None:
            diff = "\n".join(difflib.unified_diff(readme, output, "README", "fresh run", lineterm="", n=1))
            raise AssertionError(
                f"examples/{task}/README.md's '## {heading}' block differs from a fresh run of "
                f"`{' '.join(readme_options(task))}`; update the README from this run:\n{diff}"
            )
        start = found + len(part)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_every_example_folder_has_a_readme_and_one_script():
    for task in TASKS:
        folder = EXAMPLES / task
        assert (folder / "README.md").is_file(), folder
        assert sorted(p.name for p in folder.glob("*.py")) == [f"{task}.py"], folder
    listed = (EXAMPLES / "README.md").read_text()
    assert all(f"`{task}/`" in listed for task in TASKS)


#: Printed figures that differ from run to run, masked before a README is compared with a fresh run.
SECONDS = r"\d+\.\d+s\b"
HUB_RUN = (r"http://127\.0\.0\.1:\d+", r"\b[0-9a-f]{40}\b", r"@[0-9a-f]{8}\b")


def test_internalize_and_ask(tmp_path):
    result, out_dir = run_readme_example("internalize_and_ask", tmp_path)
    check_readme_output("internalize_and_ask", result.stdout, volatile=(rf"in {SECONDS}",))
    report = read_json(out_dir / "answers.json")
    assert (tmp_path / report["video"]).is_file()
    assert report["adapter"]["rank"] == 16
    questions = report["questions"]
    assert len(questions) == 4
    for item in questions:
        assert item["ground_truth"] and item["video2lora"] and item["video_in_context"]
    assert questions[0]["question"] == "Describe the video."
    assert "adapter merged" in result.stdout


def test_batch_videos_one_adapter_and_one_answer_per_video(tmp_path):
    from transformers_v2l import GeneratedLora

    result, out_dir = run_readme_example("batch_videos", tmp_path)  # 8 videos, batches of 4, saved
    check_readme_output("batch_videos", result.stdout, volatile=(rf": {SECONDS}$",))
    rows = read_json(out_dir / "results.json")["rows"]
    assert len(rows) == 8
    assert len({row["video"] for row in rows}) == 8
    assert all(row["answer"] and row["ground_truth"] for row in rows)
    assert "2 batches of 4" in result.stdout
    for row in rows:
        adapter = GeneratedLora.from_pretrained(out_dir / "adapters" / Path(row["video"]).stem)
        assert adapter.metadata["source"] == Path(row["video"]).name  # each adapter is its own video's


def check_long_video(summary: dict, chunks: int, rank_per_chunk: int = 16) -> None:
    """The plan printed before internalizing is what happened, and the adapter composes every chunk."""
    assert summary["plan"]["chunks"] == summary["composition"]["num_chunks"] == chunks
    assert len(summary["chunks"]) == chunks
    assert summary["rank"] == chunks * rank_per_chunk
    assert all(chunk["description"] for chunk in summary["chunks"])
    assert list(summary["answers"]) == ["Describe the video.", "How many objects are there?"]


def test_long_video_from_generated_clips(tmp_path):
    result, out_dir = run_readme_example("long_video", tmp_path)  # 6 clips, chunks of 8 frames
    check_readme_output("long_video", result.stdout, volatile=(rf"in {SECONDS} into",))
    summary = read_json(out_dir / "summary.json")
    check_long_video(summary, chunks=6)
    assert [len(chunk["frame_indices"]) for chunk in summary["chunks"]] == [8] * 6
    assert [chunk["start_frame"] for chunk in summary["chunks"]] == list(range(0, 96, 16))  # one clip each
    assert summary["answers"]["Describe the video."]


def test_long_video_from_a_real_file(tmp_path, real_clip):
    video = real_clip("world.mp4")  # h264, 30 s at 30 fps: chunks of 8 s, the last one 6 s
    run_example("long_video", "--max-new-tokens 8 --video", tmp_path, str(video))
    summary = read_json(tmp_path / "summary.json")
    check_long_video(summary, chunks=4)
    assert [len(chunk["frame_indices"]) for chunk in summary["chunks"]] == [8, 8, 8, 6]


def test_train_from_manifest_trains_and_internalizes(tmp_path):
    from transformers_v2l import Video2LoraHypernetwork

    result, out_dir = run_readme_example("train_from_manifest", tmp_path)  # 4 steps of 4 examples
    speed = r"'train_(runtime|samples_per_second|steps_per_second)': '[\d.]+'"
    check_readme_output("train_from_manifest", result.stdout, volatile=(speed,))
    summary = read_json(out_dir / "summary.json")
    assert len(summary["losses"]) == 4
    assert all(math.isfinite(loss) for loss in [*summary["losses"], summary["eval_loss"]])
    assert summary["test_answer"] and summary["shipped_answer"]
    assert "v2l train" in result.stdout
    run_dir = out_dir / "hypernet"
    assert (run_dir / "model.safetensors").is_file()
    assert (run_dir / "checkpoint-4" / "v2l_training_state.json").is_file()
    assert list((run_dir / "generations").glob("eval-step-*.jsonl"))
    hypernetwork = Video2LoraHypernetwork.from_pretrained(run_dir)
    assert hypernetwork.config.lora_rank == 8
    assert Path(hypernetwork.config.base_model_name_or_path) == DEFAULT_MODEL_DIR / "base"


def test_evaluate_benchmark_runs_both_conditions_and_reports(tmp_path):
    result, out_dir = run_readme_example("evaluate_benchmark", tmp_path)  # 6 clips, 10000 resamples
    check_readme_output("evaluate_benchmark", result.stdout)
    ids = [json.loads(line)["id"] for line in (out_dir / "benchmark.jsonl").read_text().splitlines()]
    outputs = [json.loads(line) for line in (out_dir / "eval" / "outputs.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["condition"]) for r in outputs) == sorted(
        (id_, condition) for id_ in ids for condition in ("base", "v2l")
    )
    assert all(r["output"] for r in outputs)
    rows = read_json(out_dir / "eval" / "results.json")
    assert rows
    assert (out_dir / "eval" / "report.md").read_text() in result.stdout
    assert len(list((out_dir / "eval").glob("*.png"))) == 2
    assert "Token F1: Question answering" in result.stdout


def test_share_adapter_through_peft_and_the_local_hub(tmp_path, local_hub):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=local_hub.token)  # the embedded base model, on the Hub
    base_id = api.create_repo("tester/tiny-world-base").repo_id
    api.upload_folder(folder_path=str(DEFAULT_MODEL_DIR / "base"), repo_id=base_id)
    assert readme_options("share_adapter") == ["--repo-id", "tester/demo-adapter", "--base-model-id", base_id]
    result, out_dir = run_readme_example("share_adapter", tmp_path)
    # adapter_config.json records the base model's folder, so its size depends on the checkout's path.
    volatile = (*HUB_RUN, r"'adapter_config\.json': \d+")
    check_readme_output("share_adapter", result.stdout, volatile=volatile)
    summary = read_json(out_dir / "summary.json")
    assert summary["peft_answer"] == summary["library_answer"] != ""
    assert summary["hub"]["identical"]
    folder = out_dir / "adapter"
    pushed = local_hub.files("tester/demo-adapter", summary["hub"]["commit"])
    assert pushed["adapter_model.safetensors"] == (folder / "adapter_model.safetensors").read_bytes()
    local_config = json.loads((folder / "adapter_config.json").read_text())
    assert local_config["base_model_name_or_path"] == str(DEFAULT_MODEL_DIR / "base")
    assert json.loads(pushed["adapter_config.json"]) == {**local_config, "base_model_name_or_path": base_id}
    card = pushed["README.md"].decode()
    assert 'PeftModel.from_pretrained(base, "tester/demo-adapter")' in card
    assert f'from_pretrained("{base_id}")' in card and str(DEFAULT_MODEL_DIR) not in card


def test_share_adapter_without_a_hub_fails_with_the_library_message(tmp_path):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = example_env(HF_TOKEN="hf_unused", HF_HOME=str(tmp_path / "hf_home"))
    env.pop("HF_HUB_OFFLINE", None)
    options = f"--endpoint {endpoint} --base-model-id tester/tiny-world-base --max-new-tokens 4"
    result = run_example("share_adapter", options, tmp_path, env=env, returncode=1)
    assert "Traceback" not in result.stderr
    check_readme_output("share_adapter", result.stderr, volatile=HUB_RUN, heading="Without a Hub")
    assert (
        f"HubPushError: Pushing to the Hub repository 'video2lora-example-adapter' at {endpoint}"
        in result.stderr
    )
    assert "Connection refused" in result.stderr
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()  # the local steps ran first
    assert "hub" not in read_json(tmp_path / "summary.json")
