"""kerastrain-mlflow: ``kerastrain run --tracker mlflow`` sends the run to MLflow.

* where: ``$MLFLOW_TRACKING_URI`` (MLflow's own variable: a server ``http://...``, ``databricks``,
  a database); without it a local SQLite store ``OUTPUT_DIR/mlflow.db`` with artifacts in
  ``OUTPUT_DIR/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///OUTPUT_DIR/mlflow.db``).
  The experiment is ``$MLFLOW_EXPERIMENT_NAME`` or ``kerastrain``; the run is named after the
  output directory, and resuming the run continues the same MLflow run.
* what: the run's configuration as params; every record of ``metrics.jsonl`` (training windows,
  evaluations) as metrics at its step, so the two always agree; generated samples as text
  artifacts; the final checkpoint as the artifact folder ``final_checkpoint``
  (``KERASTRAIN_MLFLOW_LOG_CHECKPOINT=0`` skips it).

It registers a tracker (``register_trackers``); kerastrain's tracking plugin drives it from the
loop hooks; MLflow is imported when a run asks for it.
"""

from __future__ import annotations

from kerastrain.hookspecs import hookimpl
from kerastrain_mlflow.tracker import MlflowTracker


@hookimpl
def register_trackers(register):
    register(MlflowTracker)
