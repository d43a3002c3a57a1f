"""The just-in-time data pipeline: raw documents in, packed (inputs, labels) batches out.

Documents are streamed from a source, shuffled through a bounded buffer, tokenized in chunks
(``encode_batch``) and packed into ``seq_len + 1`` token windows with EOS between documents.
Nothing is pre-tokenized; memory is bounded by the shuffle buffer and one chunk, not the corpus.

With ``window_shuffle_size`` > 1 the rows (plain-text windows, or packed rows of examples with
segment ids) then pass through a bounded shuffle buffer (:mod:`kerastrain.data.window_shuffle`)
so that a batch draws from many documents. The data's last batch is kept and padded with rows
that train nothing (unless ``drop_remainder``). Each batch's counts (examples, tokens, trained
tokens, overlong examples, a mixture's datasets) are taken from the batch itself
(:mod:`kerastrain.data.counts`).

Every batch carries the pipeline's full position *after* it (epoch, source index, shuffle-buffer
contents, RNG state, unemitted tokens, window buffer), so a checkpoint taken after step k resumes at batch k + 1
exactly. A background thread (:mod:`kerastrain.data.prefetch`) keeps a few batches ready.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerastrain.data.chunks import encoded_chunks, next_chunk
from kerastrain.data.counts import add_row_counts, add_window_counts, empty_counts
from kerastrain.data.packing import LABELS, META, SEGMENTS, TAGS, RowPacker
from kerastrain.data.pipeline_state import PipelineState
from kerastrain.data.reread import WINDOW_FACTOR, RereadWindow
from kerastrain.data.sources import Documents, positioned_documents
from kerastrain.data.tokenize_workers import InProcess, TokenizeWorkers
from kerastrain.data.window_shuffle import WindowShuffleBuffer


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
                                    buffer_index=list(state.buffer_index),
                                    trained=copy.deepcopy(state.trained))
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
        if not self.state.trained:
            self.state.trained = empty_counts(self.source_names)
        if self.packed:
            yield from self._iter_packed()
            return
        state = self.state
        tagged = bool(self.source_names)
        need = (self.batch_size - 1) * self.stride + self.window  # tokens for one full batch
        # The stream of tokens (and, in a mixture, each token's dataset) not yet in a window.
        stream = np.asarray([state.tokens] + ([state.token_tags] if tagged else []),
                            dtype=np.int32).reshape(1 + tagged, -1)
        shuffler = self._shuffler(self.window * (1 + tagged))
        while self.epochs is None or state.epoch < self.epochs:
            chunks, drawn = self._encoded_chunks(self._epoch_docs(state), state), None
            exhausted = False
            while not exhausted:
                if shuffler is not None:  # tokens to fill the window buffer up
                    need = (max(shuffler.room, 1) - 1) * self.stride + self.window
                pieces = [stream]
                have = stream.shape[1]
                while have < need:
                    chunk, encoded, drawn = next(chunks, (None, None, drawn))
                    if chunk is None:
                        exhausted = True
                        break
                    # Plain text: one array for the chunk, EOS after each document; formatted
                    # records (a mixture's too, tagged): one example each.
                    tags = [tag for tag, _ in chunk] if tagged else [0] * len(encoded)
                    for tag, ids in zip(tags, encoded, strict=True):
                        ids = np.asarray(ids.ids if self.data_format is not None else ids,
                                         dtype=np.int32)
                        pieces.append(np.stack([ids, np.full_like(ids, tag)]) if tagged
                                      else ids[None])
                        have += len(ids)
                    state.documents += len(chunk)
                stream = np.concatenate(pieces, axis=1) if len(pieces) > 1 else stream
                if shuffler is not None:
                    stream = self._fill(shuffler, stream, shuffler.room)
                    if shuffler.room == 0:
                        yield self._window_batch(state, shuffler.draw(self.batch_size), drawn,
                                                 stream, shuffler)
                elif stream.shape[1] >= need:
                    yield self._window_batch(state, self._windows(stream, self.batch_size),
                                             drawn, stream[:, self.batch_size * self.stride:])
                    stream = stream[:, self.batch_size * self.stride :]
            # The epoch's last tokens carry over into the next epoch (one continuous stream).
            self._next_epoch(state)
        if shuffler is not None:  # the data ends: drain the window buffer
            stream = self._fill(shuffler, stream, None)
            while len(shuffler) >= self.batch_size or (len(shuffler) and not self.drop_remainder):
                yield self._window_batch(state, shuffler.draw(self.batch_size), None, stream,
                                         shuffler)
            state.windows, state.window_rng = shuffler.windows, shuffler.rng_state()
        rows = self._whole_windows(stream)
        if rows and not self.drop_remainder:
            yield self._window_batch(state, self._windows(stream, rows), None,
                                     stream[:, rows * self.stride:])
            stream = stream[:, rows * self.stride :]
        state.tokens = stream[0].tolist()
        state.token_tags = stream[1].tolist() if tagged else []

    def _shuffler(self, width: int) -> WindowShuffleBuffer | None:
        """The row shuffle (``--window-shuffle-size`` rows of ``width`` numbers), or None. It
        holds at least a batch: a smaller one could never fill a batch."""
        if self.window_shuffle_size <= 1:
            return None
        return WindowShuffleBuffer(max(self.window_shuffle_size, self.batch_size), width,
                                   self.seed, self.state.windows, self.state.window_rng)

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
        """Examples packed into rows with segment ids (:mod:`kerastrain.data.packing`), through
        the same row shuffle as plain-text windows."""
        state = self.state
        # A format may bring its own packer (preference pairs: both sides in one row).
        packer = getattr(self.data_format, "packer", RowPacker)(
            self.seq_len, self.overlong, self.tokenizer.eos_id, state.packer, several=self.packing)
        rows = [np.asarray(r, dtype=np.int32) for r in state.rows]
        shuffler = self._shuffler((META + 1) * self.seq_len)
        while self.epochs is None or state.epoch < self.epochs:
            chunks, drawn = self._encoded_chunks(self._epoch_docs(state), state), None
            whole_epoch, read, placed = state.next_doc == 0, 0, packer.placed
            while True:
                while not self._rows_ready(rows, shuffler):
                    chunk, examples, drawn = next(chunks, (None, None, drawn))
                    if chunk is None:
                        break
                    for item, example in zip(chunk, examples, strict=True):
                        rows += packer.add(example, item[0] if self.source_names else 0)
                    state.documents += len(chunk)
                    read += len(chunk)
                if not self._rows_ready(rows, shuffler):
                    if whole_epoch and read and packer.placed == placed:
                        from kerastrain.errors import DataError

                        raise DataError(
                            f"all {read} examples are longer than --seq-len {self.seq_len} with "
                            "nothing trained left when truncated, or dropped (--overlong): raise "
                            "--seq-len")
                    break  # this epoch's examples are packed
                yield self._emit_rows(state, self._take_rows(rows, shuffler), rows, packer,
                                      shuffler, drawn)
            if whole_epoch and not read:  # nothing at all: never loop over empty epochs
                from kerastrain.errors import DataError

                raise DataError("the data source yielded no example in a whole epoch; check "
                                "--dataset-id and --max-train-examples")
            self._next_epoch(state)
        last = packer.flush()
        rows += [last] if last is not None else []
        if shuffler is not None:  # the data ends: every row into the buffer, then drain it
            self._rows_ready(rows, shuffler, room=len(rows))
        held = len(shuffler) if shuffler is not None else len(rows)
        while held and (held >= self.batch_size or not self.drop_remainder):
            yield self._emit_rows(state, self._take_rows(rows, shuffler), rows, packer, shuffler)
            held = len(shuffler) if shuffler is not None else len(rows)
        state.rows, state.packer = [r.tolist() for r in rows], packer.state()
        if shuffler is not None:
            state.windows, state.window_rng = shuffler.windows, shuffler.rng_state()

    def _rows_ready(self, rows: list, shuffler, room: int | None = None) -> bool:
        """Whether a batch can be taken: ``batch_size`` rows, or a full row shuffle (rows move
        into it first, at most ``room``, default its free room)."""
        if shuffler is None:
            return len(rows) >= self.batch_size
        moved = min(len(rows), shuffler.room if room is None else room)
        if moved:
            shuffler.add(np.stack(rows[:moved]).reshape(moved, -1))
            del rows[:moved]
        return shuffler.room == 0

    def _take_rows(self, rows: list, shuffler) -> np.ndarray:
        """The next batch's rows: drawn from the row shuffle, or the first ones (taken out of
        ``rows``)."""
        if shuffler is not None:
            return shuffler.draw(self.batch_size).reshape(-1, META + 1, self.seq_len)
        taken = np.stack(rows[: self.batch_size])
        del rows[: self.batch_size]
        return taken

    def _snapshot(self, state: PipelineState, drawn: dict | None, **parts) -> PipelineState:
        """The position after a batch, as :meth:`restore` takes it: ``drawn``, the documents'
        position after the chunk it ends in (None: ``state``'s now), and ``parts``, the tokens,
        rows or windows still waiting."""
        return PipelineState(**(drawn or self._position(state)), batches=state.batches,
                             documents=state.documents, trained=copy.deepcopy(state.trained),
                             **parts)

    @staticmethod
    def _shuffled(shuffler) -> dict:
        if shuffler is None:
            return {}
        return {"windows": shuffler.windows,  # never modified in place: shared
                "window_rng": shuffler.rng_state()}

    def _emit_rows(self, state: PipelineState, taken: np.ndarray, rest: list, packer, shuffler,
                   drawn: dict | None = None) -> Batch:
        add_row_counts(state.trained, taken[:, LABELS], taken[:, SEGMENTS], taken[:, TAGS],
                       taken[:, META], self.source_names)
        state.batches += 1
        snapshot = self._snapshot(state, drawn, packer=packer.state(),
                                  rows=[r.tolist() for r in rest], **self._shuffled(shuffler))
        rows = self._padded(taken[:, :SEGMENTS + 1], (packer.pad_id, -1, 0))
        return Batch(rows[:, 0], rows[:, 1], snapshot, segments=rows[:, 2])

    def _padded(self, rows: np.ndarray, fill: tuple) -> np.ndarray:
        """The data's last, short batch padded to ``batch_size`` rows that train nothing (labels
        -1), so that every example is trained and every batch has one shape (one compile)."""
        missing = self.batch_size - len(rows)
        if missing <= 0:
            return rows
        pad = np.empty((missing, *rows.shape[1:]), dtype=rows.dtype)
        for k, value in enumerate(fill):
            pad[:, k] = value
        return np.concatenate([rows, pad])

    def _whole_windows(self, stream: np.ndarray) -> int:
        n = stream.shape[1]
        return (n - self.window) // self.stride + 1 if n >= self.window else 0

    def _windows(self, stream: np.ndarray, rows: int) -> np.ndarray:
        """``rows`` windows of ``stream`` (each line's ``seq_len + 1`` numbers, side by side)."""
        starts = np.arange(rows) * self.stride
        windows = stream[:, starts[:, None] + np.arange(self.window)[None, :]]
        return windows.transpose(1, 0, 2).reshape(rows, stream.shape[0] * self.window)

    def _fill(self, shuffler: WindowShuffleBuffer, stream: np.ndarray, limit: int | None):
        """Move up to ``limit`` (None: all) whole windows from ``stream`` into the buffer."""
        rows = self._whole_windows(stream)
        rows = rows if limit is None else min(rows, limit)
        shuffler.add(self._windows(stream, rows))
        return stream[:, rows * self.stride :]

    def _window_batch(self, state: PipelineState, windows: np.ndarray, drawn: dict | None,
                      rest: np.ndarray, shuffler=None) -> Batch:
        """Windows of ``seq_len + 1`` tokens as (inputs, labels); a short last batch padded.
        ``rest``: the stream not yet in a window."""
        lines = windows.reshape(len(windows), -1, self.window)
        tags = lines[:, 1, 1:] if self.source_names else None
        add_window_counts(state.trained, lines[:, 0, 1:], tags, self.tokenizer.eos_id,
                          self.stride, self.source_names)
        state.batches += 1
        snapshot = self._snapshot(state, drawn, tokens=rest[0].tolist(),
                                  token_tags=rest[1].tolist() if self.source_names else [],
                                  **self._shuffled(shuffler))
        pairs = self._padded(np.stack([lines[:, 0, :-1], lines[:, 0, 1:]], axis=1),
                             (self.tokenizer.eos_id, -1))
        return Batch(pairs[:, 0], pairs[:, 1], snapshot)
