"""Verified reading of checkpoints written before Orbax (``model.weights.h5``, ``rng_state.npz``).

Every run now writes Orbax state (:mod:`kerastrain.model.sharded_weights`); checkpoints users
already have keep loading and resuming through this module. Keras restores nothing, silently, when the saved layer structure differs from the model's, so
every load here is checked against the file itself: the number of arrays and a per-array
fingerprint (shape, sum, sum of squares) must match what the model holds afterwards.

LoRA: Keras writes a LoRA layer's kernel *merged* with its adapter and no adapter matrices, so
those checkpoints hold ``lora_state.npz`` beside the ``.h5`` (base kernels and adapters by variable
path), and :func:`load_weights_verified` restores it exactly when present; without it
the merged kernel becomes the base and the adapters are reset to zero (the model computes the
same function; the adapters start again).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerastrain.errors import CheckpointError
from kerastrain.model.lora import lora_layers

WEIGHTS_FILE = "model.weights.h5"
LORA_STATE_FILE = "lora_state.npz"
RNG_FILE = "rng_state.npz"  # dropout seed-generator states: Keras' weight files leave them out
_LORA_VARS = ("lora_kernel_a", "lora_kernel_b")


def _fingerprint(array) -> tuple:
    a = np.asarray(array, dtype=np.float64)
    return (tuple(a.shape), float(a.sum()), float(np.square(a).sum()))


def file_fingerprints(path: Path) -> list[tuple]:
    """Fingerprints of the model arrays in a Keras ``.weights.h5`` file, sorted.

    A compiled model's file also holds its optimizer (group ``optimizer/``): not model weights.
    """
    import h5py

    found: list[tuple] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer/"):
            found.append(_fingerprint(obj[()]))

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
    return sorted(found)


def saved_view_fingerprints(model) -> list[tuple]:
    """Fingerprints of what ``model.save_weights`` would write, sorted.

    That is every weight except LoRA adapters, with LoRA kernels merged; seed-generator states
    (dropout RNG) are variables but are not weights and are never saved.
    """
    from kerastrain.model.lora import merged_kernel

    lora = {id(layer): layer for layer in lora_layers(model, enabled=True)}
    skip = set()
    merged = {}
    for layer in lora.values():
        skip.update(id(getattr(layer, name)) for name in _LORA_VARS)
        merged[id(layer._kernel)] = merged_kernel(layer)  # the merged view Keras saves
    prints = []
    for var in model.weights:
        if id(var) in skip:
            continue
        prints.append(_fingerprint(merged.get(id(var), var.value)))
    return sorted(prints)


def _same(expected: list[tuple], got: list[tuple]) -> bool:
    if len(expected) != len(got):
        return False
    for (s1, a1, q1), (s2, a2, q2) in zip(expected, got, strict=True):
        if s1 != s2:
            return False
        for x, y in ((a1, a2), (q1, q2)):
            if abs(x - y) > 1e-5 * max(1.0, abs(x), abs(y)):
                return False
    return True


def load_weights_verified(model, path: str | Path) -> int:
    """Load ``path`` (a ``.weights.h5`` file) into ``model`` and prove every weight was restored.

    Returns the number of arrays restored. Raises :class:`CheckpointError` when the file is
    missing or unreadable, or holds a different number of arrays or different values than the
    model has after loading (another architecture, other layer names or order).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        expected = file_fingerprints(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read weights file {path}: {exc}") from exc
    have = saved_view_fingerprints(model)
    if len(expected) != len(have):
        raise CheckpointError(
            f"{path} holds {len(expected)} weight arrays but the model has {len(have)}: the model "
            "configuration (layers, heads, tie_embeddings, use_rope, norms) differs from the one "
            "that wrote it; check model_config.json"
        )
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load weights from {path}: {exc}") from exc
    _restore_lora(model, path.parent / LORA_STATE_FILE)
    got = saved_view_fingerprints(model)
    if not _same(expected, got):
        raise CheckpointError(
            f"weights loaded from {path} do not match the file (layer structure differs?); the "
            "checkpoint was written by a different model"
        )
    return len(expected)


def _restore_lora(model, lora_file: Path) -> None:
    layers = lora_layers(model, enabled=True)
    if not layers:
        return
    if not lora_file.is_file():
        # The file's merged kernel is now the base kernel: adapters must start from zero or the
        # adapter would be applied twice.
        for layer in layers:
            layer.lora_kernel_b.assign(np.zeros(layer.lora_kernel_b.shape, "float32"))
        return
    with np.load(lora_file) as data:
        for layer in layers:
            for var in (layer._kernel, layer.lora_kernel_a, layer.lora_kernel_b):
                if var.path not in data or tuple(data[var.path].shape) != tuple(var.shape):
                    raise CheckpointError(
                        f"{lora_file} has no adapter {var.path} of shape {tuple(var.shape)}; "
                        "resume with the same --lora-rank"
                    )
                var.assign(data[var.path])


def rng_variables(model) -> list:
    """Model variables that are not weights (seed-generator states of dropout layers)."""
    weight_ids = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


def load_legacy_weights(model, checkpoint: Path, rng: bool = True) -> int:
    """Weights (and, with ``rng``, dropout RNG states, by position) of a checkpoint folder in the
    format before Orbax; returns the number of weight arrays restored."""
    checkpoint = Path(checkpoint)
    count = load_weights_verified(model, checkpoint / WEIGHTS_FILE)
    if rng and (checkpoint / RNG_FILE).exists():
        with np.load(checkpoint / RNG_FILE) as data:
            rng_vars = rng_variables(model)
            if len(data.files) != len(rng_vars):
                raise CheckpointError(f"{checkpoint} holds another number of dropout RNG states")
            for i, var in enumerate(rng_vars):
                var.assign(data[f"arr_{i}"])
    return count
