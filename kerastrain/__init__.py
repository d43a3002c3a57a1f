"""kerastrain: a plugin-based Keras 3 training framework for GPT-style language models.

The JAX backend is selected by ``kerastrain.model`` and ``kerastrain.training``, the only packages
that import Keras, not here: importing kerastrain (as pytest does with its plugin,
``kerastrain.testing``, in every session) leaves other projects' choice of backend alone.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Heavy imports stay lazy so that `kerastrain --help` answers fast.
    if name == "load":
        from kerastrain.model.loading import load

        return load
    raise AttributeError(f"module 'kerastrain' has no attribute {name!r}")
