"""Shared fixtures. ``kerastrain_plugin`` registers a plugin for one test only."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from kerastrain.testing import kerastrain_plugin  # noqa: E402,F401 - a fixture

from pathlib import Path  # noqa: E402

# Local S3/GCS/Azure servers (fixtures), once that module exists.
pytest_plugins = ["tests.storage_servers"] if (Path(__file__).parent / "storage_servers.py").exists() else []
