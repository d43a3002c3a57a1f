"""What hooks see of a run: :class:`TrainingRun`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainingRun:
    """What hooks see of a run."""

    config: object  # RunConfig: what the user asked
    resolved: object  # ResolvedRun: what the run uses (model shape, vocabulary, steps, mesh)
    output_dir: Path
    console: object  # rich Console
    model: object = None
    tokenizer: object = None
    chat_template: object = None  # the ChatTemplate chat data was rendered with, else None
    step: int = 0
    total_steps: int = 0
    logs: dict = field(default_factory=dict)
    # (trainable, non-trainable, optimizer) values after the latest update; read them in a hook
    # only (the next update reuses their buffers). The Keras variables lag until the run ends.
    state: tuple | None = None
    # Each plugin's state for this run, under the plugin's module name: plugins keep none in
    # module globals, so two runs in one process (tests, notebooks) never share an uploader.
    plugin_state: dict = field(default_factory=dict)
    metrics: object = None  # the MetricsLog while the loop runs (see log_metrics)

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def log_metrics(self, kind: str, step: int, values: dict) -> dict | None:
        """Log a record (e.g. a generated sample) as the loop logs its own: ``metrics.jsonl``,
        TensorBoard and the ``on_metrics`` hooks. None when no loop is running."""
        return None if self.metrics is None else self.metrics.write(kind, step, values)
