"""Shared pytest configuration: offline environment and fixture plugins."""

import os

# The Hub cannot be reached from CI; fail fast instead of waiting on network timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["fixtures.models", "fixtures.videos", "fixtures.hub"]
