"""The data pipeline: raw documents in, (inputs, labels) batches out, on Grain.

One Grain ``IterDataset`` per run (:meth:`StreamingTextPipeline.dataset`), read just in time:

1. the documents (:class:`~kerastrain.data.grain_source.DocumentSource`: this process's share,
   over the epochs, state = the source's own position);
2. a window shuffle over ``--shuffle-buffer-size`` documents (:mod:`kerastrain.data.window_shuffle`:
   Grain's, with its state, without its per-element cost);
3. chunks of documents tokenized at once, one element per example
   (:mod:`kerastrain.data.examples`, a Grain ``FlatMap``);
4. rows: plain text cut into windows of ``seq_len + 1`` tokens ``stride`` apart
   (:mod:`kerastrain.data.windows`), or examples packed with segment ids by Grain's first-fit
   packer (:mod:`kerastrain.data.packing`);
5. the same window shuffle over ``--window-shuffle-size`` rows of every kind, so
   that a batch draws from many documents;
6. Grain's ``batch``; with ``--data-workers N`` > 1 Grain's ``mp_prefetch``: N processes, each
   running steps 1-6 on every N-th document of the share, their batches taken in turn.

Every Grain stage keeps the state of its parent where its window (or row, or chunk) began and
re-reads from there on a restore, so the saved state holds positions and counters, never
documents or tokens. Each batch carries that state after it, with the counts of what the
batches so far trained (:mod:`kerastrain.data.counts`), so a checkpoint taken after step k
resumes at batch k + 1 exactly. The worker count is part of that state: a resume with another
``--data-workers`` is refused (each worker reads its own documents). The data's last batch is
kept and padded with rows that train nothing (unless ``drop_remainder``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import grain
import numpy as np

from kerastrain.data.counts import add_row_counts, add_window_counts, empty_counts
from kerastrain.data.examples import ENCODE_CHUNK_DOCS, EncodeChunk
from kerastrain.data.grain_source import DocumentSource
from kerastrain.data.packing import packed_rows
from kerastrain.data.pipeline_state import PipelineState
from kerastrain.data.window_shuffle import WindowShuffle
from kerastrain.data.windows import StrideWindows

__all__ = ["Batch", "PipelineState", "StreamingTextPipeline"]


@dataclass
class Batch:
    inputs: np.ndarray  # (batch, seq_len) int32
    labels: np.ndarray  # (batch, seq_len) int32; -1: not trained (a prompt token, padding)
    state: PipelineState  # the position after this batch
    segments: np.ndarray | None = None  # (batch, seq_len) int32 example ids per row (packing)


class StreamingTextPipeline:
    """Streams documents into batches; see the module docstring."""

    def __init__(
        self,
        documents,
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
        process: tuple[int, int] = (0, 1),
    ):
        self.documents, self.tokenizer = documents, tokenizer
        self.seq_len, self.window = seq_len, seq_len + 1
        self.stride = stride or seq_len
        self.batch_size = batch_size
        self.shuffle_buffer_size = shuffle_buffer_size
        self.seed = seed
        self.max_documents, self.epochs = max_documents, epochs
        self.drop_remainder = drop_remainder
        self.window_shuffle_size = window_shuffle_size  # rows; 0 or 1: rows in order
        self.workers = workers
        # A data format turns records into examples (kerastrain.data.formats); without one,
        # documents are plain text. Packed: examples in rows with segment ids (packing.py).
        self.data_format, self.format_context = data_format, format_context
        self.packed, self.overlong, self.packing = packed, overlong, packing
        # A mixture's documents come tagged ``[dataset number, record]`` (data.mixture).
        self.source_names = source_names
        self.process = process
        self.state = PipelineState(workers=workers)
        self._iterator = None

    # -- the Grain dataset ----------------------------------------------------------------------
    def dataset(self, first_epoch: int = 0) -> grain.IterDataset:
        """The run's data as one Grain ``IterDataset`` of batches (see the module docstring)."""
        index, processes = self.process
        ds = DocumentSource(self.documents, epochs=self.epochs, limit=self.max_documents,
                            start=index, step=processes, first_epoch=first_epoch)
        if self.shuffle_buffer_size > 1:
            ds = WindowShuffle(ds, size=self.shuffle_buffer_size, seed=self.seed)
        ds = ds.batch(ENCODE_CHUNK_DOCS, batch_fn=list)
        ds = grain.experimental.FlatMapIterDataset(ds, EncodeChunk(
            self.tokenizer, self.data_format, self.format_context,
            tagged=bool(self.source_names), packed=self.packed, seq_len=self.seq_len,
            overlong=self.overlong))
        if self.packed:
            ds = packed_rows(ds, self.seq_len, self.tokenizer.eos_id, several=self.packing,
                             seed=self.seed)
        else:
            ds = StrideWindows(ds, window=self.window, stride=self.stride)
        if self.window_shuffle_size > 1:  # at least a batch: a smaller one mixes nothing
            ds = WindowShuffle(ds, size=max(self.window_shuffle_size, self.batch_size),
                               seed=self.seed + 1)
        ds = ds.batch(self.batch_size, drop_remainder=self.drop_remainder)
        if self.workers > 1:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags (defaults)
                flags.FLAGS.mark_as_parsed()
            self._check_picklable(ds)
            # Batches cross to the trainer pickled, not through one shared-memory segment per
            # array (Grain's default): a batch of 16 x 257 tokens is ~16 KB, and the segments'
            # system calls took 0.7 s of the trainer's CPU per 571 batches (0.29 s pickled);
            # each worker keeps 4 batches ready, so one that is slower for a moment does not
            # stall the others (bench_pipeline.py --compare-workers 1,2).
            ds = grain.experimental.WithOptionsIterDataset(
                ds, grain.experimental.DatasetOptions(min_shm_size=1 << 22))
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                             per_worker_buffer_size=4),
                                worker_init_fn=functools.partial(exit_with_parent,
                                                                 parent=os.getpid()))
        return ds

    def _check_picklable(self, ds) -> None:
        """Grain's workers get the dataset pickled (the source, tokenizer and data format)."""
        import pickle

        try:
            pickle.dumps(ds)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            from kerastrain.errors import ConfigError

            raise ConfigError(f"--data-workers {self.workers} sends the data source, tokenizer "
                              f"and data format to worker processes, and one cannot be pickled "
                              f"({type(exc).__name__}: {exc}): use --data-workers 1") from None

    # -- batches ----------------------------------------------------------------------------------
    def restore(self, state: PipelineState) -> None:
        """Continue from ``state`` (the position after a batch)."""
        if state.grain is not None and state.workers != self.workers:
            from kerastrain.errors import ConfigError

            raise ConfigError(f"the checkpoint's data was read by --data-workers "
                              f"{state.workers}: resume with --data-workers {state.workers} "
                              f"(each worker reads its own share of the documents)")
        self.close()
        self.state = dataclasses.replace(state, workers=self.workers,
                                         trained=copy.deepcopy(state.trained))

    def __iter__(self) -> Iterator[Batch]:
        self.close()
        if not self.state.trained:
            self.state.trained = empty_counts(self.source_names)
        it = self._iterator = self.dataset(0 if self.state.grain else self.state.epoch).__iter__()
        if self.state.grain is not None:
            it.set_state(copy.deepcopy(self.state.grain))
        any_trained = self.state.trained.get("trained_tokens", 0) > 0
        try:
            for rows in it:
                state = self.state
                trained = copy.deepcopy(state.trained)
                epoch = int(np.max(rows["epoch"]))
                if self.packed:
                    add_row_counts(trained, rows["labels"], rows["segments"], rows["tags"],
                                   rows["counts"], self.source_names)
                    batch = self._packed_batch(rows)
                else:
                    add_window_counts(trained, rows["tokens"][:, 1:], rows["tags"][:, 1:],
                                      self.tokenizer.eos_id, self.stride, self.source_names)
                    batch = self._window_batch(rows)
                any_trained = any_trained or trained["trained_tokens"] > 0
                if self.packed and not any_trained and epoch > 0:
                    self._nothing_trained(trained)
                batch.state = self.state = PipelineState(
                    grain=it.get_state(), epoch=epoch, batches=state.batches + 1,
                    workers=self.workers, trained=trained)
                yield batch
        finally:
            if self._iterator is it:
                self.close()
        if self.packed and not any_trained and self.state.trained.get("dropped"):
            self._nothing_trained(self.state.trained)

    def _nothing_trained(self, trained: dict) -> None:
        from kerastrain.errors import DataError

        raise DataError(
            f"all {trained['dropped'] + trained['truncated']} examples are longer than --seq-len "
            f"{self.seq_len} with nothing trained left when truncated, or dropped (--overlong): "
            "raise --seq-len")

    def close(self) -> None:
        """Stop Grain's worker processes (also done when the pipeline is garbage-collected)."""
        it, self._iterator = self._iterator, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def _packed_batch(self, rows: dict) -> Batch:
        lines = self._padded([rows["inputs"], rows["labels"], rows["segments"]],
                             (self.tokenizer.eos_id, -1, 0))
        return Batch(*lines[:2], state=None, segments=lines[2])

    def _window_batch(self, rows: dict) -> Batch:
        """Windows of ``seq_len + 1`` tokens as (inputs, labels)."""
        tokens = rows["tokens"]
        lines = self._padded([tokens[:, :-1], tokens[:, 1:]], (self.tokenizer.eos_id, -1))
        return Batch(*lines, state=None)

    def _padded(self, lines: list, fill: tuple) -> list:
        """The data's last, short batch padded to ``batch_size`` rows that train nothing (labels
        -1), so that every example is trained and every batch has one shape (one compile)."""
        missing = self.batch_size - len(lines[0])
        if missing <= 0:
            return [np.asarray(line, dtype=np.int32) for line in lines]
        return [np.concatenate([line, np.full((missing, line.shape[1]), value, line.dtype)])
                .astype(np.int32) for line, value in zip(lines, fill, strict=True)]


def exit_with_parent(worker: int, workers: int, *, parent: int) -> None:
    """Run in each of Grain's worker processes: exit once the trainer (pid ``parent``) is gone.
    A worker blocked on a full queue outlived a ``kill -9`` of its trainer by minutes (measured:
    still there after 60 s); this checks every half second. The trainer's pid comes from the
    trainer: a worker still importing when the trainer died would read its new parent (init)
    from ``os.getppid()`` and wait for it forever."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=watch, daemon=True, name="kerastrain-exit-with-parent").start()
