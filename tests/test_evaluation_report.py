"""From runner outputs to the paper-style report and plots, and the `v2l eval` command."""

import argparse
import json
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("matplotlib")

from test_evaluation_runner import FakeModel
from transformers_v2l.evaluation.cli import add_eval_subparser, run_eval
from transformers_v2l.evaluation.report import evaluate_outputs, score_outputs
from transformers_v2l.evaluation.statistics import macro_paired_bootstrap

DATA = Path(__file__).parent / "data" / "benchmarks"
PNG = b"\x89PNG\r\n\x1a\n"


def record(id_, condition, benchmark, subset, task, output, reference):
    return {
        "id": id_,
        "condition": condition,
        "benchmark": benchmark,
        "subset": subset,
        "task": task,
        "prompt": "p",
        "output": output,
        "references": [reference],
    }


def synthetic_records():
    out = []
    for i in range(6):
        for subset in ("short", "camera"):
            ref = f"a dog runs in park {i}"
            out.append(record(f"v{i}:{subset}", "base", "vdc", subset, "caption", ref, ref))
            out.append(record(f"v{i}:{subset}", "v2l", "vdc", subset, "caption", f"a dog runs {i}", ref))
        out.append(record(f"q{i}", "base", "nextqa", "default", "qa", "red", "red"))
        out.append(record(f"q{i}", "v2l", "nextqa", "default", "qa", "it is red" if i % 2 else "blue", "red"))
    out.append(record("lonely", "base", "nextqa", "default", "qa", "red", "red"))  # no v2l pair
    return out


def test_scores_tables_and_plots(tmp_path):
    report = evaluate_outputs(synthetic_records(), tmp_path, n_resamples=300, seed=0)
    rows = {(r.benchmark, r.subset): r for r in report.rows}
    # VDC: base outputs equal the references (F1 = 1); v2l "a dog runs i" vs "a dog runs in park i":
    # tokens [dog, runs, i] vs [dog, runs, in, park, i] -> P = 1, R = 3/5, F1 = 0.75
    vdc = rows[("vdc", None)].result
    assert (vdc.base, vdc.v2l, vdc.delta) == pytest.approx((1.0, 0.75, -0.25))
    assert rows[("vdc", None)].name == "VDC (aggregate)"
    assert rows[("vdc", "camera")].result.n == 6
    # NExT-QA: "it is red" -> [it, is, red] vs [red]: F1 = 0.5; "blue": 0 -> v2l mean 0.25
    qa = rows[("nextqa", None)]
    assert (qa.result.base, qa.result.v2l, qa.result.n, qa.excluded) == (1.0, pytest.approx(0.25), 6, 1)
    assert qa.result.non_inferior is False and qa.result.equivalent is False
    # one benchmark per task here, so no Average rows
    assert ("average", None) not in rows
    md = (tmp_path / "report.md").read_text()
    assert "| Benchmark | Base | V2L | Δ | CI | Eq | NI | n |" in md
    assert "| VDC (aggregate) | 1.000 | 0.750 | -0.250 | [-0.250, -0.250] | – | – | 12 |" in md
    assert "| Camera | 1.000 | 0.750 (-0.250) | 6 |" in md
    assert "1 example/metric pair(s) were left out" in md
    for name in ("distributions_token_f1", "differences_token_f1"):
        assert report.files[name].read_bytes().startswith(PNG)
        assert f"]({name}.png)" in md
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["benchmark"] for r in results} == {"vdc", "nextqa"}
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == len(synthetic_records())
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_average_row_is_the_mean_of_benchmark_means(tmp_path):
    recs = [r for r in synthetic_records() if r["benchmark"] == "vdc"]
    for i in range(4):  # a second captioning benchmark, equal outputs: delta 0
        for condition in ("base", "v2l"):
            recs.append(record(f"a{i}", condition, "plm_rcap", "default", "caption", "a cat", "a cat"))
    report = evaluate_outputs(recs, tmp_path, n_resamples=200, seed=1, plots=False)
    average = next(r for r in report.rows if r.benchmark == "average")
    assert (average.result.base, average.result.v2l) == pytest.approx((1.0, 0.875))
    assert average.result.delta == pytest.approx(-0.125)
    assert average.result.n == 16
    # the same numbers through the weighted macro bootstrap: VDC's two styles weigh 1/4 each
    scored = score_outputs(recs)
    groups = []
    for bench, subset in (("vdc", "short"), ("vdc", "camera"), ("plm_rcap", "default")):
        pick = [r for r in scored if r["benchmark"] == bench and r["subset"] == subset]
        groups.append(
            tuple([r["scores"]["token_f1"] for r in pick if r["condition"] == c] for c in ("base", "v2l"))
        )
    expected = macro_paired_bootstrap(groups, weights=[0.25, 0.25, 0.5], n_resamples=200, seed=1, margin=0.05)
    assert average.result == expected
    assert "| **Average** | 1.000 | 0.875 | -0.125 |" in report.markdown


def test_failed_judgments_are_left_out_of_the_judge_metric(tmp_path):
    from transformers_v2l.evaluation.judge import Judgment

    class FakeJudge:
        def judge_many(self, items, num_workers=1):
            out = []
            for i, item in enumerate(items):
                if i == 0:
                    out.append(Judgment(key="k0", error="HTTP 500"))
                else:
                    score = 1.0 if item["candidate"] == item["references"][0] else 0.5
                    out.append(Judgment(key=f"k{i}", score=score, raw_score=int(score * 4 + 1)))
            return out

    recs = [r for r in synthetic_records() if r["benchmark"] == "nextqa"]
    report = evaluate_outputs(recs, tmp_path, judge=FakeJudge(), n_resamples=100)
    judge_row = next(r for r in report.rows if r.metric == "judge")
    assert judge_row.result.n == 5 and judge_row.excluded == 2
    assert "1 judgment(s) failed" in report.markdown
    assert "## LLM judge: Question answering" in report.markdown
    assert report.files["differences_judge"].read_bytes().startswith(PNG)


def test_v2l_eval_command_on_a_sample_benchmark(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("clip_a.mp4", "clip_b.mp4"):
        (videos / name).touch()
    parser = argparse.ArgumentParser(prog="v2l")
    add_eval_subparser(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    args = parser.parse_args(
        [
            "eval",
            "--benchmark",
            "generic",
            "--annotations",
            str(DATA / "generic/test.jsonl"),
            "--videos",
            str(videos),
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--n-resamples",
            "200",
        ]
    )
    assert args.func is run_eval
    model = FakeModel()
    assert run_eval(args, model=model) == 0
    assert len((out / "outputs.jsonl").read_text().splitlines()) == 6
    md = (out / "report.md").read_text()
    assert "## Token F1: Captioning" in md and "## Token F1: Question answering" in md
    assert (out / "distributions_token_f1.png").read_bytes().startswith(PNG)
    assert (out / "differences_token_f1.png").read_bytes().startswith(PNG)
    # a second run resumes: nothing is generated again
    again = FakeModel()
    assert run_eval(args, model=again) == 0
    assert again.calls == []
    with pytest.raises(SystemExit, match="both --judge-url and --judge-model"):
        run_eval(
            parser.parse_args([*map(str, args_list(args)), "--judge-url", "http://127.0.0.1:1"]), model=model
        )


def args_list(args):
    return [
        "eval",
        "--benchmark",
        args.benchmark,
        "--annotations",
        *args.annotations,
        "--videos",
        args.videos,
        "--out",
        args.out,
    ]


def test_v2l_eval_with_the_tiny_model(tiny_hypernet, tmp_path):
    """The whole pipeline with the real (untrained) tiny hypernetwork and real video files."""
    from fixtures.videos import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("clip_a.mp4", "clip_b.mp4"):
        write_video(videos / name, 12)
    parser = argparse.ArgumentParser(prog="v2l")
    add_eval_subparser(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    args = parser.parse_args(
        ["eval", "--benchmark", "generic", "--annotations", str(DATA / "generic/test.jsonl"), "--videos", str(videos),
         "--out", str(out), "--max-new-tokens", "6", "--n-resamples", "200"]
    )  # fmt: skip
    assert run_eval(args, model=tiny_hypernet) == 0
    records = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["condition"]) for r in records) == sorted(
        (i, c) for i in ("g0", "g1", "g2") for c in ("base", "v2l")
    )
    assert all(isinstance(r["output"], str) for r in records)
    assert all(r["timings"]["internalize_seconds"] > 0 for r in records if r["condition"] == "v2l")
    md = (out / "report.md").read_text()
    assert "| Custom |" in md and "## Token F1: Captioning" in md
    assert (out / "differences_token_f1.png").read_bytes().startswith(PNG)
