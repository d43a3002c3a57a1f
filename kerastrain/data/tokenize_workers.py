"""Tokenizer worker processes: ``--data-workers N`` encodes each chunk of documents on N cores.

Why this design (measured on the 2-core machine with ``benchmarks/bench_pipeline.py
--compare-workers 1,2``, December 2026; one worker spent ~86% of its time in ``encode_batch``,
~3% turning its ids into lists and arrays, the rest shuffling, packing and snapshotting states):

* threads (the previous design): ``encode_batch`` releases the GIL, but the list/array work does
  not; 2 threads measured 0.78x-1.39x one;
* ``tokenizers``' own rayon pool (``TOKENIZERS_PARALLELISM=true``): raw ``encode_batch`` 1.6x
  faster, but the pipeline's Python work stays serial beside it and the switch is process-wide;
* ``grain``'s ``mp_prefetch``: not installed, and it would own the order, the shuffle and the
  saved state, which :mod:`kerastrain.data.pipeline` keeps itself;
* processes (this module): each worker is a fresh interpreter (``subprocess``, never a fork:
  JAX's threads already run in the trainer; no ``multiprocessing`` spawn either, which re-imports
  the user's main script) with its own copy of the tokenizer.

The pipeline reads documents exactly as with one worker, one chunk at a time, and hands each
chunk out (:meth:`TokenizeWorkers.start`) two chunks before it packs it (:mod:`.chunks`), so the
workers encode while this process draws and packs. Each chunk is cut into one contiguous piece
per process, sized so that all finish together (:meth:`TokenizeWorkers._shares`). This thread
encodes the first piece, the workers the others, each returned as one int32 array with EOS after
each document (or a data format's examples). The batches and the saved states are therefore the
same for any N (tested), and so is a resume from any of them.

A worker exits when its socket closes: on :meth:`TokenizeWorkers.close`, when the pipeline is
garbage-collected, at interpreter exit, or when the trainer is killed (the kernel closes the
socket). An error in a worker (a bad record, say) is sent back and raised again as it was.
"""

from __future__ import annotations

import bisect
import itertools
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection

import numpy as np

_BOOT = "import sys; from kerastrain.data.tokenize_workers import serve; serve(int(sys.argv[1]))"


def encode_part(texts: list, tokenizer, data_format=None, format_context=None):
    """One part of a chunk: an int32 array of plain-text ids with EOS after each document, or the
    data format's examples."""
    if data_format is not None:
        return data_format.encode(texts, format_context)
    flat: list[int] = []
    eos = tokenizer.eos_id
    for ids in tokenizer.encode_batch(texts):
        flat += ids
        flat.append(eos)
    return np.array(flat, dtype=np.int32)


def _size(doc) -> int:
    """A document's share of the work: its characters (a mixture's ``[tag, text]`` too); a
    record counts 1."""
    if isinstance(doc, list) and len(doc) == 2:
        doc = doc[1]
    return len(doc) if isinstance(doc, str) else 1


def split(chunk: list, weights: list[float]) -> list[list]:
    """``chunk`` as contiguous pieces, one per weight, of about those shares of its characters
    (records count as equal); concatenated in order they give ``chunk`` back (some may be empty).
    Each cut is the document boundary nearest its share: documents are heavy-tailed (one may hold
    half a chunk), and cutting after the document that crosses the share left the first piece
    15% larger on the benchmark."""
    ends = list(itertools.accumulate(_size(d) for d in chunk))
    total, cuts, acc = (ends[-1] if ends else 0), [0], 0.0
    for weight in weights[:-1]:
        acc += weight
        target = total * acc / sum(weights)
        i = bisect.bisect_left(ends, target)  # ends[i] >= target: cut after i, or before it
        cut = i if i < len(ends) and target - (ends[i - 1] if i else 0) < ends[i] - target else i + 1
        cuts.append(max(cuts[-1], min(cut, len(chunk))))
    cuts.append(len(chunk))
    return [chunk[a:b] for a, b in itertools.pairwise(cuts)]


def join(pieces: list, data_format) -> list:
    """The encoded pieces of one chunk as the pipeline takes them: one array, or the examples."""
    if data_format is not None:
        return [example for piece in pieces for example in piece]
    return [np.concatenate(pieces) if len(pieces) > 1 else pieces[0]]


class InProcess:
    """One worker (``--data-workers 1``): a chunk is encoded in this process when finished."""

    def __init__(self, tokenizer, data_format=None, format_context=None):
        self._setup = (tokenizer, data_format, format_context)

    def start(self, chunk: list) -> list:
        return chunk

    def finish(self, chunk: list) -> list:
        return join([encode_part(chunk, *self._setup)], self._setup[1])

    def close(self) -> None:
        pass


class TokenizeWorkers:
    """``workers - 1`` worker processes plus the calling thread, encoding chunks side by side."""

    def __init__(self, workers: int, tokenizer, data_format=None, format_context=None):
        self.workers = workers
        self._setup = (tokenizer, data_format, format_context)
        self.data_format = data_format
        self._conns: list[Connection] = []
        self._procs: list[subprocess.Popen] = []
        self._ready: list[bool] = []  # a worker is given pieces once it has said it is ready
        self._rates: list = [None] * workers  # characters/s of this thread, then each worker's
        self._sent = False
        self._threads = None
        self._sequence = 0  # of the chunks handed out: an answer for an abandoned one is skipped
        self._outside = None  # seconds this process spends between two chunks (moving average)
        self._left = None  # when this process last finished a chunk
        self._closed = False
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",  # one core per worker
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            for _ in range(workers - 1):  # started now: they import while the buffer fills
                ours, theirs = socket.socketpair()
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-c", _BOOT, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL))
                theirs.close()
                self._conns.append(Connection(ours.detach()))
                self._ready.append(False)
        finally:
            self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._procs)
        # The setup goes out now, so the workers are ready by the first chunk; the tokenizer
        # must not change after the pipeline is made (the runner adds special tokens before).
        self._send_setup()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until every worker has loaded the tokenizer (a benchmark's steady state)."""
        deadline = time.monotonic() + timeout
        while not all(self._is_ready(w) for w in range(len(self._conns))):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self, chunk: list):
        """Hand the workers their pieces of ``chunk`` now; :meth:`finish` encodes this process's
        piece and collects theirs. The pipeline starts the next chunk before it packs this one,
        so the workers encode while this process shuffles and packs."""
        self._send_setup()
        if self._threads is not None:
            return [self._threads.submit(encode_part, part, *self._setup)
                    for part in split(chunk, [1.0] * self.workers)]
        ready = [w for w in range(len(self._conns)) if self._is_ready(w)]
        pieces = split(chunk, self._shares(chunk, ready))
        self._sequence += 1
        for w, piece in zip(ready, pieces[1:], strict=True):
            try:
                self._conns[w].send((self._sequence, piece))
            except OSError:  # the worker is gone: reading its answer says so
                pass
        return self._sequence, ready, pieces

    def finish(self, started) -> list:
        """The chunk ``started`` encoded: ``[int32 array]`` for plain text, or the examples."""
        if self._threads is not None:
            return join([future.result() for future in started], self.data_format)
        sequence, ready, pieces = started
        if self._closed:  # closed meanwhile: every piece here, with the same result
            ready, pieces = [], [[d for piece in pieces for d in piece]]
        results, waited = [], 0.0
        try:
            results.append((True, *_timed(encode_part, pieces[0], *self._setup)))
        except Exception as exc:  # raised below, in stream order, as a worker's would be
            results.append((False, exc, 0.0))
        for w in ready:
            began = time.perf_counter()
            self._conns[w].poll(None)
            waited += time.perf_counter() - began
            results.append(_receive(self._conns[w], self._procs[w], sequence))
        ended = time.perf_counter()
        if self._left is not None:  # this process's other work per chunk (drawing, packing,
            # receiving, the caller's): what its share of the encoding must leave room for
            self._outside = _average(self._outside, ended - self._left - waited - results[0][2])
        self._left = ended
        for ok, value, _ in results:  # the first error in stream order, as one worker would raise
            if not ok:
                raise value
        for who, piece, (_, _, seconds) in zip([-1, *ready], pieces, results, strict=True):
            chars = sum(_size(d) for d in piece)
            if seconds > 1e-3 and chars:
                self._rates[who + 1] = _average(self._rates[who + 1], chars / seconds)
        return join([value for _, value, _ in results], self.data_format)

    def _shares(self, chunk: list, ready: list[int]) -> list[float]:
        """Characters of ``chunk`` for this process and each ready worker, so that all finish
        together: each at the rate it encoded lately (characters per second of its own encoding
        time: on a shared machine one core may run slower than the other), this process less by
        what it does between two chunks (drawing, packing, the caller's own work). Equal pieces
        left one side waiting up to 25% of the time. Handing out many small pieces as they
        finish (tried: 4 and 8 per worker) did worse here: each one is a round trip between
        processes, and the last ones leave a side idle."""
        known = [r for r in self._rates if r is not None]
        guess = sum(known) / len(known) if known else 1.0  # a worker not yet timed
        rates = [r if r is not None else guess for r in self._rates]
        ours, theirs = rates[0], [rates[w + 1] for w in ready]
        if not theirs:
            return [1.0]
        total = sum(_size(d) for d in chunk)
        outside = self._outside or 0.0
        # Seconds until all are done, t: ours * (t - outside) + sum(theirs) * t = total.
        t = (total + ours * outside) / (ours + sum(theirs))
        return [max(ours * (t - outside), 0.0), *(r * t for r in theirs)]

    def _send_setup(self) -> None:
        if not self._sent:
            self._sent = True
            try:
                payload = pickle.dumps(self._setup)
            except (pickle.PicklingError, TypeError, AttributeError):
                # A tokenizer or format that cannot travel (a plugin's, say): threads instead.
                # encode_batch releases the GIL, so they still overlap the Rust part.
                from concurrent.futures import ThreadPoolExecutor

                self.close()
                self._conns, self._procs, self._ready = [], [], []
                self._threads = ThreadPoolExecutor(self.workers, "kerastrain-tokenize")
                self._finalizer = weakref.finalize(self, self._threads.shutdown)
            else:
                for conn in self._conns:  # in the background: a large tokenizer fills the
                    # socket, and this thread encodes alone until the workers are up
                    threading.Thread(target=_send_setup, args=(conn, payload), daemon=True,
                                     name="kerastrain-tokenize-setup").start()

    def _is_ready(self, w: int) -> bool:
        """Whether worker ``w`` has loaded the setup; until then this thread encodes its share."""
        if not self._ready[w] and self._conns[w].poll():
            ok, value, _ = _receive(self._conns[w], self._procs[w], 0)
            if not ok:
                raise value
            self._ready[w] = True
        return self._ready[w]

    def close(self) -> None:
        self._closed = True
        self._finalizer()


def _send_setup(conn: Connection, payload: bytes) -> None:
    try:
        conn.send_bytes(payload)
    except OSError:  # the worker is gone; the pipeline hears of it when it asks
        pass


def _timed(function, *args) -> tuple:
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def _average(old: float | None, new: float) -> float:
    """A moving average: one slow moment does not swing the shares."""
    return new if old is None else 0.7 * old + 0.3 * new


def _receive(conn: Connection, proc: subprocess.Popen, sequence: int) -> tuple:
    """A worker's answer to piece ``sequence`` (0: it is ready): (True, the encoded piece,
    seconds) or (False, the error, 0). Answers to pieces of an abandoned chunk (a pipeline
    iterated again) are skipped."""
    try:
        while True:
            answer, *reply = conn.recv()
            if answer >= sequence:
                return tuple(reply)
    except (EOFError, OSError):
        return False, _exited(proc), 0.0


def _exited(proc: subprocess.Popen):
    from kerastrain.errors import DataError

    return DataError(f"a tokenizer worker (--data-workers) exited with code {proc.wait()}")


def _shutdown(conns: list[Connection], procs: list[subprocess.Popen]) -> None:
    for conn in conns:
        conn.close()  # the worker sees the end of its input and exits
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(fd: int) -> None:
    """A worker's loop: the setup, then one part of a chunk in, its encoding out, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the trainer, which closes us
    conn = Connection(fd)
    try:
        try:
            setup = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            raise
        except Exception as exc:
            conn.send((0, False, RuntimeError(f"a tokenizer worker could not load the "
                                              f"tokenizer: {type(exc).__name__}: {exc}"), 0.0))
            return
        conn.send((0, True, None, 0.0))  # ready
        while True:
            sequence, part = conn.recv()
            try:
                reply = (sequence, True, *_timed(encode_part, part, *setup))
            except Exception as exc:
                reply = (sequence, False, exc, 0.0)
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # unpicklable
                value = reply[2] if not reply[1] else exc
                conn.send((sequence, False, RuntimeError(f"{type(value).__name__}: {value}"),
                           0.0))
    except (EOFError, OSError):  # the trainer closed the socket or is gone
        return
