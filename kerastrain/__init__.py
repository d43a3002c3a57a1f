"""kerastrain: a plugin-based Keras 3 training framework for GPT-style language models.

Importing kerastrain selects the JAX backend for Keras unless the user chose one: without it Keras
falls back to TensorFlow, which kerastrain does not install.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"


def __getattr__(name):
    # Heavy imports stay lazy so that `kerastrain --help` answers fast.
    if name == "load":
        from kerastrain.model.loading import load

        return load
    raise AttributeError(f"module 'kerastrain' has no attribute {name!r}")
