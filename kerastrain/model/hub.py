"""keras-hub, an optional dependency: the one place that imports it.

Training needs no keras-hub. Text generation (``kerastrain generate``, :mod:`kerastrain.model.causal_lm`)
and keras-hub export/import do; they call :func:`require_keras_hub`, which names the extra to install
when it is missing. It is an extra because keras-hub's published requirements pull tensorflow-text
and with it TensorFlow (~2 GB) into a plain ``pip install``.
"""

from __future__ import annotations

from kerastrain.errors import ConfigError, DependencyError

HUB_EXTRA = "kerastrain[hub]"


def require_keras_hub(feature: str = "this feature"):
    """The ``keras_hub`` module; a one-line :class:`DependencyError` saying what to install when it
    is not installed."""
    try:
        import keras_hub
    except ImportError:
        raise DependencyError(
            f"{feature} needs keras-hub, which is not installed: pip install '{HUB_EXTRA}' "
            "(or `uv pip install keras-hub`; see the README's 'Installing' section)"
        ) from None
    return keras_hub


def causal_lm(backbone, preprocessor=None):
    """keras-hub's causal-LM task for ``backbone`` (the subclass whose ``backbone_cls`` it is)."""
    keras_hub = require_keras_hub("keras-hub models")

    todo = list(keras_hub.models.CausalLM.__subclasses__())
    while todo:
        cls = todo.pop()
        if getattr(cls, "backbone_cls", None) is type(backbone):
            return cls(backbone=backbone, preprocessor=preprocessor)
        todo.extend(cls.__subclasses__())
    raise ConfigError(f"keras-hub has no causal LM for {type(backbone).__name__}")
