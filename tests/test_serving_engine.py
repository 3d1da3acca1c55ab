"""The serving engine in process, on the embedded tiny-world model: continuous batching with one adapter per row.

The reference is the library's own answering path (`generate` with per-row injection, what `hn.answer`
runs for each prompt) on each request alone; the engine must produce the same greedy tokens for every
request while requests for different videos share one batch and join it mid-flight.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")

from transformers_v2l.injection import inject_lora, stack_adapters
from transformers_v2l.serving import model_access
from transformers_v2l.serving.cache import AdapterCache
from transformers_v2l.serving.engine import EngineRequest, ServingEngine
from transformers_v2l.serving.errors import OverloadedError, StoreMismatchError
from transformers_v2l.serving.sampling import SamplingParams, TextStream
from transformers_v2l.serving.store import VideoStore

QUESTIONS = [
    "Describe the video.",
    "What color is the circle?",
    "How many objects are there?",
    "Describe the objects.",
]


@pytest.fixture(scope="module")
def hn():
    from transformers_v2l.demo import load_default_hypernetwork

    return load_default_hypernetwork()


@pytest.fixture(scope="module")
def adapters(hn, tmp_path_factory):
    from transformers_v2l.toy_world import make_clip, write_video

    root = tmp_path_factory.mktemp("engine-clips")
    paths = [write_video(make_clip(seed).frames, root / f"clip{seed}.mp4") for seed in range(4)]
    return hn.internalize([str(p) for p in paths], batch_size=4)


def _reference_tokens(hn, adapter, question: str, max_new_tokens: int) -> list[int]:
    """Greedy tokens of the library's answering path for one request alone (what `hn.answer` decodes)."""
    vlm, tokenizer = model_access.base_model(hn), model_access.tokenizer(hn)
    inputs = hn.processor.query_inputs([question])
    with torch.no_grad():
        if adapter is None:
            output = vlm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        else:
            with inject_lora(hn.family, *stack_adapters([adapter])):
                output = vlm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return output[0, inputs["input_ids"].shape[1] :].tolist()


class Collector:
    """Collects one request's events; `done` is set at its finish."""

    def __init__(self):
        self.tokens, self.texts, self.done = [], [], threading.Event()
        self.first_token_at = self.finished_at = None
        self.finish_reason = self.completion_tokens = self.error = None

    def __call__(self, event) -> None:
        if event.token_ids and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.tokens += event.token_ids
        self.texts.append(event.text)
        if event.finish_reason:
            self.finish_reason, self.completion_tokens, self.error = (
                event.finish_reason,
                event.completion_tokens,
                event.error,
            )
            self.finished_at = time.perf_counter()
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(self.texts)


def _submit(engine, hn, adapter, question, **params) -> Collector:
    collector = Collector()
    ids = model_access.prompt_ids(hn, [{"role": "user", "content": question}])
    engine.submit(
        EngineRequest(ids, adapter, SamplingParams(**{"temperature": 0, **params}), on_event=collector)
    )
    return collector


@pytest.fixture
def engine(hn):
    engine = ServingEngine(hn, max_batch=8, max_waiting=8).start()
    yield engine
    engine.stop()


def test_concurrent_requests_on_different_adapters_equal_each_answer_alone(hn, adapters, engine):
    """Five requests (four videos and the base model) in one batch, three joining mid-flight: same greedy tokens."""
    rows = [*zip(adapters, QUESTIONS), (None, "Describe the video.")]
    expected = [_reference_tokens(hn, adapter, question, 40) for adapter, question in rows]
    # the first two keep decoding past their end of sequence, so the others surely join a running batch;
    # up to that point their tokens are those of the reference
    first = [_submit(engine, hn, a, q, max_tokens=200, ignore_eos=True) for a, q in rows[:2]]
    while first[0].first_token_at is None:
        time.sleep(0.001)
    later = [_submit(engine, hn, a, q, max_tokens=40) for a, q in rows[2:]]
    for collector in first + later:
        assert collector.done.wait(60), "a request never finished"
    for collector, tokens, (_, question) in zip(first + later, expected, rows):
        assert collector.tokens[: len(tokens)] == tokens, (
            f"{question!r}: engine {collector.tokens} != alone {tokens}"
        )
    eos, tokenizer = model_access.eos_token_ids(hn), model_access.tokenizer(hn)
    for collector, tokens in zip(later, expected[2:]):
        assert collector.finish_reason == ("stop" if tokens[-1] in eos else "length")
        assert collector.text == tokenizer.decode(tokens, skip_special_tokens=True)
    # the later requests joined while the first ones were decoding: one batch, not one after another
    assert max(c.finished_at for c in later) < min(c.finished_at for c in first)
    assert engine.steps < sum(len(c.tokens) for c in first + later)


def test_engine_rows_compute_the_update_hn_answer_computes(hn, adapters):
    """bf16 adapters on the fp32 model: the engine's hooks add hn.answer's update in its dtype, bit for bit."""
    from transformers_v2l.serving.engine import _RowAdapters

    rows = [adapters[0].to(torch.bfloat16), None, adapters[1].to(torch.bfloat16)]  # None: a text-only row
    model = model_access.answering_model(hn)
    inputs = hn.processor.query_inputs(["Describe the video."] * 3)
    engine_rows = _RowAdapters(hn, model)
    engine_rows.set_rows(rows, torch.device("cpu"))
    assert {t.dtype for t in [*engine_rows.lora_A.values(), *engine_rows.lora_B.values()]} == {torch.float32}
    with torch.no_grad():
        engine_logits = model(**inputs).logits  # [3, S, V]
        engine_rows.remove()
        zero = engine_rows.zero.to(torch.bfloat16)
        with inject_lora(hn.family, *stack_adapters([rows[0], zero, rows[2]])):
            expected = model_access.base_model(hn)(**inputs).logits
    assert torch.equal(engine_logits, expected)


def test_sampling_follows_seed_temperature_and_top_p(hn, adapters, engine):
    def run(**params):
        collector = _submit(
            engine, hn, adapters[0], "Describe the video.", max_tokens=24, ignore_eos=True, **params
        )
        assert collector.done.wait(30)
        return collector.tokens

    same_a, same_b = run(temperature=1.5, seed=7), run(temperature=1.5, seed=7)
    assert same_a == same_b and len(same_a) == 24
    assert run(temperature=1.5, seed=8) != same_a
    # top_p so small that only the most likely token survives: sampling is greedy
    assert run(temperature=1.5, top_p=1e-6, seed=1) == run(temperature=0)


def test_stop_strings_and_token_budget(hn, adapters, engine):
    full = _submit(engine, hn, adapters[0], "Describe the video.", max_tokens=40)
    assert full.done.wait(30)
    words = full.text.split()
    stop = " " + words[2]  # the answer's third word, with its leading space
    cut = _submit(
        engine, hn, adapters[0], "Describe the video.", max_tokens=40, stop=[stop, "never generated"]
    )
    short = _submit(engine, hn, adapters[0], "Describe the video.", max_tokens=3)
    assert cut.done.wait(30) and short.done.wait(30)
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]
    assert (
        short.finish_reason == "length" and short.completion_tokens == 3 and short.tokens == full.tokens[:3]
    )


def test_text_stream_holds_back_partial_stop_strings(hn):
    tokenizer = model_access.tokenizer(hn)
    tokens = tokenizer(" A red circle moves left.", add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer, stop=["circle moves"])
    sent, stopped = "", False
    for token in tokens:
        delta, stopped = stream.add(token)
        sent += delta
        assert "circ" not in sent  # never sends the beginning of a stop string before knowing
        if stopped:
            break
    assert stopped and sent == " A red "
    plain = TextStream(tokenizer)
    assert "".join(plain.add(t)[0] for t in tokens) + plain.finish() == tokenizer.decode(tokens)


def test_internalizing_while_the_engine_decodes_sees_the_plain_model(hn, adapters, engine, tmp_path):
    from transformers_v2l.toy_world import make_clip, write_video

    path = str(write_video(make_clip(11).frames, tmp_path / "clip.mp4"))
    reference = hn.internalize(path)
    long = _submit(engine, hn, adapters[1], "Describe the video.", max_tokens=400, ignore_eos=True)
    while long.first_token_at is None:
        time.sleep(0.001)
    during = hn.internalize(path)  # this thread: the engine's adapter hooks must not act here
    assert not long.done.is_set(), "the long request ended before the check ran"
    for module in reference.lora_A:
        torch.testing.assert_close(during.lora_A[module], reference.lora_A[module], rtol=0, atol=0)
        torch.testing.assert_close(during.lora_B[module], reference.lora_B[module], rtol=0, atol=0)
    assert long.done.wait(60) and long.completion_tokens == 400


def test_waiting_queue_is_bounded(hn, adapters):
    engine = ServingEngine(hn, max_batch=1, max_waiting=1).start()
    try:
        running = _submit(engine, hn, adapters[0], "Describe the video.", max_tokens=300, ignore_eos=True)
        while running.first_token_at is None:
            time.sleep(0.001)
        _submit(engine, hn, adapters[1], "Describe the video.", max_tokens=2)
        with pytest.raises(OverloadedError) as caught:
            _submit(engine, hn, adapters[2], "Describe the video.", max_tokens=2)
        assert caught.value.status_code == 429 and caught.value.retry_after >= 1
    finally:
        engine.stop()
    assert running.finish_reason == "error"  # stopping fails what was still running, with a reason


def test_adapter_cache_is_lru_within_its_budget(adapters):
    loads = []
    size = adapters[0].nbytes
    cache = AdapterCache(lambda key: loads.append(key) or adapters[int(key)], max_mb=2.5 * size / 2**20)
    for key in ("0", "1", "0", "2"):  # "1" is the least recently used when "2" arrives
        cache.get(key)
    assert loads == ["0", "1", "2"] and len(cache) == 2 and "1" not in cache and cache.nbytes == 2 * size
    cache.get("0")
    assert loads == ["0", "1", "2"]  # a hit
    cache.discard("0")
    assert "0" not in cache and cache.nbytes == size


def test_store_accepts_atomically_and_recovers_unfinished_jobs(tmp_path, adapters):
    root = tmp_path / "store"
    store = VideoStore(root, revision="rev-a")
    upload = store.upload_path()
    upload.write_bytes(b"video bytes")
    record, created = store.accept(upload, "ab" * 32, 11, "../../etc/passwd", {"duration": 1.0})
    assert created and record["status"] == "queued" and not upload.exists()
    assert store.video_path(record["id"]).read_bytes() == b"video bytes"
    again = store.upload_path()
    again.write_bytes(b"video bytes")
    assert store.accept(again, "ab" * 32, 11, "clip.mp4", {}) == (store.get(record["id"]), False)
    store.update(record["id"], status="processing")
    (root / "uploads" / "half-written.part").write_bytes(b"partial")  # what a killed upload leaves
    reopened = VideoStore(root, revision="rev-a")
    assert reopened.unfinished() == [record["id"]] and not any((root / "uploads").iterdir())
    folder = reopened.upload_path()
    adapters[0].save_pretrained(folder)
    assert reopened.install_adapter(record["id"], folder)["status"] == "ready"
    assert reopened.unfinished() == [] and "video2lora" in reopened.adapter_card(record["id"])
    with pytest.raises(StoreMismatchError, match="revision"):
        VideoStore(root, revision="rev-b")
    with pytest.raises(KeyError, match="ids look like"):
        reopened.get("../store.json")
    reopened.delete(record["id"])
    assert reopened.list() == []
