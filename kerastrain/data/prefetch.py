"""A background thread that keeps a few batches ready, so the training step does not wait."""

from __future__ import annotations

import queue
import threading
import time


class Prefetcher:
    """Runs an iterator in a background thread, ``depth`` items ahead.

    Tokenization (Rust, GIL released) then overlaps the jitted training step. Exceptions raised
    in the worker are re-raised in the consumer. ``wait_seconds`` adds up the time the consumer
    spent blocked, which is what the data-wait benchmark reports.
    """

    _END = object()

    def __init__(self, iterable, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.wait_seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(iter(iterable),), daemon=True)
        self._thread.start()

    def _run(self, it) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)

    def _put(self, item) -> bool:
        """Queue ``item``, waking up to notice ``close()``; False once closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        item = self._queue.get()
        self.wait_seconds += time.perf_counter() - start
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
