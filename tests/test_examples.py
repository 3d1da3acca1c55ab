"""The runnable examples in `examples/<task>/`: each script runs in a fresh process with small arguments.

Every test checks what the example produced (files that load, answers, counts), not only its exit
code. The share example runs against the local Hub server (`tests/hub_server.py`), and once more
against an endpoint where nothing listens, where it must fail with the library's message and no
traceback.
"""

from __future__ import annotations

import json
import math
import os
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


def run_example(
    task: str,
    options: str,
    out_dir: Path,
    *paths: str,
    env: dict[str, str] | None = None,
    returncode: int = 0,
) -> subprocess.CompletedProcess:
    """Run `examples/<task>/<task>.py OPTIONS [PATHS...] --out-dir OUT_DIR` and check its exit status."""
    script = EXAMPLES / task / f"{task}.py"
    result = subprocess.run(
        [sys.executable, str(script), *options.split(), *paths, "--out-dir", str(out_dir)],
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


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_every_example_folder_has_a_readme_and_one_script():
    for task in TASKS:
        folder = EXAMPLES / task
        assert (folder / "README.md").is_file(), folder
        assert sorted(p.name for p in folder.glob("*.py")) == [f"{task}.py"], folder
    listed = (EXAMPLES / "README.md").read_text()
    assert all(f"`{task}/`" in listed for task in TASKS)


def test_internalize_and_ask(tmp_path):
    result = run_example("internalize_and_ask", "--num-questions 3 --max-new-tokens 12", tmp_path)
    report = read_json(tmp_path / "answers.json")
    assert Path(report["video"]).is_file()
    assert report["adapter"]["rank"] == 16
    questions = report["questions"]
    assert len(questions) == 3
    for item in questions:
        assert item["ground_truth"] and item["video2lora"] and item["video_in_context"]
    assert questions[0]["question"] == "Describe the video."
    assert "adapter merged" in result.stdout


def test_batch_videos_one_adapter_and_one_answer_per_video(tmp_path):
    from transformers_v2l import GeneratedLora

    options = "--num-videos 4 --batch-size 3 --max-new-tokens 8 --save-adapters"
    result = run_example("batch_videos", options, tmp_path)
    rows = read_json(tmp_path / "results.json")["rows"]
    assert len(rows) == 4
    assert len({row["video"] for row in rows}) == 4
    assert all(row["answer"] and row["ground_truth"] for row in rows)
    assert "2 batches of 3" in result.stdout
    for row in rows:
        adapter = GeneratedLora.from_pretrained(tmp_path / "adapters" / Path(row["video"]).stem)
        assert adapter.metadata["source"] == Path(row["video"]).name  # each adapter is its own video's


def check_long_video(summary: dict, chunks: int, rank_per_chunk: int = 16) -> None:
    """The plan printed before internalizing is what happened, and the adapter composes every chunk."""
    assert summary["plan"]["chunks"] == summary["composition"]["num_chunks"] == chunks
    assert len(summary["chunks"]) == chunks
    assert summary["rank"] == chunks * rank_per_chunk
    assert all(chunk["description"] for chunk in summary["chunks"])
    assert list(summary["answers"]) == ["Describe the video.", "How many objects are there?"]


def test_long_video_from_generated_clips(tmp_path):
    run_example("long_video", "--num-clips 3 --max-new-tokens 8", tmp_path)
    summary = read_json(tmp_path / "summary.json")
    check_long_video(summary, chunks=3)
    assert [len(chunk["frame_indices"]) for chunk in summary["chunks"]] == [8, 8, 8]
    assert [chunk["start_frame"] for chunk in summary["chunks"]] == [0, 16, 32]  # one 8 s clip per chunk
    assert summary["answers"]["Describe the video."]


def test_long_video_from_a_real_file(tmp_path, real_clip):
    video = real_clip("world.mp4")  # h264, 30 s at 30 fps: chunks of 8 s, the last one 6 s
    run_example("long_video", "--max-new-tokens 8 --video", tmp_path, str(video))
    summary = read_json(tmp_path / "summary.json")
    check_long_video(summary, chunks=4)
    assert [len(chunk["frame_indices"]) for chunk in summary["chunks"]] == [8, 8, 8, 6]


def test_train_from_manifest_trains_and_internalizes(tmp_path):
    from transformers_v2l import Video2LoraHypernetwork

    options = "--steps 2 --num-train 2 --num-validation 1 --batch-size 2"
    result = run_example("train_from_manifest", options, tmp_path)
    summary = read_json(tmp_path / "summary.json")
    assert len(summary["losses"]) == 2
    assert all(math.isfinite(loss) for loss in [*summary["losses"], summary["eval_loss"]])
    assert summary["test_answer"] and summary["shipped_answer"]
    assert "v2l train" in result.stdout
    run_dir = tmp_path / "hypernet"
    assert (run_dir / "model.safetensors").is_file()
    assert (run_dir / "checkpoint-2" / "v2l_training_state.json").is_file()
    assert list((run_dir / "generations").glob("eval-step-*.jsonl"))
    hypernetwork = Video2LoraHypernetwork.from_pretrained(run_dir)
    assert hypernetwork.config.lora_rank == 8
    assert Path(hypernetwork.config.base_model_name_or_path) == DEFAULT_MODEL_DIR / "base"


def test_evaluate_benchmark_runs_both_conditions_and_reports(tmp_path):
    options = "--num-videos 2 --max-new-tokens 8 --n-resamples 200 --no-plots"
    result = run_example("evaluate_benchmark", options, tmp_path)
    ids = [json.loads(line)["id"] for line in (tmp_path / "benchmark.jsonl").read_text().splitlines()]
    outputs = [json.loads(line) for line in (tmp_path / "eval" / "outputs.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["condition"]) for r in outputs) == sorted(
        (id_, condition) for id_ in ids for condition in ("base", "v2l")
    )
    assert all(r["output"] for r in outputs)
    rows = read_json(tmp_path / "eval" / "results.json")
    assert rows
    assert (tmp_path / "eval" / "report.md").read_text() in result.stdout
    assert "Token F1: Question answering" in result.stdout


def test_share_adapter_through_peft_and_the_local_hub(tmp_path, local_hub):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=local_hub.token)  # the embedded base model, on the Hub
    base_id = api.create_repo("tester/tiny-world-base").repo_id
    api.upload_folder(folder_path=str(DEFAULT_MODEL_DIR / "base"), repo_id=base_id)
    options = f"--repo-id tester/example-adapter --base-model-id {base_id} --max-new-tokens 12"
    run_example("share_adapter", options, tmp_path)
    summary = read_json(tmp_path / "summary.json")
    assert summary["peft_answer"] == summary["library_answer"] != ""
    assert summary["hub"]["identical"]
    folder = tmp_path / "adapter"
    pushed = local_hub.files("tester/example-adapter", summary["hub"]["commit"])
    assert pushed["adapter_model.safetensors"] == (folder / "adapter_model.safetensors").read_bytes()
    local_config = json.loads((folder / "adapter_config.json").read_text())
    assert local_config["base_model_name_or_path"] == str(DEFAULT_MODEL_DIR / "base")
    assert json.loads(pushed["adapter_config.json"]) == {**local_config, "base_model_name_or_path": base_id}
    card = pushed["README.md"].decode()
    assert 'PeftModel.from_pretrained(base, "tester/example-adapter")' in card
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
    assert (
        f"HubPushError: Pushing to the Hub repository 'video2lora-example-adapter' at {endpoint}"
        in result.stderr
    )
    assert "Connection refused" in result.stderr
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()  # the local steps ran first
    assert "hub" not in read_json(tmp_path / "summary.json")
