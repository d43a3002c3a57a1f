"""Documents in chunks for the tokenizer, handed out ahead of the packing.

The pipeline encodes documents a chunk at a time (one ``encode_batch`` call, or one per worker
piece). ``CHUNKS_AHEAD`` chunks are drawn and handed to the encoder
(:mod:`kerastrain.data.tokenize_workers`) before the oldest is packed, so worker processes
encode while this process draws and packs, and a piece that took a worker longer than usual
does not leave this process waiting (measured: with one chunk ahead this process waited ~10%
of the time; with two, under 1%). Each chunk carries the position right after it was drawn,
and a batch saves the position of the chunk it ends in, so batches and saved states are those
of one chunk at a time, for any number of workers (tested).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

ENCODE_CHUNK_DOCS = 256  # documents per encode_batch call: large enough to amortize the call
# ... or fewer, once a chunk holds this many characters: the tokens of a chunk not yet packed are
# part of the saved state, and 256 web pages of 4 KB made ~450 KB of it (bench_pipeline.py
# --state-bytes); 128K characters still amortize the call (~30 pages of 4 KB).
ENCODE_CHUNK_CHARS = 1 << 17
CHUNKS_AHEAD = 2  # chunks handed to the encoder before the first is packed


def next_chunk(docs: Iterator, tagged: bool) -> list:
    """The next chunk of documents: ``ENCODE_CHUNK_DOCS``, or fewer once it holds
    ``ENCODE_CHUNK_CHARS`` characters (``tagged``: a mixture's ``[tag, document]``). The same
    for any number of workers (they split a chunk), so the stream is read as far ahead and the
    saved state is the same; an empty list: the epoch has ended."""
    chunk, chars = [], 0
    while len(chunk) < ENCODE_CHUNK_DOCS and chars < ENCODE_CHUNK_CHARS:
        doc = next(docs, None)
        if doc is None:
            break
        chunk.append(doc)
        text = doc[1] if tagged else doc
        # A record (not text) counts as an average document.
        chars += len(text) if isinstance(text, str) else ENCODE_CHUNK_CHARS // ENCODE_CHUNK_DOCS
    return chunk


def encoded_chunks(draw: Callable[[], list], position: Callable[[], dict],
                   encoder: Callable) -> Iterator[tuple[list, list, dict]]:
    """``(chunk, its encoding, position())`` for each chunk ``draw()`` gives until an empty
    one; ``position()`` is taken right after each draw, ``encoder()`` is the encoder now (a
    chunk is finished by the one that started it: the pipeline may close its workers)."""
    ahead: collections.deque = collections.deque()  # drawn and handed out, not yet finished

    def more() -> None:
        chunk = draw()
        if chunk:
            now = encoder()
            ahead.append((chunk, position(), now, now.start(chunk)))

    for _ in range(CHUNKS_AHEAD):
        more()
    while ahead:
        chunk, after, by, started = ahead.popleft()
        encoded = by.finish(started)
        more()
        yield chunk, encoded, after
