"""The documents of a run as a Grain ``IterDataset`` whose state is the source's own position.

:class:`DocumentSource` reads a :class:`~kerastrain.data.sources.Documents` over ``epochs``
(None: without end), the first ``limit`` documents of each epoch, and only its slice of them:
documents ``start, start + step, ...``. The slice is how a multi-process run gives each process
its share (``process``) and how Grain's worker processes (``mp_prefetch``) split a process's
share among them (``set_slice``): the shares are disjoint and together hold every document once.

The iterator's state is ``{"epoch", "index", "position"}``: the index of the next document of
the whole stream and, for a source that can seek (``iter_positioned``: a row in a local file,
``[shard, row]`` in a bucket, a stream's own state), its position there; a restore seeks it and
reads nothing before it. A source that cannot seek is re-opened at ``index`` (``iter_from``).
Each element is ``{"doc": document, "epoch": epoch}``.
"""

from __future__ import annotations

import itertools
from typing import Any

import grain

from kerastrain.data.sources import positioned_documents


class DocumentSource(grain.IterDataset):
    """See the module docstring."""

    def __init__(self, documents, *, epochs: int | None = 1, limit: int | None = None,
                 start: int = 0, step: int = 1, first_epoch: int = 0):
        super().__init__()
        self.documents, self.epochs, self.limit = documents, epochs, limit
        self.first_epoch = first_epoch  # a resume that continues at an epoch's start
        self.start, self.step = start, step

    def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
        """Keep the ``sl`` share of this slice (Grain's worker processes call this)."""
        first, step = sl.start or 0, sl.step or 1
        self.start, self.step = self.start + first * self.step, self.step * step

    def __iter__(self):
        return _DocumentIterator(self)


class _DocumentIterator(grain.DatasetIterator):
    def __init__(self, source: DocumentSource):
        super().__init__()
        self.source = source
        self.state = {"epoch": source.first_epoch, "index": source.start, "position": None}
        self._docs = None
        self._taken_this_epoch = 0

    def _open(self):
        s, state = self.source, self.state
        index = state["index"]
        seek = positioned_documents(s.documents)
        first, skip = index, 0  # the stream's index where ``inner`` starts; what to skip
        if seek is None:
            inner = ((doc, None) for doc in s.documents.iter_from(index))
        elif state["position"] is None:  # the start of an epoch
            inner = itertools.islice(seek(None), index, None)
        else:  # right after this slice's previous document: the other slices' come first
            inner, first, skip = seek(state["position"]), index - s.step + 1, s.step - 1
        if s.limit is not None:
            inner = itertools.islice(inner, max(0, s.limit - first))
        return itertools.islice(inner, skip, None, s.step)

    def __next__(self) -> dict:
        s, state = self.source, self.state
        while s.epochs is None or state["epoch"] < s.epochs:
            if self._docs is None:
                self._docs = self._open()
            item = next(self._docs, None)
            if item is not None:
                doc, position = item
                state["index"] += s.step
                state["position"] = position
                self._taken_this_epoch += 1
                return {"doc": doc, "epoch": state["epoch"]}
            if not self._taken_this_epoch and state["index"] == s.start:
                from kerastrain.errors import DataError

                raise DataError("the data source yielded no example in a whole epoch; check "
                                "--dataset-id and --max-train-examples")
            state.update(epoch=state["epoch"] + 1, index=s.start, position=None)
            self._docs, self._taken_this_epoch = None, 0
        raise StopIteration

    def get_state(self) -> dict[str, Any]:
        return dict(self.state)

    def set_state(self, state: dict) -> None:
        self.state = dict(state)
        self._docs, self._taken_this_epoch = None, 0
