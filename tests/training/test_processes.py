"""Several processes (gloo between CPU processes, 2 forced devices each) train one run together;
bad process options fail with one line before anything is written."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerastrain.training import processes
from kerastrain.training.checkpoint import newest_verified_checkpoint
from tests.helpers import invoke, kerastrain
from tests.training.test_checkpoint_formats import restore_in_one_cpu
from tests.training.test_distribution import SMALL, assert_close, forced_devices, train_losses

WIDE = {"COLUMNS": "1000"}
# The two-process run of the tests below: 30 steps, a checkpoint every 3.
RUN = [*SMALL, "--max-train-examples", "8", "--max-steps", "30", "--save-every", "3",
       "--batch-size", "2"]


def launch(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return kerastrain("launch", "--num-processes", "2", "--devices-per-process", "2", "--",
                      "run", *args, env=WIDE, timeout=timeout)


def test_bad_process_options_fail_with_one_line_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "CONNECT_TIMEOUT_S", 3)
    out = tmp_path / "out"
    cases = {
        "--process-id 2 is out of range": ["--num-processes", "2", "--process-id", "2",
                                           "--coordinator-address", "127.0.0.1:9"],
        "needs all of --coordinator-address": ["--num-processes", "2"],
        "cannot reach the coordinator 127.0.0.1:9 within 3 s": [
            "--num-processes", "2", "--process-id", "1", "--coordinator-address", "127.0.0.1:9"],
    }
    for message, extra in cases.items():
        start = time.monotonic()
        result = invoke("run", *SMALL, "--output-dir", str(out), *extra)
        assert time.monotonic() - start < 30  # a bounded wait, not JAX's 5 minutes
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], result.output
        assert not out.exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """RUN trained from start to end, once for the tests of this module."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    return out, launch(*RUN, "--output-dir", str(out))


def test_a_failed_collective_between_processes_is_told_in_one_line(monkeypatch):
    import jax

    gloo = jax.errors.JaxRuntimeError("UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/"
                                      "transport/tcp/pair.cc:538] Read error: Connection reset "
                                      "by peer")
    assert processes.lost_process_message(gloo) is None  # not a multi-process run
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    message = processes.lost_process_message(gloo)
    assert message.startswith("another process of this run stopped") and "\n" not in message
    assert "Connection reset by peer" in message and "Run the same command again" in message
    assert processes.lost_process_message(RuntimeError("RESOURCE_EXHAUSTED: out of memory")) is None


def test_two_processes_train_share_the_data_and_resume_exactly(uninterrupted, tmp_path):
    out, first = uninterrupted
    assert first.returncode == 0, first.stderr[-3000:]
    said = " ".join(first.stdout.split())
    assert "Mesh: 4 devices in 2 processes" in said and "global batch 8" in said
    assert said.count("Done: 30 steps") == 1  # process 1 prints nothing
    losses = train_losses(out)
    assert len(losses) == 30  # one metrics line per step: only process 0 writes
    assert losses[-1] < losses[0]
    final = out / "final_checkpoint"
    assert json.loads((final / "state.json").read_text())["processes"] == 2
    # Each process wrote its own shards (Orbax, no gather to process 0) ...
    for folder, item in ((out / "checkpoint_step_24", "model"), (final, "optimizer")):
        written = {p.name for p in (folder / "state" / item).glob("ocdbt.process_*")}
        assert written == {"ocdbt.process_0", "ocdbt.process_1"}, (folder, written)
    # ... but the final weights, gathered once, which plain Orbax reads on one CPU.
    assert "EQUAL" in restore_in_one_cpu(out)
    positions = [json.loads(gzip.decompress(p.read_bytes()))
                 for p in sorted((final / "pipeline_states").iterdir())]
    assert len(positions) == 2
    # Each process went through its whole share (the shares are disjoint and together hold
    # every document once: tests/data/test_sharding.py) and on into the next epoch.
    assert all(p["epoch"] >= 1 for p in positions)
    # The same process count resumes exactly from the step-24 checkpoint.
    again = launch(*RUN, "--output-dir", str(tmp_path / "again"), "--resume-from",
                   str(out / "checkpoint_step_24"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Data position: epoch" in again.stdout and "this process's share (0)" in again.stdout
    assert_close(train_losses(tmp_path / "again"), losses[24:], "resumed with 2 processes")
    # One process with 4 devices: the state is resharded, the data position restarts the epoch.
    one = kerastrain("run", *RUN, "--output-dir", str(tmp_path / "one"), "--resume-from",
                     str(out / "checkpoint_step_24"), env={**WIDE, **forced_devices(4)})
    assert one.returncode == 0, one.stderr[-3000:]
    said = " ".join(one.stdout.split())
    assert "at step 24" in said and "written by 2 process(es), this run has 1" in said
    assert len(train_losses(tmp_path / "one")) == 6


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _train_steps(out: Path) -> list[int]:
    """Steps of the train records in ``metrics.jsonl`` so far (a line being written is left out)."""
    path = out / "metrics.jsonl"
    done = path.read_text().rpartition("\n")[0] if path.exists() else ""
    rows = [json.loads(line) for line in done.splitlines()]
    return [r["step"] for r in rows if r["kind"] == "train"]


def test_a_killed_process_stops_the_run_and_the_same_command_resumes_exactly(uninterrupted,
                                                                            tmp_path):
    """kill -9 of one of two processes: the launcher stops the other at once with one clear
    line; running the same command again resumes from the newest checkpoint and logs the losses
    of an uninterrupted run."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerastrain", "launch", "--num-processes", "2",
         "--devices-per-process", "2", "--", "run", *RUN, "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, **WIDE))
    try:
        deadline = time.monotonic() + 300
        # A checkpoint is complete (sealed by its manifest, then renamed into place) and
        # training has gone on past it.
        while not ((out / "checkpoint_step_3" / "manifest.json").exists()
                   and max(_train_steps(out), default=0) > 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "process 1 was killed by SIGKILL; the others cannot go on" in err
    assert "Run the same command again to resume" in err
    kept = newest_verified_checkpoint(out)  # every file of the newest checkpoint checks out
    assert kept is not None and 3 <= kept.step < 30, kept
    assert not (out / "final_checkpoint").exists()  # killed while training went on

    again = launch(*RUN, "--output-dir", str(out))  # the very same command
    assert again.returncode == 0, again.stderr[-3000:]
    said = " ".join(again.stdout.split())
    assert f"Resumed from {kept.path} at step {kept.step}" in said, said[-3000:]
    assert f"(steps {kept.step + 1}-30; 30 in total)" in said, said[-3000:]
    baseline, first = uninterrupted
    assert first.returncode == 0, first.stderr[-3000:]
    # The killed run's lines past the checkpoint were dropped: each step is logged once.
    assert _train_steps(out) == list(range(1, 31))
    assert_close(train_losses(out), train_losses(baseline),
                 "killed, then the same command run again")
    assert not list(out.glob(".tmp-*"))  # a checkpoint being written at the kill is cleared


def test_two_processes_train_every_example_of_their_epochs_exactly(tmp_path):
    """``--epochs 2`` on 2 processes: each counts its own share's batches, the run is as long as
    the largest share (the other trains empty batches meanwhile), and the summary's counts, summed
    over the processes, are every example twice, counted by hand."""
    from tests.training.test_chat_training import _chat_file
    from tests.training.test_epochs import _chat_trained_tokens, _resolved
    from tests.training.test_mixture_training import _summary

    data = _chat_file(tmp_path / "chat.jsonl", 37)  # odd: the shares differ
    out = tmp_path / "out"
    # --no-packing: one example a row, 2 rows a batch (a device each): the shares hold 38 and 36
    # rows of their 2 epochs, 19 and 18 batches, and process 1 trains one empty batch.
    done = launch(*SMALL, "--dataset-id", str(data), "--seq-len", "256", "--epochs", "2",
                  "--no-packing",
                  "--batch-size", "1", "--eval-every", "1000", "--output-dir", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "largest of 2 processes' shares" in " ".join(done.stdout.split())
    summary = _summary(out)
    examples, trained = _chat_trained_tokens(data, out)
    assert summary["reason"] == "epochs completed"
    assert summary["steps"] == _resolved(out)["total_steps"] == 19
    assert (summary["examples_trained"], summary["trained_tokens_total"]) == (2 * examples,
                                                                             2 * trained)
    assert summary["epochs_completed"] == 2
