"""Built-in plugin: a short sample generated from a fixed prompt while training.

``--sample-every N`` samples every N updates; without it, one sample follows each evaluation
when a terminal is attached (``--sample-every 0``: never). Each sample is printed and logged as
the loop logs its metrics (``run.log_metrics``: ``metrics.jsonl`` gets ``{"kind": "sample",
"step", "time", "prompt", "text"}`` and trackers the same record), so a user watches what the
model learns long before the run ends.

Generation reads the loop's current weights (``run.state``) through ``model.stateless_call``:
the Keras variables are only written back at checkpoints. It re-runs the whole window for each
new token (no KV cache), which for a 48-token sample costs far less than one evaluation.
"""

from __future__ import annotations

from kerastrain.hookspecs import hookimpl

NEW_TOKENS = 48
TOP_K = 10
SEED = 0  # the same draws at every sample: differences come from the weights alone


class Sampler:
    """Jitted next-token logits over a fixed (1, seq_len) window, top-k sampling on the host."""

    def __init__(self, model, seq_len: int) -> None:
        import jax
        import keras

        self.seq_len = seq_len

        def logits_at(trainable, non_trainable, ids, index):
            logits, _ = model.stateless_call(trainable, non_trainable, ids, training=False)
            return keras.ops.cast(logits[0, index], "float32")

        self.logits_at = jax.jit(logits_at)

    def generate(self, state, ids: list[int], new_tokens: int) -> list[int]:
        import numpy as np

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


def sample(run, step: int) -> str | None:
    """Generate, print and log one sample at ``step``; returns its text."""
    if run.state is None or run.tokenizer is None:
        return None
    cfg = run.config
    sampler = run.plugin_state.get(__name__)  # jitted once per run
    if sampler is None:
        sampler = run.plugin_state[__name__] = Sampler(run.model, cfg.model.seq_len)
    prompt = cfg.output.sample_prompt
    ids = run.tokenizer.encode_batch([prompt])[0] or [0]
    new = sampler.generate(run.state, ids, min(NEW_TOKENS, cfg.model.seq_len - 1))
    text = run.tokenizer.decode(new)
    run.say(f"step {step} sample: {_escape(prompt)}[bold]{_escape(text)}[/]")
    run.log_metrics("sample", step, {"prompt": prompt, "text": text})
    return text


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@hookimpl
def on_train_step(run, step, logs):
    every = run.config.output.sample_every
    if every and step % every == 0:
        sample(run, step)


@hookimpl
def on_evaluate(run, step, logs):
    every = run.config.output.sample_every
    if every is None and getattr(run.console, "is_terminal", False):
        sample(run, step)


@hookimpl
def on_train_end(run, logs):
    run.plugin_state.pop(__name__, None)
