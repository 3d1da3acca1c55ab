"""`v2l serve --engine vllm` options: checked before any model loads, with messages that say what to do.

The bridge itself runs against a real vLLM in tests/test_serving_vllm.py (marker `vllm`).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from transformers_v2l.cli import build_parser
from transformers_v2l.errors import InvalidArgumentError
from transformers_v2l.serving.vllm_options import VLLM_LORA_RANKS, vllm_max_lora_rank, vllm_options


def _options(*argv: str):
    return vllm_options(build_parser(["serve"]).parse_args(["serve", *argv]))


def test_the_max_lora_rank_is_the_smallest_value_vllm_allows():
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 16, 24, 32, 300, 512)] == [
        1,
        8,
        8,
        16,
        16,
        32,
        32,
        320,
        512,
    ]
    assert all(vllm_max_lora_rank(r) in VLLM_LORA_RANKS for r in range(1, 513))
    with pytest.raises(InvalidArgumentError, match="above vLLM's largest"):
        vllm_max_lora_rank(513)


def test_engine_options_are_checked():
    assert _options() is None  # the builtin engine
    options = _options("--engine", "vllm", "--vllm-url", "http://10.0.0.5:8001/v1/", "--vllm-model", "base")
    assert (options.url, options.model, options.api_key, options.store_path) == (
        "http://10.0.0.5:8001",
        "base",
        None,
        None,
    )
    for argv, words in (
        (["--engine", "vllm"], "needs --vllm-url http://HOST:PORT"),
        (["--engine", "vllm", "--vllm-url", "10.0.0.5:8001"], "got '10.0.0.5:8001'"),
        (["--engine", "vllm", "--vllm-url", "ftp://host/"], "needs --vllm-url"),
        (["--vllm-url", "http://127.0.0.1:8001"], "--vllm-url needs --engine vllm"),
        (
            ["--engine", "vllm", "--vllm-url", "http://h:1", "--merge-adapter", "a"],
            "does not apply to --engine vllm",
        ),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            _options(*argv)
        assert words in str(caught.value), (argv, str(caught.value))


def test_the_command_refuses_before_the_model_loads():
    result = subprocess.run([sys.executable, "-m", "transformers_v2l.cli", "serve", "--engine", "vllm", "--port", "0"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1 and "needs --vllm-url http://HOST:PORT" in result.stderr
