"""The GPT as a keras-hub causal LM with a key/value cache (keras-hub's ``generate`` and
samplers). Its cached forward pass is :func:`kerastrain.model.kv_cache.call_with_cache`, which
the one decoder (:mod:`kerastrain.model.decoder`) calls without keras-hub.
"""

from __future__ import annotations

import keras
from keras import ops

from kerastrain.model.hub import require_keras_hub
from kerastrain.model.kv_cache import call_with_cache

keras_hub = require_keras_hub("text generation")  # a one-line error naming the extra if missing


class GPTCausalLM(keras_hub.models.CausalLM):
    """The GPT (``kerastrain.model.gpt.GPT``) as a keras-hub causal LM with cached decoding."""

    def __init__(self, backbone, preprocessor=None, **kwargs):
        self.backbone = backbone
        self.preprocessor = preprocessor
        inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        super().__init__(inputs=inputs, outputs=backbone(inputs), **kwargs)

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Logits, final hidden states and the updated cache (:func:`kv_cache.call_with_cache`)."""
        return call_with_cache(self.backbone, token_ids, cache, cache_update_index)

    def _build_cache(self, token_ids):
        cfg = self.backbone.config
        batch, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        head_dim = cfg.attention_head_dim
        shape = (batch, cfg.num_layers, 2, length, cfg.num_heads, head_dim)
        cache = ops.zeros(shape, dtype=self.backbone.compute_dtype)
        _, hidden, cache = self.call_with_cache(token_ids, cache, 0)  # seed with the prompt
        return hidden, cache
