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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
    # Storage settings for data in a bucket (``--data-option KEY=VALUE``; fsspec's options).
    storage_options: dict = field(default_factory=dict)


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


def positioned_documents(documents) -> Callable[[Any], Iterator[tuple[Any, Any]]] | None:
    """``documents.iter_positioned`` when the source offers it, else None.

    ``iter_positioned(position)`` is an optional part of :class:`Documents` for sources that can
    seek: it yields ``(document, position after it)``, where a position is any JSON value (a
    shard and a row, say), and ``iter_positioned(p)`` continues right after the document whose
    position was ``p`` (``None``: from the first document) without reading what came before.
    The pipeline saves the position in its checkpointed state, so a resume costs the same at
    any point of the stream.
    """
    return getattr(documents, "iter_positioned", None)


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
