"""Metrics flow once: a tracker gets, in memory, exactly the records ``metrics.jsonl`` holds, and
nothing opens ``metrics.jsonl`` for reading while the run goes on."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

from kerastrain.hookspecs import hookimpl


class RecordingTracker:
    """A tracker that keeps what it is handed."""

    name = "recording"
    label = "Recording"
    started: list[RecordingTracker] = []

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.checkpoints: list[Path] = []
        self.summary: dict | None = None

    @classmethod
    def start(cls, run) -> RecordingTracker:
        tracker = cls()
        cls.started.append(tracker)
        return tracker

    def log(self, record: dict) -> None:
        self.records.append(dict(record))

    def log_checkpoint(self, path) -> None:
        self.checkpoints.append(Path(path))

    def finish(self, summary: dict) -> None:
        self.summary = dict(summary)


class RecordingTrackerPlugin:
    @hookimpl
    def register_trackers(self, register):
        register(RecordingTracker)


def test_a_tracker_gets_the_records_of_metrics_jsonl_without_the_file_being_read(
        kerastrain_plugin, kerastrain_run, monkeypatch):
    reads: list[str] = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).name == "metrics.jsonl" and (
                "r" in mode or "+" in mode):
            reads.append(f"{file} ({mode})")
        return real_open(file, mode, *args, **kwargs)

    # pathlib's read_text/open go through io.open; builtins.open is the same function.
    monkeypatch.setattr(builtins, "open", watching_open)
    monkeypatch.setattr(io, "open", watching_open)
    RecordingTracker.started.clear()
    kerastrain_plugin(RecordingTrackerPlugin(), name="recording-tracker")
    result = kerastrain_run("--max-steps", "4", "--eval-every", "2", "--sample-every", "2",
                            "--tracker", "recording")
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert reads == []  # a fresh run: not even the resume truncation reads it

    (tracker,) = RecordingTracker.started
    lines = (result.output_dir / "metrics.jsonl").read_text().splitlines()
    assert tracker.records == [json.loads(line) for line in lines]
    kinds = [r["kind"] for r in tracker.records]
    assert kinds.count("train") == 4 and kinds.count("eval") == 2
    assert kinds.count("sample") == 2 and kinds[-1] == "summary"
    assert tracker.checkpoints == [result.output_dir / "final_checkpoint"]
    assert tracker.summary["reason"] == "max steps reached"


def test_two_runs_in_one_process_have_their_own_trackers(kerastrain_plugin, kerastrain_run):
    from kerastrain.training import tracking

    RecordingTracker.started.clear()
    kerastrain_plugin(RecordingTrackerPlugin(), name="recording-tracker")
    runs = [kerastrain_run("--max-steps", n, "--tracker", "recording", "--overwrite")
            for n in ("2", "3")]
    assert [r.exit_code for r in runs] == [0, 0], runs[-1].output
    first, second = RecordingTracker.started
    assert [r["step"] for r in first.records if r["kind"] == "train"] == [1, 2]
    assert [r["step"] for r in second.records if r["kind"] == "train"] == [1, 2, 3]
    assert first.summary["steps"] == 2 and second.summary["steps"] == 3
    module_state = [name for name, value in vars(tracking).items()
                    if not name.startswith("__") and isinstance(value, (dict, list, set))]
    assert module_state == []
