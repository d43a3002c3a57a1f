"""Shared fixtures: the local S3, GCS and Azure servers come from ``tests/storage_servers.py``;
``kerastrain_plugin`` and the other ``kerastrain.testing`` fixtures come from kerastrain's pytest
plugin (the ``pytest11`` entry point), as in any plugin's tests."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests' compiled steps never go into the user's cache (kerastrain.compile_cache).
os.environ.setdefault("KERASTRAIN_COMPILE_CACHE", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"kerastrain-test-jax-cache-{os.getuid()}"))

pytest_plugins = ["tests.storage_servers"]
