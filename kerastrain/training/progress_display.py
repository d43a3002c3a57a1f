"""What ``kerastrain run`` shows while it trains: a live progress line on a terminal, one line per
log otherwise.

Until the first update lands (its batch read, then the step compiled: minutes for a large model on
a CPU) the line says which of the two the run is waiting for and for how long, rather than a loss
of nan at 0 tok/s. The ETA is the updates left times the steady time per update, measured from the
end of the first update (its compile excluded); it appears with the first log after that update.
"""

from __future__ import annotations

import math
import time

UNKNOWN = "-:--:--"


def steady_eta(step: int, total: int | None, steady_start: tuple[float, int] | None,
               now: float) -> float | None:
    """Seconds left at the steady pace: ``(total - step)`` updates times the mean time of the
    updates since ``steady_start`` ((time, step) at the end of the first update). None without a
    known total or before an update after the first has been timed."""
    if total is None or steady_start is None or step <= steady_start[1]:
        return None
    start, first = steady_start
    return max(total - step, 0) * (now - start) / (step - first)


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (as rich's columns write it); ``-:--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return UNKNOWN
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def waiting_text(phase: str, since: float, now: float) -> str:
    """What the run waits for before its first update, with the seconds it has waited."""
    return f"{phase}… {now - since:.0f} s"


def metrics_text(logs: dict, sep: str = "  ") -> str:
    """The figures of a log record, as the progress line and the plain log lines show them."""
    return sep.join([f"epoch {logs['epoch']}", f"loss {logs['loss']:.4f}", f"lr {logs['lr']:.2e}",
                     f"{logs['tokens_per_sec']:,.0f} tok/s", f"MFU {100 * logs['mfu']:.1f}%"])


class Display:
    """The training loop's progress: ``waiting`` before the first update, ``first_update`` after
    it, ``logged`` at each log. On a terminal a rich progress line (``make_progress``), else lines
    through ``say``."""

    def __init__(self, progress, say, step: int, total: int | None):
        self.progress, self.say, self.total = progress, say, total
        self.task = progress.add_task("train", total=total, completed=step, phase=None,
                                      since=time.monotonic(), text="", eta=UNKNOWN)

    def waiting(self, phase: str) -> None:
        self.progress.update(self.task, phase=phase, since=time.monotonic())
        if self.progress.disable:
            self.say(f"{phase[:1].upper()}{phase[1:]}…")

    def first_update(self, seconds: float) -> None:
        text = f"first update in {seconds:.1f} s (compiling included)"
        self.progress.update(self.task, phase=None, text=text)
        if self.progress.disable:
            self.say(f"{text[:1].upper()}{text[1:]}")

    def logged(self, step: int, logs: dict, eta: float | None) -> None:
        self.progress.update(self.task, completed=step, phase=None, text=metrics_text(logs),
                             eta=format_duration(eta))
        if self.progress.disable:
            self.say(f"step {step}/{self.total} {metrics_text(logs, ' ')}"
                     + (f" ETA {format_duration(eta)}" if eta is not None else ""))


def make_progress(console):
    """The live progress line of a terminal (disabled, so silent, elsewhere)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class StatusColumn(ProgressColumn):
        """What the run waits for (re-rendered with the time waited) or the latest figures."""

        def render(self, task) -> Text:
            phase = task.fields.get("phase")
            if phase:
                return Text(waiting_text(phase, task.fields["since"], time.monotonic()))
            return Text(task.fields.get("text", ""))

    return Progress(
        TextColumn("[bold]step"),
        MofNCompleteColumn(),
        BarColumn(),
        StatusColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
