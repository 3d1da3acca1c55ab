"""Without the optional extras the core works, and every feature behind an extra names the extra to install.

CI's no-extras job runs this file alone, in a venv made with `pip install -e . pytest` (CPU torch). In the
full dev venv a missing package is simulated in a subprocess: a `sys.meta_path` finder makes importing it
fail exactly as if it were not installed. Library code is never patched.

`accelerate`, `psutil` and `yaml` are also dependencies of peft and huggingface_hub, so a real install always
has them; the finder blocks them only after the core import, to check that the library still names the
extra if they ever go missing. `datasets`, `evaluate`, `matplotlib` and `requests` are blocked from the start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: import name -> the extras of pyproject.toml that provide it
PROVIDED_BY = {
    "accelerate": {"training"},
    "datasets": {"training", "evaluation"},
    "yaml": {"training"},  # the `pyyaml` distribution
    "evaluate": {"evaluation"},
    "matplotlib": {"evaluation", "benchmarks"},
    "requests": {"evaluation"},
    "psutil": {"benchmarks"},
    "fastapi": {"serve"},
    "uvicorn": {"serve"},
    "python_multipart": {"serve"},  # the `python-multipart` distribution
}
#: imported by the core's own dependencies (peft, huggingface_hub): blocked after `import transformers_v2l`
ALWAYS_INSTALLED = {"accelerate", "psutil", "yaml"}
#: extras that hold tools run next to the library (a judge server, the docs site), not library features
TOOL_EXTRAS = {"judge-server", "docs", "dev"}
OPTIONAL = sorted(set(PROVIDED_BY) - ALWAYS_INSTALLED)
#: optional packages this interpreter really lacks (all of them in CI's no-extras job, none in the dev venv)
MISSING_HERE = {name for name in PROVIDED_BY if importlib.util.find_spec(name) is None}

HARNESS = textwrap.dedent(
    '''
    import importlib.abc, json, sys, traceback

    class Missing(importlib.abc.MetaPathFinder):
        """Import of these top-level packages fails as if they were not installed."""

        def __init__(self, names):
            self.names = set(names)

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    blocked = {n for n in sys.argv[1].split(",") if n}
    late = blocked & @ALWAYS_INSTALLED@
    sys.meta_path.insert(0, Missing(blocked - late))
    import transformers_v2l  # the core

    for module in [m for m in sys.modules if m.partition(".")[0] in late]:
        del sys.modules[module]
    sys.meta_path.insert(0, Missing(blocked))
    try:
        exec(compile(sys.argv[2], "<snippet>", "exec"), {})
    except SystemExit:
        raise
    except BaseException as error:
        print("@@ERROR@@" + json.dumps({
            "type": type(error).__name__,
            "bases": [c.__name__ for c in type(error).__mro__],
            "message": str(error),
            "extra": getattr(error, "extra", None),
            "traceback": traceback.format_exc(),
        }))
        sys.exit(3)
    '''
).replace("@ALWAYS_INSTALLED@", repr(ALWAYS_INSTALLED))


def run_without(blocked, code: str, tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where the `blocked` packages cannot be imported."""
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONPATH="")
    return subprocess.run(
        [sys.executable, str(harness), ",".join(sorted(blocked)), textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def raised(result: subprocess.CompletedProcess) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.startswith("@@ERROR@@")]
    assert lines, f"expected an error, got exit code {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return json.loads(lines[-1].removeprefix("@@ERROR@@"))


# ---- the core, without any extra ----------------------------------------------------------------------------
def test_core_api_works_without_extras(tmp_path):
    result = run_without(
        OPTIONAL,
        """
        import sys
        from transformers_v2l import GeneratedLora, MissingDependencyError, Video2LoraConfig, Video2LoraHypernetwork
        from transformers_v2l.cli import build_parser
        from transformers_v2l.demo import load_default_hypernetwork
        from transformers_v2l.toy_world import make_clip, write_video
        import transformers_v2l.benchmarks, transformers_v2l.evaluation, transformers_v2l.training

        hn = load_default_hypernetwork()
        video = write_video(make_clip(5).frames, "clip.mp4")
        adapter = hn.internalize(str(video))
        adapter.save_pretrained("clip-adapter")
        loaded = GeneratedLora.from_pretrained("clip-adapter")
        assert loaded.rank == adapter.rank and loaded.metadata["sha256"] == adapter.metadata["sha256"]
        answers = hn.answer(loaded, ["What color is the square?", "Describe the video."], max_new_tokens=4)
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
        assert Video2LoraConfig.from_base_model(hn.vlm).is_bound
        usage = build_parser().format_help()
        for command in ("internalize", "ask", "push", "convert", "demo", "train", "teacher", "eval", "bench"):
            assert f"    {command}" in usage, usage
        leaked = sorted({m.partition(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
        assert not leaked, leaked
        print("core ok")
        """,
        tmp_path,
    )
    assert result.returncode == 0 and "core ok" in result.stdout, result.stdout + result.stderr


def test_missing_dependency_error_is_an_import_error():
    from transformers_v2l import MissingDependencyError

    error = MissingDependencyError("datasets", "evaluation", "Reading a benchmark")
    assert isinstance(error, ImportError) and error.extra == "evaluation" and error.package == "datasets"
    assert "transformers-v2l[evaluation]" in str(error) and "pip install" in str(error)


def test_every_extra_is_covered():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not run from a source checkout")
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert set(extras) - TOOL_EXTRAS == {e for provided in PROVIDED_BY.values() for e in provided}
    names = {"pyyaml": "yaml", "python-multipart": "python_multipart"}
    for extra, requirements in extras.items():
        if extra in TOOL_EXTRAS:
            continue
        for requirement in requirements:
            distribution = requirement.split(">")[0].split("=")[0].split("[")[0].strip().lower()
            module = names.get(distribution, distribution)
            assert extra in PROVIDED_BY.get(module, set()), (
                f"{requirement} of [{extra}] is not simulated here"
            )


# ---- features behind an extra -------------------------------------------------------------------------------
FEATURES = [
    # (id, blocked package, snippet, extra the message must name)
    ("trainer", "accelerate", "from transformers_v2l.training import Video2LoraTrainer", "training"),
    # `v2l teacher` reads its YAML file before it imports anything else (`v2l train` imports the HF
    # Trainer first, whose integrations import yaml themselves)
    ("training-yaml", "yaml", "from transformers_v2l.training.cli import main\nmain(['teacher', 'c.yaml'])",
     "training"),
    ("teacher-accelerate", "accelerate", "from transformers_v2l.training.cli import run_teacher\n"
     "import argparse\nrun_teacher(argparse.Namespace(config=None, overrides=[]))", "training"),
    ("training-dataset", "datasets", "from transformers_v2l.training import load_examples\nload_examples('.')",
     "training"),
    ("teacher-features", "datasets", "from transformers_v2l.training.teacher import teacher_features\n"
     "teacher_features()", "training"),
    ("benchmark-reader", "datasets", "from transformers_v2l.evaluation import benchmark_features\n"
     "benchmark_features()", "evaluation"),
    ("judge", "requests", "from transformers_v2l.evaluation import LLMJudge\nLLMJudge('http://127.0.0.1:9', 'm')",
     "evaluation"),
    ("report-plots", "matplotlib", "from transformers_v2l.evaluation import evaluate_outputs\n"
     "evaluate_outputs([], 'report', plots=True)", "evaluation"),
    ("bench-plots", "matplotlib", "from transformers_v2l.benchmarks.common import new_figure\nnew_figure()",
     "benchmarks"),
    ("bench-memory", "psutil", "from transformers_v2l.benchmarks.common import run_isolated\n"
     "run_isolated('json:dumps', {})", "benchmarks"),
    ("serve-app", "fastapi", "from transformers_v2l.serving import create_app", "serve"),
    ("serve-uploads", "python_multipart", "from transformers_v2l.serving import serve_in_background", "serve"),
]  # fmt: skip


@pytest.mark.parametrize("blocked, code, extra", [f[1:] for f in FEATURES], ids=[f[0] for f in FEATURES])
def test_feature_names_its_extra(blocked, code, extra, tmp_path):
    (tmp_path / "c.yaml").write_text("base_model: m\ntrain_data: t.jsonl\n")
    error = raised(run_without({blocked}, code, tmp_path))
    assert error["type"] == "MissingDependencyError", error["traceback"]
    assert "ImportError" in error["bases"]
    assert error["extra"] == extra
    assert f"transformers-v2l[{extra}]" in error["message"] and "pip install" in error["message"]
    assert f"`{blocked}`" in error["message"]


# ---- the `v2l` subcommands ----------------------------------------------------------------------------------
COMMANDS = [
    # (id, blocked package, v2l arguments, extra)
    ("train", "accelerate", ["train", "c.yaml"], "training"),
    ("teacher-yaml", "yaml", ["teacher", "c.yaml"], "training"),
    ("teacher", "accelerate", ["teacher", "c.yaml"], "training"),
    ("eval", "datasets", ["eval", "--benchmark", "nextqa", "--annotations", "a.csv", "--videos", "v", "--out", "o"],
     "evaluation"),
    ("eval-plots", "matplotlib", ["eval", "--benchmark", "nextqa", "--annotations", "a.csv", "--videos", "v",
                                  "--out", "o"], "evaluation"),
    ("eval-judge", "requests", ["eval", "--benchmark", "nextqa", "--annotations", "a.csv", "--videos", "v",
                                "--out", "o", "--no-plots", "--judge-url", "http://127.0.0.1:9",
                                "--judge-model", "m"], "evaluation"),
    ("bench", "matplotlib", ["bench", "ttft", "--preset", "256m", "--repeats", "1", "--warmup", "0"], "benchmarks"),
    ("bench-memory", "psutil", ["bench", "tokens", "--preset", "256m"], "benchmarks"),
    ("serve", "uvicorn", ["serve", "--port", "0", "--store", "store"], "serve"),
]  # fmt: skip


@pytest.mark.parametrize("blocked, argv, extra", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_subcommand_names_its_extra_before_doing_any_work(blocked, argv, extra, tmp_path):
    (tmp_path / "c.yaml").write_text("base_model: m\ntrain_data: t.jsonl\ndata: t.jsonl\noutput_dir: out\n")
    if argv[0] == "teacher":
        (tmp_path / "c.yaml").write_text("base_model: m\ndata: t.jsonl\noutput_dir: out\n")
    code = f"from transformers_v2l.cli import main\nraise SystemExit(main({argv!r}))"
    result = run_without({blocked}, code, tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "MissingDependencyError" in output and f"transformers-v2l[{extra}]" in output, output
    # the blocked package, or one the command checks first that is really missing here
    assert any(f"`{name}`" in output for name in {blocked} | MISSING_HERE), output
