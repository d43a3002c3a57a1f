"""A small saved shuffle buffer: recent documents are saved as their index, not their text.

At the default buffer of 10000 documents a web crawl's ~4 KB documents make a checkpoint's
pipeline state ~40 MB of text per process (``benchmarks/bench_pipeline.py --state-bytes``).
Instead, a buffered document that was taken from the source within the last ``window``
documents is saved as ``None`` in ``PipelineState.buffer`` (its epoch index is in
``buffer_index``), together with where the source stood before document ``next_doc - window``
(``reread_from``: that index and its source position). Snapshots keep the texts (a copy of the buffer list); :func:`saved_buffer` drops them
when the state is written. A resume reads those ``window``
documents again in one sequential pass (seeking the source there first) and puts each back in
its slot, so the buffer, and every batch after it, is exactly what it was.

Documents older than the window keep their text: with random draws from a buffer of N a
document is still buffered after ``window`` = 4N further documents with probability
e^-4 ≈ 1.8 %, so ~180 of 10000 texts are saved. The price is re-reading 4N documents at a
resume (a constant, whatever the position); sources read by index re-read from ``iter_from``.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

WINDOW_FACTOR = 4  # re-read window, in shuffle buffers


def saved_buffer(buffer: list, index: list[int], reread_from: list | None) -> list:
    """``buffer`` as written to a checkpoint: the slots a resume re-reads as None."""
    if reread_from is None or len(index) != len(buffer):
        return buffer
    first = reread_from[0]
    return [doc if i < first else None for doc, i in zip(buffer, index, strict=True)]


class RereadWindow:
    """The source positions of the last ``size`` documents taken, to save a buffer compactly."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._before: collections.deque = collections.deque(maxlen=size + 1)

    def reset(self) -> None:
        self._before.clear()

    def taken(self, index: int, position_before: Any) -> None:
        """Document ``index`` of the epoch was taken; the source stood at ``position_before``."""
        self._before.append((index, position_before))

    def _start(self, next_doc: int) -> tuple[int, Any] | None:
        """``(index, position before it)`` where a re-read would begin, or None if unknown."""
        start = max(0, next_doc - self.size)
        if start == 0:
            return 0, None
        if self._before and self._before[0][0] <= start <= self._before[-1][0]:
            return self._before[start - self._before[0][0]]
        return None

    def reread_from(self, next_doc: int) -> list | None:
        """``[index, source position before it]`` where a resume's re-read begins, or None when
        it is not known (then every text is saved)."""
        start = self._start(next_doc)
        return None if start is None else [start[0], start[1]]

    def refill(self, state, documents_from) -> None:
        """Put the re-read documents back in ``state.buffer``. ``documents_from(index,
        position)`` yields ``(document, position after it)`` from document ``index`` on."""
        if state.reread_from is None or all(doc is not None for doc in state.buffer):
            return
        first, position = state.reread_from
        slots = {i: s for s, (doc, i) in enumerate(zip(state.buffer, state.buffer_index,
                                                       strict=True)) if doc is None}
        index = first
        for doc, after in itertools.islice(documents_from(first, position),
                                           state.next_doc - first):
            self.taken(index, position)
            if index in slots:
                state.buffer[slots.pop(index)] = doc
            position, index = after, index + 1
        if slots:
            raise RuntimeError(f"the source gave fewer documents than before: {len(slots)} of "
                               f"the saved shuffle buffer could not be read again")
