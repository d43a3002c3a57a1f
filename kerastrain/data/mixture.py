"""A weighted mixture of sources that is itself a :class:`~kerastrain.data.sources.Documents`.

Draw ``n`` picks a source from a uniform number that is a pure function of ``(seed, n)``
(SplitMix64, below) and the sources still active, so the choice sequence does not depend on how
the stream was read, how often it was resumed or how many tokenizer workers there are. The
position after each document (``iter_positioned``) is small and JSON: the number of draws, each
source's own position (its ``iter_positioned`` position, or the count of its documents taken),
the documents taken from each, its restarts, and the sources that dropped out. Resuming from it
seeks every source (a sharded stream to its shard) and continues the same choice sequence.

When a source runs out, ``on_exhausted`` says what happens:

* ``end-epoch``: the mixture ends (the epoch ends; the next epoch starts every source again);
* ``restart``: that source starts again from its first document (its weight stays);
* ``drop``: it leaves the mixture and the others share its weight; the mixture ends when none is
  left.

(Why not ``datasets.interleave_datasets``: it only mixes Hugging Face datasets and its state is
not our ``Documents`` position; this works for every source, TFDS and plugins included. Why not
Grain's ``IterDataset.mix`` (0.2.18): it "stops producing elements once *any* input dataset is
exhausted" (its docstring), i.e. ``end-epoch`` only, with no ``restart`` or ``drop``; and mixing
before the pipeline keeps a mixture one source, whose position is this small JSON value, so the
process and worker shares, the shuffle and the counts treat it as any other source.)
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from kerastrain.data.sources import positioned_documents
from kerastrain.errors import DataError

EXHAUSTED = ("end-epoch", "restart", "drop")
_MASK = (1 << 64) - 1


def uniform(seed: int, n: int) -> float:
    """A number in [0, 1) that depends only on ``(seed, n)`` (SplitMix64 of the pair)."""
    z = (seed * 0x9E3779B97F4A7C15 + (n + 1) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


class MixtureDocuments:
    """Documents drawn from ``sources`` in proportion to ``weights`` (see the module docstring)."""

    def __init__(self, sources: Sequence[Any], weights: Sequence[float], *, seed: int = 0,
                 on_exhausted: str = "end-epoch", names: Sequence[str] | None = None,
                 tags: Sequence[int] | None = None) -> None:
        if len(sources) != len(weights) or not sources:
            raise DataError(f"a mixture needs one weight per dataset: {len(sources)} dataset(s), "
                            f"{len(weights)} weight(s)")
        if any(w <= 0 for w in weights):
            raise DataError(f"mixture weights must be positive, got {list(weights)}")
        if on_exhausted not in EXHAUSTED:
            raise DataError(f"on_exhausted must be one of {', '.join(EXHAUSTED)}")
        self.sources = list(sources)
        self.weights = [float(w) for w in weights]
        self.seed = seed
        self.on_exhausted = on_exhausted
        self.names = list(names) if names else [f"source {i}" for i in range(len(sources))]
        # With tags, each document comes as ``[tag, document]`` (tag: its source's number, the
        # ``tags[i]`` of source i), so a data format and the token counts know its source.
        self.tags = list(tags) if tags is not None else None

    def __len__(self) -> int:
        raise TypeError("a mixture's number of documents depends on its draws: unknown")

    def expected_length(self) -> int | None:
        """About how many documents an epoch draws (for the step estimate): until the first
        dataset runs out (``end-epoch``), or all of them (``drop``); None when it never ends
        (``restart``) or a dataset's size is unknown (a stream)."""
        try:
            sizes = [len(s) for s in self.sources]
        except TypeError:
            return None
        if self.on_exhausted == "drop":
            return sum(sizes)
        if self.on_exhausted != "end-epoch":
            return None
        total = sum(self.weights)
        return int(min(n * total / w for n, w in zip(sizes, self.weights, strict=True)))

    def start(self) -> dict:
        k = len(self.sources)
        return {"n": 0, "sub": [None] * k, "taken": [0] * k, "laps": [0] * k,
                "done": [False] * k}

    def _choose(self, n: int, done: list[bool]) -> int | None:
        active = [i for i, d in enumerate(done) if not d]
        if not active:
            return None
        total = sum(self.weights[i] for i in active)
        u = uniform(self.seed, n) * total
        for i in active:
            u -= self.weights[i]
            if u < 0:
                return i
        return active[-1]

    def _open(self, i: int, position: Any) -> Iterator[tuple[Any, Any]]:
        source = self.sources[i]
        seek = positioned_documents(source)
        if seek is not None:
            return seek(position)
        start = position or 0  # a source without positions: the count of documents taken
        return ((doc, start + k + 1) for k, doc in enumerate(source.iter_from(start)))

    def iter_positioned(self, position: dict | None) -> Iterator[tuple[Any, dict]]:
        """``(document, mixture position after it)`` from ``position`` (None: the start)."""
        state = copy.deepcopy(position) if position is not None else self.start()
        streams: dict[int, Iterator] = {}
        while True:
            i = self._choose(state["n"], state["done"])
            if i is None:
                return
            if i not in streams:
                streams[i] = self._open(i, state["sub"][i])
            item = next(streams[i], None)
            if item is None:
                if self.on_exhausted == "end-epoch":
                    return
                if self.on_exhausted == "drop":
                    state["done"][i] = True
                    streams.pop(i)
                    continue  # the same draw, among the sources left
                if state["sub"][i] is None and state["taken"][i] == 0:
                    raise DataError(f"{self.names[i]} has no documents")
                state["laps"][i] += 1
                state["sub"][i] = None
                streams[i] = self._open(i, None)
                item = next(streams[i], None)
                if item is None:
                    raise DataError(f"{self.names[i]} has no documents")
            doc, state["sub"][i] = item
            state["n"] += 1
            state["taken"][i] += 1
            if self.tags is not None:
                doc = [self.tags[i], doc]
            yield doc, {"n": state["n"], "sub": list(state["sub"]), "taken": list(state["taken"]),
                        "laps": list(state["laps"]), "done": list(state["done"])}

    def iter_from(self, start: int) -> Iterator[Any]:
        """The documents from draw ``start`` on (reads the draws before it: prefer positions)."""
        return (doc for doc, _ in itertools.islice(self.iter_positioned(None), start, None))

    def shares(self, position: dict | None) -> dict[str, float]:
        """The realised share of each source's documents at ``position``."""
        taken = (position or self.start())["taken"]
        total = sum(taken) or 1
        return {name: count / total for name, count in zip(self.names, taken, strict=True)}


class MixedFormat:
    """The data format of a mixture: each tagged document ``[tag, record]`` goes through its own
    dataset's format and context (a chat dataset beside plain text, a column per dataset)."""

    name = "mixture"
    description = "The formats of a mixture's datasets, each its own"
    columns = "the columns of each dataset's format"

    def __init__(self, formats: Sequence[Any], contexts: Sequence[Any]) -> None:
        self.formats, self.contexts = list(formats), list(contexts)
        self.packed = any(f.packed for f in self.formats)
        self.needs_template = any(f.needs_template for f in self.formats)

    def matches(self, record, context) -> bool:
        return isinstance(record, list) and len(record) == 2

    def _context(self, tag: int, context):
        return dataclasses.replace(self.contexts[tag], tokenizer=getattr(context, "tokenizer", None))

    def text(self, record, context) -> str:
        tag, doc = record
        return self.formats[tag].text(doc, self._context(tag, context))

    def encode(self, records: list, context) -> list:
        """Each dataset's records through its format, in one call per dataset; in order."""
        out: list = [None] * len(records)
        for tag in sorted({t for t, _ in records}):
            where = [k for k, (t, _) in enumerate(records) if t == tag]
            encoded = self.formats[tag].encode([records[k][1] for k in where],
                                               self._context(tag, context))
            for k, example in zip(where, encoded, strict=True):
                out[k] = example
        return out
