"""The experiment trackers a run names with ``--tracker`` follow the loop.

Trackers are a plugin kind (``register_trackers``); :class:`Trackers` is the one adapter between
the loop and every tracker, so a tracker plugin only says how to start, log a record, store the
final checkpoint and finish. The loop hands it each record as it writes it to ``metrics.jsonl``,
in memory. A tracker that fails mid-run (server down, disk full) never stops training: the run
says so once and goes on without it.
"""

from __future__ import annotations

from kerastrain.errors import ConfigError
from kerastrain.plugins import trackers


def tracker_classes() -> dict[str, type]:
    return {name: reg.obj for name, reg in trackers().items()}


def check_trackers(names: list[str]) -> None:
    """Each ``--tracker`` names a registered tracker; a one-line error otherwise."""
    known = tracker_classes()
    for name in names:
        if name not in known:
            have = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"--tracker {name}: no tracker plugin of that name is installed (installed: "
                f"{have}); install kerastrain-{name} (bundled trackers: kerastrain-mlflow, "
                "kerastrain-wandb)"
            )


class Trackers:
    """The trackers a run started (``--tracker``): each record, the final checkpoint and the
    summary go to every one still working. ``active``: (tracker class, tracker) pairs."""

    def __init__(self, active: list, say) -> None:
        self.active, self.say = list(active), say

    @classmethod
    def start(cls, names: list[str], run) -> Trackers:
        """Start the trackers ``names`` (checked by :func:`check_trackers`) for ``run``."""
        classes = tracker_classes() if names else {}
        return cls([(classes[n], classes[n].start(run)) for n in names], run.say)

    def log(self, record: dict) -> None:
        self._call("log", record)

    def log_checkpoint(self, path) -> None:
        self._call("log_checkpoint", path)

    def finish(self, summary: dict) -> None:
        self._call("finish", summary)
        self.active = []

    def _call(self, action: str, *args) -> None:
        for entry in list(self.active):
            cls, tracker = entry
            try:
                getattr(tracker, action)(*args)
            except Exception as exc:  # any client error: the run and its checkpoints matter more
                self.active.remove(entry)
                text = str(exc).strip()
                first = text.splitlines()[0] if text else type(exc).__name__
                self.say(f"{cls.label}: {action} failed ({first}); training goes on without "
                         f"{cls.label}")
