"""Packing examples into rows with segment ids (document masking).

Each example (:class:`kerastrain.data.formats.Example`) becomes ``len(ids) - 1`` positions of a
row: inputs ``ids[:-1]``, labels ``ids[1:]`` (``-1`` where the mask says the token is not
trained: the loss ignores it) and one segment id, 1, 2, ... within the row. Examples are placed
in stream order; one that does not fit in what is left of the row starts the next row, and the
rest of the row is padding (segment 0, label -1). The model derives its attention mask and
positions from the segment ids (:mod:`kerastrain.model.embeddings`), so attention never crosses
an example's boundary and positions restart at each example, as Levanter's ``packing.py`` and
torchtune's ``PackedDataset`` do.

An example longer than ``seq_len`` positions is truncated or dropped (``--overlong``) and counted;
plain-text documents (``Example.whole`` False) are cut into pieces of ``seq_len`` positions
instead, so pretraining with ``--document-masking`` loses no token.

The packer's state (the row being filled and the counts) is plain lists: it is saved with the
pipeline's position, so a resumed run packs exactly the rows an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np


class RowPacker:
    """Packs examples into ``(3, seq_len)`` int32 rows: inputs, labels, segment ids."""

    def __init__(self, seq_len: int, overlong: str = "truncate", pad_id: int = 0,
                 state: dict | None = None, several: bool = True):
        self.seq_len = seq_len
        self.several = several  # False (--no-packing): one example (or piece) per row
        self.overlong = overlong
        self.pad_id = pad_id
        state = state or {}
        self.inputs: list[int] = list(state.get("inputs", []))
        self.labels: list[int] = list(state.get("labels", []))
        self.segments: list[int] = list(state.get("segments", []))
        self.truncated = int(state.get("truncated", 0))
        self.dropped = int(state.get("dropped", 0))
        self.placed = 0  # pieces placed by this object (not saved: for the all-dropped check)

    def state(self) -> dict:
        return {"inputs": list(self.inputs), "labels": list(self.labels),
                "segments": list(self.segments), "truncated": self.truncated,
                "dropped": self.dropped}

    def _pieces(self, example):
        ids, mask = example.ids, example.mask
        limit = self.seq_len + 1
        if len(ids) <= limit:
            return [(ids, mask)]
        if not example.whole:  # plain text: consecutive pieces, each label trained once
            return [(ids[s:s + limit], None if mask is None else mask[s:s + limit])
                    for s in range(0, len(ids) - 1, self.seq_len)]
        if self.overlong == "drop":
            self.dropped += 1
            return []
        self.truncated += 1
        if mask is not None and not any(mask[1:limit]):  # nothing trained is left: dropped
            self.truncated -= 1
            self.dropped += 1
            return []
        return [(ids[:limit], None if mask is None else mask[:limit])]

    def add(self, example) -> list[np.ndarray]:
        """Place ``example``; returns the rows it completed (possibly none)."""
        done = []
        for ids, mask in self._pieces(example):
            n = len(ids) - 1
            if n <= 0:
                continue
            if len(self.inputs) + n > self.seq_len or (self.inputs and not self.several):
                done.append(self.flush())
            segment = (self.segments[-1] if self.segments else 0) + 1
            labels = ids[1:] if mask is None else [t if m else -1 for t, m in
                                                    zip(ids[1:], mask[1:], strict=True)]
            self.inputs += ids[:-1]
            self.labels += labels
            self.segments += [segment] * n
            self.placed += 1
        return done

    def flush(self) -> np.ndarray | None:
        """The row being filled, padded to ``seq_len`` (None when it is empty)."""
        if not self.inputs:
            return None
        pad = self.seq_len - len(self.inputs)
        row = np.asarray([self.inputs + [self.pad_id] * pad, self.labels + [-1] * pad,
                          self.segments + [0] * pad], dtype=np.int32)
        self.inputs, self.labels, self.segments = [], [], []
        return row
