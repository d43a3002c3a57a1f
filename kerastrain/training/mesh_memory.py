"""The memory planner on a device mesh: bytes per device with FSDP and tensor parallel.

``--batch-size`` is per device, so one device of a ``data × fsdp × tensor`` mesh holds:
weights, gradients, AdamW moments (and the accumulator) split over ``fsdp × tensor`` (every matrix
is sharded over both axes by :func:`kerastrain.training.distribution.layout_rules`), and the
activations of the rows its tensor-parallel group shares (``batch_size × tensor``) with the
attention heads, MLP columns and logits split ``tensor`` ways; the residual stream stays whole.
No keras import: ``kerastrain plan`` stays fast.
"""

from __future__ import annotations

import dataclasses

from kerastrain.config import RunConfig
from kerastrain.training.distribution import MeshShape
from kerastrain.training.planner import MemoryPlan, activation_bytes, plan_memory


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def plan_mesh_memory(cfg: RunConfig, shape: MeshShape,
                     batch_per_device: int | None = None) -> MemoryPlan:
    """Bytes per device of ``cfg`` on ``shape`` with ``batch_per_device`` rows per device."""
    batch = batch_per_device if batch_per_device is not None else cfg.train.batch_size
    tp, shards = shape.model, shape.fsdp * shape.model
    rows = batch * tp  # a tensor-parallel group works on the same rows
    whole = plan_memory(cfg, batch_size=rows)
    m = cfg.model
    split = dataclasses.replace(
        m, num_heads=max(1, m.num_heads // tp), d_ff=max(1, m.d_ff // tp),
        vocab_size=m.vocab_size // tp if m.vocab_size % tp == 0 else m.vocab_size)
    return MemoryPlan(
        parameters=whole.parameters,
        trainable_parameters=whole.trainable_parameters,
        weights=_ceil_div(whole.weights, shards),
        optimizer=_ceil_div(whole.optimizer, shards),
        gradients=_ceil_div(whole.gradients, shards),
        accumulator=_ceil_div(whole.accumulator, shards),
        activations=activation_bytes(split, rows) if tp > 1 else whole.activations,
        batch_per_device=batch,
    )


def largest_batch_per_device(cfg: RunConfig, shape: MeshShape, memory_bytes: int) -> int:
    """The largest ``--batch-size`` (per device) whose estimate fits ``memory_bytes`` (0: none)."""
    low, high = 0, 1
    while plan_mesh_memory(cfg, shape, high).total <= memory_bytes and high < 1 << 24:
        low, high = high, high * 2
    while high - low > 1:  # the total grows with the batch: bisect
        mid = (low + high) // 2
        if plan_mesh_memory(cfg, shape, mid).total <= memory_bytes:
            low = mid
        else:
            high = mid
    return low
