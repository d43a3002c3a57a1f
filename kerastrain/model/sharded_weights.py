"""Reading the Orbax state of a checkpoint into a model or an optimizer (every run writes it).

A checkpoint's ``state/`` folder is one Orbax checkpoint with three items
(``kerastrain.training.sharded_checkpoint`` writes them):

- ``state/model``: the model's weights as a nested dict keyed by their variable path
  (``block_0/attention/query/kernel`` -> ``["block_0"]["attention"]["query"]["kernel"]``), so
  ``orbax.checkpoint.PyTreeCheckpointer().restore("final_checkpoint/state/model")`` alone returns
  the parameters as numpy arrays, on any machine: the item holds host (numpy) arrays whenever the
  writing process held every array (one process, any mesh) and in the final checkpoint of a
  multi-process run; other checkpoints of several processes hold sharded ``jax.Array``s, each
  process having written its own shards;
- ``state/rng``: dropout seed-generator states, by position (their names are auto-numbered,
  process-wide, so only their order is stable);
- ``state/optimizer``: the optimizer's variables by position, sharded as they were in training.

``state.json`` lists every variable written (path, shape, dtype, item, key). Reading restores each
array straight into the sharding its variable has now, so a checkpoint of 4 devices resumes on 2,
on 1 or in another mesh, and ``kerastrain.load`` reads it on one device. Checkpoints of the first
Orbax layout (one ``model`` item keyed ``v00000``...) are read too, from the same list.

A LoRA checkpoint read into a model without LoRA (``kerastrain.load``) gets each adapter folded
into its kernel. Every variable the model has must be found with its shape, or the read fails:
nothing is restored silently-partially. A checkpoint in the format before Orbax
(``model.weights.h5``), which predates the first release, is refused with a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerastrain.errors import CheckpointError, ConfigError

STATE_DIR = "state"  # the Orbax checkpoint inside a kerastrain checkpoint folder
MODEL_ITEM, RNG_ITEM, OPTIMIZER_ITEM = "model", "rng", "optimizer"
_ADAPTERS = ("lora_kernel_a", "lora_kernel_b")


def has_orbax_state(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` holds Orbax state (rather than the older ``model.weights.h5``)."""
    return (Path(checkpoint) / STATE_DIR / MODEL_ITEM).is_dir()


PRE_RELEASE_WEIGHTS = "model.weights.h5"  # the checkpoint format before Orbax (never released)
LAST_READER = "b517c8f"  # the last kerastrain commit that reads it


def refuse_pre_release(folder: Path) -> None:
    """A one-line :class:`ConfigError` when ``folder`` is a checkpoint in the format before Orbax."""
    folder = Path(folder)
    if not has_orbax_state(folder) and (folder / PRE_RELEASE_WEIGHTS).is_file():
        raise ConfigError(
            f"{folder} holds {PRE_RELEASE_WEIGHTS}, a checkpoint format that predates kerastrain's "
            f"first release and is no longer read: train again, or resume it for one step with "
            f"kerastrain at commit {LAST_READER} (which rewrites it as Orbax state/) and use that")


def holds_weights(folder: Path) -> bool:
    """Whether ``folder`` is a checkpoint with weights (one in the format before Orbax is
    refused)."""
    refuse_pre_release(folder)
    return has_orbax_state(folder)


def key(index: int) -> str:
    """The Orbax tree key of the ``index``-th variable of a positional item."""
    return f"v{index:05d}"


def path_key(path: str) -> tuple[str, ...]:
    """The nested-dict key of a weight in ``state/model``: its variable path, split at ``/``."""
    return tuple(path.split("/"))


def nest(flat: dict[tuple, object]) -> dict:
    """``{("a", "b"): x}`` -> ``{"a": {"b": x}}``; a path that is a prefix of another fails."""
    tree: dict = {}
    for parts, value in flat.items():
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"variable path {'/'.join(parts)} clashes with another")
        if parts[-1] in node:
            raise CheckpointError(f"two variables have the path {'/'.join(parts)}")
        node[parts[-1]] = value
    return tree


def leaf(tree: dict, parts) -> object:
    for part in parts:
        tree = tree[part]
    return tree


def describe(variables, weight_ids: set[int]) -> list[dict]:
    """What ``state.json`` records of each model variable: where it is and what it is."""
    entries, rng_index = [], 0
    for v in variables:
        entry = {"path": v.path, "shape": list(v.shape), "dtype": str(np.dtype(v.dtype)),
                 "rng": id(v) not in weight_ids}
        if entry["rng"]:
            entry.update(item=RNG_ITEM, key=[key(rng_index)])
            rng_index += 1
        else:
            entry.update(item=MODEL_ITEM, key=list(path_key(v.path)))
        entries.append(entry)
    return entries


def model_variables(model) -> list:
    """The model's variables in the order the training state holds them."""
    return list(model.trainable_variables) + list(model.non_trainable_variables)


def _where(entry: dict, index: int) -> tuple[str, tuple]:
    """(item, key) of a ``state.json`` entry; the first Orbax layout had one positional item."""
    if "item" in entry:
        return entry["item"], tuple(entry["key"])
    return MODEL_ITEM, (key(index),)


def _restore(checkpoint: Path, item: str, wanted: dict[tuple, tuple]) -> dict[tuple, object]:
    """``{key: (shape, dtype, sharding or None)}`` -> ``{key: array}`` from ``state/<item>``.

    A ``None`` sharding reads a whole array onto this process's first device."""
    import jax
    import orbax.checkpoint as ocp

    if not wanted:
        return {}
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    item_tree, args = {}, {}
    for k, (shape, dtype, sharding) in wanted.items():
        sharding = sharding if isinstance(sharding, jax.sharding.Sharding) else here
        item_tree[k] = jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)
        args[k] = ocp.ArrayRestoreArgs(sharding=sharding, global_shape=tuple(shape), dtype=dtype)
    folder = Path(checkpoint).absolute() / STATE_DIR / item
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
            tree = reader.restore(folder, args=ocp.args.PyTreeRestore(
                item=nest(item_tree), restore_args=nest(args), partial_restore=True))
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        raise CheckpointError(f"cannot read {folder}: {exc}") from exc
    return {k: leaf(tree, k) for k in wanted}


def _sharding(var):
    value = getattr(var, "value", None)
    return getattr(value, "sharding", None)


def _grown(saved_shape, shape, vocab: tuple[int, int] | None) -> bool:
    """Whether a variable grew along one axis only, from the saved vocabulary to the model's
    (``vocab``: chat markers added); any other difference is another model."""
    saved_shape, shape = tuple(saved_shape), tuple(shape)
    differ = [a for a, (s, t) in enumerate(zip(saved_shape, shape, strict=False)) if s != t]
    return vocab is not None and len(saved_shape) == len(shape) and len(differ) == 1 \
        and (saved_shape[differ[0]], shape[differ[0]]) == vocab


def _vocab_growth(targets, saved, by_path) -> tuple[int, int] | None:
    """(saved rows, model rows) of the token embedding, when the model's has more."""
    for var in targets:
        index = by_path.get(var.path)
        if "token_embedding" in var.path and len(var.shape) == 2 and index is not None:
            rows = int(saved[index]["shape"][0])
            if rows < var.shape[0] and list(saved[index]["shape"][1:]) == list(var.shape[1:]):
                return rows, int(var.shape[0])
    return None


def restore_model_variables(model, checkpoint: Path, state: dict, rng: bool = True,
                            grow: bool = False) -> int:
    """Restore the model's variables from a checkpoint's Orbax state; returns the number restored.
    ``grow``: a variable larger along one axis (an embedding whose tokenizer gained special
    tokens) takes the saved values in its first rows and keeps its initial values in the rest."""
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
    vocab = _vocab_growth(targets, saved, by_path) if grow else None
    for var in targets:
        if id(var) not in weight_ids:
            continue
        index = by_path.get(var.path)
        grows = index is not None and _grown(saved[index]["shape"], var.shape, vocab)
        if index is None or (list(saved[index]["shape"]) != list(var.shape) and not grows):
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
    whole = {i for pair in merges.values() for i in pair} | set(merges)
    whole |= {i for i, var in plan.items() if list(saved[i]["shape"]) != list(var.shape)}
    wanted: dict[str, dict] = {}
    for i in set(plan) | whole:
        item, k = _where(saved[i], i)
        sharding = None if i in whole else _sharding(plan[i])
        wanted.setdefault(item, {})[k] = (saved[i]["shape"], np.dtype(saved[i]["dtype"]), sharding)
    arrays = {item: _restore(checkpoint, item, keys) for item, keys in wanted.items()}

    def value_of(i):
        item, k = _where(saved[i], i)
        return arrays[item][k]

    scale = float(state.get("lora_scale") or 1.0)
    for i, var in plan.items():
        value = value_of(i)
        if i in merges:
            a, b = (np.asarray(value_of(j), np.float32) for j in merges[i])
            value = (np.asarray(value, np.float32) + scale * (a @ b)).astype(value.dtype)
        if list(np.shape(value)) != list(var.shape):  # grown: saved rows first
            grown = np.array(var.value)
            grown[tuple(slice(0, n) for n in np.shape(value))] = np.asarray(value)
            value = grown
        var.assign(value)
    return len(plan)


def restore_optimizer_variables(optimizer, checkpoint: Path, state: dict) -> None:
    """Restore the optimizer's variables (built, with the same configuration) from a checkpoint's
    Orbax state, each into the sharding it has now."""
    saved = state["optimizer"]
    if saved["count"] != len(optimizer.variables):
        raise CheckpointError(
            f"{checkpoint} holds {saved['count']} optimizer variables, the optimizer has "
            f"{len(optimizer.variables)}: the training configuration differs (e.g. "
            "--gradient-accumulation-steps or --use-lora); resume with the same options")
    for var, shape in zip(optimizer.variables, saved["shapes"], strict=True):
        if list(shape) != list(var.shape):
            raise CheckpointError(f"optimizer variable {var.path} has another shape in {checkpoint}")
    wanted = {(key(i),): (var.shape, np.dtype(var.dtype), _sharding(var))
              for i, var in enumerate(optimizer.variables)}
    arrays = _restore(checkpoint, OPTIMIZER_ITEM, wanted)
    for i, var in enumerate(optimizer.variables):
        var.assign(arrays[(key(i),)])


def restore_weights(model, checkpoint: Path, state: dict | None = None, rng: bool = True,
                    grow: bool = False) -> int:
    """The model's weights (and, with ``rng``, dropout RNG states) from ``checkpoint``; ``state``
    is its ``state.json`` (read when not given); ``grow``: see :func:`restore_model_variables`."""
    import json

    checkpoint = Path(checkpoint)
    if not holds_weights(checkpoint):
        raise CheckpointError(f"{checkpoint} holds no {STATE_DIR}/{MODEL_ITEM}: it is not a complete "
                              "kerastrain checkpoint; pass another checkpoint directory")
    if state is None:
        try:
            state = json.loads((checkpoint / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{checkpoint} has no readable state.json ({exc})") from exc
    return restore_model_variables(model, checkpoint, state, rng=rng, grow=grow)
