"""A bounded shuffle buffer over packed windows, so that one batch draws from many documents.

Packing cuts the token stream into consecutive windows; without this buffer a batch is
``batch_size`` *consecutive* windows, and with long documents (books, ~20 windows each) every
batch comes from one document, which makes the gradient much noisier than it needs to be. HF
``run_clm`` shuffles packed blocks, Levanter and MaxText shuffle sequences, nanoGPT samples random
offsets; this is the streaming equivalent with bounded memory (``size`` windows).

The buffer contents and its RNG state are part of :class:`kerastrain.data.pipeline.PipelineState`,
so a resumed run draws exactly the windows an uninterrupted one would have drawn.
"""

from __future__ import annotations

import numpy as np


class WindowShuffleBuffer:
    """Holds up to ``size`` windows; ``draw(n)`` takes ``n`` of them uniformly at random."""

    def __init__(self, size: int, window: int, seed: int, windows=None, rng_state: dict | None = None):
        self.size = size
        self.window = window
        held = np.asarray(windows if windows is not None else [], dtype=np.int32)
        self.windows = held.reshape(-1, window)
        # The RNG is seeded once per run (not per epoch): the stream of windows is continuous.
        self.rng = np.random.default_rng([seed, 0x5EED])
        if rng_state is not None:
            self.rng.bit_generator.state = rng_state

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def room(self) -> int:
        return max(0, self.size - len(self.windows))

    def add(self, windows: np.ndarray) -> None:
        if len(windows):
            self.windows = np.concatenate([self.windows, windows.astype(np.int32, copy=False)])

    def draw(self, n: int) -> np.ndarray:
        """``n`` windows chosen without replacement; the rest stay (order kept, so state is exact)."""
        n = min(n, len(self.windows))
        picked = self.rng.choice(len(self.windows), size=n, replace=False)
        out = self.windows[picked]
        self.windows = np.delete(self.windows, picked, axis=0)
        return out

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state
