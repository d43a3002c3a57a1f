"""The first screen of ``kerastrain run``: what it waits for until the first update, then the
figures and an ETA from the steady time per update (the compile excluded)."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from kerastrain.training.progress_display import (
    Display,
    format_duration,
    make_progress,
    metrics_text,
    steady_eta,
    waiting_text,
)
from tests.helpers import TINY, invoke

LOGS = {"epoch": 0, "loss": 2.5, "lr": 3e-4, "tokens_per_sec": 12345.6, "mfu": 0.0123}


def test_eta_is_the_updates_left_times_the_steady_time_per_update():
    # The first update ended at t=100 s (step 1); steps 2..7 took 12 s: 2 s each, 3 left.
    assert steady_eta(7, 10, (100.0, 1), now=112.0) == 6.0
    assert steady_eta(10, 10, (100.0, 1), now=130.0) == 0.0
    assert steady_eta(1, 10, (100.0, 1), now=130.0) is None  # only the compiling update so far
    assert steady_eta(5, 10, None, now=130.0) is None
    assert steady_eta(5, None, (100.0, 1), now=130.0) is None  # no known length
    # A resumed run: the first update of this process is step 41.
    assert steady_eta(45, 50, (10.0, 41), now=18.0) == 10.0


def test_durations_read_as_rich_writes_them():
    assert format_duration(None) == "-:--:--"
    assert format_duration(float("inf")) == "-:--:--"
    assert format_duration(0.0) == "0:00:00"
    assert format_duration(83.4) == "0:01:23"
    assert format_duration(3723.0) == "1:02:03"
    assert waiting_text("compiling the step", since=100.0, now=112.4) == "compiling the step… 12 s"
    assert metrics_text(LOGS) == "epoch 0  loss 2.5000  lr 3.00e-04  12,346 tok/s  MFU 1.2%"


def screen(progress) -> str:
    out = Console(file=io.StringIO(), width=200, color_system=None)
    out.print(progress.get_renderable())
    return out.file.getvalue()


def test_the_terminal_line_says_what_it_waits_for_then_the_figures_and_eta():
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    with make_progress(console) as progress:
        display = Display(progress, say=None, step=0, total=10)
        display.waiting("compiling the step")
        progress.update(display.task, since=time.monotonic() - 12.2)
        first = screen(progress)
        display.logged(4, LOGS, eta=83.4)
        later = screen(progress)
    assert "compiling the step… 12 s" in first and "nan" not in first
    assert "ETA -:--:--" in first and "0/10" in first
    assert metrics_text(LOGS) in later and "ETA 0:01:23" in later and "4/10" in later


def test_a_tiny_run_says_it_compiles_then_logs_an_eta(tmp_path):
    result = invoke("run", *TINY, "--max-steps", "6", "--log-every", "2", "--eval-every", "1000",
                    "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    order = [i for i, line in enumerate(lines) if line.startswith(
        ("Compiling the step…", "Reading the first batch…", "Running the first update…",
         "First update in", "step "))]
    said = [lines[i].split(" ")[0] for i in order]
    # The step compiles while the first batches are read, then the first update runs.
    assert said == ["Compiling", "Reading", "Running", "First", "step", "step", "step"], said
    steps = [re.fullmatch(r"step (\d)/6 epoch \d+ loss [\d.]+ lr \S+ [\d,]+ tok/s MFU [\d.]+% "
                          r"ETA (\d+):(\d\d):(\d\d)", lines[i]) for i in order[4:]]
    assert all(steps), [lines[i] for i in order[4:]]
    assert [int(m.group(1)) for m in steps] == [2, 4, 6]
    assert steps[-1].groups()[1:] == ("0", "00", "00")  # nothing left at the last update
