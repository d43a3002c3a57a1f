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

The packer's state (the row being filled and its counts) is plain lists: it is saved with the
pipeline's position, so a resumed run packs exactly the rows an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np

# The lines of a packed row. ``TAGS``: each position's dataset (a mixture's tag; 0 otherwise), for
# the per-dataset counts. ``META``: the row's own counts at ``META_*`` (the rest is 0): what it
# truncated, what was dropped while it was filled, the examples whose last piece it holds. They
# travel with the row (through the row shuffle too), so the counts of a run are of the rows it
# trained, never of what the pipeline read ahead (kerastrain.data.counts).
INPUTS, LABELS, SEGMENTS, TAGS, META = range(5)
META_TRUNCATED, META_DROPPED, META_EXAMPLES = range(3)


class RowPacker:
    """Packs examples into ``(5, seq_len)`` int32 rows: inputs, labels, segment ids, dataset tags
    and the row's counts (the lines above)."""

    def __init__(self, seq_len: int, overlong: str = "truncate", pad_id: int = 0,
                 state: dict | None = None, several: bool = True):
        if seq_len < len((META_TRUNCATED, META_DROPPED, META_EXAMPLES)):
            raise ValueError("packed rows need --seq-len of at least 3")
        self.seq_len = seq_len
        self.several = several  # False (--no-packing): one example (or piece) per row
        self.overlong = overlong
        self.pad_id = pad_id
        state = state or {}
        self.inputs: list[int] = list(state.get("inputs", []))
        self.labels: list[int] = list(state.get("labels", []))
        self.segments: list[int] = list(state.get("segments", []))
        self.tags: list[int] = list(state.get("tags", [0] * len(self.inputs)))
        self.counts: list[int] = list(state.get("counts", [0, 0, 0]))  # the row being filled
        self.placed = 0  # pieces placed by this object (not saved: for the all-dropped check)

    def state(self) -> dict:
        return {"inputs": list(self.inputs), "labels": list(self.labels),
                "segments": list(self.segments), "tags": list(self.tags),
                "counts": list(self.counts)}

    def _pieces(self, example):
        """The pieces ``example`` is placed as, and its fate: "", "truncated" or "dropped"."""
        ids, mask = example.ids, example.mask
        limit = self.seq_len + 1
        if len(ids) <= limit:
            return [(ids, mask)], ""
        if not example.whole:  # plain text: consecutive pieces, each label trained once
            return [(ids[s:s + limit], None if mask is None else mask[s:s + limit])
                    for s in range(0, len(ids) - 1, self.seq_len)], ""
        if self.overlong == "drop":
            return [], "dropped"
        if mask is not None and not any(mask[1:limit]):  # nothing trained is left: dropped
            return [], "dropped"
        return [(ids[:limit], None if mask is None else mask[:limit])], "truncated"

    def add(self, example, tag: int = 0) -> list[np.ndarray]:
        """Place ``example`` (from dataset ``tag``); returns the rows it completed (possibly
        none)."""
        done = []
        pieces, fate = self._pieces(example)
        pieces = [(ids, mask) for ids, mask in pieces if len(ids) > 1]
        if not pieces:
            self.counts[META_DROPPED] += fate == "dropped"
            return done
        for k, (ids, mask) in enumerate(pieces):
            n = len(ids) - 1
            if len(self.inputs) + n > self.seq_len or (self.inputs and not self.several):
                done.append(self.flush())
            segment = (self.segments[-1] if self.segments else 0) + 1
            labels = ids[1:] if mask is None else [t if m else -1 for t, m in
                                                    zip(ids[1:], mask[1:], strict=True)]
            self.inputs += ids[:-1]
            self.labels += labels
            self.segments += [segment] * n
            self.tags += [tag] * n
            self.placed += 1
            if k == 0:
                self.counts[META_TRUNCATED] += fate == "truncated"
        self.counts[META_EXAMPLES] += 1  # its last piece is in this row
        return done

    def flush(self) -> np.ndarray | None:
        """The row being filled, padded to ``seq_len`` (None when it is empty; a row of padding
        when examples were dropped since the last row: their count travels with it)."""
        if not self.inputs and not self.counts[META_DROPPED]:
            return None
        pad = self.seq_len - len(self.inputs)
        meta = self.counts + [0] * (self.seq_len - len(self.counts))
        row = np.asarray([self.inputs + [self.pad_id] * pad, self.labels + [-1] * pad,
                          self.segments + [0] * pad, self.tags + [0] * pad, meta],
                         dtype=np.int32)
        self.inputs, self.labels, self.segments, self.tags = [], [], [], []
        self.counts = [0, 0, 0]
        return row
