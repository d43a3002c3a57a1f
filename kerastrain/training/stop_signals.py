"""Ctrl-C and SIGTERM stop a run after the current update, which is then checkpointed; a second
Ctrl-C stops at once. In several processes every process stops after the same update."""

from __future__ import annotations

import signal

from kerastrain.training.processes import any_process


class StopSignals:
    """Catches SIGINT and SIGTERM while the loop runs (a context manager)."""

    def __init__(self, multi_process: bool) -> None:
        self.multi_process = multi_process
        self.received: int | None = None
        self._old: dict = {}

    def __enter__(self) -> StopSignals:
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signum

    def should_stop(self) -> bool:
        """Whether to stop after this update (a collective in several processes)."""
        if self.multi_process and any_process(self.received is not None) and self.received is None:
            self.received = signal.SIGTERM  # another process was signalled
        return self.received is not None
