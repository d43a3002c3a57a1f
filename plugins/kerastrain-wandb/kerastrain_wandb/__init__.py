"""kerastrain-wandb: ``kerastrain run --tracker wandb`` sends the run to Weights & Biases.

* where: W&B's own settings (``WANDB_PROJECT`` [default: kerastrain], ``WANDB_ENTITY``,
  ``WANDB_API_KEY`` or ``wandb login``). ``WANDB_MODE`` decides when set; otherwise the run is
  online when an API key is configured and the W&B host answers within 3 s, and **offline**
  (files under ``OUTPUT_DIR/wandb``, uploaded later with ``wandb sync``) when not, with a notice.
  The run is named after the output directory; resuming the run continues the same W&B run.
* what: the run's configuration; every record of ``metrics.jsonl`` (training windows,
  evaluations, samples) at its step; the final checkpoint as a ``model`` artifact
  (``KERASTRAIN_WANDB_LOG_CHECKPOINT=0`` skips it).

It registers a tracker (``register_trackers``); kerastrain's tracking plugin drives it from the
loop hooks; wandb is imported when a run asks for it.
"""

from __future__ import annotations

from kerastrain.hookspecs import hookimpl
from kerastrain_wandb.tracker import WandbTracker


@hookimpl
def register_trackers(register):
    register(WandbTracker)
