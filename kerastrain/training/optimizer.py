"""Built-in plugin: the AdamW and Muon optimizers and Keras' others by name, and how a run picks
its optimizer (``--optimizer``) and schedule (``--lr-schedule``) from the registered kinds.

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


def make_schedule(config: RunConfig, total_steps: int, warmup: int | None = None):
    """The run's learning rate as ``(schedule, warmup_steps)``; the schedule takes the update
    count (0, 1, ...).

    The warm-up is decided here, once: ``--warmup-steps``, at most half the run. ``warmup``: the
    one a resumed run's first invocation decided (its resolved record); it is kept whatever the
    run's new length, or a resume with a larger ``--max-steps`` would warm up again. The
    schedule kind receives it as ``train.warmup_steps``."""
    import dataclasses

    from kerastrain.plugins import lr_schedules

    make = _choose("--lr-schedule", config.train.lr_schedule, lr_schedules())
    if warmup is None:
        warmup = min(config.train.warmup_steps, total_steps // 2)
    return make(dataclasses.replace(config.train, warmup_steps=warmup), total_steps)


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
        """``scale * schedule`` at the update count, from Keras' micro-step counter (module
        docstring)."""

        def __init__(self, schedule, accumulation: int, scale: float = 1.0):
            self.schedule, self.accumulation, self.scale = schedule, accumulation, scale

        def __call__(self, step):
            rate = self.schedule(keras.ops.floor_divide(step, self.accumulation))
            return rate if self.scale == 1.0 else rate * self.scale

        def get_config(self):
            return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                    "accumulation": self.accumulation, "scale": self.scale}

    return PerUpdate


def per_update(schedule, accumulation: int, scale: float = 1.0):
    """:class:`PerUpdate` (defined on first use: this plugin module must not import keras)."""
    return _per_update_class()(schedule, accumulation, scale)


def scaled(learning_rate, scale: float):
    """``learning_rate`` (a float or a schedule) times ``scale``."""
    if isinstance(learning_rate, (int, float)):
        return learning_rate * scale
    return per_update(learning_rate, 1, scale)


def applied_rates(optimizer, opt_vars) -> dict:
    """The rates ``optimizer`` applies at its next update, read from its own state (``opt_vars``:
    the values of ``optimizer.variables``): ``lr`` for AdamW-updated variables and, for Muon,
    ``muon_lr`` for the matrices. The loop logs these, never a recomputed schedule."""
    import keras

    mapping = list(zip(optimizer.variables, opt_vars, strict=True))
    with keras.StatelessScope(state_mapping=mapping):
        rate = keras.ops.convert_to_tensor(optimizer.learning_rate, "float32")
    if getattr(optimizer, "kerastrain_muon", False):
        return {"lr": rate * optimizer.adam_lr_ratio, "muon_lr": rate}
    return {"lr": rate}


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


def muon(train: TrainConfig, model, *, learning_rate, **common):
    """Keras' Muon: Newton-Schulz orthogonalised momentum at ``--muon-lr`` / ``--muon-weight-decay``
    for the 2-D hidden weight matrices (LoRA's adapter matrices included), AdamW at
    ``--learning-rate`` / ``--weight-decay`` for the token embedding, the output head, norms and
    biases (:func:`muon_groups` says which is which).

    Keras' Muon takes one rate (the matrices') and ``adam_lr_ratio`` for the rest, and decays
    every variable by ``weight_decay * rate`` with the matrices' rate: the AdamW decay is scaled
    by the ratio so that AdamW variables decay by ``--weight-decay * --learning-rate``. Keras'
    ``rms_rate`` (0.2, Moonlight) scales the orthogonal update to AdamW's RMS, so --muon-lr is on
    AdamW's scale, not modded-nanogpt's 0.02-0.05."""
    import keras

    ratio = train.learning_rate / train.muon_lr
    optimizer = keras.optimizers.Muon(
        learning_rate=scaled(learning_rate, 1 / ratio), adam_lr_ratio=ratio,
        weight_decay=train.muon_weight_decay, adam_weight_decay=train.weight_decay * ratio,
        adam_beta_1=train.adam_beta1, adam_beta_2=train.adam_beta2, epsilon=train.adam_epsilon,
        exclude_embeddings=True, exclude_layers=list(HEAD_PATTERNS), rms_rate=0.2, **common)
    optimizer.kerastrain_muon = True
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    return optimizer


def planned_groups(config: RunConfig) -> dict[str, list[str]] | None:
    """:func:`muon_groups` for the model ``config`` builds (``kerastrain plan``)."""
    if config.train.optimizer != "muon":
        return None
    from kerastrain.model.gpt import apply_lora, build_model

    model = build_model(config.model)
    if config.model.use_lora:
        apply_lora(model, config.model.lora_rank)
    return muon_groups(make_optimizer(config, config.train.learning_rate, model),
                       model.trainable_variables)


# Paths of output heads Keras' exclusion by "embedding" would miss (our untied head is
# token_embedding/reverse_embeddings, which it catches; imported families name theirs so).
HEAD_PATTERNS = ("lm_head", "output_dense", "reverse_embeddings")


def muon_groups(optimizer, variables) -> dict[str, list[str]] | None:
    """{"muon": paths, "adamw": paths} for a Muon optimizer; None for any other."""
    if not getattr(optimizer, "kerastrain_muon", False):
        return None
    groups: dict[str, list[str]] = {"muon": [], "adamw": []}
    for v in variables:
        groups["adamw" if optimizer._should_use_adamw(v) else "muon"].append(v.path)
    return groups


def describe_groups(groups: dict[str, list[str]]) -> str:
    """The start-up line saying which variables Muon updates and which AdamW does."""
    def short(paths):
        return ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")

    return (f"Optimizer: Muon on {len(groups['muon'])} matrices ({short(groups['muon'])}); "
            f"AdamW on {len(groups['adamw'])} others ({short(groups['adamw'])})")


# Keras optimizers selectable by name with Keras' own defaults (the run's --learning-rate,
# schedule, clipping and accumulation apply). Left out: AdamW and Muon (above, with LLM
# settings), the wrappers that take optimizers (LossScaleOptimizer, MultiOptimizer) and
# ScheduleFreeAdamW (made to run without a schedule).
KERAS_OPTIMIZERS = ("Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "Ftrl", "Lamb", "Lion",
                    "Nadam", "RMSprop", "SGD")


def keras_optimizer(class_name: str):
    def make(train: TrainConfig, model, **common):
        import keras

        return getattr(keras.optimizers, class_name)(**common)

    make.__doc__ = f"keras.optimizers.{class_name} with Keras' defaults."
    return make


@hookimpl
def register_optimizers(register):
    register("adamw", adamw)
    register("muon", muon)
    for class_name in KERAS_OPTIMIZERS:
        register(class_name.lower(), keras_optimizer(class_name))
