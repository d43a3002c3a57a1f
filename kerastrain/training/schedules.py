"""Built-in plugin: the learning-rate schedules ``--lr-schedule cosine|wsd|linear|constant``.

Each is a linear warm-up over ``--warmup-steps`` (at most half the run) to ``--learning-rate``,
then:
- ``cosine``: Keras' ``CosineDecay`` to ``--min-lr-ratio`` of the peak at the last update;
- ``wsd`` (warm-up, stable, decay; MiniCPM, DeepSeek, OLMo-core): the peak until the last
  ``--decay-fraction`` of the run, then a linear decay to ``--min-lr-ratio``. The rate at an update
  depends on the run's length only inside the decay, so a run resumed with a larger
  ``--max-steps`` continues at the peak (the stable phase is extended), and a decay from any
  checkpoint gives a comparable model;
- ``linear``: a linear decay from the end of the warm-up to ``--min-lr-ratio``;
- ``constant``: the peak after the warm-up.

Keras ships no warm-up-stable-decay or warm-up-then-linear schedule (``PolynomialDecay`` has no
warm-up and no stable phase), so :func:`_piecewise_class` writes the three piecewise-linear ones
in ``keras.ops``. Every schedule takes the update count (0, 1, ...).
"""

from __future__ import annotations

from kerastrain.config import TrainConfig
from kerastrain.hookspecs import hookimpl


def _warmup(train: TrainConfig, total_steps: int) -> int:
    return min(train.warmup_steps, total_steps // 2)


def warmup_cosine(train: TrainConfig, total_steps: int):
    """Linear warm-up to ``--learning-rate``, then cosine decay to ``--min-lr-ratio`` of it at the
    last update (Keras' ``CosineDecay``)."""
    import keras

    warmup = _warmup(train, total_steps)
    decay = max(1, total_steps - warmup)
    alpha = train.min_lr_ratio
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(train.learning_rate, decay, alpha=alpha), 0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=train.learning_rate / (warmup + 1),
        decay_steps=decay,
        alpha=alpha,
        warmup_target=train.learning_rate,
        warmup_steps=warmup,
    ), warmup


def _piecewise_class():
    import keras
    from keras import ops

    class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
        """``peak * (step + 1) / (warmup + 1)`` during the warm-up (as Keras' CosineDecay warms
        up), ``peak`` until ``decay_start``, then linear to ``min_ratio * peak`` at
        ``decay_start + decay_steps``."""

        def __init__(self, peak: float, warmup: int, decay_start: int, decay_steps: int,
                     min_ratio: float):
            self.peak, self.warmup, self.min_ratio = peak, warmup, min_ratio
            self.decay_start, self.decay_steps = decay_start, decay_steps

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = self.peak * (step + 1.0) / (self.warmup + 1.0)
            if self.decay_steps == 0:
                decayed = ops.full_like(step, self.peak)
            else:
                progress = ops.clip((step - self.decay_start) / self.decay_steps, 0.0, 1.0)
                decayed = self.peak * (1.0 - (1.0 - self.min_ratio) * progress)
            return ops.where(step < self.warmup, warm, decayed)

        def get_config(self):
            return {"peak": self.peak, "warmup": self.warmup, "decay_start": self.decay_start,
                    "decay_steps": self.decay_steps, "min_ratio": self.min_ratio}

    return WarmupStableDecay


def piecewise(peak: float, warmup: int, decay_start: int, decay_steps: int, min_ratio: float):
    """:class:`WarmupStableDecay` (defined on first use: plugin modules must not import keras)."""
    return _piecewise_class()(peak, warmup, decay_start, decay_steps, min_ratio)


def wsd(train: TrainConfig, total_steps: int):
    """Warm-up, the peak, then the last ``--decay-fraction`` of the updates decaying linearly."""
    warmup = _warmup(train, total_steps)
    decay = min(round(total_steps * train.decay_fraction), total_steps - warmup)
    return piecewise(train.learning_rate, warmup, total_steps - decay, decay,
                     train.min_lr_ratio), warmup


def linear(train: TrainConfig, total_steps: int):
    """Warm-up, then linear decay to ``--min-lr-ratio`` of the peak at the end of the run."""
    warmup = _warmup(train, total_steps)
    return piecewise(train.learning_rate, warmup, warmup, max(1, total_steps - warmup),
                     train.min_lr_ratio), warmup


def constant(train: TrainConfig, total_steps: int):
    """Warm-up, then the peak."""
    warmup = _warmup(train, total_steps)
    return piecewise(train.learning_rate, warmup, total_steps, 0, 1.0), warmup


@hookimpl
def register_lr_schedules(register):
    register("cosine", warmup_cosine)
    register("wsd", wsd)
    register("linear", linear)
    register("constant", constant)
