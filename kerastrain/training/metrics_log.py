"""Where metrics go: ``metrics.jsonl`` in the output directory and TensorBoard event files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


class MetricsLog:
    """Appends one JSON line per logged step or evaluation; mirrors scalars to TensorBoard."""

    def __init__(self, output_dir: Path, tensorboard: bool = True):
        self.path = Path(output_dir) / "metrics.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # TensorBoard files are optional; metrics.jsonl is not
                self._tb = None

    def write(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": step, "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsFollower:
    """Reads the records ``metrics.jsonl`` gains, as they are appended (for tracker plugins).

    It starts at the file's current end: records from before (a resumed run's past) are not
    repeated. A line still being written is returned by the next call.
    """

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def new_records(self) -> list[dict]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size <= self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        return [json.loads(line) for line in chunk[:complete].decode().splitlines() if line.strip()]


def numeric_fields(record: dict) -> dict[str, float]:
    """A record's figures (not its kind, step or time, nor text)."""
    return {k: float(v) for k, v in record.items()
            if k not in ("kind", "step", "time") and isinstance(v, (int, float))
            and not isinstance(v, bool)}
