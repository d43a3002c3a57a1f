"""The GPT's forward pass over a key/value cache, and the lengths the decoder compiles for.

Plain Keras ops on the GPT's own layers: the one decoder (:mod:`kerastrain.model.decoder`) and
keras-hub's ``CausalLM`` wrapper (:mod:`kerastrain.model.causal_lm`) both call it, so
``generate``, ``chat`` and ``serve`` start without importing keras-hub.
"""

from __future__ import annotations

from keras import ops

LENGTH_BUCKET = 64  # sequence lengths are rounded up to a multiple of this: one compile each


def call_with_cache(gpt, token_ids, cache, cache_update_index):
    """Logits, final hidden states and the updated cache for ``token_ids`` at an offset.

    ``gpt``: a :class:`kerastrain.model.gpt.GPT`; ``cache``: (batch, layers, 2, max_len, heads,
    head_dim); ``token_ids`` sit at positions ``cache_update_index ..`` of the sequence.
    """
    from kerastrain.model.switches import embed, soft_cap

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


def bucket_length(length: int, seq_len: int) -> int:
    """The compiled shape for a prompt-plus-new-tokens ``length``: few shapes, few compiles."""
    return min(seq_len, -(-length // LENGTH_BUCKET) * LENGTH_BUCKET)
