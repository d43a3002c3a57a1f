"""One kerastrain run mirrored into one MLflow run (see the package docstring)."""

from __future__ import annotations

import os
from pathlib import Path

from kerastrain.errors import UserError
from kerastrain.training.metrics_log import numeric_fields

RUN_ID_FILE = "mlflow_run_id"
BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """``{"train": {"seed": 1}}`` → ``{"train.seed": "1"}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:6000]
    return flat


class MlflowTracker:
    """Sends params at the start, each record as the run logs it (the one ``metrics.jsonl``
    gets), the final checkpoint, and the run's end status."""

    name = "mlflow"  # --tracker mlflow
    label = "MLflow"

    def __init__(self, client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(cls, run) -> MlflowTracker:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        output_dir = Path(run.output_dir).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            uri = f"sqlite:///{output_dir / 'mlflow.db'}"
            artifacts = (output_dir / "mlartifacts").as_uri()
        try:
            client = MlflowClient(tracking_uri=uri)
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "kerastrain"
            experiment = client.get_experiment_by_name(name)
            experiment_id = (experiment.experiment_id if experiment else
                             client.create_experiment(name, artifact_location=artifacts))
            run_id = cls._resumed_run_id(client, output_dir)
            resumed = run_id is not None
            if run_id is None:
                run_id = client.create_run(experiment_id, run_name=output_dir.name,
                                           tags={"kerastrain.output_dir": str(output_dir)}).info.run_id
                (output_dir / RUN_ID_FILE).write_text(run_id + "\n")
                params = flatten(run.config.to_dict())  # secrets are redacted by to_dict
                from mlflow.entities import Param

                items = [Param(k, v) for k, v in sorted(params.items())]
                for i in range(0, len(items), 100):
                    client.log_batch(run_id, params=items[i:i + 100])
            else:
                client.update_run(run_id, status="RUNNING")
        except MlflowException as exc:
            raise UserError(f"--tracker mlflow: {uri}: {str(exc).splitlines()[0]}") from exc
        run.say(f"MLflow: {'continuing' if resumed else 'logging to'} run {run_id} at {uri}")
        return cls(client, run_id)

    @staticmethod
    def _resumed_run_id(client, output_dir: Path) -> str | None:
        from mlflow.exceptions import MlflowException

        metrics = output_dir / "metrics.jsonl"
        if not metrics.exists() or metrics.stat().st_size == 0:
            return None  # a fresh run (or --overwrite): a new MLflow run
        try:
            run_id = (output_dir / RUN_ID_FILE).read_text().strip()
            client.get_run(run_id)
            return run_id
        except (OSError, MlflowException):
            return None

    def log(self, record: dict) -> None:
        """Send one record: its figures as metrics at its step, a sample's text as an artifact."""
        from mlflow.entities import Metric

        if record.get("kind") == "summary":
            return  # the summary repeats the last figures under other names
        step, stamp = int(record.get("step", 0)), int(1000 * record.get("time", 0))
        if record.get("kind") == "sample" and isinstance(record.get("text"), str):
            self.client.log_text(self.run_id, record["text"], f"samples/step_{step}.txt")
        metrics = [Metric(k, v, stamp, step) for k, v in numeric_fields(record).items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])

    def log_checkpoint(self, path) -> None:
        if os.environ.get("KERASTRAIN_MLFLOW_LOG_CHECKPOINT", "1") != "0":
            self.client.log_artifacts(self.run_id, str(path), artifact_path="final_checkpoint")

    def finish(self, summary: dict) -> None:
        reason = (summary or {}).get("reason")
        status = "FINISHED" if reason and reason != "interrupted" else (
            "KILLED" if reason == "interrupted" else "FAILED")
        self.client.set_terminated(self.run_id, status=status)
