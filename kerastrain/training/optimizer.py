"""Built-in plugin: the AdamW optimizer and the warm-up + cosine schedule, and how a run picks its
optimizer (``--optimizer``) and schedule (``--lr-schedule``) from the registered kinds.

Keras does the numerics (its optimizers, schedules, clipping and gradient accumulation); this
module only hands them the run's options, with one correction: with
``gradient_accumulation_steps=k`` Keras evaluates a ``LearningRateSchedule`` at its micro-step
counter (``optimizer._iterations``), not at the update count (``optimizer.iterations``), so a
schedule would run k times too fast (keras 3.15.1, ``base_optimizer._get_current_learning_rate``).
:func:`per_update` evaluates the schedule at the update count instead.
"""

from __future__ import annotations

from kerastrain.config import RunConfig, TrainConfig
from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl


def _choose(kind: str, name: str, found: dict):
    if name not in found:
        raise ConfigError(f"unknown {kind} {name!r}; installed: {', '.join(found) or 'none'} "
                          "(see `kerastrain plugins`)")
    return found[name].obj


def check_kinds(config: RunConfig) -> None:
    """``--optimizer`` and ``--lr-schedule`` name installed kinds (one line before any work)."""
    from kerastrain.plugins import lr_schedules, optimizers

    _choose("--optimizer", config.train.optimizer, optimizers())
    _choose("--lr-schedule", config.train.lr_schedule, lr_schedules())


def make_schedule(config: RunConfig, total_steps: int):
    """The run's learning rate as ``(schedule, warmup_steps)``; the schedule takes the update
    count (0, 1, ...)."""
    from kerastrain.plugins import lr_schedules

    make = _choose("--lr-schedule", config.train.lr_schedule, lr_schedules())
    return make(config.train, total_steps)


def make_optimizer(config: RunConfig, schedule, model):
    """The run's optimizer, built for ``model``'s trainable variables. ``schedule``: a Keras
    ``LearningRateSchedule`` (evaluated per update, whatever the accumulation) or a float."""
    import keras

    from kerastrain.plugins import optimizers

    t = config.train
    make = _choose("--optimizer", t.optimizer, optimizers())
    accumulation = t.gradient_accumulation_steps
    if accumulation > 1 and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        schedule = per_update(schedule, accumulation)
    optimizer = make(t, model, learning_rate=schedule, global_clipnorm=t.grad_clip or None,
                     gradient_accumulation_steps=accumulation if accumulation > 1 else None)
    optimizer.build(model.trainable_variables)
    return optimizer


def _per_update_class():
    import keras

    class PerUpdate(keras.optimizers.schedules.LearningRateSchedule):
        """``schedule`` at the update count, from Keras' micro-step counter (module docstring)."""


        def __init__(self, schedule, accumulation: int):
            self.schedule, self.accumulation = schedule, accumulation

        def __call__(self, step):
            return self.schedule(keras.ops.floor_divide(step, self.accumulation))

        def get_config(self):
            return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                    "accumulation": self.accumulation}

    return PerUpdate


def per_update(schedule, accumulation: int):
    """:class:`PerUpdate` (defined on first use: this plugin module must not import keras)."""
    return _per_update_class()(schedule, accumulation)


# -- the built-in kinds -------------------------------------------------------------------------
def adamw(train: TrainConfig, model, **common):
    """Keras' AdamW; norm scales and biases (1-D) take no weight decay, as in GPT-2 / nanoGPT."""
    import keras

    optimizer = keras.optimizers.AdamW(weight_decay=train.weight_decay, beta_1=train.adam_beta1,
                                       beta_2=train.adam_beta2, epsilon=train.adam_epsilon,
                                       **common)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    return optimizer


def warmup_cosine(train: TrainConfig, total_steps: int):
    """Linear warm-up (at most half the run) to ``--learning-rate``, then cosine decay to a tenth
    of it at the last update (Keras' ``CosineDecay``)."""
    import keras

    warmup = min(train.warmup_steps, total_steps // 2)
    decay = max(1, total_steps - warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(train.learning_rate, decay, alpha=0.1), 0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=train.learning_rate / (warmup + 1),
        decay_steps=decay,
        alpha=0.1,
        warmup_target=train.learning_rate,
        warmup_steps=warmup,
    ), warmup


@hookimpl
def register_optimizers(register):
    register("adamw", adamw)


@hookimpl
def register_lr_schedules(register):
    register("cosine", warmup_cosine)
