"""Where the data pipeline stands between two batches (:class:`PipelineState`): what a checkpoint
saves of the data, so a resumed run repeats nothing and skips nothing."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kerastrain.data.counts import dataset_logs, dataset_shares


@dataclass
class PipelineState:
    """Where the pipeline stands between two batches. Restoring it repeats nothing, skips nothing."""

    # The Grain iterator's state after the batch (:mod:`kerastrain.data.pipeline`): the source's
    # own position (at the start of a shuffle window or packed row, which a restore reads
    # again) and a few counters; None: the start.
    grain: Any = None
    epoch: int = 0  # the epoch of the latest batch's data
    batches: int = 0  # batches emitted so far
    workers: int = 1  # --data-workers that made the state (Grain's workers share the data)
    # What the batches up to here trained: examples, tokens, ..., a mixture's datasets
    # (kerastrain.data.counts).
    trained: dict = field(default_factory=dict)

    def source_logs(self) -> dict:
        """The tokens trained from each dataset of a mixture so far, for the metrics."""
        return dataset_logs(self.trained)

    def source_shares(self) -> dict:
        """The realised share of each dataset of a mixture, for the summary."""
        return dataset_shares(self.trained)

    def source_states(self) -> list[dict]:
        """Every document source's own state in :attr:`grain` (one per worker): ``{"epoch",
        "index", "position"}`` (:mod:`kerastrain.data.grain_source`)."""
        found: list[dict] = []

        def walk(value):
            if isinstance(value, dict):
                if set(value) == {"epoch", "index", "position"}:
                    found.append(value)
                else:
                    for v in value.values():
                        walk(v)
            elif isinstance(value, list | tuple):
                for v in value:
                    walk(v)

        walk(self.grain)
        return found

    @property
    def source_position(self) -> Any:
        """The position a resume seeks the source to (the first worker's), or None."""
        states = self.source_states()
        return states[0]["position"] if states else None

    def saved(self) -> dict:
        return dict(self.__dict__)

    def save(self, path: Path) -> None:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(self.saved(), f, default=plain)

    @classmethod
    def from_dict(cls, saved: dict) -> PipelineState:
        """A saved state; one written before the pipeline ran on Grain is refused in one line."""
        known = {f.name for f in fields(cls)}
        if not set(saved) <= known:
            from kerastrain.errors import ConfigError

            raise ConfigError("this checkpoint's data position was saved by the pipeline before "
                              "Grain and cannot be continued: resume it with the kerastrain that "
                              "wrote it, or start a new run (--init-from its weights)")
        return cls(**saved)

    @classmethod
    def load(cls, path: Path) -> PipelineState:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def plain(value):
    """numpy values (and anything else with ``tolist``) as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")
