"""A short sample generated from a fixed prompt while training.

``--sample-every N`` samples every N updates; without it, one sample follows each evaluation
when a terminal is attached (``--sample-every 0``: never). Each sample is printed and logged as
the loop logs its metrics (``metrics.jsonl`` gets ``{"kind": "sample",
"step", "time", "prompt", "text"}`` and trackers the same record), so a user watches what the
model learns long before the run ends.

Generation reads the loop's current weights (its state) through ``model.stateless_call``:
the Keras variables are only written back at checkpoints. It re-runs the whole window for each
new token (no KV cache), which for a 48-token sample costs far less than one evaluation.
"""

from __future__ import annotations

import jax
import keras
import numpy as np
from rich.markup import escape

NEW_TOKENS = 48
TOP_K = 10
SEED = 0  # the same draws at every sample: differences come from the weights alone


class Sampler:
    """Jitted next-token logits over a fixed (1, seq_len) window, top-k sampling on the host."""

    def __init__(self, model, seq_len: int) -> None:
        self.seq_len = seq_len

        def logits_at(trainable, non_trainable, ids, index):
            logits, _ = model.stateless_call(trainable, non_trainable, ids, training=False)
            return keras.ops.cast(logits[0, index], "float32")

        self.logits_at = jax.jit(logits_at)

    def generate(self, state, ids: list[int], new_tokens: int) -> list[int]:
        trainable, non_trainable = state[0], state[1]
        rng = np.random.default_rng(SEED)
        ids = list(ids)[-(self.seq_len - 1):]
        out: list[int] = []
        for _ in range(new_tokens):
            window = (ids + out)[-self.seq_len:]
            padded = np.zeros((1, self.seq_len), dtype="int32")
            padded[0, :len(window)] = window  # causal: padding after the last token is unseen
            logits = np.asarray(self.logits_at(trainable, non_trainable, padded, len(window) - 1))
            top = np.argpartition(logits, -TOP_K)[-TOP_K:]
            p = np.exp(logits[top] - logits[top].max())
            out.append(int(rng.choice(top, p=p / p.sum())))
        return out


class Samples:
    """When and what to sample: ``--sample-every N`` after every N-th update; without it, after
    each evaluation when ``terminal``. ``say`` prints, ``log(kind, step, values)`` logs."""

    def __init__(self, model, tokenizer, config, say, log, terminal: bool) -> None:
        self.model, self.tokenizer, self.say, self.log = model, tokenizer, say, log
        self.every, self.prompt = config.output.sample_every, config.output.sample_prompt
        self.seq_len, self.terminal = config.model.seq_len, terminal
        self.sampler: Sampler | None = None  # jitted at the first sample

    def after_update(self, step: int, state) -> None:
        if self.every and step % self.every == 0:
            self.sample(step, state)

    def after_evaluation(self, step: int, state) -> None:
        if self.every is None and self.terminal:
            self.sample(step, state)

    def sample(self, step: int, state) -> str | None:
        """Generate, print and log one sample at ``step`` from ``state``; returns its text."""
        if self.tokenizer is None:
            return None
        if self.sampler is None:
            self.sampler = Sampler(self.model, self.seq_len)
        ids = self.tokenizer.encode_batch([self.prompt])[0] or [0]
        new = self.sampler.generate(state, ids, min(NEW_TOKENS, self.seq_len - 1))
        text = self.tokenizer.decode(new)
        self.say(f"step {step} sample: {_escape(self.prompt)}[bold]{_escape(text)}[/]")
        self.log("sample", step, {"prompt": self.prompt, "text": text})
        return text


def _escape(text: str) -> str:
    return escape(text)
