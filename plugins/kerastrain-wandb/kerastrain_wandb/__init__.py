"""kerastrain-wandb: ``kerastrain run --tracker wandb`` sends the run to Weights & Biases.

* where: W&B's own settings (``WANDB_PROJECT`` [default: kerastrain], ``WANDB_ENTITY``,
  ``WANDB_API_KEY`` or ``wandb login``). ``WANDB_MODE`` decides when set; otherwise the run is
  online when an API key is configured and the W&B host answers within 3 s, and **offline**
  (files under ``OUTPUT_DIR/wandb``, uploaded later with ``wandb sync``) when not, with a notice.
  The run is named after the output directory; resuming the run continues the same W&B run.
* what: the run's configuration; every record of ``metrics.jsonl`` (training windows,
  evaluations, samples) at its step; the final checkpoint as a ``model`` artifact
  (``KERASTRAIN_WANDB_LOG_CHECKPOINT=0`` skips it).

It uses only the loop hooks; wandb is imported when a run asks for it.
"""

from __future__ import annotations

from kerastrain.hookspecs import hookimpl
from kerastrain_wandb.tracker import WandbTracker

NAME = "wandb"
_trackers: dict[int, WandbTracker] = {}


@hookimpl
def on_train_start(run):
    if NAME in (run.config.output.trackers or []):
        _trackers[id(run)] = WandbTracker.start(run)


def _safely(run, action, *args) -> None:
    """A tracker that fails mid-run (server down, disk full) must not stop training: say so
    once and go on without it."""
    tracker = _trackers.get(id(run))
    if tracker is None:
        return
    try:
        getattr(tracker, action)(*args)
    except Exception as exc:  # any client error: the run and its checkpoints matter more
        _trackers.pop(id(run), None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        run.say(f"W&B: {action} failed ({first}); training goes on without W&B")


@hookimpl
def on_train_step(run, step, logs):
    _safely(run, "sync")


@hookimpl
def on_evaluate(run, step, logs):
    _safely(run, "sync")


@hookimpl
def on_checkpoint_saved(run, path, step, kind):
    if kind == "final":
        _safely(run, "log_checkpoint", path)


@hookimpl
def on_train_end(run, logs):
    _safely(run, "finish", logs)
    _trackers.pop(id(run), None)
