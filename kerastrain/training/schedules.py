"""Built-in plugin: the learning-rate schedules ``--lr-schedule cosine|wsd|linear|constant``.

Each is a linear warm-up over the run's warm-up (``--warmup-steps``, at most half the first run:
:func:`kerastrain.training.optimizer.make_schedule` decides it) to ``--learning-rate``, then:
- ``cosine``: a cosine decay to ``--min-lr-ratio`` of the peak at the last update;
- ``wsd`` (warm-up, stable, decay; MiniCPM, DeepSeek, OLMo-core): the peak until the last
  ``--decay-fraction`` of the run, then a linear decay to ``--min-lr-ratio``. The rate at an update
  depends on the run's length only inside the decay, so a run resumed with a larger
  ``--max-steps`` continues at the peak (the stable phase is extended), and a decay from any
  checkpoint gives a comparable model;
- ``linear``: a linear decay from the end of the warm-up to ``--min-lr-ratio``;
- ``constant``: the peak after the warm-up.

Updates are numbered 0 .. total - 1: every decay ends at ``--min-lr-ratio`` × peak on update
``total - 1``, the last one the run makes (a decay of one update runs at the minimum). Keras'
``CosineDecay`` reaches its minimum only after ``decay_steps`` and divides by zero for a decay of
none, and Keras ships no warm-up-stable-decay schedule, so :func:`_piecewise_class` writes all
four in ``keras.ops``. Every schedule takes the update count (0, 1, ...).
"""

from __future__ import annotations

from kerastrain.config import TrainConfig
from kerastrain.hookspecs import hookimpl


def _piecewise_class():
    import math

    import keras
    from keras import ops

    class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
        """``peak * (step + 1) / (warmup + 1)`` during the warm-up (as Keras' CosineDecay warms
        up), ``peak`` up to update ``decay_start``, then a decay (linear, or half a cosine when
        ``cosine``) to ``min_ratio * peak`` at update ``decay_start + decay_steps``."""

        def __init__(self, peak: float, warmup: int, decay_start: int, decay_steps: int,
                     min_ratio: float, cosine: bool = False):
            self.peak, self.warmup, self.min_ratio = peak, warmup, min_ratio
            self.decay_start, self.decay_steps, self.cosine = decay_start, decay_steps, cosine

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = self.peak * (step + 1.0) / (self.warmup + 1.0)
            if self.decay_steps == 0:
                decayed = ops.full_like(step, self.peak)
            else:
                progress = ops.clip((step - self.decay_start) / self.decay_steps, 0.0, 1.0)
                if self.cosine:
                    progress = 0.5 * (1.0 - ops.cos(math.pi * progress))
                decayed = self.peak * (1.0 - (1.0 - self.min_ratio) * progress)
            return ops.where(step < self.warmup, warm, decayed)

        def get_config(self):
            return {"peak": self.peak, "warmup": self.warmup, "decay_start": self.decay_start,
                    "decay_steps": self.decay_steps, "min_ratio": self.min_ratio,
                    "cosine": self.cosine}

    return WarmupStableDecay


def piecewise(peak: float, warmup: int, decay_start: int, decay_steps: int, min_ratio: float,
              cosine: bool = False):
    """:class:`WarmupStableDecay` (defined on first use: plugin modules must not import keras)."""
    return _piecewise_class()(peak, warmup, decay_start, decay_steps, min_ratio, cosine)


def _decay_to_the_end(train: TrainConfig, total_steps: int, decay: int, cosine: bool = False):
    """The last ``decay`` updates (at least one) decay, reaching the minimum at the last one,
    ``total_steps - 1``; the updates before them, after the warm-up, run at the peak."""
    decay = max(1, decay)
    return piecewise(train.learning_rate, train.warmup_steps, total_steps - 1 - decay, decay,
                     train.min_lr_ratio, cosine)


def warmup_cosine(train: TrainConfig, total_steps: int):
    """Linear warm-up to ``--learning-rate``, then a cosine decay to ``--min-lr-ratio`` of it at
    the last update."""
    return _decay_to_the_end(train, total_steps, total_steps - 1 - train.warmup_steps,
                             cosine=True), train.warmup_steps


def wsd(train: TrainConfig, total_steps: int):
    """Warm-up, the peak, then the last ``--decay-fraction`` of the updates decaying linearly."""
    decay = min(round(total_steps * train.decay_fraction), total_steps - train.warmup_steps)
    if train.decay_fraction == 0:  # no decay asked: the peak to the end
        return piecewise(train.learning_rate, train.warmup_steps, total_steps, 0, 1.0), \
            train.warmup_steps
    return _decay_to_the_end(train, total_steps, decay), train.warmup_steps


def linear(train: TrainConfig, total_steps: int):
    """Warm-up, then linear decay to ``--min-lr-ratio`` of the peak at the last update."""
    return _decay_to_the_end(train, total_steps, total_steps - 1 - train.warmup_steps), \
        train.warmup_steps


def constant(train: TrainConfig, total_steps: int):
    """Warm-up, then the peak."""
    return piecewise(train.learning_rate, train.warmup_steps, total_steps, 0, 1.0), \
        train.warmup_steps


@hookimpl
def register_lr_schedules(register):
    register("cosine", warmup_cosine)
    register("wsd", wsd)
    register("linear", linear)
    register("constant", constant)
