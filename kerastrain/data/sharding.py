"""Each process of a multi-process run reads its own share of the document stream.

Process ``i`` of ``n`` takes documents ``i, i + n, i + 2n, ...`` (of the first ``limit`` when
``--max-train-examples`` is set): the shares are disjoint and together hold every document once.
This is what ``datasets.distributed.split_dataset_by_node`` does for a stream whose shard count
does not divide evenly; done here on our ``Documents`` protocol it works for every source
(local files, HF, TFDS, plugins) and keeps ``iter_from`` exact for resume.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator


class ProcessShare:
    """Documents ``index, index + count, ...`` of ``documents`` (below ``limit``, if given)."""

    def __init__(self, documents, index: int, count: int, limit: int | None = None):
        if not 0 <= index < count:
            raise ValueError(f"share {index} of {count} does not exist")
        self.documents, self.index, self.count, self.limit = documents, index, count, limit

    def _total(self) -> int:
        try:
            n = len(self.documents)
        except TypeError:
            if self.limit is None:
                raise
            return self.limit
        return n if self.limit is None else min(n, self.limit)

    def __len__(self) -> int:
        return len(range(self.index, self._total(), self.count))

    def iter_from(self, start: int) -> Iterator[str]:
        """This share's documents from its ``start``-th on."""
        first = self.index + start * self.count
        source = self.documents.iter_from(first)
        if self.limit is not None:
            source = itertools.islice(source, max(0, self.limit - first))
        return itertools.islice(source, 0, None, self.count)

    @property
    def iter_positioned(self):
        """This share's ``(document, position)`` pairs, when the documents can seek (else None).

        A position is ``[inner position, index of the next document of the whole stream]``."""
        seek = getattr(self.documents, "iter_positioned", None)
        if seek is None:
            return None

        def share(position):
            if position is None:
                inner, first = seek(None), 0
                skip = self.index
            else:
                inner, first = seek(position[0]), position[1]
                skip = self.count - 1  # the other shares' documents before our next one
            if self.limit is not None:
                inner = itertools.islice(inner, max(0, self.limit - first))
            for k, (doc, pos) in enumerate(itertools.islice(inner, skip, None, self.count)):
                yield doc, [pos, first + skip + k * self.count + 1]

        return share
