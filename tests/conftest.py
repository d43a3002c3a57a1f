"""Shared fixtures: the local S3, GCS and Azure servers come from ``tests/storage_servers.py``;
``kerastrain_plugin`` and the other ``kerastrain.testing`` fixtures come from kerastrain's pytest
plugin (the ``pytest11`` entry point), as in any plugin's tests."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.storage_servers"]
