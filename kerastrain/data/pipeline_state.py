"""Where the data pipeline stands between two batches (:class:`PipelineState`): what a checkpoint
saves of the data, so a resumed run repeats nothing and skips nothing."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerastrain.data.counts import dataset_logs, dataset_shares
from kerastrain.data.reread import saved_buffer


@dataclass
class PipelineState:
    """Where the pipeline stands between two batches. Restoring it repeats nothing, skips nothing."""

    epoch: int = 0
    next_doc: int = 0  # documents of this epoch already taken from the source
    # Where the source stands after those documents, for sources that can seek to it
    # (``Documents.iter_positioned``: a shard and row, say); None: count ``next_doc`` from 0.
    source_position: Any = None
    buffer: list = field(default_factory=list)  # shuffle buffer: records, None when re-read
    buffer_index: list[int] = field(default_factory=list)  # each slot's document index (epoch)
    reread_from: list | None = None  # [index, source position before it]: see data.reread
    rng: dict | None = None  # numpy bit-generator state of this epoch's shuffle
    tokens: list[int] = field(default_factory=list)  # packed tokens not yet emitted
    token_tags: list[int] = field(default_factory=list)  # a mixture's dataset of each token
    batches: int = 0  # batches emitted so far
    documents: int = 0  # documents tokenized so far (all epochs)
    source_done: bool = False  # this epoch's source is exhausted (buffer draining)
    windows: list = field(default_factory=list)  # window shuffle buffer (rows of seq_len + 1)
    window_rng: dict | None = None  # numpy bit-generator state of the window shuffle
    packer: dict | None = None  # packed examples: the row being filled and the overlong counts
    rows: list = field(default_factory=list)  # packed rows not yet emitted ((5, seq_len) each)
    # What the batches up to here trained: examples, tokens, ..., a mixture's datasets
    # (kerastrain.data.counts).
    trained: dict = field(default_factory=dict)

    def source_logs(self) -> dict:
        """The tokens trained from each dataset of a mixture so far, for the metrics."""
        return dataset_logs(self.trained)

    def source_shares(self) -> dict:
        """The realised share of each dataset of a mixture, for the summary."""
        return dataset_shares(self.trained)

    def saved(self) -> dict:
        """The state as a checkpoint holds it: recent buffered documents by index only."""
        return {**self.__dict__,
                "buffer": saved_buffer(self.buffer, self.buffer_index, self.reread_from)}

    def save(self, path: Path) -> None:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(self.saved(), f, default=lambda o: o.tolist())  # numpy arrays as lists

    @classmethod
    def load(cls, path: Path) -> PipelineState:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return cls(**json.load(f))
