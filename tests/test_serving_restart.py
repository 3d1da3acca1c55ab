"""Kill `v2l serve` (SIGKILL) at random points, 10 times, during uploads, internalization and answering.

After every kill the store on disk is checked before anything repairs it (every job record parses,
every stored video matches its recorded SHA-256, every adapter folder is complete), then the server
restarts on the same store and must still list every upload it had accepted (answered 202/200) and
every adapter it had finished, byte for byte; unfinished jobs run again until every video is ready and
answers.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("fastapi")
requests = pytest.importorskip("requests")

from transformers_v2l.serving.process import ServerProcess  # noqa: E402

TRIALS = 10
PHASES = ("upload", "internalize", "answer")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Ledger:
    """What the clients were told: accepted uploads and finished adapters (with their bytes' hash)."""

    def __init__(self):
        self.accepted: dict[str, Path] = {}
        self.finished: dict[str, str] = {}
        self.lock = threading.Lock()


def _upload(url: str, clip: Path, ledger: Ledger) -> None:
    try:
        with open(clip, "rb") as handle:
            response = requests.post(f"{url}/v1/videos", files={"file": (clip.name, handle)}, timeout=30)
    except requests.RequestException:
        return  # killed before it answered: not accepted
    if response.status_code in (200, 202):
        with ledger.lock:
            ledger.accepted[response.json()["id"]] = clip


def _slow_upload(url: str, clip: Path, ledger: Ledger, seconds: float = 3.0) -> None:
    """An upload whose body trickles in for `seconds`, so a kill lands in the middle of receiving it."""
    boundary = "v2l-restart-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{clip.name}\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    pieces = [body[i : i + 64] for i in range(0, len(body), 64)]

    def trickle():
        for piece in pieces:
            yield piece
            time.sleep(seconds / len(pieces))

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}  # sent chunked: no length
    try:
        response = requests.post(f"{url}/v1/videos", data=trickle(), headers=headers, timeout=30)
    except requests.RequestException:
        return
    if response.status_code in (200, 202):
        with ledger.lock:
            ledger.accepted[response.json()["id"]] = clip


def _activity(url: str) -> set[str]:
    """What the server is doing right now, from its metrics."""
    try:
        text = requests.get(f"{url}/metrics", timeout=5).text
    except requests.RequestException:
        return set()
    values = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"
    }
    names = {"upload": "v2l_uploads_in_progress", "internalize": "v2l_internalization_in_progress",
             "answer": "v2l_engine_running_requests"}  # fmt: skip
    return {phase for phase, name in names.items() if values.get(name, 0) > 0}


def _ask(url: str, video: str) -> None:
    body = {"model": video, "messages": [{"role": "user", "content": "Describe the video."}], "max_tokens": 300,
            "ignore_eos": True, "stream": True}  # fmt: skip
    try:
        with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=30) as response:
            for _ in response.iter_lines():
                pass
    except requests.RequestException:
        pass  # killed while answering


def _check_store_on_disk(store: Path, ledger: Ledger) -> None:
    """The state a kill left, before a restart cleans anything: complete records, videos and adapters only."""
    from safetensors import safe_open

    videos = {d.name: d for d in (store / "videos").iterdir()}
    assert set(ledger.accepted) <= set(videos), "an accepted upload is missing from the store"
    for video, directory in videos.items():
        record = json.loads((directory / "job.json").read_text())  # complete JSON, never half-written
        assert record["id"] == video and _sha256(directory / "video") == record["sha256"]
        adapter = directory / "adapter"
        if adapter.exists():  # an adapter folder appears complete or not at all
            json.loads((adapter / "adapter_config.json").read_text())
            with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as handle:
                assert list(handle.keys())
    for video, digest in ledger.finished.items():
        assert _sha256(videos[video] / "adapter" / "adapter_model.safetensors") == digest, f"{video} changed"


def _wait_all_ready(url: str, store: Path, ledger: Ledger, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ledger.accepted)
    while pending and time.monotonic() < deadline:
        for video in sorted(pending):
            record = requests.get(f"{url}/v1/videos/{video}", timeout=10).json()
            assert record.get("status") in ("queued", "processing", "ready"), (
                record
            )  # never lost, never failed
            if record["status"] == "ready":
                pending.discard(video)
                path = store / "videos" / video / "adapter" / "adapter_model.safetensors"
                ledger.finished.setdefault(video, _sha256(path))
        time.sleep(0.05)
    assert not pending, f"unfinished jobs did not run again: {sorted(pending)}"


def test_random_kills_lose_no_accepted_upload_and_no_finished_adapter(tmp_path):
    from transformers_v2l.toy_world import make_clip, write_video

    store = tmp_path / "store"
    clips = iter(
        write_video(make_clip(seed).frames, tmp_path / f"clip{seed}.mp4") for seed in range(100, 200)
    )
    ledger, rng = Ledger(), random.Random(0)
    phases, activity = [PHASES[i % len(PHASES)] for i in range(TRIALS)], []
    rng.shuffle(phases)
    for trial, phase in enumerate(phases):
        server = ServerProcess(
            ["--store", str(store), "--threads", "1"], log_path=tmp_path / f"serve{trial}.log"
        )
        server.start()
        try:
            for video, digest in ledger.finished.items():  # finished adapters survive restarts unchanged
                assert requests.get(f"{server.url}/v1/videos/{video}", timeout=10).json()["status"] == "ready"
                assert _sha256(store / "videos" / video / "adapter" / "adapter_model.safetensors") == digest
            _wait_all_ready(server.url, store, ledger)
            threads = [
                threading.Thread(target=_upload, args=(server.url, next(clips), ledger)) for _ in range(3)
            ]
            if phase == "internalize":  # accepted first, then killed while the worker runs
                for thread in threads:
                    thread.start()
                    thread.join()
            elif phase == "upload":
                threads.append(threading.Thread(target=_slow_upload, args=(server.url, next(clips), ledger)))
            elif phase == "answer":
                threads += [
                    threading.Thread(target=_ask, args=(server.url, v)) for v in list(ledger.finished)[:4]
                ]
            for thread in threads:
                if thread.ident is None:
                    thread.start()
            time.sleep(rng.uniform(0.1, 0.6))
            activity.append(_activity(server.url))
        finally:
            server.kill()
        for thread in threads:
            thread.join(30)
        _check_store_on_disk(store, ledger)
    with ServerProcess(["--store", str(store), "--threads", "1"], log_path=tmp_path / "final.log") as server:
        _wait_all_ready(server.url, store, ledger)
        models = {m["id"] for m in requests.get(f"{server.url}/v1/models", timeout=10).json()["data"]}
        assert set(ledger.accepted) <= models and len(ledger.accepted) >= 2 * TRIALS
        for video in ledger.accepted:
            body = {
                "model": video,
                "messages": [{"role": "user", "content": "Describe the video."}],
                "max_tokens": 4,
            }
            response = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
            assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] > 0
        assert not any((store / "uploads").iterdir())  # the restart removed what the kills left half-received
    hits = {phase: sum(phase in active for active in activity) for phase in PHASES}
    print(f"kills that landed during each activity (of {TRIALS}): {hits}")
    assert all(hits.values()), f"some activity was never interrupted: {hits}"
