"""Documents to examples: one chunk of documents tokenized at once (``encode_batch``), then one
element per document (plain text) or per piece of an example (packed formats).

This is a Grain ``FlatMap``: its iterator's state is the position of the chunk's first document
and an index in the chunk, and a restore tokenizes that chunk again, so no token is saved.

Packed elements (:class:`Pieces`) are what Grain's packer takes: ``inputs`` (``ids[:-1]``),
``labels`` (``ids[1:]``, ``-1`` where the mask says the token is not trained), ``tags`` (each
position's dataset in a mixture), ``sides`` (0 and 1: a preference pair's chosen and rejected
side, which travel as one element so that both land in one row, next to each other) and
``counts`` ``[examples, truncated, dropped]`` (:data:`COUNTS`), so the counts travel with the
row that trains them. An example longer than ``seq_len`` positions is truncated or dropped
(``--overlong``; a dropped one is an element of no position that carries its count); plain-text
documents (``Example.whole`` False) are cut into pieces of ``seq_len`` positions instead.
"""

from __future__ import annotations

import numpy as np
from grain.experimental import FlatMapTransform

COUNTS = ("examples", "truncated", "dropped")
# Documents per encode_batch call: enough to amortize the call, and what a resume tokenizes
# again (the chunk's saved state is where it began).
ENCODE_CHUNK_DOCS = 64


class EncodeChunk(FlatMapTransform):
    """A chunk of ``{"doc", "epoch"}`` elements to token elements (see the module docstring)."""

    max_fan_out = 1 << 30

    def __init__(self, tokenizer, data_format=None, format_context=None, *, tagged=False,
                 packed=False, seq_len=0, overlong="truncate"):
        self.tokenizer, self.data_format, self.format_context = tokenizer, data_format, format_context
        self.tagged, self.packed, self.seq_len, self.overlong = tagged, packed, seq_len, overlong

    def flat_map(self, chunk: list) -> list:
        docs = [element["doc"] for element in chunk]
        if self.data_format is not None:
            encoded = self.data_format.encode(docs, self.format_context)
        else:
            texts = [doc[1] if self.tagged else doc for doc in docs]
            eos = self.tokenizer.eos_id
            encoded = [ids + [eos] for ids in self.tokenizer.encode_batch(texts)]
        out = []
        for element, example in zip(chunk, encoded, strict=True):
            tag = int(element["doc"][0]) if self.tagged else 0
            epoch = np.int32(element["epoch"])
            if self.packed:
                out += [{**piece, "epoch": epoch} for piece in self.pieces(example, tag)]
            else:
                ids = np.asarray(example.ids if self.data_format is not None else example,
                                 dtype=np.int32)
                out.append({"ids": ids, "tag": np.int32(tag), "epoch": epoch})
        return out

    # -- packed formats ---------------------------------------------------------------------------
    def _cut(self, example):
        """The pieces ``example`` is placed as, and its fate: "", "truncated" or "dropped"."""
        ids, mask = example.ids, example.mask
        limit = self.seq_len + 1
        if len(ids) <= limit:
            return [(ids, mask)], ""
        if not example.whole:  # plain text: consecutive pieces, each label trained once
            return [(ids[s:s + limit], None if mask is None else mask[s:s + limit])
                    for s in range(0, len(ids) - 1, self.seq_len)], ""
        if self.overlong == "drop":
            return [], "dropped"
        if mask is not None and not any(mask[1:limit]):  # nothing trained is left: dropped
            return [], "dropped"
        return [(ids[:limit], None if mask is None else mask[:limit])], "truncated"

    def pieces(self, example, tag: int) -> list[dict]:
        if hasattr(example, "chosen"):  # a preference pair: both sides in one element
            return self._pair(example, tag)
        pieces, fate = self._cut(example)
        pieces = [(ids, mask) for ids, mask in pieces if len(ids) > 1]
        if not pieces:
            return [_element([], [], tag, [], [0, 0, int(fate == "dropped")])]
        return [_element(ids[:-1], _labels(ids, mask), tag, [0] * (len(ids) - 1),
                         [int(k == len(pieces) - 1), int(k == 0 and fate == "truncated"), 0])
                for k, (ids, mask) in enumerate(pieces)]

    def _pair(self, pair, tag: int) -> list[dict]:
        from kerastrain.data.preference_format import truncated_sides

        sides = [(pair.chosen.ids, pair.chosen.mask), (pair.rejected.ids, pair.rejected.mask)]
        truncated = sum(len(ids) - 1 for ids, _ in sides) > self.seq_len
        if truncated and self.overlong == "truncate":
            sides = truncated_sides(pair, self.seq_len)
        if (truncated and self.overlong == "drop") or any(not any(m[1:]) for _, m in sides):
            return [_element([], [], tag, [], [0, 0, 1])]  # too long, or nothing trained left
        inputs, labels, side_of = [], [], []
        for k, (ids, mask) in enumerate(sides):
            inputs += ids[:-1]
            labels += _labels(ids, mask)
            side_of += [k] * (len(ids) - 1)
        return [_element(inputs, labels, tag, side_of, [1, int(truncated), 0])]


def _labels(ids, mask) -> list[int]:
    return ids[1:] if mask is None else [t if m else -1 for t, m in zip(ids[1:], mask[1:],
                                                                         strict=True)]


def _element(inputs, labels, tag, sides, counts) -> dict:
    inputs = np.asarray(inputs, dtype=np.int32)
    return {"inputs": inputs, "labels": np.asarray(labels, dtype=np.int32),
            "tags": np.full_like(inputs, tag), "sides": np.asarray(sides, dtype=np.int32),
            "counts": np.asarray(counts, dtype=np.int32)}
