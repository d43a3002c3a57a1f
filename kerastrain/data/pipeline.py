"""The just-in-time data pipeline: raw documents in, packed (inputs, labels) batches out.

Documents are streamed from a source, shuffled through a bounded buffer, tokenized in chunks
(``encode_batch``) and packed into ``seq_len + 1`` token windows with EOS between documents.
Nothing is pre-tokenized; memory is bounded by the shuffle buffer and one chunk, not the corpus.

With ``window_shuffle_size`` > 1 the packed windows then pass through a bounded shuffle buffer
(:mod:`kerastrain.data.window_shuffle`) so that a batch draws from many documents.

Every batch carries the pipeline's full position *after* it (epoch, source index, shuffle-buffer
contents, RNG state, unemitted tokens, window buffer), so a checkpoint taken after step k resumes at batch k + 1
exactly. A background thread (:mod:`kerastrain.data.prefetch`) keeps a few batches ready.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.data.chunks import encoded_chunks, next_chunk
from kerastrain.data.reread import WINDOW_FACTOR, RereadWindow, saved_buffer
from kerastrain.data.sources import Documents, positioned_documents
from kerastrain.data.tokenize_workers import InProcess, TokenizeWorkers
from kerastrain.data.window_shuffle import WindowShuffleBuffer


@dataclass
class PipelineState:
    """Where the pipeline stands between two batches. Restoring it repeats nothing, skips nothing."""

    epoch: int = 0
    next_doc: int = 0  # documents of this epoch already taken from the source
    # Where the source stands after those documents, for sources that can seek to it
    # (``Documents.iter_positioned``: a shard and row, say); None: count ``next_doc`` from 0.
    source_position: Any = None
    buffer: list = field(default_factory=list)  # shuffle buffer: records, None when re-read
    buffer_index: list[int] = field(default_factory=list)  # each slot's document index (epoch)
    reread_from: list | None = None  # [index, source position before it]: see data.reread
    rng: dict | None = None  # numpy bit-generator state of this epoch's shuffle
    tokens: list[int] = field(default_factory=list)  # packed tokens not yet emitted
    batches: int = 0  # batches emitted so far
    documents: int = 0  # documents tokenized so far (all epochs)
    source_done: bool = False  # this epoch's source is exhausted (buffer draining)
    windows: list = field(default_factory=list)  # window shuffle buffer (rows of seq_len + 1)
    window_rng: dict | None = None  # numpy bit-generator state of the window shuffle
    packer: dict | None = None  # packed examples: the row being filled and the overlong counts
    rows: list = field(default_factory=list)  # packed rows not yet emitted ((3, seq_len) each)
    # A mixture's [documents, tokens] read from each dataset, by name (data.mixture).
    sources: dict = field(default_factory=dict)

    def source_logs(self) -> dict:
        """The tokens read from each dataset of a mixture so far, for the metrics."""
        return {f"tokens_from_{name}": n for name, (_, n) in self.sources.items()}

    def source_shares(self) -> dict:
        """The realised share of each dataset of a mixture, of documents (what the weights
        set) and of tokens, for the summary."""
        if not self.sources:
            return {}
        docs, tokens = (sum(c[k] for c in self.sources.values()) or 1 for k in (0, 1))
        return {"mixture_shares": {name: {"documents": round(d / docs, 4),
                                          "tokens": round(n / tokens, 4)}
                                   for name, (d, n) in self.sources.items()}}

    def saved(self) -> dict:
        """The state as a checkpoint holds it: recent buffered documents by index only."""
        return {**self.__dict__,
                "buffer": saved_buffer(self.buffer, self.buffer_index, self.reread_from)}

    def save(self, path: Path) -> None:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(self.saved(), f, default=lambda o: o.tolist())  # numpy arrays as lists

    @classmethod
    def load(cls, path: Path) -> PipelineState:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return cls(**json.load(f))


@dataclass
class Batch:
    inputs: np.ndarray  # (batch, seq_len) int32
    labels: np.ndarray  # (batch, seq_len) int32; -1: not trained (a prompt token, padding)
    state: PipelineState  # the position after this batch
    segments: np.ndarray | None = None  # (batch, seq_len) int32 example ids per row (packing)


class StreamingTextPipeline:
    """Streams documents into packed batches; see the module docstring."""

    def __init__(
        self,
        documents: Documents,
        tokenizer,
        *,
        seq_len: int,
        batch_size: int,
        stride: int | None = None,
        shuffle_buffer_size: int = 10000,
        seed: int = 42,
        max_documents: int | None = None,
        epochs: int | None = 1,
        drop_remainder: bool = True,
        window_shuffle_size: int = 0,
        workers: int = 1,
        data_format=None,
        format_context=None,
        packed: bool = False,
        overlong: str = "truncate",
        packing: bool = True,
        source_names: list[str] | None = None,
    ):
        self.documents = documents
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.window = seq_len + 1
        self.stride = stride or seq_len
        self.batch_size = batch_size
        self.shuffle_buffer_size = shuffle_buffer_size
        self.seed = seed
        self.max_documents = max_documents
        self.epochs = epochs
        self.drop_remainder = drop_remainder
        self.window_shuffle_size = window_shuffle_size  # windows; 0 or 1: consecutive windows
        self.workers = workers  # processes tokenizing each chunk side by side (tokenize_workers)
        # Workers are started now, so that they start up while the shuffle buffer fills.
        self._encoder = (TokenizeWorkers(workers, tokenizer, data_format, format_context)
                         if workers > 1 else InProcess(tokenizer, data_format, format_context))
        self._recent = RereadWindow(WINDOW_FACTOR * max(shuffle_buffer_size, 1))
        self.state = PipelineState()
        # A data format turns records into examples (kerastrain.data.formats); without one,
        # documents are plain text. Packed: examples in rows with segment ids (packing.py).
        self.data_format, self.format_context = data_format, format_context
        self.packed, self.overlong, self.packing = packed, overlong, packing
        # A mixture's documents come tagged ``[dataset number, record]`` (data.mixture).
        self.source_names = source_names

    # -- documents -----------------------------------------------------------------------------
    def _epoch_docs(self, state: PipelineState) -> Iterator[str]:
        """This epoch's documents in shuffled order, advancing ``state`` as they are taken."""
        it = self._source_docs(state)
        if self.max_documents is not None:
            it = itertools.islice(it, max(0, self.max_documents - state.next_doc))
        rng = np.random.default_rng([self.seed, state.epoch])
        if state.rng is not None:
            rng.bit_generator.state = state.rng
        buffer, index = state.buffer, state.buffer_index
        if len(index) != len(buffer):  # a state saved before indices were kept
            index[:] = [-1] * len(buffer)
        if state.next_doc == 0:
            self._recent.reset()
        size = self.shuffle_buffer_size
        while True:
            if not state.source_done:
                while len(buffer) < size:
                    item = next(it, None)
                    if item is None:
                        state.source_done = True
                        break
                    self._recent.taken(state.next_doc, state.source_position)
                    doc, state.source_position = item
                    buffer.append(doc)
                    index.append(state.next_doc)
                    state.next_doc += 1
            if not buffer:
                return
            if size <= 1:  # no shuffling: first in, first out
                doc = buffer.pop(0)
                index.pop(0)
            else:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                index[j], index[-1] = index[-1], index[j]
                doc = buffer.pop()
                index.pop()
            state.rng = rng.bit_generator.state
            yield doc

    @staticmethod
    def _next_epoch(state: PipelineState) -> None:
        """The next epoch starts at the source's first document (its position too)."""
        state.epoch += 1
        state.next_doc, state.buffer, state.rng, state.source_done = 0, [], None, False
        state.source_position, state.buffer_index, state.reread_from = None, [], None

    def _source_docs(self, state: PipelineState) -> Iterator[tuple[Any, Any]]:
        """``(document, source position after it)`` from where ``state`` stands. A source that
        can seek (``iter_positioned``) resumes at its saved position without re-reading what
        came before; any other resumes by index (``iter_from``) and has no position."""
        seek = positioned_documents(self.documents)
        if seek is None:
            return ((doc, None) for doc in self.documents.iter_from(state.next_doc))
        if state.source_position is None and state.next_doc:  # a state saved without positions
            return itertools.islice(seek(None), state.next_doc, None)
        return seek(state.source_position)

    # -- batches -------------------------------------------------------------------------------
    def restore(self, state: PipelineState) -> None:
        """Continue from ``state``; the documents saved by index are read again first."""

        def documents_from(first: int, position: Any):
            return self._source_docs(PipelineState(next_doc=first, source_position=position))

        # Batches of one chunk share their lists, and the pipeline changes its own in place.
        state = dataclasses.replace(state, buffer=list(state.buffer),
                                    buffer_index=list(state.buffer_index))
        self._recent.reset()
        self._recent.refill(state, documents_from)
        self.state = state

    def _position(self, state: PipelineState) -> dict:
        """Where the documents stand (the source, the shuffle buffer), as a batch saves it."""
        return {"epoch": state.epoch, "next_doc": state.next_doc,
                "source_position": state.source_position, "buffer": list(state.buffer),
                "buffer_index": list(state.buffer_index),
                "reread_from": self._recent.reread_from(state.next_doc), "rng": state.rng,
                "source_done": state.source_done}

    def __iter__(self) -> Iterator[Batch]:
        if self.packed:
            yield from self._iter_packed()
            return
        state = self.state
        need = (self.batch_size - 1) * self.stride + self.window  # tokens for one full batch
        shuffler = None
        if self.window_shuffle_size > 1:
            shuffler = WindowShuffleBuffer(self.window_shuffle_size, self.window, self.seed,
                                           state.windows, state.window_rng)
        tokens = np.asarray(state.tokens, dtype=np.int32)
        while self.epochs is None or state.epoch < self.epochs:
            chunks, drawn = self._encoded_chunks(self._epoch_docs(state), state), None
            exhausted = False
            while not exhausted:
                if shuffler is not None:  # tokens to fill the window buffer up
                    need = (max(shuffler.room, 1) - 1) * self.stride + self.window
                pieces = [tokens]
                have = len(tokens)
                while have < need:
                    chunk, encoded, drawn = next(chunks, (None, None, drawn))
                    if chunk is None:
                        exhausted = True
                        break
                    self._count_sources(state, chunk, encoded)
                    for ids in encoded:  # plain text: one array, EOS after each document
                        ids = np.asarray(ids.ids if self.data_format is not None else ids,
                                         dtype=np.int32)
                        pieces.append(ids)
                        have += len(ids)
                    state.documents += len(chunk)
                tokens = np.concatenate(pieces) if len(pieces) > 1 else tokens
                if shuffler is not None:
                    tokens = self._fill(shuffler, tokens, shuffler.room)
                    if shuffler.room == 0:
                        yield self._emit_windows(state, shuffler.draw(self.batch_size), tokens,
                                                 shuffler, drawn)
                elif len(tokens) >= need:
                    yield self._emit(state, tokens, self.batch_size, drawn)
                    tokens = tokens[self.batch_size * self.stride :]
            # The epoch's last tokens carry over into the next epoch (one continuous stream).
            self._next_epoch(state)
        if shuffler is not None:  # the data ends: drain the window buffer
            tokens = self._fill(shuffler, tokens, None)
            while len(shuffler) >= self.batch_size:
                yield self._emit_windows(state, shuffler.draw(self.batch_size), tokens, shuffler)
            if len(shuffler) and not self.drop_remainder:
                yield self._emit_windows(state, shuffler.draw(len(shuffler)), tokens, shuffler)
            state.windows, state.window_rng = shuffler.windows, shuffler.rng_state()
        rows = (len(tokens) - self.window) // self.stride + 1 if len(tokens) >= self.window else 0
        if rows and not self.drop_remainder:
            yield self._emit(state, tokens, rows)
            tokens = tokens[rows * self.stride :]
        state.tokens = tokens.tolist()

    def _count_sources(self, state: PipelineState, chunk: list, encoded: list) -> None:
        if self.source_names:
            if not state.sources:  # in the mixture's order
                state.sources.update({name: [0, 0] for name in self.source_names})
            for (tag, _), example in zip(chunk, encoded, strict=True):
                counts = state.sources[self.source_names[tag]]
                counts[0] += 1
                counts[1] += len(example.ids)

    def _encoded_chunks(self, docs, state: PipelineState):
        """This epoch's ``(chunk, encoding, position after it)``: see :mod:`.chunks`."""
        return encoded_chunks(lambda: next_chunk(docs, bool(self.source_names)),
                              lambda: self._position(state), lambda: self._encoder)

    def close(self) -> None:
        """Stop the tokenizer workers (also done when the pipeline is garbage-collected); what is
        read after this is encoded in this process, with the same result."""
        self._encoder, encoder = InProcess(self.tokenizer, self.data_format,
                                           self.format_context), self._encoder
        encoder.close()

    def _iter_packed(self) -> Iterator[Batch]:
        """Examples packed into rows with segment ids (:mod:`kerastrain.data.packing`)."""
        from kerastrain.data.packing import RowPacker

        state = self.state
        packer = RowPacker(self.seq_len, self.overlong, self.tokenizer.eos_id, state.packer,
                           several=self.packing)
        rows = [np.asarray(r, dtype=np.int32) for r in state.rows]
        while self.epochs is None or state.epoch < self.epochs:
            chunks, drawn = self._encoded_chunks(self._epoch_docs(state), state), None
            whole_epoch, read, placed = state.next_doc == 0, 0, packer.placed
            while True:
                while len(rows) < self.batch_size:
                    chunk, examples, drawn = next(chunks, (None, None, drawn))
                    if chunk is None:
                        break
                    self._count_sources(state, chunk, examples)
                    for example in examples:
                        rows += packer.add(example)
                    state.documents += len(chunk)
                    read += len(chunk)
                if len(rows) < self.batch_size:
                    if whole_epoch and read and packer.placed == placed:
                        from kerastrain.errors import DataError

                        raise DataError(
                            f"all {read} examples are longer than --seq-len {self.seq_len} with "
                            "nothing trained left when truncated, or dropped (--overlong): raise "
                            "--seq-len")
                    break  # this epoch's examples are packed
                yield self._emit_rows(state, rows[: self.batch_size], rows[self.batch_size:],
                                      packer, drawn)
                rows = rows[self.batch_size:]
            if whole_epoch and not read:  # nothing at all: never loop over empty epochs
                from kerastrain.errors import DataError

                raise DataError("the data source yielded no example in a whole epoch; check "
                                "--dataset-id and --max-train-examples")
            self._next_epoch(state)
        last = packer.flush()
        rows += [last] if last is not None else []
        while rows and (len(rows) >= self.batch_size or not self.drop_remainder):
            yield self._emit_rows(state, rows[: self.batch_size], rows[self.batch_size:], packer)
            rows = rows[self.batch_size:]
        state.rows, state.packer = [r.tolist() for r in rows], packer.state()

    def _snapshot(self, state: PipelineState, drawn: dict | None, **parts) -> PipelineState:
        """The position after a batch, as :meth:`restore` takes it: ``drawn``, the documents'
        position after the chunk it ends in (None: ``state``'s now), and ``parts``, the tokens,
        rows or windows still waiting."""
        return PipelineState(**(drawn or self._position(state)), batches=state.batches,
                             documents=state.documents,
                             sources={n: list(c) for n, c in state.sources.items()}, **parts)

    def _emit_rows(self, state: PipelineState, rows: list, rest: list, packer,
                   drawn: dict | None = None) -> Batch:
        state.batches += 1
        snapshot = self._snapshot(state, drawn, packer=packer.state(),
                                  rows=[r.tolist() for r in rest])
        stacked = np.stack(rows)
        return Batch(stacked[:, 0], stacked[:, 1], snapshot, segments=stacked[:, 2])

    def _windows(self, tokens: np.ndarray, rows: int) -> np.ndarray:
        starts = np.arange(rows) * self.stride
        return tokens[starts[:, None] + np.arange(self.window)[None, :]]

    def _fill(self, shuffler: WindowShuffleBuffer, tokens: np.ndarray, limit: int | None):
        """Move up to ``limit`` (None: all) whole windows from ``tokens`` into the buffer."""
        rows = (len(tokens) - self.window) // self.stride + 1 if len(tokens) >= self.window else 0
        rows = rows if limit is None else min(rows, limit)
        shuffler.add(self._windows(tokens, rows))
        return tokens[rows * self.stride :]

    def _emit_windows(self, state: PipelineState, windows: np.ndarray, rest: np.ndarray,
                      shuffler: WindowShuffleBuffer, drawn: dict | None = None) -> Batch:
        state.batches += 1
        snapshot = self._snapshot(state, drawn, tokens=rest.tolist(),
                                  windows=shuffler.windows,  # never modified in place: shared
                                  window_rng=shuffler.rng_state())
        return Batch(windows[:, :-1], windows[:, 1:], snapshot)

    def _emit(self, state: PipelineState, tokens: np.ndarray, rows: int,
              drawn: dict | None = None) -> Batch:
        windows = self._windows(tokens, rows)
        state.batches += 1
        snapshot = self._snapshot(state, drawn, tokens=tokens[rows * self.stride :].tolist())
        return Batch(windows[:, :-1], windows[:, 1:], snapshot)
