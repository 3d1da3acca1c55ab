"""Start-up: `v2l --help`, `v2l --version` and every `v2l <command> --help` import no torch, transformers or peft.

Checked with `python -X importtime`, which lists every module a run imports, in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from transformers_v2l.cli import EXTERNAL_SUBCOMMANDS

HEAVY = {"torch", "transformers", "peft"}
COMMANDS = ["internalize", "ask", "push", "convert", *EXTERNAL_SUBCOMMANDS]


def imported(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime ARGS`; return the result and the top-level packages it imported."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, env=env,
                            timeout=120)  # fmt: skip
    modules = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "transformers_v2l" in modules, result.stderr[-2000:]  # importtime did report
    return result, modules


@pytest.mark.parametrize("argv", [["--help"], ["--version"]] + [[c, "--help"] for c in COMMANDS],
                         ids=lambda argv: " ".join(argv))  # fmt: skip
def test_help_imports_no_heavy_package(argv):
    result, modules = imported("-m", "transformers_v2l.cli", *argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not modules & HEAVY, f"`v2l {' '.join(argv)}` imported {sorted(modules & HEAVY)}"
    if argv == ["--help"]:
        for command in COMMANDS:
            assert f"    {command}" in result.stdout


def test_importing_the_package_is_lazy():
    result, modules = imported("-c", "import transformers_v2l; transformers_v2l.__version__")
    assert result.returncode == 0 and not modules & HEAVY, sorted(modules & HEAVY)
    result, modules = imported("-c", "from transformers_v2l import InvalidArgumentError")
    assert result.returncode == 0 and not modules & HEAVY, sorted(modules & HEAVY)


def test_a_refused_argument_imports_no_heavy_package():
    result, modules = imported(
        "-m", "transformers_v2l.cli", "internalize", "a.mp4", "--out", "o", "--batch-size", "0"
    )
    assert result.returncode == 2 and not modules & HEAVY


def test_the_console_script_entry_point_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "transformers_v2l.cli", "--help"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stderr == ""
    for command in COMMANDS:
        assert command in result.stdout
