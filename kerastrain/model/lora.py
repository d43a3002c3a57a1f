"""LoRA fine-tuning: adapters on the attention and MLP projections, everything else frozen.

Keras trap: ``save_weights`` on a LoRA-enabled ``Dense`` writes the *merged* kernel
(``kernel + a @ b * alpha / rank``) and no adapter matrices, and ``load_weights`` assigns that
merged kernel to the base kernel while leaving the adapters as they are, so a naive resume applies
the adapters twice. Checkpoints therefore hold base kernels and adapters as separate arrays (Orbax
state, :mod:`kerastrain.model.sharded_weights`); :func:`merge_lora` folds adapters into the base
kernels for inference.
"""

from __future__ import annotations

import keras
import numpy as np

from kerastrain.model.families import PROJECTIONS

# The projection layers that take adapters, by their layer name inside a block: the layers the
# family table maps every family's projections onto (``q_proj``, ``c_attn``, ``gate_up_proj``...).
LORA_TARGETS = tuple(PROJECTIONS)


def lora_layers(model: keras.Model, enabled: bool = False) -> list[keras.layers.Layer]:
    """The Dense/EinsumDense projection layers inside the transformer blocks (``enabled``: only
    those with LoRA on)."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)) and (
            layer.name in LORA_TARGETS
        ) and (not enabled or getattr(layer, "lora_enabled", False)):
            found.append(layer)
    return found


def apply_lora(model: keras.Model, rank: int, alpha: float | None = None) -> int:
    """Enable rank-``rank`` LoRA on every projection and freeze all other weights.

    Returns the number of trainable parameters afterwards. Compile the model after calling this:
    a compiled train step captures the trainable variables of the moment.
    """
    targets = lora_layers(model)
    for layer in targets:
        if not layer.lora_enabled:
            layer.enable_lora(rank, lora_alpha=alpha)
        if layer.bias is not None:  # enable_lora freezes the kernel only
            layer.bias.trainable = False
    # Freeze leaf layers only: setting ``trainable`` on a parent would also freeze the adapters.
    target_ids = {id(layer) for layer in targets}
    for layer in model._flatten_layers(include_self=False):
        if id(layer) not in target_ids and not list(layer._flatten_layers(include_self=False)):
            layer.trainable = False
    return sum(int(keras.ops.size(v)) for v in model.trainable_variables)


def merged_kernel(layer) -> np.ndarray:
    """``kernel + (alpha / rank) * a @ b`` of a LoRA-enabled Dense layer, as float32 numpy."""
    delta = np.asarray(layer.lora_kernel_a.value) @ np.asarray(layer.lora_kernel_b.value)
    scale = layer.lora_alpha / layer.lora_rank
    return (np.asarray(layer._kernel.value) + scale * delta).astype("float32")


def merge_lora(model: keras.Model) -> int:
    """Fold each adapter into its base kernel and reset the adapter to zero; returns layers merged.

    The layer keeps its (now zero) adapter so the model's variable set does not change; the
    result computes exactly what the adapted model computed.
    """
    merged = 0
    for layer in lora_layers(model):
        if not getattr(layer, "lora_enabled", False):
            continue
        layer._kernel.assign(merged_kernel(layer))
        layer.lora_kernel_b.assign(np.zeros(layer.lora_kernel_b.shape, "float32"))
        merged += 1
    return merged
