"""Reading the Orbax part of a sharded checkpoint into a model or an optimizer.

A run on a device mesh writes its checkpoints with Orbax (``kerastrain.training.sharded_checkpoint``):
``state/model`` and ``state/optimizer`` hold every variable as a sharded array, each process having
written its own shards (OCDBT). ``state.json`` beside them lists the variables (path, shape,
dtype) in the order they were written. Reading restores each array straight into the sharding the
target variable has now, so a checkpoint of 4 devices resumes on 2, on 1 or in another mesh
(Orbax reads the pieces each device needs), and ``kerastrain.load`` reads it on one device.

Variables are matched by path; dropout seed-generator states (auto-numbered, process-wide names)
by position. A LoRA checkpoint read into a model without LoRA (``kerastrain.load``) gets each
adapter folded into its kernel, as ``model.weights.h5`` holds it. Every variable the model has must
be found with its shape, or the read fails: nothing is restored silently-partially.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerastrain.errors import CheckpointError

STATE_DIR = "state"  # the Orbax checkpoint inside a kerastrain checkpoint folder
MODEL_ITEM, OPTIMIZER_ITEM = "model", "optimizer"
_ADAPTERS = ("lora_kernel_a", "lora_kernel_b")


def is_sharded(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` holds Orbax sharded state (rather than ``model.weights.h5``)."""
    return (Path(checkpoint) / STATE_DIR / MODEL_ITEM).is_dir()


def key(index: int) -> str:
    """The Orbax tree key of the ``index``-th variable of an item."""
    return f"v{index:05d}"


def describe(variables, weight_ids: set[int]) -> list[dict]:
    """What ``state.json`` records of each variable written (``rng``: a seed-generator state)."""
    return [{"path": v.path, "shape": list(v.shape), "dtype": str(np.dtype(v.dtype)),
             "rng": id(v) not in weight_ids} for v in variables]


def model_variables(model) -> list:
    """The model's variables in the order a sharded checkpoint writes them."""
    return list(model.trainable_variables) + list(model.non_trainable_variables)


def _restore(checkpoint: Path, item: str, wanted: dict[str, tuple]) -> dict:
    """``{key: (shape, dtype, sharding or None)}`` -> ``{key: array}`` from ``state/<item>``.

    A ``None`` sharding reads a whole array onto this process's first device."""
    import jax
    import orbax.checkpoint as ocp

    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    item_tree, args = {}, {}
    for k, (shape, dtype, sharding) in wanted.items():
        sharding = sharding if isinstance(sharding, jax.sharding.Sharding) else here
        item_tree[k] = jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)
        args[k] = ocp.ArrayRestoreArgs(sharding=sharding, global_shape=tuple(shape), dtype=dtype)
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
            return reader.restore(
                Path(checkpoint).absolute() / STATE_DIR / item,
                args=ocp.args.PyTreeRestore(item=item_tree, restore_args=args, partial_restore=True))
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        raise CheckpointError(f"cannot read {Path(checkpoint) / STATE_DIR / item}: {exc}") from exc


def _sharding(var):
    value = getattr(var, "value", None)
    return getattr(value, "sharding", None)


def restore_model_variables(model, checkpoint: Path, state: dict, rng: bool = True) -> int:
    """Restore the model's variables from a sharded checkpoint; returns the number restored."""
    saved = state.get("model_variables")
    if not saved:
        raise CheckpointError(f"{checkpoint}/state.json lists no model variables")
    by_path = {e["path"]: i for i, e in enumerate(saved) if not e["rng"]}
    saved_rng = [i for i, e in enumerate(saved) if e["rng"]]
    weight_ids = {id(w) for w in model.weights}
    targets = model_variables(model)
    target_paths = {v.path for v in targets}
    plan: dict[int, object] = {}  # saved index -> target variable
    rng_targets = [v for v in targets if id(v) not in weight_ids]
    for var in targets:
        if id(var) not in weight_ids:
            continue
        index = by_path.get(var.path)
        if index is None or list(saved[index]["shape"]) != list(var.shape):
            what = "no" if index is None else f"another shape {tuple(saved[index]['shape'])} of"
            raise CheckpointError(
                f"{checkpoint} holds {what} variable {var.path} {tuple(var.shape)}: it was written "
                "by a different model configuration (layers, heads, vocabulary, LoRA); check "
                "model_config.json")
        plan[index] = var
    if rng and rng_targets:
        if len(rng_targets) != len(saved_rng):
            raise CheckpointError(f"{checkpoint} holds another number of dropout RNG states")
        plan.update(zip(saved_rng, rng_targets, strict=True))
    # Adapters the model does not have: fold them into their kernels (kerastrain.load).
    merges = {}
    for path, index in by_path.items():
        if path.endswith("/" + _ADAPTERS[0]) and path not in target_paths:
            base = path[: -len(_ADAPTERS[0])]
            merges[by_path[base + "kernel"]] = (index, by_path[base + _ADAPTERS[1]])
    wanted = {key(i): (saved[i]["shape"], np.dtype(saved[i]["dtype"]),
                       None if i in merges else _sharding(var)) for i, var in plan.items()}
    for a, b in merges.values():
        for i in (a, b):
            wanted[key(i)] = (saved[i]["shape"], np.dtype(saved[i]["dtype"]), None)
    arrays = _restore(checkpoint, MODEL_ITEM, wanted)
    scale = float(state.get("lora_scale") or 1.0)
    for i, var in plan.items():
        value = arrays[key(i)]
        if i in merges:
            a, b = (np.asarray(arrays[key(j)], np.float32) for j in merges[i])
            value = (np.asarray(value, np.float32) + scale * (a @ b)).astype(value.dtype)
        var.assign(value)
    return len(plan)


def restore_optimizer_variables(optimizer, checkpoint: Path, state: dict) -> None:
    """Restore the optimizer's variables (built, with the same configuration) from a sharded
    checkpoint, each into the sharding it has now."""
    saved = state["optimizer"]
    if saved["count"] != len(optimizer.variables):
        raise CheckpointError(
            f"{checkpoint} holds {saved['count']} optimizer variables, the optimizer has "
            f"{len(optimizer.variables)}: the training configuration differs (e.g. "
            "--gradient-accumulation-steps or --use-lora); resume with the same options")
    shapes = saved["shapes"]
    for var, shape in zip(optimizer.variables, shapes, strict=True):
        if list(shape) != list(var.shape):
            raise CheckpointError(f"optimizer variable {var.path} has another shape in {checkpoint}")
    wanted = {key(i): (var.shape, np.dtype(var.dtype), _sharding(var))
              for i, var in enumerate(optimizer.variables)}
    arrays = _restore(checkpoint, OPTIMIZER_ITEM, wanted)
    for i, var in enumerate(optimizer.variables):
        var.assign(arrays[key(i)])
