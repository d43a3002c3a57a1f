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

It uses only the loop hooks; MLflow is imported when a run asks for it.
"""

from __future__ import annotations

from kerastrain.hookspecs import hookimpl
from kerastrain_mlflow.tracker import MlflowTracker

NAME = "mlflow"
_trackers: dict[int, MlflowTracker] = {}


@hookimpl
def on_train_start(run):
    if NAME in (run.config.output.trackers or []):
        _trackers[id(run)] = MlflowTracker.start(run)


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
        run.say(f"MLflow: {action} failed ({first}); training goes on without MLflow")


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
