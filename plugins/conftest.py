"""The plugins' own tests (``plugins/*/tests``), each runnable alone
(``uv run pytest plugins/kerastrain-hf``) and collected by the project's test command. They use
kerastrain's pytest plugin (:mod:`kerastrain.testing`) as any third-party plugin's tests would; this
file only keeps their compiled steps out of the user's JAX cache, as ``tests/conftest.py`` does."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("KERASTRAIN_COMPILE_CACHE", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"kerastrain-test-jax-cache-{os.getuid()}"))
