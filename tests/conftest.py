"""Shared fixtures: ``kerastrain_plugin`` registers a plugin for one test only; the local S3, GCS
and Azure servers come from ``tests/storage_servers.py``."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kerastrain.testing import kerastrain_plugin  # noqa: E402,F401 - a fixture

pytest_plugins = ["tests.storage_servers"]
