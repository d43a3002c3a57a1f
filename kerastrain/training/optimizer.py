"""The optimizer and learning-rate schedule of a run: AdamW, warm-up then cosine decay (Keras')."""

from __future__ import annotations

from kerastrain.config import RunConfig


def make_schedule(config: RunConfig, total_steps: int):
    import keras

    t = config.train
    warmup = min(t.warmup_steps, total_steps // 2)
    decay = max(1, total_steps - warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(t.learning_rate, decay, alpha=0.1), 0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=t.learning_rate / (warmup + 1),
        decay_steps=decay,
        alpha=0.1,
        warmup_target=t.learning_rate,
        warmup_steps=warmup,
    ), warmup


def make_optimizer(config: RunConfig, schedule, model):
    import keras

    t = config.train
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=t.weight_decay,
        beta_1=t.adam_beta1,
        beta_2=t.adam_beta2,
        epsilon=t.adam_epsilon,
        global_clipnorm=t.grad_clip or None,
        gradient_accumulation_steps=t.gradient_accumulation_steps
        if t.gradient_accumulation_steps > 1 else None,
    )
    # Norm scales and biases (1-D) take no weight decay, as in GPT-2 / nanoGPT.
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) < 2]
    )
    optimizer.build(model.trainable_variables)
    return optimizer
