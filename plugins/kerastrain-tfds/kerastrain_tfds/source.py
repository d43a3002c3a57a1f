"""The ``tfds`` data source: prepared TensorFlow Datasets read without TensorFlow.

``--dataset-id tfds:NAME`` where ``NAME`` is what ``tfds.builder`` takes (``wiki40b/en``,
``lm1b:1.1.0``, ``my_set/small:1.0.0``), looked up in ``--data-dir`` (TFDS's default data dir when
not given); or ``tfds:PATH`` to a prepared version folder (the one holding ``dataset_info.json``).

Only data already prepared in ``array_record`` format is read: ``tfds.data_source`` would start a
download for a known dataset that is not prepared, and the ``tfrecord`` format needs TensorFlow.
Records are read by index, so the document index is the record index: ``len`` is known,
``iter_from`` starts at any record at once, and a record with empty text yields ``""``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from kerastrain.errors import DataError
from kerastrain.sources import DecodeErrorCounter, Documents, SourceRequest

log = logging.getLogger("kerastrain.tfds")
BATCH_RECORDS = 256  # records fetched per random-access call
PREPARE_HINT = (
    "prepare it with `tfds build NAME --data_dir DIR --file_format array_record` (needs network) "
    "and pass --data-dir DIR"
)


class TFDSDocuments:
    """One split of a prepared TFDS dataset, read by record index."""

    def __init__(self, data_source: Any, column: str, label: str) -> None:
        self._source = data_source
        self.column = column
        self.label = label
        self._counter = DecodeErrorCounter()
        self._reported = False

    @property
    def decode_errors(self) -> int:
        """Invalid UTF-8 bytes replaced with U+FFFD so far."""
        return self._counter.count

    def __len__(self) -> int:
        return len(self._source)

    def iter_from(self, start: int) -> Iterator[str]:
        """Yield the text of records ``start``, ``start + 1``, ... (the same on every call)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        before = self._counter.count
        total = len(self._source)
        try:
            for lo in range(start, total, BATCH_RECORDS):
                indices = list(range(lo, min(lo + BATCH_RECORDS, total)))
                for record in self._source.__getitems__(indices):
                    yield self._text(record[self.column])
        finally:
            replaced = self._counter.count - before
            if replaced and not self._reported:
                self._reported = True
                log.warning(f"{self.label}: replaced {replaced} invalid UTF-8 byte(s) with U+FFFD")

    def _text(self, value: Any) -> str:
        if isinstance(value, bytes):
            return value.decode("utf-8", self._counter.name)
        if isinstance(value, str):
            return value
        raise DataError(f"{self.label}: column {self.column!r} holds {type(value).__name__} values")


def _prepared_variants(data_dir: str, name: str) -> list[str]:
    """``config/version`` folders of ``name`` prepared under ``data_dir`` (for error messages)."""
    root = os.path.join(data_dir, name.split("/")[0].split(":")[0])
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if "dataset_info.json" in files:
            found.append(os.path.relpath(dirpath, root))
    return sorted(found)


def _builder(request: SourceRequest) -> Any:
    import tensorflow_datasets as tfds

    location = request.location
    if not location:
        raise DataError("tfds: needs a dataset name, e.g. --dataset-id tfds:wiki40b/en")
    if os.path.isfile(os.path.join(os.path.expanduser(location), "dataset_info.json")):
        return tfds.builder_from_directory(os.path.expanduser(location))
    data_dir = request.data_dir or str(tfds.core.constants.DATA_DIR)
    try:
        builder = tfds.builder(location, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        variants = _prepared_variants(data_dir, location)
        have = f"; prepared there: {', '.join(variants)}" if variants else ""
        raise DataError(
            f"TFDS dataset {location!r} is not prepared in {data_dir} nor known to TFDS{have}"
        ) from None
    except Exception as exc:  # a config or version TFDS refuses, a broken builder module
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"tfds:{location}: {first}") from None
    if not builder.is_prepared():
        raise DataError(f"TFDS dataset {location!r} is not prepared in {data_dir}; {PREPARE_HINT}")
    return builder


def _check_column(builder: Any, request: SourceRequest) -> None:
    import numpy as np

    features = builder.info.features
    column = request.text_column
    names = list(features.keys())
    if column not in names:
        raise DataError(
            f"tfds:{request.location} has no feature {column!r}; features: {', '.join(sorted(names))} "
            f"(choose one with --text-column)"
        )
    dtype = np.dtype(features[column].np_dtype)
    if dtype.kind not in "OSU" or features[column].shape != ():
        raise DataError(
            f"tfds:{request.location}: feature {column!r} is {features[column]!r}, not text; "
            f"choose a text feature with --text-column"
        )


class TFDSSource:
    """Prepared TensorFlow Datasets (``array_record``), read without TensorFlow."""

    name = "tfds"
    description = "TensorFlow Datasets prepared as array_record (tfds:NAME, --data-dir)"

    def open(self, request: SourceRequest) -> Documents:
        builder = _builder(request)
        available = list(builder.info.splits.keys())
        if request.split not in available and "[" not in request.split:
            raise DataError(
                f"tfds:{request.location} has no split {request.split!r}; splits: "
                f"{', '.join(available)}"
            )
        file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
        if file_format != "array_record":
            raise DataError(
                f"tfds:{request.location} is prepared as {file_format}, which needs TensorFlow; "
                f"prepare it again with --file_format array_record"
            )
        _check_column(builder, request)
        try:
            source = builder.as_data_source(split=request.split)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"tfds:{request.location} split {request.split!r}: {first}") from None
        if len(source) == 0:
            raise DataError(f"tfds:{request.location}: split {request.split!r} is empty")
        return TFDSDocuments(source, request.text_column, f"tfds:{request.location}")

    def splits(self, request: SourceRequest) -> list[str] | None:
        return list(_builder(request).info.splits.keys())
