"""`v2l serve` over HTTP: a real server in a subprocess, the real `openai` client, plain HTTP for uploads.

One server (embedded tiny-world model, an API key, small caps) serves the whole module. The expected
answers come from the same model in this process (`hn.answer`), so the tests check the server's
answers, not just their shape.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile

import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
requests = pytest.importorskip("requests")

from fixtures.videos import write_audio_only, write_video  # noqa: E402
from transformers_v2l.serving.process import ServerProcess  # noqa: E402

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
BASE = "v2l-tiny-world"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("serve") / "store"
    args = ["--store", str(store), "--api-key", KEY, "--max-upload-mb", "2", "--max-duration", "60",
            "--max-batch", "4", "--max-waiting", "2", "--threads", "1"]  # fmt: skip
    with ServerProcess(args) as process:
        yield process


@pytest.fixture(scope="module")
def hn():
    from transformers_v2l.demo import load_default_hypernetwork

    return load_default_hypernetwork()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def toy_clip(tmp_path_factory):
    from transformers_v2l.toy_world import make_clip
    from transformers_v2l.toy_world import write_video as write_toy

    return write_toy(make_clip(5).frames, tmp_path_factory.mktemp("toy") / "toy.mp4")


def upload(server, path, name=None, headers=AUTH):
    with open(path, "rb") as handle:
        return requests.post(f"{server.url}/v1/videos", files={"file": (name or path.name, handle)}, headers=headers,
                             timeout=60)  # fmt: skip


def wait_ready(server, video: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = requests.get(f"{server.url}/v1/videos/{video}", headers=AUTH, timeout=10).json()
        if record["status"] in ("ready", "failed"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"{video} not ready after {timeout} s: {record}")


@pytest.fixture(scope="module")
def toy_video(server, toy_clip):
    response = upload(server, toy_clip)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["id"].startswith("vid-")
    record = wait_ready(server, body["id"])
    assert record["status"] == "ready", record
    return body["id"]


def test_the_api_key_guards_every_route_but_health_and_the_page(server):
    assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    page = requests.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and "<title>v2l serve</title>" in page.text
    for method, path in (("get", "/v1/models"), ("get", "/metrics"), ("post", "/v1/videos"),
                         ("post", "/v1/chat/completions"), ("get", "/v1/videos/vid-0")):  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = getattr(requests, method)(f"{server.url}{path}", headers=headers, timeout=10)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"]["code"] == "invalid_api_key"


def test_upload_internalize_and_ask_with_the_openai_client(server, client, hn, toy_clip, toy_video):
    record = requests.get(f"{server.url}/v1/videos/{toy_video}", headers=AUTH, timeout=10).json()
    assert (
        record["filename"] == "toy.mp4" and record["metadata"]["frames"] > 0 and record["adapter"]["rank"] > 0
    )
    assert "video2lora:" in record["adapter_card"] and str(server.url) not in record["adapter_card"]
    again = upload(server, toy_clip, name="same-bytes.mp4")  # same content: the same id, no new work
    assert again.status_code == 200 and again.json()["id"] == toy_video and again.json()["status"] == "ready"
    assert [m.id for m in client.models.list().data] == [BASE, toy_video]

    adapter = hn.internalize(str(toy_clip))
    expected = hn.answer(adapter, "Describe the video.", max_new_tokens=48)
    messages = [{"role": "user", "content": "Describe the video."}]
    answer = client.chat.completions.create(model=toy_video, messages=messages, temperature=0, max_tokens=48)
    assert answer.choices[0].message.content.strip() == expected
    prompt_tokens = hn.processor.query_inputs(["Describe the video."])["input_ids"].shape[1]
    assert answer.usage.prompt_tokens == prompt_tokens and answer.model == toy_video  # zero visual tokens

    stream = client.chat.completions.create(model=toy_video, messages=messages, temperature=0, max_tokens=48,
                                            stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == answer.choices[0].finish_reason

    for question in ("What color is the circle?", "How many objects are there?"):  # the checkpoint's protocol
        messages = [{"role": "user", "content": question}]
        answer = client.chat.completions.create(
            model=toy_video, messages=messages, temperature=0, max_tokens=32
        )
        assert answer.choices[0].message.content.strip() == hn.answer(adapter, question, max_new_tokens=32)
    base = client.chat.completions.create(model=BASE, messages=messages, temperature=0, max_tokens=48)
    assert base.choices[0].message.content.strip() == hn.answer_plain(
        messages[0]["content"], max_new_tokens=48
    )


def test_sampling_parameters_behave_as_in_openai(client, toy_video):
    def ask(**params):
        messages = [{"role": "user", "content": "Describe the video."}]
        return client.chat.completions.create(model=toy_video, messages=messages, **params)

    seeded = [ask(temperature=1.3, seed=11, max_tokens=20).choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]
    capped = ask(temperature=0, max_tokens=2)
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 2
    full = ask(temperature=0, max_tokens=48).choices[0].message.content
    stop = full.split()[1]
    stopped = ask(temperature=0, max_tokens=48, stop=[stop])
    assert (
        stopped.choices[0].finish_reason == "stop"
        and stopped.choices[0].message.content == full[: full.index(stop)]
    )
    for bad in (
        {"temperature": 3},
        {"top_p": 0},
        {"n": 2},
        {"max_tokens": 0},
        {"stop": ["a", "b", "c", "d", "e"]},
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            ask(**bad)
        error = caught.value.body.get("error", caught.value.body)
        assert error["param"] == next(iter(bad)) and error["message"].startswith(next(iter(bad)))


def test_real_clip_and_the_adapter_archive(server, client, hn, real_clip, tmp_path):
    from transformers_v2l.lora import GeneratedLora

    clip = real_clip("carphone_distorted.mp4")  # a real H.264 clip, 4 s at 29.97 fps
    video = upload(server, clip).json()["id"]
    assert wait_ready(server, video)["status"] == "ready"
    archive = requests.get(f"{server.url}/v1/videos/{video}/adapter", headers=AUTH, timeout=30)
    assert archive.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(archive.content)).extractall(tmp_path / "adapter")
    served = GeneratedLora.from_pretrained(tmp_path / "adapter")
    local = hn.internalize(str(clip))
    for module in local.lora_A:
        np.testing.assert_array_equal(served.lora_A[module].numpy(), local.lora_A[module].numpy())
        np.testing.assert_array_equal(served.lora_B[module].numpy(), local.lora_B[module].numpy())
    answer = client.chat.completions.create(model=video, messages=[{"role": "user", "content": "Describe the video."}],
                                            temperature=0, max_tokens=32)  # fmt: skip
    assert answer.choices[0].message.content.strip() == hn.answer(
        local, "Describe the video.", max_new_tokens=32
    )
    assert requests.delete(f"{server.url}/v1/videos/{video}", headers=AUTH, timeout=10).json()["deleted"]
    assert requests.get(f"{server.url}/v1/videos/{video}", headers=AUTH, timeout=10).status_code == 404
    assert video not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=video, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )


def test_bad_uploads_get_a_4xx_that_names_the_problem(server, client, toy_video, tmp_path):
    write_video(tmp_path / "long.mp4", 70, fps=1)  # 70 s, above the 60 s cap
    (tmp_path / "notes.mp4").write_text("Meeting notes, not a video.\n" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(40_000))
    full = write_video(tmp_path / "full.mp4", 40).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(full[: len(full) // 2])
    (tmp_path / "huge.mp4").write_bytes(np.random.default_rng(1).bytes(3 * 2**20))  # above the 2 MB cap
    cases = {
        "random.mp4": (415, "not a video file"),
        "empty.mp4": (400, "empty (0 bytes)"),
        "truncated.mp4": (400, "truncated"),
        "notes.mp4": (415, "first bytes are text"),
        "huge.mp4": (413, "larger than this server's cap of 2 MB"),
        "long.mp4": (413, "longer than this server's cap of 60 s"),
        "song.wav": (415, "no video stream"),
    }
    write_audio_only(tmp_path / "song.wav")
    for name, (status, words) in cases.items():
        response = upload(server, tmp_path / name)
        assert response.status_code == status, (name, response.text)
        message = response.json()["error"]["message"]
        assert words in message and str(tmp_path) not in message, (name, message)
    for headers, body in (({"Content-Type": "application/json"}, b"{}"),
                          ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nnot a form")):  # fmt: skip
        response = requests.post(
            f"{server.url}/v1/videos", data=body, headers={**AUTH, **headers}, timeout=10
        )
        assert 400 <= response.status_code < 500 and response.json()["error"]["message"]
    videos = requests.get(f"{server.url}/v1/videos", headers=AUTH, timeout=10).json()["data"]
    assert [v["id"] for v in videos] == [toy_video]  # nothing rejected entered the store
    answer = client.chat.completions.create(model=toy_video, messages=[{"role": "user", "content": "Describe the video."}],
                                            temperature=0, max_tokens=8)  # fmt: skip
    assert answer.usage.completion_tokens > 0  # and the server keeps serving


def test_no_request_field_is_read_as_a_path(server, client):
    for path in (
        "/v1/videos/..%2F..%2Fstore.json",
        "/v1/videos/..%2Fstore.json/adapter",
        "/v1/videos/store.json",
    ):
        response = requests.get(f"{server.url}{path}", headers=AUTH, timeout=10)
        assert response.status_code == 404 and response.json()["error"]["message"]
    for model in ("../store.json", "/etc/passwd", "vid-" + "0" * 32):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )


def test_overload_answers_429_with_retry_after(server, toy_video):
    body = {"model": toy_video, "messages": [{"role": "user", "content": "Describe the video."}],
            "max_tokens": 300, "ignore_eos": True, "temperature": 0}  # fmt: skip
    statuses, retry_after = [], []

    def post():
        response = requests.post(f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.append(response.headers.get("Retry-After"))

    threads = [threading.Thread(target=post) for _ in range(12)]  # 4 rows + 2 waiting slots
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert statuses.count(200) >= 2 and 429 in statuses, statuses  # the accepted ones complete
    assert set(statuses) <= {200, 429} and all(value and int(value) >= 1 for value in retry_after)


def test_metrics_report_queues_cache_and_latency(server, toy_video):
    text = requests.get(f"{server.url}/metrics", headers=AUTH, timeout=10).text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    for name in ("v2l_engine_waiting_requests", "v2l_engine_running_requests", "v2l_internalization_queue_length",
                 "v2l_adapters_cached", "v2l_tokens_per_second", "v2l_time_to_first_token_seconds_count"):  # fmt: skip
        assert name in values, name
    assert values["v2l_time_to_first_token_seconds_count"] > 0 and values["v2l_adapters_cached"] >= 1
    assert values['v2l_uploads_total{status="accepted"}'] >= 1
    json.loads(requests.get(f"{server.url}/health", timeout=10).text)
