"""Plain text as windows of ``seq_len + 1`` tokens, ``stride`` apart, over one continuous stream
(EOS between documents, an epoch's last tokens continuing into the next).

Kept by hand because Grain's ``ConcatThenSplitIterDataset`` cuts the stream into disjoint pieces:
it has no overlap, and a window here shares at least one token with the next (the last label of
one is the first input of the next; ``--stride`` below ``--seq-len`` overlaps more). Its state
is Grain's way too: the parent's state before the element that holds the next window's first
token, and that token's offset in it; a restore reads from there again, so no token is saved.
"""

from __future__ import annotations

import collections

import grain
import numpy as np


class StrideWindows(grain.IterDataset):
    """``{"ids", "tag", "epoch"}`` elements to ``{"tokens", "tags", "epoch"}`` windows (``tag``:
    a mixture's dataset; ``tags``: each token's)."""

    def __init__(self, parent, *, window: int, stride: int):
        super().__init__(parent)
        self.window, self.stride = window, stride

    def __iter__(self):
        return _WindowIterator(self._parent.__iter__(), self.window, self.stride)


class _WindowIterator(grain.DatasetIterator):
    def __init__(self, parent, window: int, stride: int):
        super().__init__(parent)
        self.window, self.stride = window, stride
        # Elements holding tokens not yet windowed: (parent state before it, element).
        self._held: collections.deque = collections.deque()
        self._skip = 0  # tokens of the first held element already behind the next window
        self._before = self._parent.get_state()  # the parent's state when nothing is held

    def _have(self) -> int:
        return sum(len(e["ids"]) for _, e in self._held) - self._skip

    def __next__(self) -> dict:
        while self._have() < self.window:
            before = self._parent.get_state()
            element = next(self._parent)  # StopIteration: the last tokens make no window
            if len(element["ids"]):
                self._held.append((before, element))
        parts, have, skip = [], 0, self._skip
        for _, element in self._held:  # only the elements this window reads
            parts.append(element)
            have += len(element["ids"]) - skip
            skip = 0
            if have >= self.window:
                break
        ids = np.concatenate([e["ids"] for e in parts])
        tags = np.concatenate([np.full(len(e["ids"]), e["tag"], np.int32) for e in parts])
        end = self._skip + self.window
        lines = [ids[self._skip:end], tags[self._skip:end]]
        epoch = self._held[0][1]["epoch"]
        self._skip += self.stride
        while self._held and self._skip >= len(self._held[0][1]["ids"]):
            self._skip -= len(self._held.popleft()[1]["ids"])
        if not self._held:
            self._before = self._parent.get_state()
        return {"tokens": lines[0], "tags": lines[1], "epoch": epoch}

    def get_state(self) -> dict:
        parent = self._held[0][0] if self._held else self._before
        return {"parent": parent, "skip": self._skip}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._before, self._skip = state["parent"], state["skip"]
        self._held.clear()
