"""Position information for the GPT: rotary embeddings (RoPE) and learned position embeddings.

Written here rather than taken from keras-hub so that training needs no keras-hub (whose published
requirements pull TensorFlow into a plain ``pip install``). They compute exactly what
``keras_hub.layers.RotaryEmbedding(max_wavelength, sequence_axis=1, feature_axis=-1)`` and
``keras_hub.layers.PositionEmbedding`` compute (tested side by side), with the same weight names,
so checkpoints written with either load into the other.
"""

from __future__ import annotations

import keras
from keras import layers, ops


def segment_positions(segment_ids):
    """(batch, seq) position of each token within its segment (packed examples restart at 0).

    Segments are contiguous runs of equal ids, so a token's position is the number of earlier
    tokens of its segment."""
    same = ops.expand_dims(segment_ids, 2) == ops.expand_dims(segment_ids, 1)  # (b, q, k)
    seq = ops.shape(segment_ids)[1]
    causal = ops.expand_dims(ops.arange(seq), 1) >= ops.expand_dims(ops.arange(seq), 0)
    return ops.sum(ops.cast(same & causal[None], "int32"), axis=-1) - 1


def segment_attention_mask(segment_ids):
    """(batch, 1, seq, seq) causal mask that never crosses a segment boundary."""
    seq = ops.shape(segment_ids)[1]
    same = ops.expand_dims(segment_ids, 2) == ops.expand_dims(segment_ids, 1)
    causal = ops.expand_dims(ops.arange(seq), 1) >= ops.expand_dims(ops.arange(seq), 0)
    return ops.expand_dims(same & causal[None], 1)


@keras.saving.register_keras_serializable(package="kerastrain")
class RotaryEmbedding(layers.Layer):
    """Rotates each (first half, second half) feature pair of ``(batch, seq, heads, head_dim)``
    inputs by an angle proportional to the token's position (RoFormer, "rotate half" layout)."""

    def __init__(self, max_wavelength: int = 10000, scaling_factor: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.scaling_factor = scaling_factor  # linear position scaling (Gemma 3's global layers)
        self.built = True

    def call(self, inputs, start_index=0, positions=None):
        """``positions``: (batch, seq) positions (packed examples), else ``start_index`` + 0.."""
        dim = ops.shape(inputs)[-1]
        seq_len = ops.shape(inputs)[1]
        inverse_freq = ops.power(
            ops.cast(self.max_wavelength, "float32"),
            -(ops.arange(0, dim, 2, dtype="float32") / ops.cast(dim, "float32")),
        )
        if positions is None:
            positions = ops.arange(seq_len, dtype="float32") + ops.cast(start_index, "float32")
            positions = positions[None, :]  # (1, seq)
        positions = ops.cast(positions, "float32")
        if self.scaling_factor != 1.0:
            positions = positions / self.scaling_factor
        freq = ops.einsum("bi,j->bij", positions, inverse_freq)  # (batch or 1, seq, dim/2)
        angles = ops.concatenate([freq, freq], axis=-1)[:, :, None, :]  # (b, seq, 1, dim)
        cos = ops.cast(ops.cos(angles), self.compute_dtype)
        sin = ops.cast(ops.sin(angles), self.compute_dtype)
        first, second = ops.split(inputs, 2, axis=-1)
        rotated = ops.concatenate([-second, first], axis=-1)
        return inputs * cos + rotated * sin

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength,
                "scaling_factor": self.scaling_factor}


@keras.saving.register_keras_serializable(package="kerastrain")
class PositionEmbedding(layers.Layer):
    """A learned vector per position (up to ``sequence_length``), broadcast over the batch."""

    def __init__(self, sequence_length: int, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)
        self.initializer = keras.initializers.get(initializer)
        # Packed rows: positions restart at each example (the model passes segment_ids down).
        self._register_call_context_args("segment_ids")

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=[self.sequence_length, input_shape[-1]],
            initializer=self.initializer,
            trainable=True,
        )
        self.built = True

    def call(self, inputs, start_index=0, segment_ids=None):
        shape = ops.shape(inputs)
        if segment_ids is not None:
            table = ops.convert_to_tensor(self.position_embeddings)
            return ops.take(table, segment_positions(segment_ids), axis=0)
        table = ops.slice(
            ops.convert_to_tensor(self.position_embeddings), (start_index, 0), (shape[-2], shape[-1])
        )
        return ops.broadcast_to(table, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }
