"""One retry clock for a whole remote: an unreachable server is one condition, not one per upload.

When an upload fails for a reason retrying may fix (a refused connection, a timeout), the remote as
a whole is taken to be down: every upload waits for the same clock, whose wait doubles after each
failure up to a ceiling, and a success resets it. So a dead endpoint is tried every few seconds,
then every ``max_s`` seconds, however many checkpoints are waiting for it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: waits ``initial_s``, doubling up to ``max_s``, for at most
    ``total_s`` seconds per round of attempts."""

    total_s: float = 120.0
    initial_s: float = 1.0
    max_s: float = 30.0


class RemoteClock:
    """When the next attempt against one remote may start, shared by all of its uploads."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._delay = policy.initial_s
        self._next_try = 0.0
        self.down_since: float | None = None  # monotonic time of the first failure of an outage
        self.reason: str | None = None
        self.reported = False  # whether this outage was reported to the user already

    def failed(self, reason: str) -> None:
        """An attempt failed for a transient reason: push the next attempt back."""
        with self._lock:
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = now
            self.reason = reason
            self._next_try = now + self._delay
            self._delay = min(self._delay * 2, self.policy.max_s)

    def succeeded(self) -> float | None:
        """An attempt worked: reset the clock; returns how long the remote was down, if it was."""
        with self._lock:
            down = None if self.down_since is None else time.monotonic() - self.down_since
            self._delay, self._next_try = self.policy.initial_s, 0.0
            self.down_since, self.reason, self.reported = None, None, False
            return down

    def wait_s(self) -> float:
        """Seconds until the next attempt may start (0 when the remote is not known to be down)."""
        with self._lock:
            return max(0.0, self._next_try - time.monotonic())

    @property
    def down(self) -> bool:
        return self.down_since is not None
