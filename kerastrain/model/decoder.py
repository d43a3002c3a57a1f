"""The one decoding engine: KV-cache prefill, a one-token step over a fixed set of slots, sampling.

``generate``, ``chat`` and ``kerastrain serve`` all decode through :class:`Decoder`. The cache
holds ``slots`` sequences of the model's full ``seq_len``; each slot sits at its own position, so
requests of different lengths (and requests that arrive while others decode) share one compiled
step: the step is :func:`jax.vmap` of :func:`~kerastrain.model.kv_cache.call_with_cache` over the
slots, each with its own position. Busy slots are kept packed at the front and a step covers only the first
power of two of them (one compile each), so a lone request does not pay for every slot. A prompt
is prefilled alone (compiled once per length bucket) and its cache row copied into a free slot.
Both functions take the weights as arguments (stateless), so they are not baked into the
program as constants.

Sampling happens on the host per request from the log-softmax of the logits (float64): each request
has its own temperature / top-k / top-p and its own seeded generator, so a request's tokens do not
depend on what else is in the batch (8 concurrent requests give what 8 sequential ones give).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import jax
import keras
import numpy as np

from kerastrain.errors import ConfigError
from kerastrain.model.kv_cache import bucket_length, call_with_cache


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: temperature 0 is greedy (argmax)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError("--temperature must be at least 0 (0 means greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError("--top-k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError("--top-p must be in (0, 1]")

    def choose(self, logprobs: np.ndarray, rng: np.random.Generator) -> int:
        if self.temperature == 0:
            return int(np.argmax(logprobs))
        scaled = logprobs / self.temperature
        order = np.argsort(-scaled, kind="stable")
        if self.top_k is not None:
            order = order[: self.top_k]
        probs = np.exp(scaled[order] - scaled[order[0]])
        probs /= probs.sum()
        if self.top_p is not None:
            # Keep the most likely tokens until their mass reaches top_p (the first always).
            keep = max(1, int(np.searchsorted(np.cumsum(probs), self.top_p) + 1))
            order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
        return int(order[rng.choice(len(order), p=probs)])


def make_sampler(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None) -> Sampling:
    """The :class:`Sampling` of these options (bad values raise :class:`ConfigError`)."""
    return Sampling(temperature, top_k, top_p, seed)


@dataclass
class Token:
    """One sampled token: its id, its log-probability and the ``top`` most likely alternatives."""

    id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass(eq=False)
class Request:
    """One sequence to decode. ``echo``: also score the prompt (``prompt_logprobs``)."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling = Sampling(temperature=0)
    stop_ids: tuple[int, ...] = ()
    top_logprobs: int = 0
    echo: bool = False
    prompt_logprobs: list[float | None] = field(default_factory=list)
    prompt_top: list[list[tuple[int, float]]] = field(default_factory=list)
    new: list[Token] = field(default_factory=list)
    finish_reason: str | None = None

    def __post_init__(self):
        self.rng = np.random.default_rng(self.sampling.seed)
        self.slot: int | None = None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, "float64")
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class Decoder:
    """Decodes up to ``slots`` requests at once, one token per request per :meth:`step`."""

    def __init__(self, model, slots: int = 1) -> None:
        self.model = model
        self.slots = slots
        self.seq_len = model.config.seq_len
        variables = model.variables
        cfg = model.config
        row_shape = (cfg.num_layers, 2, self.seq_len, cfg.num_heads, cfg.attention_head_dim)
        dtype = model.compute_dtype

        def stateless(fn, **jit):
            def run(values, *args):
                with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                    return fn(*args)

            return jax.jit(run, **jit)

        def prefill(ids):  # (1, bucket) -> logits of every prompt position, the cache row
            cache = keras.ops.zeros((1, *row_shape), dtype=dtype)
            logits, _, cache = call_with_cache(model, ids, cache, 0)
            return logits[0], cache[0]

        def step(tokens, cache, positions):  # each slot feeds its last token at its position
            def one(token, row, position):
                logits, _, row = call_with_cache(model, token[None, None], row[None],
                                                 position)
                return logits[0, -1], row[0]

            # Only the first len(tokens) slots (the busy ones, kept packed): one compile per
            # power of two, so a lone request does not pay for every slot.
            logits, rows = jax.vmap(one)(tokens, cache[: tokens.shape[0]], positions)
            return logits, jax.lax.dynamic_update_slice_in_dim(cache, rows, 0, axis=0)

        self._prefill = stateless(prefill)
        self._step = stateless(step, donate_argnums=(2,))
        self._insert = jax.jit(lambda cache, row, slot: cache.at[slot].set(row), donate_argnums=0)
        self._move = jax.jit(lambda cache, src, dst: cache.at[dst].set(cache[src]),
                             donate_argnums=0)
        self._variables = variables
        # Committed to a device from the start, as the rows inserted into it are when the weights
        # were read from a checkpoint: otherwise the second insert compiles again.
        self.cache = jax.device_put(jax.numpy.zeros((slots, *row_shape), dtype=dtype),
                                    jax.local_devices()[0])
        self.active: list[Request | None] = [None] * slots

    def free_slots(self) -> int:
        return self.active.count(None)

    def add(self, request: Request) -> Token | None:
        """Prefill ``request`` into a free slot; returns its first new token (None if it asks for
        none, e.g. only scoring its prompt)."""
        n = len(request.prompt_ids)
        if not 0 < n < self.seq_len:
            raise ConfigError(f"the prompt has {n} tokens; this model reads 1 to {self.seq_len - 1}")
        request.max_new_tokens = min(request.max_new_tokens, self.seq_len - n)
        ids = np.zeros((1, bucket_length(n, self.seq_len)), "int32")
        ids[0, :n] = request.prompt_ids
        logits, row = self._prefill([v.value for v in self._variables], ids)
        logprobs = log_softmax(np.asarray(logits[n - 1]))
        if request.echo:
            every = log_softmax(np.asarray(logits[: n - 1]))
            request.prompt_logprobs = [None] + [float(every[i, t]) for i, t in
                                                enumerate(request.prompt_ids[1:])]
            if request.top_logprobs:  # lm-eval's is_greedy reads these for the prompt too
                best = np.argsort(-every, axis=-1, kind="stable")[:, : request.top_logprobs]
                request.prompt_top = [[]] + [[(int(i), float(row[i])) for i in ids]
                                             for row, ids in zip(every, best, strict=True)]
        if request.max_new_tokens <= 0:
            request.finish_reason = "length"
            return None
        slot = self.active.index(None)
        self.cache = self._insert(self.cache, row, slot)
        request.slot = slot
        self.active[slot] = request
        return self._take(request, logprobs)

    def _take(self, request: Request, logprobs: np.ndarray) -> Token:
        chosen = request.sampling.choose(logprobs, request.rng)
        top = []
        if request.top_logprobs:
            best = np.argsort(-logprobs, kind="stable")[: request.top_logprobs]
            top = [(int(i), float(logprobs[i])) for i in best]
        token = Token(chosen, float(logprobs[chosen]), top)
        request.new.append(token)
        if chosen in request.stop_ids:
            self.release(request, "stop")
        elif len(request.new) >= request.max_new_tokens:
            self.release(request, "length")
        return token

    def release(self, request: Request, reason: str = "cancelled") -> None:
        """Free the request's slot (finished, or its client went away)."""
        slot = request.slot
        if slot is not None and self.active[slot] is request:
            self.active[slot] = None
            last = max((i for i, r in enumerate(self.active) if r is not None), default=-1)
            if last > slot:  # keep the busy slots packed at the front: move the last one here
                self.cache = self._move(self.cache, last, slot)
                self.active[slot], self.active[last] = self.active[last], None
                self.active[slot].slot = slot
        request.slot = None
        request.finish_reason = request.finish_reason or reason

    def step(self) -> list[tuple[Request, Token]]:
        """One token for every active request."""
        live = [(r, r.slot) for r in self.active if r is not None]
        if not live:
            return []
        width = min(self.slots, 1 << (len(live) - 1).bit_length())
        tokens = np.zeros(width, "int32")
        positions = np.zeros(width, "int32")
        for r, slot in live:
            tokens[slot] = r.new[-1].id
            positions[slot] = len(r.prompt_ids) + len(r.new) - 1
        logits, self.cache = self._step([v.value for v in self._variables], tokens, self.cache,
                                        positions)
        logprobs = log_softmax(np.asarray(logits))
        # Slots as they were at the step: a request finishing here may move another one.
        return [(r, self._take(r, logprobs[slot])) for r, slot in live]

    def run(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Token]]:
        """Decode ``requests`` (any lengths) batched over the slots; yields each token as sampled."""
        waiting = list(requests)
        while waiting or any(r is not None for r in self.active):
            while waiting and self.free_slots():
                request = waiting.pop(0)
                first = self.add(request)
                if first is not None:
                    yield request, first
            yield from self.step()

    def stream(self, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling,
               stop_ids: tuple[int, ...] = ()) -> Iterator[int]:
        """The new ids of one prompt, one at a time; a stop id is yielded and ends the stream."""
        request = Request(list(prompt_ids), max_new_tokens, sampling, tuple(stop_ids))
        for _, token in self.run([request]):
            yield token.id


def fit_prompt(prompt_ids, max_new_tokens: int, seq_len: int) -> tuple[list[int], int]:
    """(prompt, new tokens) cut to fit ``seq_len``: the prompt loses its oldest tokens (terminal
    commands keep going; the server rejects a prompt too long instead)."""
    max_new_tokens = min(max_new_tokens, seq_len - 1)
    return list(prompt_ids)[-(seq_len - max_new_tokens):] or [0], max_new_tokens


def decoder_for(model) -> Decoder:
    """The one-slot decoder of ``model``, built once and kept (its compiled functions with it)."""
    decoder = model.__dict__.get("_kerastrain_decoder")
    if decoder is None:
        decoder = model.__dict__["_kerastrain_decoder"] = Decoder(model)
    return decoder


def generate_ids(
    model,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler,
    stop_token_ids: tuple[int, ...] | None = None,
) -> list[int]:
    """The new token ids ``model`` (a GPT) samples after ``prompt_ids`` with ``sampler`` (a
    :class:`Sampling`), through the one decoder; the first stop token is kept and ends them.

    The sequence is capped at the model's ``seq_len`` (learned positions end there; RoPE was not
    trained beyond it), so the prompt is cut from the left when it and the new tokens do not fit.
    """
    prompt_ids, max_new_tokens = fit_prompt(prompt_ids, max_new_tokens, model.config.seq_len)
    return list(decoder_for(model).stream(prompt_ids, max_new_tokens, sampler,
                                          tuple(stop_token_ids or ())))


def generate_text(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    sampler=None,
    stats: dict | None = None,
) -> str:
    """Prompt plus sampled continuation, decoded; the same seed gives the same text.

    Pass one ``sampler`` (:func:`make_sampler`) for several prompts;
    ``stats`` (a dict) receives ``new_tokens``, ``seconds`` and ``tokens_per_sec`` of this call.
    """
    import time

    prompt_ids = tokenizer.encode_batch([prompt])[0]
    sampler = sampler or make_sampler(temperature, top_k, top_p, seed)
    start = time.perf_counter()
    eos = getattr(tokenizer, "eos_id", None)
    new = generate_ids(model, prompt_ids, max_new_tokens, sampler, (eos,) if eos is not None else None)
    if stats is not None:
        seconds = time.perf_counter() - start
        stats.update(new_tokens=len(new), seconds=seconds, tokens_per_sec=len(new) / seconds)
    if eos is not None and new and new[-1] == eos:
        new = new[:-1]
    return prompt + tokenizer.decode(new)


def stream_text(pieces_of: Iterable[int], tokenizer, stop_ids: tuple[int, ...] = ()) -> Iterator[str]:
    """The decoded text of new token ids, piece by piece (stop ids are not shown).

    Pieces are the growth of the decoded text, so a character split over several byte-level
    tokens appears once it is whole (the partial character decodes to U+FFFD and is held back).
    """
    new: list[int] = []
    shown = ""
    for token in pieces_of:
        if token in stop_ids:
            break
        new.append(token)
        text = tokenizer.decode(new)
        if text.endswith("\ufffd"):
            continue
        if text.startswith(shown):
            yield text[len(shown):]
            shown = text
    text = tokenizer.decode(new)
    if text.startswith(shown) and len(text) > len(shown):
        yield text[len(shown):]
