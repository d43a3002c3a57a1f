"""Packing examples into rows with segment ids (document masking), by Grain's first-fit packer.

Each element of :mod:`kerastrain.data.examples` (an example, a piece of a long text document, or
a preference pair) becomes ``len(inputs)`` positions of a row with one segment id, 1, 2, ...
within the row; the rest of the row is padding (segment 0, label -1). With one packing bin
(``num_packing_bins=1``, bins not shuffled) Grain's ``FirstFitPackIterDataset`` places the
elements in stream order and starts a new row when one does not fit, which is what the old
hand-written packer did; ``--no-packing`` is its ``max_sequences_per_bin=1``. Its state is the
parent's state where the row began and a counter: a restore packs the row again, so no token is
saved. The model derives its attention mask and positions from the segment ids
(:mod:`kerastrain.model.embeddings`), so attention never crosses an example's boundary and
positions restart at each, as Levanter's ``packing.py`` and torchtune's ``PackedDataset`` do.

Labels, dataset tags and a preference pair's sides are packed beside the inputs, so loss masks
travel with the ids. A pair is one element: its sides stay in one row, next to each other, and
:func:`packed_row` numbers them ``2k + 1`` (chosen) and ``2k + 2`` (rejected), which is how the
preference loss finds them. Each element's ``counts`` (examples, truncated, dropped) and epoch
travel as Grain meta features and are summed per row: the counts are of the rows trained.
"""

from __future__ import annotations

import numpy as np
from grain.experimental import FirstFitPackIterDataset

SEQUENCES = ("inputs", "labels", "tags", "sides")


def packed_rows(elements, seq_len: int, pad_id: int, *, several: bool = True, seed: int = 0):
    """Grain's packer over ``elements``, then :func:`packed_row` on each row."""
    if seq_len < 1:
        raise ValueError("packed rows need --seq-len of at least 1")
    rows = FirstFitPackIterDataset(
        elements, length_struct=dict.fromkeys(SEQUENCES, seq_len), num_packing_bins=1,
        seed=seed, shuffle_bins=False, meta_features=("counts", "epoch"),
        padding_struct={"inputs": pad_id, "labels": -1, "tags": 0, "sides": 0},
        # At most seq_len elements a row (what fits, but for dropped examples, which take no
        # position): data whose examples are all dropped still makes rows, and ends.
        max_sequences_per_bin=seq_len if several else 1)
    return rows.map(packed_row)


def packed_row(row: dict) -> dict:
    """One packed row as the pipeline batches it: inputs, labels, segments (numbered 1, 2, ...
    in the row; a pair's sides ``2k + 1`` and ``2k + 2``), tags, and the row's counts and
    epoch."""
    given = np.asarray(row["inputs_segment_ids"], dtype=np.int32)
    used = given > 0
    starts = used & np.concatenate([[True], given[1:] != given[:-1]])
    # An element of no position (a dropped example) takes a segment id in Grain's numbering.
    segments = np.where(used, np.cumsum(starts), 0).astype(np.int32)
    sides = np.asarray(row["sides"], dtype=np.int32)
    if sides.any():  # preference pairs: the k-th pair's sides are 2k + 1 and 2k + 2
        pair = np.where(used, np.cumsum(starts & (sides == 0)), 0)
        segments = np.where(used, 2 * pair - 1 + sides, 0).astype(np.int32)
    counts = np.asarray(row["counts"], dtype=np.int32).reshape(-1, 3).sum(axis=0)
    epoch = np.asarray(row["epoch"], dtype=np.int32)
    return {"inputs": np.asarray(row["inputs"], dtype=np.int32),
            "labels": np.asarray(row["labels"], dtype=np.int32), "segments": segments,
            "tags": np.asarray(row["tags"], dtype=np.int32), "counts": counts.astype(np.int32),
            "epoch": np.int32(epoch.max() if epoch.size else 0)}
