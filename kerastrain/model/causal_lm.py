"""Text generation: a ``keras_hub.models.CausalLM`` over the GPT with a key/value cache.

``CausalLM.generate`` works without TensorFlow when no preprocessor is attached: it takes a dict
of ``token_ids`` / ``padding_mask`` and compiles :meth:`GPTCausalLM.generate_step` with JAX. We
tokenize ourselves (kerastrain tokenizers are not keras-hub preprocessors), so
:func:`generate_text` does the encode / pad / decode around it.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerastrain.errors import ConfigError
from kerastrain.model.hub import require_keras_hub

keras_hub = require_keras_hub("text generation")  # a one-line error naming the extra if missing


class GPTCausalLM(keras_hub.models.CausalLM):
    """The GPT (``kerastrain.model.gpt.GPT``) as a keras-hub causal LM with cached decoding."""

    def __init__(self, backbone, preprocessor=None, **kwargs):
        self.backbone = backbone
        self.preprocessor = preprocessor
        inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        super().__init__(inputs=inputs, outputs=backbone(inputs), **kwargs)

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Logits, final hidden states and the updated cache for ``token_ids`` at an offset.

        ``cache``: (batch, layers, 2, max_len, heads, head_dim); ``token_ids`` sit at positions
        ``cache_update_index ..`` of the sequence.
        """
        from kerastrain.model.switches import embed, soft_cap

        gpt = self.backbone
        x = embed(gpt.config, gpt.token_embedding, token_ids)
        if gpt.position_embedding is not None:
            x = x + gpt.position_embedding(x, start_index=cache_update_index)
        caches = []
        for i, block in enumerate(gpt.blocks):
            x, layer_cache = block(x, cache=cache[:, i], cache_update_index=cache_update_index)
            caches.append(layer_cache)
        hidden = gpt.final_norm(x)
        logits = ops.cast(gpt.token_embedding(hidden, reverse=True), "float32")
        logits = soft_cap(logits, gpt.config.final_softcap)
        return logits, hidden, ops.stack(caches, axis=1)

    def _build_cache(self, token_ids):
        cfg = self.backbone.config
        batch, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        head_dim = cfg.attention_head_dim
        shape = (batch, cfg.num_layers, 2, length, cfg.num_heads, head_dim)
        cache = ops.zeros(shape, dtype=self.backbone.compute_dtype)
        _, hidden, cache = self.call_with_cache(token_ids, cache, 0)  # seed with the prompt
        return hidden, cache

    def generate_step(self, inputs, stop_token_ids=None):
        """One compiled batch: fill every position not in ``padding_mask`` by sampling."""
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        hidden, cache = self._build_cache(token_ids)
        index = ops.min(ops.sum(ops.cast(padding_mask, "int32"), axis=-1))

        def next_logits(prompt, cache, index):
            # Feed the previous token only; its keys/values join the cache.
            position = index - 1
            batch = ops.shape(prompt)[0]
            last = ops.slice(prompt, [0, position], [batch, 1])
            logits, hidden, cache = self.call_with_cache(last, cache, position)
            return ops.squeeze(logits, axis=1), ops.squeeze(hidden, axis=1), cache

        token_ids = self.sampler(
            next=next_logits,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden,
            model=self,
        )
        if stop_token_ids is not None:
            from keras_hub.src.utils.tensor_utils import any_equal

            # Valid up to and including the first new stop token.
            ends = ops.cast(any_equal(token_ids, stop_token_ids, ops.logical_not(padding_mask)), "int32")
            after = ops.cumsum(ends, axis=-1) - ends
            padding_mask = ops.logical_not(ops.cast(after, "bool"))
        else:
            padding_mask = ops.ones_like(token_ids, dtype="bool")
        return {"token_ids": token_ids, "padding_mask": padding_mask}


def make_sampler(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
):
    """The keras-hub sampler for these options: temperature 0 is greedy; top-p (optionally also
    capped at top-k), top-k, else plain random sampling at ``temperature``."""
    samplers = keras_hub.samplers
    if temperature < 0:
        raise ConfigError("--temperature must be at least 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ConfigError("--top-k must be at least 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError("--top-p must be in (0, 1]")
    if temperature == 0:
        return samplers.GreedySampler()
    if top_p is not None:
        return samplers.TopPSampler(p=top_p, k=top_k, seed=seed, temperature=temperature)
    if top_k is not None:
        return samplers.TopKSampler(k=top_k, seed=seed, temperature=temperature)
    return samplers.RandomSampler(seed=seed, temperature=temperature)


LENGTH_BUCKET = 64  # sequence lengths are rounded up to a multiple of this: one compile each


def bucket_length(length: int, seq_len: int) -> int:
    """The compiled shape for a prompt-plus-new-tokens ``length``: few shapes, few compiles."""
    return min(seq_len, -(-length // LENGTH_BUCKET) * LENGTH_BUCKET)


def causal_lm_for(model, sampler) -> GPTCausalLM:
    """The compiled ``GPTCausalLM`` of ``model`` and ``sampler``, built once and kept.

    keras-hub jits ``generate_step`` once per causal LM and input shape; building a new causal LM
    per call (as before) compiled on every prompt (~11 s on 2 cores). Keeping one per sampler and
    padding to :func:`bucket_length` shapes makes later prompts compile-free.
    """
    cache = model.__dict__.setdefault("_kerastrain_causal_lms", {})
    lm = cache.get(id(sampler))
    if lm is None or lm.sampler is not sampler:
        lm = GPTCausalLM(model)
        lm.compile(sampler=sampler, optimizer=None, loss=None, weighted_metrics=None)
        cache[id(sampler)] = lm
    return lm


def generate_ids(
    model,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler,
    stop_token_ids: tuple[int, ...] | None = None,
) -> list[int]:
    """The new token ids ``model`` (a GPT) samples after ``prompt_ids``.

    The sequence is capped at the model's ``seq_len`` (learned positions end there; RoPE was not
    trained beyond it), so the prompt is cut from the left when it and the new tokens do not fit.
    """
    seq_len = model.config.seq_len
    max_new_tokens = min(max_new_tokens, seq_len - 1)
    prompt_ids = list(prompt_ids)[-(seq_len - max_new_tokens):] or [0]
    length = bucket_length(len(prompt_ids) + max_new_tokens, seq_len)
    # keras-hub's samplers stop once a stop token appears anywhere past the prompt, including
    # the not-yet-generated slots: fill those with an id that is no stop token (EOS is often 0).
    stops = set(stop_token_ids or ())
    fill = next(i for i in range(len(stops) + 1) if i not in stops)
    token_ids = np.full((1, length), fill, "int32")
    token_ids[0, : len(prompt_ids)] = prompt_ids
    mask = np.zeros((1, length), bool)
    mask[0, : len(prompt_ids)] = True
    lm = causal_lm_for(model, sampler)
    out = lm.generate(
        {"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=stop_token_ids
    )
    ids, valid = np.asarray(out["token_ids"])[0], np.asarray(out["padding_mask"])[0]
    # The bucket may be longer than asked for: keep the first max_new_tokens new tokens.
    end = len(prompt_ids) + max_new_tokens
    return [int(t) for t, ok in zip(ids[len(prompt_ids):end], valid[len(prompt_ids):end],
                                    strict=True) if ok]


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

    Pass one ``sampler`` (:func:`make_sampler`) for several prompts so that they share one
    compiled function; ``stats`` (a dict) receives ``new_tokens``, ``seconds`` and
    ``tokens_per_sec`` of this call.
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
