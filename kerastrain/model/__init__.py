"""Model: the Keras GPT, its presets, LoRA, verified weight files, keras-hub generation and
``kerastrain.load``. Imports only the core (``kerastrain.config``, ``errors``, ``plugins``)."""

import os

# Keras reads its backend once, at its first import. Every import of Keras in kerastrain is in
# kerastrain.model or kerastrain.training (tests/test_layout.py checks), so each selects JAX, unless
# the user chose a backend: without it Keras falls back to TensorFlow, which kerastrain lacks.
os.environ.setdefault("KERAS_BACKEND", "jax")
