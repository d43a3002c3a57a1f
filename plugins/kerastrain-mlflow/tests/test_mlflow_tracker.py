"""--tracker mlflow (plugins/kerastrain-mlflow), offline: the run read back with MlflowClient."""

from __future__ import annotations

import json

import pytest

from kerastrain.testing import TINY_RUN_ARGS as TINY
from kerastrain.testing import invoke

mlflow = pytest.importorskip("mlflow")


def test_mlflow_run_matches_metrics_jsonl_and_holds_the_final_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    args = ["run", "--output-dir", str(out), *TINY, "--log-every", "1", "--eval-every", "2",
            "--tracker", "mlflow"]
    result = invoke(*args, "--max-steps", "3")
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(f"sqlite:///{out.resolve() / 'mlflow.db'}")
    run_id = (out / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "out"
    assert run.data.params["train.batch_size"] == "4" and run.data.params["model.d_model"] == "32"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    def jsonl(kind, key):
        return [(r["step"], r[key]) for r in records if r["kind"] == kind and key in r]

    def history(key):
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    assert history("loss") == jsonl("train", "loss") and len(history("loss")) == 3
    assert history("tokens_per_sec") == jsonl("train", "tokens_per_sec")
    assert history("val_loss") == jsonl("eval", "val_loss") and len(history("val_loss")) == 2
    files = {f.path for f in client.list_artifacts(run_id, "final_checkpoint")}
    assert {"final_checkpoint/state.json", "final_checkpoint/state"} <= files
    local = client.download_artifacts(run_id, "final_checkpoint/manifest.json", str(tmp_path))
    assert open(local).read() == (out / "final_checkpoint" / "manifest.json").read_text()

    # Resuming the run continues the same MLflow run; metrics stay equal to metrics.jsonl.
    resumed = invoke(*args, "--max-steps", "5", "--save-every", "1")
    assert resumed.exit_code == 0, resumed.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (out / "mlflow_run_id").read_text().strip() == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [s for s, _ in history("loss")] == [1, 2, 3, 4, 5]


def test_an_unknown_tracker_is_a_one_line_error(tmp_path):
    result = invoke("run", "--output-dir", str(tmp_path / "o"), *TINY, "--tracker", "mlfow")
    assert result.exit_code == 2 and "--tracker mlfow: no tracker plugin" in result.output


def test_a_tracker_failing_mid_run_does_not_stop_training(tmp_path):
    import io

    from kerastrain_mlflow import MlflowTracker
    from rich.console import Console

    from kerastrain.training import tracking

    class ServerGone:
        def log(self, record):
            raise ConnectionError("API request to http://tracking:5000 failed\nretries exhausted")

    console = Console(file=io.StringIO(), width=200)
    trackers = tracking.Trackers([(MlflowTracker, ServerGone())],
                                 say=lambda m: console.print(m, highlight=False))
    trackers.log({"kind": "train", "step": 1, "loss": 2.0})
    trackers.log({"kind": "train", "step": 2, "loss": 1.9})  # said once
    trackers.finish({})
    out = console.file.getvalue()
    assert out.count("MLflow: log failed (API request to http://tracking:5000 failed)") == 1
    assert "training goes on without MLflow" in out and trackers.active == []


def test_trackers_are_a_plugin_kind():
    from kerastrain.plugins import trackers

    found = trackers()
    assert {"mlflow", "wandb"} <= set(found) and found["mlflow"].plugin == "mlflow"
