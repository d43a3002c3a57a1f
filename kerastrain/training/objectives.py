"""Training objectives (a plugin kind): what a run's loss is.

``sft`` is the language-model loss over the trained tokens (:mod:`kerastrain.training.loss`).
The preference objectives train on chosen / rejected pairs: their loss is a function of each
side's summed log-probability over its trained (reply) tokens, computed on packed rows by
:mod:`kerastrain.training.preference_loss`. The formulas are TRL's:

* ``dpo`` (``DPOTrainer``, ``loss_type="sigmoid"``): with ``z = (pi_c - pi_r) - (ref_c - ref_r)``
  (log-prob sums), ``-(1 - ls) logsigmoid(beta z) - ls logsigmoid(-beta z)``; rewards
  ``beta (pi - ref)``. Needs the reference model.
* ``simpo`` (``CPOTrainer``, ``loss_type="simpo"``, ``cpo_alpha=0``): length-averaged log-probs,
  ``z = (avg_c - avg_r) - gamma / beta``, the same sigmoid loss; rewards ``beta avg``.
* ``orpo`` (``ORPOTrainer``): the chosen replies' mean token NLL plus, per pair,
  ``-beta logsigmoid(log_odds)`` with ``log_odds = (avg_c - avg_r) - (log(1 - e^avg_c) -
  log(1 - e^avg_r))``; rewards ``beta avg``.

An objective registers through ``register_objectives`` like a third party's; its settings are
``--beta``, ``--gamma``, ``--label-smoothing`` or options it adds (``register_run_options``,
section ``train``), read from the ``train`` section handed to :meth:`Objective.pair_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl

# What the loop logs of a preference objective, averaged over the pairs of the update (TRL's
# names), then each objective's own ``PairLoss.metrics``.
PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected")


@dataclass(frozen=True)
class PairLogps:
    """Per pair (arrays of the same shape): the summed log-probs of the chosen and rejected
    replies' trained tokens, and how many tokens each sums."""

    chosen: Any
    rejected: Any
    chosen_tokens: Any
    rejected_tokens: Any

    def averaged(self) -> PairLogps:
        """Length-normalised: each side's mean log-prob per token (SimPO, ORPO)."""
        return PairLogps(self.chosen / self.chosen_tokens, self.rejected / self.rejected_tokens,
                         self.chosen_tokens, self.rejected_tokens)


@dataclass
class PairLoss:
    """An objective's loss on a batch of pairs: ``losses`` per pair (averaged over the pairs of
    the update), the rewards TRL logs, ``logps`` (the log-probs it logs: sums or averages), and
    ``nll_weight``: the weight of the chosen replies' mean token NLL added to the loss (ORPO's
    SFT term; averaged over the chosen tokens of the update). ``metrics``: more per-pair values
    to log, by name."""

    losses: Any
    chosen_rewards: Any
    rejected_rewards: Any
    logps: PairLogps
    nll_weight: float = 0.0
    metrics: dict = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """A training objective, registered by a plugin under ``name``."""

    name: str
    description: str
    pairs: bool  # trains on chosen / rejected pairs (the data must be preference records)
    reference: bool  # needs the reference model's log-probs (``pair_loss``'s ``reference``)
    metric_names: tuple[str, ...]  # the keys of PairLoss.metrics, in a fixed order

    def pair_loss(self, policy: PairLogps, reference: PairLogps | None, train) -> PairLoss:
        """(Objectives with ``pairs`` only.) The loss of each pair (jax arrays in, jax arrays out; ``train``: the run's
        :class:`kerastrain.config.TrainConfig`)."""
        ...


def _sigmoid_loss(z, beta: float, label_smoothing: float):
    import jax

    return (-(1 - label_smoothing) * jax.nn.log_sigmoid(beta * z)
            - label_smoothing * jax.nn.log_sigmoid(-beta * z))


class LanguageModelObjective:
    name = "sft"
    description = "Next-token cross-entropy over the trained tokens (pretraining, SFT)"
    pairs = False
    reference = False
    metric_names = ()  # trains tokens, not pairs: no pair_loss (the loss is the model's own)


class DpoObjective:
    name = "dpo"
    description = "DPO (sigmoid loss, --beta, --label-smoothing) against the reference model"
    pairs = True
    reference = True
    metric_names = ()

    def pair_loss(self, policy, reference, train):
        import jax

        z = (policy.chosen - policy.rejected) - (reference.chosen - reference.rejected)
        chosen = train.beta * jax.lax.stop_gradient(policy.chosen - reference.chosen)
        rejected = train.beta * jax.lax.stop_gradient(policy.rejected - reference.rejected)
        return PairLoss(_sigmoid_loss(z, train.beta, train.label_smoothing), chosen, rejected,
                        policy)


class SimpoObjective:
    name = "simpo"
    description = "SimPO (length-normalised, --beta, --gamma; no reference model)"
    pairs = True
    reference = False
    metric_names = ()

    def pair_loss(self, policy, reference, train):
        import jax

        avg = policy.averaged()
        z = (avg.chosen - avg.rejected) - train.gamma / train.beta
        return PairLoss(_sigmoid_loss(z, train.beta, train.label_smoothing),
                        train.beta * jax.lax.stop_gradient(avg.chosen),
                        train.beta * jax.lax.stop_gradient(avg.rejected), avg)


class OrpoObjective:
    name = "orpo"
    description = "ORPO (chosen NLL + --beta x odds-ratio term; no reference model)"
    pairs = True
    reference = False
    metric_names = ("log_odds_ratio", "log_odds_chosen")

    def pair_loss(self, policy, reference, train):
        import jax
        import jax.numpy as jnp

        avg = policy.averaged()
        # log(1 - e^x) as log(-expm1(x)): TRL's log1p(-exp(x)), without its rounding near 0.
        log_odds = (avg.chosen - avg.rejected) - (jnp.log(-jnp.expm1(avg.chosen))
                                                  - jnp.log(-jnp.expm1(avg.rejected)))
        ratio = jax.nn.log_sigmoid(log_odds)
        stop = jax.lax.stop_gradient
        return PairLoss(-train.beta * ratio, train.beta * stop(avg.chosen),
                        train.beta * stop(avg.rejected), avg, nll_weight=1.0,
                        metrics={"log_odds_ratio": stop(ratio), "log_odds_chosen": stop(log_odds)})


BUILTIN_OBJECTIVES = (LanguageModelObjective(), DpoObjective(), SimpoObjective(),
                      OrpoObjective())


@hookimpl
def register_objectives(register):
    for objective in BUILTIN_OBJECTIVES:
        register(objective)


def choose_objective(name: str):
    """The objective ``--objective NAME`` selects (one line naming the installed ones)."""
    from kerastrain.plugins import objectives

    found = objectives()
    if name not in found:
        raise ConfigError(f"unknown --objective {name!r}; installed: {', '.join(found)} (see "
                          "`kerastrain plugins`)")
    return found[name].obj


def check_objective(config, data_plan=None):
    """The objective fits the run: a preference objective needs preference records and a model
    to prefer from (``--init-from``, unless ``--preference-from-scratch``). Returns it."""
    objective = choose_objective(config.train.objective)
    if objective.pairs and not config.train.init_from and not \
            config.train.preference_from_scratch:
        raise ConfigError(f"--objective {objective.name} tunes a trained model's preferences, "
                          "and without --init-from there is none; pass --init-from (an SFT run's "
                          "checkpoint or a model folder), or --preference-from-scratch")
    if objective.pairs and config.data.train_on_prompt:
        raise ConfigError(f"--objective {objective.name} compares the replies of a pair, which "
                          "share their prompt; drop --train-on-prompt")
    fmt = getattr(data_plan, "format", None)
    if fmt is not None and bool(getattr(fmt, "pairs", False)) != bool(objective.pairs):
        if objective.pairs:
            raise ConfigError(f"--objective {objective.name} trains on preference pairs, but "
                              f"the data is read as {fmt.name}; give records with chosen and "
                              "rejected (--data-format preference)")
        raise ConfigError(f"the data is preference pairs ({fmt.name}): pass --objective dpo, "
                          f"simpo or orpo (--objective {objective.name} trains tokens)")
    return objective
