"""Positions in a streamed Hugging Face ``IterableDataset`` (a hub id or a local folder read with
``streaming=True``), so that a resume starts at the shard the run had reached instead of reading
the stream again from its first document (for a hub stream: downloading every shard again).

The stream is read one shard at a time, each shard as its own dataset
(``dataset.shard(num_shards, index)``), and a position is ``[shard, state, taken]``: the shard's
index, ``state_dict()`` of that shard's dataset at the start of a batch (None: the shard's start)
and the documents of that batch already yielded. The state is taken once a batch, not once a
document (it is a copy of a nested dict); the documents of a batch share one state object, so the
pipeline's re-read window (thousands of positions) holds few of them, and a checkpoint holds one
(about 360 bytes of JSON).

Why per shard: ``datasets`` (5.2) does honour ``load_state_dict`` here:
``IterableDataset.iter(batch_size=...)`` and ``__iter__`` build their examples iterable with the
loaded state (``_prepare_ex_iterable_for_iteration``), ``select_columns`` passes the state of the
iterable it wraps through, and ``with_format("arrow")`` keeps the same iterables. But the state
``iter`` gives after a batch is anchored at the start of the source table (a parquet row group, a
chunk of JSON lines) where that batch began, and ``ArrowExamplesIterable`` resumes inside a shard
by reading that shard again from its first row. On the whole stream, a position just past a shard
boundary was anchored in the shard before, and a resume read that whole shard again (for a hub
stream: downloaded it again). On a one-shard dataset no state points outside its shard, so a
resume opens no file of an earlier shard. The rows of its own shard before the position are read
again: ``datasets`` has no way to start a shard at a row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any


def _shard(dataset: Any, index: int) -> Any:
    """Shard ``index`` of ``dataset`` as a dataset of its own. ``shard_data_sources`` builds each
    examples iterable again, and ``datasets`` keeps an iteration's state on those objects (the
    datasets made by ``with_format`` and ``select_columns`` share them): each iteration counts
    on its own even when two are alive at once (a resume's re-read of the shuffle buffer, then
    the stream itself)."""
    return dataset.shard(num_shards=dataset.num_shards, index=index, contiguous=True)


def _start(position: list | None) -> tuple[int, Any, int]:
    shard, state, taken = position if position is not None else (0, None, 0)
    if int(shard) < 0 or int(taken) < 0:
        raise ValueError(f"a stream position counts from 0, got {position!r}")
    return int(shard), state, int(taken)


def positioned_tables(dataset: Any, position: list | None,
                      batch_rows: int) -> Iterator[tuple[Any, list, int]]:
    """``(Arrow table, [shard, state] at its start, documents of it to drop)`` from ``position``.

    ``dataset`` is formatted as Arrow; each shard's tables are those of its
    ``iter(batch_size=...)``, the same as a fresh read of that shard from that point, since
    ``datasets`` re-batches a resumed shard from the saved offset inside its re-batching. Only the
    first table drops documents."""
    first, state, taken = _start(position)
    for shard in range(first, dataset.num_shards):
        own = _shard(dataset, shard)
        if state is not None:
            own.load_state_dict(state)
        for table in own.iter(batch_size=batch_rows):
            after = own.state_dict()  # the iteration stands right after this table
            yield table, [shard, state], taken
            state, taken = after, 0
        state, taken = None, 0


def positioned_records(dataset: Any, position: list | None,
                       group: int) -> Iterator[tuple[Any, list]]:
    """``(record, position after it)`` of an unformatted stream from ``position`` on, the state
    taken once every ``group`` records. The records are those of ``iter(dataset)`` (``datasets``'
    Python formatting and feature decoding); a resume drops fewer than ``group`` of them."""
    first, state, taken = _start(position)
    for shard in range(first, dataset.num_shards):
        own = _shard(dataset, shard)
        if state is not None:
            own.load_state_dict(state)
        records = iter(own)
        for _ in itertools.islice(records, taken):  # the records of the group already taken
            pass
        for record in records:
            taken += 1
            yield record, [shard, state, taken]
            if taken == group:
                state, taken = own.state_dict(), 0
        state, taken = None, 0
