"""Shared pytest configuration: offline environment and fixture plugins."""

import os

import pytest
import torch

# The Hub cannot be reached from CI; fail fast instead of waiting on network timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One intra-op thread: on a shared 2-core machine OpenMP spin-waiting makes two threads far slower.
torch.set_num_threads(1)

pytest_plugins = ["fixtures.models", "fixtures.videos", "fixtures.hub"]
# Shared assertion helpers (not plugins): rewritten like test modules, so failures show the values.
pytest.register_assert_rewrite("fixtures.families")
