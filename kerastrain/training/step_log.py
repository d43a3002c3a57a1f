"""What the loop reports of its updates: the log record (mean loss, the applied rates,
throughput, MFU), the first step's time from process start, the steady throughput of the
summary, and the check that stops a run whose loss is no longer finite."""

from __future__ import annotations

import math
import os
import time

import numpy as np

from kerastrain.errors import UserError
from kerastrain.training.flops import MfuMeter
from kerastrain.training.preference_loss import pair_logs
from kerastrain.training.progress_display import steady_eta


def process_start_time() -> float:
    """When this process started (Linux /proc; else the import of this module)."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


class NonFiniteLoss(UserError):
    exit_code = 1


class StepLog:
    """The figures of a run's updates; ``resolved``: the run's ResolvedRun (tokens per update,
    model shape for MFU); ``objective``: a preference objective adds its pair metrics."""

    def __init__(self, resolved, objective, output_dir) -> None:
        self.tokens_per_update = resolved.tokens_per_update
        self.mfu = MfuMeter(resolved.model)
        self.objective, self.pairs = objective, bool(getattr(objective, "pairs", False))
        self.output_dir = output_dir
        self.process_start = process_start_time()
        self.first_step_seconds: float | None = None  # process start to the first update's end
        self.steady_start: tuple[float, int] | None = None  # (time, step) after the compile
        self.pair_values: list = []  # each update's pair metrics since the last record
        self.window = (time.perf_counter(), 0.0)  # (start, data wait so far) of the log window

    def start(self) -> None:
        """The loop starts: the first log window opens now."""
        self.window = (time.perf_counter(), 0.0)

    def first_update_done(self, step: int) -> float:
        """The first update (with the compile) has finished: the clock for the steady pace starts
        now; returns the time."""
        now = time.perf_counter()
        self.first_step_seconds = time.time() - self.process_start
        self.steady_start = (now, step)
        return now

    def read_loss(self, pending) -> tuple[float, float]:
        """(loss, trained tokens) of a finished update as floats; a non-finite loss stops the
        run."""
        step, loss = pending
        values = np.asarray(loss)
        value, tokens = float(values[0]), float(values[1])
        if self.pairs:
            self.pair_values.append(values[2:])
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the loss became {value} at step {step}; training stopped and the last good "
                f"checkpoint in {self.output_dir} is kept. Lower --learning-rate or "
                "--grad-clip, or check the data"
            )
        return value, tokens

    def record(self, step: int, total: int | None, losses: list[float], tokens: list[float],
               rates: dict, position, waited: float) -> tuple[dict, float | None]:
        """The log record of the updates since the previous one (mean loss, rates, throughput)
        and the ETA; ``waited``: the data wait of the run so far."""
        now = time.perf_counter()
        start, waited_before = self.window
        elapsed = max(now - start, 1e-9)
        logs = {
            "loss": float(np.mean(losses)),
            **{name: float(rate) for name, rate in rates.items()},
            "epoch": position.epoch,
            "tokens_per_sec": len(losses) * self.tokens_per_update / elapsed,
            "step_ms": 1000 * elapsed / len(losses),
            "data_wait_share": (waited - waited_before) / elapsed,
            "tokens_seen": step * self.tokens_per_update,
            "trained_tokens": float(np.mean(tokens)),  # per update: what the loss averages
            **position.source_logs(),  # a mixture's tokens from each dataset
        }
        logs["mfu"] = self.mfu(logs["tokens_per_sec"])
        logs.update(pair_logs(self.objective, self.pair_values))  # rewards/chosen...
        self.pair_values = []
        self.window = (now, waited)
        return logs, steady_eta(step, total, self.steady_start, now)

    def throughput(self, step: int) -> dict:
        """Tokens/s and MFU over the updates after the first (which includes the compile)."""
        if self.steady_start is None or step <= self.steady_start[1]:
            return {}
        start, first = self.steady_start
        tps = (step - first) * self.tokens_per_update / max(time.perf_counter() - start, 1e-9)
        return {"tokens_per_sec": tps, "mfu": self.mfu(tps),
                "flops_per_token": self.mfu.flops_per_token, "peak_flops": self.mfu.peak}
