"""Where metrics go: ``metrics.jsonl`` in the output directory, TensorBoard event files, and
every ``on_metrics`` hook (trackers), each record once and in memory.

The file is written, never read back during a run: a tracker gets the very record the file got,
so the two agree without parsing, and a resumed run's past is not resent.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path


class MetricsLog:
    """Appends one JSON line per logged step, evaluation, sample or summary; mirrors scalars to
    TensorBoard, then hands the record to ``publish`` (the loop's ``on_metrics`` hook)."""

    def __init__(self, output_dir: Path, tensorboard: bool = True,
                 publish: Callable[[dict], None] | None = None):
        self.publish = publish
        self.path = Path(output_dir) / "metrics.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # TensorBoard files are optional; metrics.jsonl is not
                self._tb = None

    def write(self, kind: str, step: int, values: dict) -> dict:
        """Log one record to every sink; returns it as ``metrics.jsonl`` holds it."""
        record = {"kind": kind, "step": step, "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)
        if self.publish is not None:
            self.publish(record)
        return record

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        # Significant digits, not decimals: a rate of 3e-5 kept to 6 decimals lost all but one
        # digit. 7 digits hold a float32 (the device's values) to within its last bit or so.
        return float(f"{value:.7g}") if math.isfinite(value) else str(value)
    return value


def read_metrics(output_dir: Path) -> list[dict]:
    """The records of a run, read after it (``kerastrain plot``); a run never reads its own."""
    path = Path(output_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def numeric_fields(record: dict) -> dict[str, float]:
    """A record's figures (not its kind, step or time, nor text)."""
    return {k: float(v) for k, v in record.items()
            if k not in ("kind", "step", "time") and isinstance(v, (int, float))
            and not isinstance(v, bool)}
