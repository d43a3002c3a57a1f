"""The jitted training and evaluation steps over Keras' stateless model and optimizer APIs, and
the explicit state they thread through (``kerastrain.training.loop`` runs them)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras

from kerastrain.training.loss import chunked_eval_loss, chunked_lm_loss


def lm_loss(labels, logits):
    """Mean next-token cross-entropy, computed in float32 whatever the compute dtype."""
    logits = keras.ops.cast(logits, "float32")
    losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return keras.ops.mean(losses)


def initial_state(model, optimizer) -> tuple:
    """The (trainable, non-trainable, optimizer) values the jitted steps thread through."""
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )


def make_steps(model, optimizer, mesh_plan=None, segmented: bool = False, z_loss: float = 0.0,
               objective=None, train=None, frozen=None):
    """Jitted (train_step, eval_step) over explicit state tuples.

    ``train_step(state, x, y, counts[, segments])`` returns ``([loss part, trained tokens],
    state)``. The loss is normalised by the trained tokens of the whole update, not of the
    micro-batch: ``counts`` holds, per row, the trained labels (``y >= 0``) of that row summed
    over the update's micro-batches, so ``sum(counts)`` is the update's trained tokens on every
    device (the rows are split over the mesh like the batch). Each micro-batch's part is its loss
    sum over that total; the parts add up to the update's mean over all its trained tokens.
    Keras' gradient accumulation averages the k micro-gradients, so each is taken of ``k`` times
    the part: the applied gradient is the gradient of that mean, not a mean of means.
    ``segments`` (packed rows' example ids) is taken when ``segmented``.

    With a ``mesh_plan`` (``kerastrain.training.distribution``) the train step keeps every state
    array in the sharding it was created with and takes the batch split over the mesh's batch
    axes: XLA's SPMD partitioner does the rest. ``z_loss``: ``--z-loss`` (the train loss then
    includes it; evaluation scores cross-entropy alone).

    A preference ``objective`` (``objective.pairs``; ``train``: its settings, the run's
    TrainConfig) takes the steps of :mod:`kerastrain.training.preference_loss` instead: ``counts``
    per row are then :func:`~kerastrain.training.preference_loss.pair_counts`, ``frozen`` the
    reference weights of full fine-tuning (None: LoRA's base model, or no reference).
    """
    if objective is not None and objective.pairs:
        return _pair_steps(model, optimizer, mesh_plan, objective, train, frozen)
    scale = optimizer.gradient_accumulation_steps or 1

    def loss_fn(trainable, non_trainable, x, y, counts, segments):
        # The output projection and cross-entropy run in chunks (never the whole batch's logits).
        if counts is None:  # this micro-batch alone, as one of ``scale`` equal shares
            total = (jnp.maximum(jnp.sum(y >= 0), 1) * scale).astype(jnp.float32)
        else:
            total = jnp.maximum(jnp.sum(counts), 1).astype(jnp.float32)
        part, non_trainable = chunked_lm_loss(model, trainable, non_trainable, x, y,
                                              training=True, segment_ids=segments,
                                              normalizer=total, z_loss=z_loss)
        return part * scale, (part, total, non_trainable)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, x, y, counts=None, segments=None):
        trainable, non_trainable, opt_vars = state
        (_, (part, total, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y,
                                                           counts, segments)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return jnp.stack([part, total]), (trainable, non_trainable, opt_vars)

    def eval_step(trainable, non_trainable, x, y, segments=None):
        return chunked_eval_loss(model, trainable, non_trainable, x, y, segment_ids=segments)

    if mesh_plan is not None:
        shardings = mesh_plan.state_shardings(initial_state(model, optimizer))
        batch = mesh_plan.batch_sharding
        inputs = (shardings, batch, batch, row_sharding(mesh_plan)) + ((batch,) if segmented
                                                                       else ())
        return jax.jit(train_step, donate_argnums=0, in_shardings=inputs,
                       out_shardings=(mesh_plan.replicated, shardings)), jax.jit(eval_step)
    return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)


def _pair_steps(model, optimizer, mesh_plan, objective, train, frozen):
    """Jitted pair steps taking the loop's arguments; ``frozen`` is bound here."""
    from kerastrain.training.preference_loss import make_pair_eval_step, make_pair_train_step

    train_step = make_pair_train_step(model, optimizer, objective, train)
    eval_step = make_pair_eval_step(model, objective, train)
    if mesh_plan is not None:
        shardings = mesh_plan.state_shardings(initial_state(model, optimizer))
        batch = mesh_plan.batch_sharding
        inputs = (shardings, batch, batch, row_sharding(mesh_plan), batch,
                  None if frozen is None else shardings[0])
        jitted = jax.jit(train_step, donate_argnums=0, in_shardings=inputs,
                         out_shardings=(mesh_plan.replicated, shardings))
    else:
        jitted = jax.jit(train_step, donate_argnums=0)
    jitted_eval = jax.jit(eval_step)

    def train(state, x, y, counts, segments):
        return jitted(state, x, y, counts, segments, frozen)

    # The loop compiles the step ahead of its first batch (``Trainer._compile_ahead``).
    train.trace = lambda state, x, y, counts, segments: jitted.trace(state, x, y, counts,
                                                                     segments, frozen)
    return train, lambda trainable, non_trainable, x, y, segments=None: jitted_eval(
        trainable, non_trainable, x, y, segments, frozen)


def row_sharding(mesh_plan):
    """The batch's sharding for a per-row vector (``counts``): rows split as the batch's are."""
    batch = mesh_plan.batch_sharding
    return jax.sharding.NamedSharding(batch.mesh, jax.sharding.PartitionSpec(batch.spec[0]))


def update_counts(micro: list, pairs: bool = False):
    """Per row, the trained labels of the update's micro-batches added up (``counts`` above);
    ``pairs``: a preference objective's counts (pairs, chosen tokens, trained tokens)."""
    import numpy as np

    if pairs:
        from kerastrain.training.preference_loss import pair_counts

        return pair_counts(micro)

    return sum((np.asarray(b.labels) >= 0).sum(axis=1, dtype=np.int32) for b in micro)
