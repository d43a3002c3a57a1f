"""The losses of the updates since the last log line, read one update late."""

from __future__ import annotations


class LossWindow:
    """The losses of the updates since the last log line. Each is read one update late (when
    the next is queued), so the device never waits for the host; a non-finite one stops the run
    (``read``)."""

    def __init__(self, read) -> None:
        self.read = read
        self.pending = None  # (step, loss array) of the latest update, not read yet
        self.values: list[float] = []
        self.tokens: list[float] = []  # trained tokens of each update (masks make them differ)
        self.first: float | None = None
        self.last: float | None = None

    def add(self, step: int, loss) -> None:
        self._read_pending()
        self.pending = (step, loss)

    def take(self) -> tuple[list[float], list[float]]:
        """Every loss since the previous take, the latest one included, and the updates'
        trained tokens."""
        self._read_pending()
        values, tokens, self.values, self.tokens = self.values, self.tokens, [], []
        return values, tokens

    def _read_pending(self) -> None:
        if self.pending is not None:
            (value, tokens), self.pending = self.read(self.pending), None
            self.values.append(value)
            self.tokens.append(tokens)
            self.first = value if self.first is None else self.first
            self.last = value
