"""One thread owns the decoder; requests from any number of HTTP handlers join its batch.

Batching is per step (continuous): between two decoder steps the thread admits waiting requests
into free slots (a prefill each) and drops cancelled ones, so a request never waits for another
to finish, only for a free slot. Tokens go back to each handler's asyncio loop through
``call_soon_threadsafe``; the decoder itself is only ever touched by this thread.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable

from kerastrain.model.decoder import Decoder, Request

Sink = Callable[[object], None]


class BatchingEngine:
    """Runs :class:`Decoder` steps while any request is active; idle, it waits for one."""

    def __init__(self, model, slots: int = 8) -> None:
        self.decoder = Decoder(model, slots)
        self._inbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="kerastrain-decoder", daemon=True)
        self._thread.start()

    def submit(self, request: Request, sink: Sink) -> None:
        """Decode ``request``; ``sink`` receives each Token, then None (done) or an exception."""
        self._inbox.put(("add", request, sink))

    def cancel(self, request: Request) -> None:
        """Free the request's slot (its client went away)."""
        self._inbox.put(("cancel", request, None))

    def _loop(self) -> None:
        waiting: deque = deque()
        sinks: dict[int, Sink] = {}
        while True:
            idle = not waiting and self.decoder.free_slots() == self.decoder.slots
            try:
                item = self._inbox.get(block=idle)
            except queue.Empty:
                item = None
            while item is not None:
                kind, request, sink = item
                if kind == "add":
                    waiting.append((request, sink))
                else:
                    waiting = deque(w for w in waiting if w[0] is not request)
                    self.decoder.release(request)
                    sinks.pop(id(request), None)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            while waiting and self.decoder.free_slots():
                request, sink = waiting.popleft()
                try:
                    first = self.decoder.add(request)
                except Exception as exc:  # a bad prompt fails its own request only
                    sink(exc)
                    continue
                if first is not None:
                    sink(first)
                if request.finish_reason is None:
                    sinks[id(request)] = sink
                else:
                    sink(None)
            try:
                stepped = self.decoder.step()
            except Exception as exc:  # fail the requests in the batch, keep serving the next ones
                for request in [r for r in self.decoder.active if r is not None]:
                    self.decoder.release(request, "error")
                    sinks.pop(id(request))(exc)
                continue
            for request, token in stepped:
                sink = sinks[id(request)]
                sink(token)
                if request.finish_reason is not None:
                    sinks.pop(id(request))
                    sink(None)


async def tokens(engine: BatchingEngine, requests: list[Request]) -> AsyncIterator[tuple[int, object]]:
    """(index, Token) for ``requests`` as they are sampled, interleaved; ends when all are done.
    Leaving early (the client disconnected, a stop string matched) frees their slots."""
    import asyncio

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()
    for i, request in enumerate(requests):
        engine.submit(request, lambda item, i=i: loop.call_soon_threadsafe(inbox.put_nowait, (i, item)))
    running = len(requests)
    try:
        while running:
            i, item = await inbox.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for request in requests:
            if request.finish_reason is None:
                engine.cancel(request)
