"""Data sources: where raw documents come from, and how ``--dataset-id`` picks one.

Naming rule for ``--dataset-id``:

* no ``--dataset-id``: the embedded default corpus (source ``builtin``);
* ``NAME:REST`` where ``NAME`` is a registered source (``hf:``, ``tfds:``, ``builtin:`` or a
  third party's): that source, given ``REST``;
* anything else (a hub id such as ``roneneldan/TinyStories``, a local folder, file or glob): the
  Hugging Face source ``hf``.

A third-party plugin extends the rule by registering a source under its own name.
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

DEFAULT_SOURCE = "builtin"
FALLBACK_SOURCE = "hf"


@dataclass(frozen=True)
class SourceRequest:
    """What the user asked of a source (the data options of ``kerastrain run``)."""

    location: str  # the dataset id with the ``NAME:`` prefix removed ("" for the default)
    split: str = "train"
    dataset_config: str | None = None
    text_column: str = "text"
    streaming: bool = True
    data_dir: str | None = None  # e.g. the TFDS data dir
    # Whole records (dicts of every column) rather than the text column's strings, for data
    # formats that read several columns (chat, prompt-completion). A source that cannot yields
    # strings, which the text format reads.
    records: bool = False


@runtime_checkable
class Documents(Protocol):
    """One split of a dataset: documents in a fixed order that can be re-read from any index.

    ``iter_from(start)`` must yield the same documents, in the same order, every time it is called
    with the same ``start``: exact resume depends on it.
    """

    def iter_from(self, start: int) -> Iterator[str | dict]:
        """Yield documents (raw text, or records: dicts, when ``SourceRequest.records``) from
        document index ``start`` on."""
        ...

    def __len__(self) -> int:
        """Number of documents; raise ``TypeError`` when unknown (a stream)."""
        ...


@runtime_checkable
class DataSource(Protocol):
    """A kind of dataset, registered by a plugin under ``name``."""

    name: str
    description: str

    def open(self, request: SourceRequest) -> Documents:
        """Open one split. Bad input raises :class:`kerastrain.errors.DataError` (one line)."""
        ...

    def splits(self, request: SourceRequest) -> list[str] | None:
        """Names of the splits that exist, or None when the source cannot tell cheaply."""
        ...


def parse_dataset_id(dataset_id: str | None, source_names: set[str]) -> tuple[str, str]:
    """Split ``--dataset-id`` into (source name, location) by the naming rule above."""
    if not dataset_id:
        return DEFAULT_SOURCE, ""
    head, sep, rest = dataset_id.partition(":")
    if sep and head in source_names:
        return head, rest
    return FALLBACK_SOURCE, dataset_id


class DecodeErrorCounter:
    """A codecs error handler that replaces invalid UTF-8 with U+FFFD and counts the bytes.

    Sources decode with ``errors=counter.name`` so bad bytes never crash a run and the count can
    be reported once (``datasets``' builders take it as ``encoding_errors``).
    """

    _next_id = itertools.count()

    def __init__(self, name: str | None = None) -> None:
        # A fixed name keeps ``datasets``' cache fingerprint stable across runs.
        self.name = name or f"kerastrain_replace_{next(self._next_id)}"
        self.count = 0
        codecs.register_error(self.name, self._handle)

    def _handle(self, exc: UnicodeError) -> tuple[str, int]:
        if not isinstance(exc, UnicodeDecodeError):
            raise exc
        self.count += exc.end - exc.start
        return "\ufffd", exc.end
