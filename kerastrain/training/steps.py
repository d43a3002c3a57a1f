"""The jitted training and evaluation steps over Keras' stateless model and optimizer APIs, and
the explicit state they thread through (``kerastrain.training.loop`` runs them)."""

from __future__ import annotations

import jax
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


def make_steps(model, optimizer, mesh_plan=None, z_loss: float = 0.0):
    """Jitted (train_step, eval_step) over explicit state tuples.

    With a ``mesh_plan`` (``kerastrain.training.distribution``) the train step keeps every state
    array in the sharding it was created with and takes the batch split over the mesh's batch
    axes: XLA's SPMD partitioner does the rest. ``z_loss``: ``--z-loss`` (the train loss then
    includes it; evaluation scores cross-entropy alone).
    """

    def loss_fn(trainable, non_trainable, x, y):
        # The output projection and cross-entropy run in chunks (never the whole batch's logits).
        return chunked_lm_loss(model, trainable, non_trainable, x, y, training=True,
                               z_loss=z_loss)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    def eval_step(trainable, non_trainable, x, y):
        return chunked_eval_loss(model, trainable, non_trainable, x, y)

    if mesh_plan is not None:
        shardings = mesh_plan.state_shardings(initial_state(model, optimizer))
        batch = mesh_plan.batch_sharding
        return jax.jit(train_step, donate_argnums=0, in_shardings=(shardings, batch, batch),
                       out_shardings=(mesh_plan.replicated, shardings)), jax.jit(eval_step)
    return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)
