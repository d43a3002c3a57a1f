"""Training: the ``run`` command end to end (runner), the jitted loop, optimizer and schedule,
checkpoints, metrics, plots and the memory planner. Imports data, model, storage and the core."""

import os

# Keras reads its backend once, at its first import. Every import of Keras in kerastrain is in
# kerastrain.model or kerastrain.training (tests/test_layout.py checks), so each selects JAX, unless
# the user chose a backend: without it Keras falls back to TensorFlow, which kerastrain lacks.
os.environ.setdefault("KERAS_BACKEND", "jax")
