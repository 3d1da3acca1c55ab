"""The generation runner's batching, caching and resume logic, with a deterministic fake model.

The fake model implements the three-method protocol of `Video2LoraHypernetwork`; an end-to-end
run with the real tiny model lives with the model's tests.
"""

import json
from pathlib import Path

import pytest

from transformers_v2l.evaluation.runner import Video2LoraModel, load_outputs, run_generation


class FakeModel:
    """Deterministic outputs; records every call; can fail on a chosen call."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls = []
        self.fail_on_call = fail_on_call

    def _record(self, name, *args):
        self.calls.append((name, *args))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash")

    def internalize(self, videos, *, batch_size=1):
        self._record("internalize", list(videos), batch_size)
        return [f"adapter<{Path(str(v)).name}>" for v in videos]

    def answer(self, adapters, questions, *, max_new_tokens=64):
        self._record("answer", list(adapters), list(questions))
        return [f"{a} says {q[:12]}" for a, q in zip(adapters, questions)]

    def answer_with_video(self, videos, questions, *, max_new_tokens=64):
        self._record("answer_with_video", list(videos), list(questions))
        return [f"video<{Path(str(v)).name}> says {q[:12]}" for v, q in zip(videos, questions)]


def rows(n=5):
    """Rows in the benchmark schema: two questions about video 0, the rest one each."""
    out = []
    for i in range(n):
        video = f"/videos/v{max(i - 1, 0)}.mp4"
        out.append(
            {
                "id": f"ex{i}",
                "video": video,
                "start": None,
                "end": None,
                "prompt": f"question number {i}?",
                "references": [f"answer {i}"],
                "task": "qa",
                "subset": "default",
                "benchmark": "nextqa",
            }
        )
    return out


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_fake_model_satisfies_the_protocol():
    assert isinstance(FakeModel(), Video2LoraModel)


def test_runs_both_conditions_and_shares_adapters(tmp_path):
    model = FakeModel()
    out = run_generation(model, rows(5), tmp_path / "out.jsonl", batch_size=4, max_new_tokens=9)
    records = read_lines(out)
    assert len(records) == 10
    assert {(r["id"], r["condition"]) for r in records} == {
        (f"ex{i}", c) for i in range(5) for c in ("base", "v2l")
    }
    by_key = {(r["id"], r["condition"]): r for r in records}
    assert by_key[("ex1", "base")]["output"] == "video<v0.mp4> says question num"
    assert by_key[("ex1", "v2l")]["output"] == "adapter<v0.mp4> says question num"
    assert by_key[("ex3", "v2l")]["references"] == ["answer 3"]
    assert set(by_key[("ex3", "v2l")]["timings"]) == {
        "internalize_seconds",
        "ttft_seconds",
        "generate_seconds",
    }
    assert by_key[("ex3", "base")]["timings"]["internalize_seconds"] is None
    # ex0 and ex1 ask about the same video: it is internalized once
    internalized = [v for call in model.calls if call[0] == "internalize" for v in call[1]]
    assert sorted(internalized) == ["/videos/v0.mp4", "/videos/v1.mp4", "/videos/v2.mp4", "/videos/v3.mp4"]
    assert [len(call[1]) for call in model.calls if call[0] == "answer_with_video"] == [4, 1]
    assert json.loads((tmp_path / "out.jsonl.settings.json").read_text())["max_new_tokens"] == 9


def test_an_adapter_is_reused_across_consecutive_batches(tmp_path):
    model = FakeModel()
    out = run_generation(model, rows(3), tmp_path / "out.jsonl", batch_size=1, conditions=["v2l"])
    internalized = [v for call in model.calls if call[0] == "internalize" for v in call[1]]
    assert internalized == ["/videos/v0.mp4", "/videos/v1.mp4"]  # ex0 and ex1 share v0
    timings = {r["id"]: r["timings"]["internalize_seconds"] for r in read_lines(out)}
    assert timings["ex0"] == timings["ex1"] > 0  # the reused adapter carries its own cost


def test_crash_loses_only_the_batch_in_flight_and_resume_skips_done_ids(tmp_path):
    path = tmp_path / "out.jsonl"
    crashing = FakeModel(fail_on_call=3)  # base batches 1 and 2 are written, batch 3 (ex4) crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_generation(crashing, rows(5), path, batch_size=2)
    assert [(r["id"], r["condition"]) for r in read_lines(path)] == [
        ("ex0", "base"),
        ("ex1", "base"),
        ("ex2", "base"),
        ("ex3", "base"),
    ]
    resumed = FakeModel()
    run_generation(resumed, rows(5), path, batch_size=2)
    records = read_lines(path)
    assert len(records) == 10 and len({(r["id"], r["condition"]) for r in records}) == 10
    # the resumed run answered only ex4 with the video, then every v2l example
    base_calls = [call for call in resumed.calls if call[0] == "answer_with_video"]
    assert [q for call in base_calls for q in call[2]] == ["question number 4?"]
    # a third run has nothing left to do
    idle = FakeModel()
    run_generation(idle, rows(5), path, batch_size=2)
    assert idle.calls == []


def test_partial_last_line_is_dropped_before_appending(tmp_path):
    path = tmp_path / "out.jsonl"
    run_generation(FakeModel(), rows(2), path, conditions=["base"])
    with open(path, "ab") as handle:
        handle.write(b'{"id": "ex9", "condition": "v2l", "outp')  # a crash in the middle of a write
    assert len(load_outputs(path)) == 2
    run_generation(FakeModel(), rows(2), path)
    records = read_lines(path)  # every line parses: the partial one is gone
    assert sorted((r["id"], r["condition"]) for r in records) == [
        ("ex0", "base"),
        ("ex0", "v2l"),
        ("ex1", "base"),
        ("ex1", "v2l"),
    ]


def test_unreadable_middle_line_is_ignored_and_redone(tmp_path):
    path = tmp_path / "out.jsonl"
    run_generation(FakeModel(), rows(2), path, conditions=["base"])
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + "not json\n")
    model = FakeModel()
    run_generation(model, rows(2), path, conditions=["base"])
    assert [q for call in model.calls for q in call[2]] == ["question number 1?"]
    assert {r["id"] for r in load_outputs(path)} == {"ex0", "ex1"}


def test_resume_with_other_settings_refuses(tmp_path):
    path = tmp_path / "out.jsonl"
    run_generation(FakeModel(), rows(1), path, max_new_tokens=8)
    with pytest.raises(ValueError, match="other settings"):
        run_generation(FakeModel(), rows(1), path, max_new_tokens=16)
    run_generation(FakeModel(), rows(1), path, max_new_tokens=16, resume=False)
    assert len(read_lines(path)) == 2


def test_clip_bounds_go_through_the_video_loader(tmp_path):
    data = rows(2)
    data[1].update(start=1.5, end=3.0)
    loaded = []

    def loader(path, start, end):
        loaded.append((path, start, end))
        return f"{path}@{start}-{end}"

    model = FakeModel()
    run_generation(model, data, tmp_path / "out.jsonl", video_loader=loader)
    assert loaded == [("/videos/v0.mp4", 1.5, 3.0), ("/videos/v0.mp4", 1.5, 3.0)]
    internalized = [v for call in model.calls if call[0] == "internalize" for v in call[1]]
    assert internalized == ["/videos/v0.mp4", "/videos/v0.mp4@1.5-3.0"]  # a clip is its own video


def test_errors(tmp_path):
    class Short(FakeModel):
        def answer_with_video(self, videos, questions, *, max_new_tokens=64):
            return ["only one"]

    with pytest.raises(RuntimeError, match="1 outputs for a batch of 2"):
        run_generation(Short(), rows(2), tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="Unknown condition"):
        run_generation(FakeModel(), rows(1), tmp_path / "b.jsonl", conditions=["video"])
    with pytest.raises(ValueError, match="duplicate"):
        run_generation(FakeModel(), rows(1) * 2, tmp_path / "c.jsonl")
