"""The GPT as a keras-hub causal LM with a key/value cache.

:meth:`GPTCausalLM.call_with_cache` is the cached forward pass the one decoder
(:mod:`kerastrain.model.decoder`, with ``generate_ids`` / ``generate_text``) compiles.
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
