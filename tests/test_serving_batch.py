"""`v2l internalize --manifest videos.jsonl --store DIR`: a collection into a `v2l serve` store, for real.

Real subprocesses throughout: a run is killed with SIGKILL once its first adapters are in the store and
then resumed; a run over a finished store does no work; two processes launched by `accelerate launch`
split the manifest without overlap; and `v2l serve` started on the store answers for those ids exactly
as `hn.answer` does. Videos: real H.264/MPEG-4 clips and toy-world clips, with the embedded model.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transformers_v2l.serving.batch import internalize_manifest, read_manifest, shard_entries
from transformers_v2l.serving.store import video_id

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def hn():
    from transformers_v2l.demo import load_default_hypernetwork

    return load_default_hypernetwork()


@pytest.fixture(scope="module")
def collection(tmp_path_factory, real_clip):
    """A manifest of 2 real clips and 8 toy-world clips (relative paths, one listed twice)."""
    from transformers_v2l.toy_world import make_clip, write_video

    folder = tmp_path_factory.mktemp("collection")
    names = []
    for name in ("carphone_distorted.mp4", "b.avi"):
        (folder / name).write_bytes(real_clip(name).read_bytes())
        names.append(name)
    for seed in range(8):
        write_video(make_clip(seed).frames, folder / f"toy{seed}.mp4")
        names.append(f"toy{seed}.mp4")
    rows = [{"video": name} for name in names] + [{"video_path": names[2], "note": "listed twice"}]
    (folder / "videos.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def _ids(folder: Path, revision: str) -> dict[str, str]:
    entries = read_manifest(folder / "videos.jsonl")
    return {
        entry.name: video_id(hashlib.sha256(entry.path.read_bytes()).hexdigest(), revision)
        for entry in entries
    }


def _snapshot(store: Path) -> dict[str, tuple[int, int, str]]:
    """Every adapter file: (inode, mtime, SHA-256), to tell a skipped adapter from a rewritten one."""
    found = {}
    for path in sorted(store.glob("videos/*/adapter/*")):
        stat = path.stat()
        found[str(path.relative_to(store))] = (
            stat.st_ino,
            stat.st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
    return found


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_the_manifest_goes_into_the_store_a_killed_run_resumes_and_serve_answers(tmp_path, collection, hn):
    from transformers_v2l.lora import GeneratedLora
    from transformers_v2l.serving import model_access

    store = tmp_path / "store"
    command = [sys.executable, "-m", "transformers_v2l.cli", "internalize", "--manifest",
               str(collection / "videos.jsonl"), "--store", str(store)]  # fmt: skip
    ids = _ids(collection, model_access.hypernetwork_fingerprint(hn))
    assert len(ids) == 10  # the repeated line counts once

    # run 1: killed (SIGKILL, the whole process group) as soon as its first adapter is in the store
    log = (tmp_path / "run1.out").open("w")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list(store.glob("videos/*/adapter/adapter_model.safetensors")) and time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "run1.out").read_text()[-3000:]
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    log.close()
    before = _snapshot(store)
    finished = {path.split("/")[1] for path in before}
    assert 1 <= len(finished) < len(ids), "the kill did not land midway"
    for folder in store.glob(
        "videos/*"
    ):  # on disk: every job parses, every adapter folder is complete or absent
        json.loads((folder / "job.json").read_text())
        assert not (folder / "adapter").exists() or {p.name for p in (folder / "adapter").iterdir()} >= {
            "adapter_config.json", "adapter_model.safetensors"}  # fmt: skip

    # run 2 resumes: finished ids are skipped (their files untouched), the rest is internalized
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _lines(result.stdout)
    assert {r["id"] for r in rows if r["status"] == "skipped"} == finished
    assert {r["id"] for r in rows if r["status"] == "internalized"} == set(ids.values()) - finished
    assert "internalize" in result.stderr and "10/10" in result.stderr  # the progress bar
    after = _snapshot(store)
    assert {k: v for k, v in after.items() if k.split("/")[1] in finished} == before
    assert not list((store / "uploads").glob("*.dir")) and not list(store.glob("videos/*/.*.tmp"))

    # run 3 (in this process): nothing to do
    summary = internalize_manifest(hn, read_manifest(collection / "videos.jsonl"), store, show_progress=False,
                                   report=lambda row: None)  # fmt: skip
    assert summary.internalized == [] and sorted(summary.skipped) == sorted(ids.values()) and summary.ok
    assert _snapshot(store) == after

    # the adapters are the ones hn.internalize makes
    real = GeneratedLora.from_pretrained(store / "videos" / ids["carphone_distorted.mp4"] / "adapter")
    local = hn.internalize(str(collection / "carphone_distorted.mp4"))
    for module in local.lora_A:
        assert (real.lora_A[module] == local.lora_A[module]).all() and (
            real.lora_B[module] == local.lora_B[module]
        ).all()

    # v2l serve on that store answers for those ids (the ids the server gives the same uploads)
    requests = pytest.importorskip("requests")
    pytest.importorskip("fastapi")
    from transformers_v2l.serving.process import ServerProcess

    with ServerProcess(["--store", str(store), "--threads", "1"], log_path=tmp_path / "serve.log") as server:
        listed = [m["id"] for m in requests.get(f"{server.url}/v1/models", timeout=30).json()["data"]]
        assert sorted(listed[1:]) == sorted(ids.values())
        with open(collection / "b.avi", "rb") as handle:
            again = requests.post(f"{server.url}/v1/videos", files={"file": ("b.avi", handle)}, timeout=60)
        assert (
            again.status_code == 200
            and again.json()["id"] == ids["b.avi"]
            and again.json()["status"] == "ready"
        )
        for name in ("carphone_distorted.mp4", "toy3.mp4"):
            body = {"model": ids[name], "messages": [{"role": "user", "content": "What color is the circle?"}],
                    "temperature": 0, "max_tokens": 24}  # fmt: skip
            answer = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=120).json()
            adapter = GeneratedLora.from_pretrained(store / "videos" / ids[name] / "adapter")
            expected = hn.answer(adapter, "What color is the circle?", max_new_tokens=24)
            assert answer["choices"][0]["message"]["content"].strip() == expected


@pytest.mark.slow  # 2 processes each load the model (about 25 s on a busy 2-core machine)
def test_two_processes_split_the_manifest_without_overlap(tmp_path, collection, hn):
    pytest.importorskip("accelerate")
    from transformers_v2l.serving import model_access

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = tmp_path / "store"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "transformers_v2l.cli", "internalize", "--manifest", str(collection / "videos.jsonl"),
               "--store", str(store)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    rows = _lines(result.stdout)
    by_rank = {rank: [r for r in rows if r["rank"] == rank] for rank in (0, 1)}
    entries = read_manifest(collection / "videos.jsonl")
    for rank, mine in by_rank.items():  # each process did exactly its shard
        assert [r["line"] for r in mine] == [e.line for e in shard_entries(entries, rank, 2)]
        assert all(r["status"] == "internalized" for r in mine)
    ids = _ids(collection, model_access.hypernetwork_fingerprint(hn))
    done = [r["id"] for r in rows]
    assert sorted(done) == sorted(ids.values())  # no video twice, none left out
    for video in done:  # and each was internalized once: one attempt, one adapter
        record = json.loads((store / "videos" / video / "job.json").read_text())
        assert (
            record["attempts"] == 1
            and (store / "videos" / video / "adapter" / "adapter_model.safetensors").exists()
        )
    assert "process 1 of 2" in result.stderr and "process 2 of 2" in result.stderr


def test_bad_manifests_are_refused_before_any_work_and_non_videos_are_rejected(tmp_path, hn):
    from transformers_v2l.errors import InvalidArgumentError

    (tmp_path / "a.mp4").write_bytes(b"")
    cases = {  # name: (content, words the error must have)
        "missing.jsonl": (None, ["no such file"]),
        "not-json.jsonl": ('{"video": "a.mp4"\nnope\n', ["line 1 is not JSON"]),
        "no-video.jsonl": (json.dumps({"path": "a.mp4"}) + "\n", ["line 1 has no video path"]),
        "bad-files.jsonl": ('{"video": "a.mp4"}\n\n{"video": "gone.mp4"}\n', ["2 video(s)", "line 1", "empty",
                                                                                 "line 3", "gone.mp4"]),
        "empty.jsonl": ("\n\n", ["lists no videos"]),
    }  # fmt: skip
    for name, (text, words) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(InvalidArgumentError) as caught:
            read_manifest(tmp_path / name)
        assert all(word in str(caught.value) for word in words), (name, str(caught.value))
    with pytest.raises(InvalidArgumentError, match="rank must be in"):
        shard_entries([], 2, 2)
    result = subprocess.run([sys.executable, "-m", "transformers_v2l.cli", "internalize", "--manifest",
                             str(tmp_path / "empty.jsonl")], capture_output=True, text=True, env=_env(), timeout=120)  # fmt: skip
    assert result.returncode == 1 and "--manifest and --store go together" in result.stderr

    (tmp_path / "notes.mp4").write_text(
        "Meeting notes, not a video.\n" * 20
    )  # passes the cheap check, fails the probe
    (tmp_path / "notes.jsonl").write_text(json.dumps({"video": "notes.mp4"}) + "\n")
    rows = []
    summary = internalize_manifest(hn, read_manifest(tmp_path / "notes.jsonl"), tmp_path / "store",
                                   show_progress=False, report=rows.append)  # fmt: skip
    assert not summary.ok and list(summary.rejected) == [str(tmp_path / "notes.mp4")]
    assert rows[0]["status"] == "rejected" and "not a video file" in rows[0]["error"]
    assert not list((tmp_path / "store" / "videos").iterdir())  # nothing rejected enters the store
