"""A stream of data files read one file (shard) at a time, with a position after every document.

``iter_positioned(position)`` yields ``(document, position_after)`` where a position is
``[shard, row]``: the file index and the rows of that file already read. Resuming from a
position opens that file only (nothing before it is listed again or read), and for parquet
jumps to the row group holding the row from the file's footer metadata, so the cost of a resume
does not grow with how far the run had got. Files are read in their sorted order.

Parquet is read with pyarrow directly (``ParquetFile.iter_batches(row_groups=...)``), because
``datasets``' parquet builder has no way to start at a row group; text, JSON lines and CSV go
through ``datasets`` one file at a time (its decoding, compression and ``encoding_errors``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from kerastrain.errors import DataError
from kerastrain_hf.documents import (
    BATCH_ROWS,
    DecodeCounter,
    _kept,
    _to_text,
    check_text_type,
)


class ShardStream:
    """Documents of ``files`` (local paths or URLs) of one builder, streamed with positions."""

    def __init__(self, files: list[str], builder: str, column: str | None, label: str,
                 counter: DecodeCounter, load_kwargs: dict[str, Any] | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.files = list(files)
        self.builder = builder
        self.column = column  # None: whole records (dicts), for a data format to read
        self.label = label
        self.counter = counter
        self.load_kwargs = dict(load_kwargs or {})
        self.settings = dict(settings or {})  # --data-option, for files in a bucket
        self._reported = False

    @property
    def decode_errors(self) -> int:
        return self.counter.count

    def __len__(self) -> int:
        raise TypeError(f"{self.label} is streamed: its number of documents is unknown")

    # -- reading one shard --------------------------------------------------------------------
    def _open(self, file: str):
        if "://" in file:
            from kerastrain_hf.remote import filesystem

            fs, path = filesystem(file, self.settings)
            return fs.open(path, "rb")
        return open(file, "rb")

    def _parquet_tables(self, file: str, row: int) -> Iterator[tuple[Any, int]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._open(file) as f:
            parquet = pq.ParquetFile(f)
            if self.column is not None and self.column not in parquet.schema_arrow.names:
                raise DataError(
                    f"{self.label} has no column {self.column!r} in {file}; columns: "
                    f"{', '.join(parquet.schema_arrow.names)} (choose one with --text-column)"
                )
            first, group = 0, 0
            groups = parquet.metadata.num_row_groups
            while group < groups and first + parquet.metadata.row_group(group).num_rows <= row:
                first += parquet.metadata.row_group(group).num_rows
                group += 1
            if group == groups:
                return
            columns = None if self.column is None else [self.column]
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns,
                                              row_groups=range(group, groups)):
                yield pa.Table.from_batches([batch]), first
                first += batch.num_rows

    def _loaded_tables(self, file: str) -> Iterator[tuple[Any, int]]:
        import datasets

        from kerastrain_hf.source import translate_file

        kwargs = dict(self.load_kwargs)
        if "://" in file:
            from kerastrain_hf.remote import storage_options

            kwargs["storage_options"] = storage_options(file, self.settings)
        try:
            dataset = datasets.load_dataset(self.builder, data_files=[file], split="train",
                                            streaming=True, **kwargs)
            if self.column is not None and self.column not in (dataset.column_names
                                                               or [self.column]):
                raise DataError(
                    f"{self.label} has no column {self.column!r} in {file}; columns: "
                    f"{', '.join(dataset.column_names)} (choose one with --text-column)"
                )
            first = 0
            if self.column is not None:
                dataset = dataset.select_columns([self.column])
            for table in dataset.with_format("arrow").iter(
                batch_size=BATCH_ROWS
            ):
                yield table, first
                first += table.num_rows
        except DataError:
            raise
        except Exception as exc:
            raise translate_file(exc, self.label, file) from exc

    def _tables(self, file: str, row: int) -> Iterator[tuple[Any, int]]:
        if self.builder == "parquet":
            return self._parquet_tables(file, row)
        return self._loaded_tables(file)

    # -- documents ----------------------------------------------------------------------------
    def iter_positioned(self, position: list[int] | None) -> Iterator[tuple[str, list[int]]]:
        """``(document, position after it)`` from ``position`` (None: the first document) on."""
        import numpy as np

        shard, row = position if position is not None else (0, 0)
        before = self.counter.count
        try:
            for s in range(int(shard), len(self.files)):
                start = int(row) if s == shard else 0
                for table, first in self._tables(self.files[s], start):
                    skip = max(0, start - first)
                    if skip >= table.num_rows:
                        continue
                    if self.column is None:  # whole records: the data format checks them
                        for r, record in enumerate(table.slice(skip).to_pylist()):
                            yield record, [s, first + skip + 1 + r]
                        continue
                    values = table.column(self.column).slice(skip)
                    check_text_type(values.type, self.column)
                    mask = _kept(values)
                    rows = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False),
                                                     dtype=bool))
                    texts = _to_text(values.filter(mask), self.counter)
                    base = first + skip + 1
                    for text, r in zip(texts, rows.tolist(), strict=True):
                        yield text, [s, base + r]
        finally:
            self._report(self.counter.count - before)

    def iter_from(self, start: int) -> Iterator[str]:
        """The documents from index ``start`` on (reads from the first file: use positions)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        return (doc for doc, _ in itertools.islice(self.iter_positioned(None), start, None))

    def is_empty(self) -> bool:
        """Whether the stream has no document (reads up to the first one; reports nothing)."""
        reported, self._reported = self._reported, True
        documents = self.iter_positioned(None)
        try:
            return next(documents, None) is None
        finally:
            documents.close()
            self._reported = reported

    def _report(self, replaced: int) -> None:
        import logging

        if replaced and not self._reported:
            self._reported = True
            logging.getLogger("kerastrain.hf").warning(
                f"{self.label}: replaced {replaced} invalid UTF-8 byte(s) with U+FFFD"
            )
