"""The GPT as a keras-hub causal LM with a key/value cache, and text generation through it.

:meth:`GPTCausalLM.call_with_cache` is the cached forward pass the one decoder
(:mod:`kerastrain.model.decoder`) compiles; :func:`generate_ids` / :func:`generate_text` are the
plain-function front of that decoder (we tokenize ourselves: kerastrain tokenizers are not
keras-hub preprocessors).
"""

from __future__ import annotations

import keras
from keras import ops

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


LENGTH_BUCKET = 64  # sequence lengths are rounded up to a multiple of this: one compile each


def bucket_length(length: int, seq_len: int) -> int:
    """The compiled shape for a prompt-plus-new-tokens ``length``: few shapes, few compiles."""
    return min(seq_len, -(-length // LENGTH_BUCKET) * LENGTH_BUCKET)


def generate_ids(
    model,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler,
    stop_token_ids: tuple[int, ...] | None = None,
) -> list[int]:
    """The new token ids ``model`` (a GPT) samples after ``prompt_ids`` with ``sampler`` (a
    :class:`~kerastrain.model.decoder.Sampling`), through the one decoder
    (:mod:`kerastrain.model.decoder`); the first stop token is kept and ends them.

    The sequence is capped at the model's ``seq_len`` (learned positions end there; RoPE was not
    trained beyond it), so the prompt is cut from the left when it and the new tokens do not fit.
    """
    from kerastrain.model.decoder import decoder_for, fit_prompt

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

    Pass one ``sampler`` (:func:`~kerastrain.model.decoder.make_sampler`) for several prompts;
    ``stats`` (a dict) receives ``new_tokens``, ``seconds`` and ``tokens_per_sec`` of this call.
    """
    import time

    prompt_ids = tokenizer.encode_batch([prompt])[0]
    from kerastrain.model.decoder import make_sampler

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
