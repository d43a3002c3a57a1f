"""Failed uploads fail: the remote is probed before the first step, an outage mid-run is one
condition with a bounded wait at exit and exit code 3, and ``kerastrain sync`` uploads later.

These run ``kerastrain`` as a user does, against the real local S3 server (moto), stopped and
started again on the same port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kerastrain.errors import EXIT_NOT_UPLOADED
from kerastrain.storage.remote import list_remote_checkpoints
from tests.helpers import TINY, kerastrain

UPLOAD_TIMEOUT = 4.0


def test_missing_bucket_is_one_line_exit_2_and_nothing_trained(s3, tmp_path):
    out = tmp_path / "out"
    proc = kerastrain("run", "--output-dir", str(out), *TINY, "--max-steps", "2",
                      "--cloud-provider", "s3", "--cloud-bucket", "no-such-bucket-here",
                      timeout=120)
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and "no-such-bucket-here" in error[0] and "does not exist" in error[0]
    assert not (out / "metrics.jsonl").exists() and not list(out.glob("checkpoint_*"))


def test_unreachable_endpoint_is_refused_before_training(s3, tmp_path):
    out = tmp_path / "out"
    proc = kerastrain("run", "--output-dir", str(out), *TINY, "--max-steps", "2",
                      "--cloud-provider", "s3", "--cloud-bucket", s3.make_bucket(),
                      env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
                      timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: cannot list s3://") and "reachable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.slow
def test_server_stops_mid_run_exit_3_in_bounded_time_then_sync_and_resume(s3, tmp_path):
    bucket = s3.make_bucket()
    root = f"s3://{bucket}/runs/a"
    out = tmp_path / "out"
    args = [sys.executable, "-m", "kerastrain", "run", "--output-dir", str(out), *TINY,
            "--max-steps", "60", "--save-every", "10", "--log-every", "10",
            "--cloud-provider", "s3", "--cloud-bucket", bucket, "--cloud-prefix", "runs/a",
            "--upload-timeout", str(UPLOAD_TIMEOUT)]
    env = {**os.environ, "AWS_MAX_ATTEMPTS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint_step_10" / "manifest.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        s3.stop()  # mid-run: steps 20..60 and the final checkpoint cannot be uploaded
        stdout, stderr = proc.communicate(timeout=180)
        ended = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
        s3.start()
    assert proc.returncode == EXIT_NOT_UPLOADED, stderr[-2000:]
    final_written = (out / "final_checkpoint" / "manifest.json").stat().st_mtime
    # The exit waits for the dead remote at most --upload-timeout (plus start-up of the bar).
    assert ended - final_written < UPLOAD_TIMEOUT + 10, ended - final_written
    both = stdout + stderr
    assert "Not uploaded:" in both and "final_checkpoint" in both
    assert f"kerastrain sync {out}`" in both  # whole on its line, to copy, however long
    # One outage, one message: not one per checkpoint.
    assert both.count("Checkpoint upload failed") == 1, both

    synced = kerastrain("sync", str(out), timeout=120)
    assert synced.returncode == 0, synced.stderr
    names = {c.name for c in list_remote_checkpoints(root)}
    # (step 60 is the last step: it is saved as final_checkpoint)
    assert {f"checkpoint_step_{s}" for s in range(10, 60, 10)} | {"final_checkpoint"} <= names
    again = kerastrain("sync", str(out), timeout=120)  # nothing left to send: still fine
    assert again.returncode == 0, again.stderr

    resumed_dir = tmp_path / "resumed"
    resumed = kerastrain("run", "--output-dir", str(resumed_dir), *TINY, "--max-steps", "52",
                         "--log-every", "1", "--resume-from", f"{root}/checkpoint_step_50",
                         timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in resumed.stdout and "checkpoint_step_50 at step 50" in resumed.stdout
