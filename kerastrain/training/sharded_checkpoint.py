"""Asynchronous checkpoints of every run (Orbax), and each process's data position in them.

One device is a mesh of one: a run on one device, on a mesh of several or in several processes
saves the same way. Every process hands Orbax (``orbax-checkpoint``, the standard for sharded JAX
state) the arrays its devices hold; Orbax writes them into ``state/`` of a temporary checkpoint
folder (layout: :mod:`kerastrain.model.sharded_weights`). Writing is asynchronous: a save blocks
training only for the copy of the state to host memory, then training goes on while Orbax writes.
The weights go as host (numpy) arrays when this process holds all of them (one process: that copy
is the one Orbax would make anyway) and, in a multi-process run, in the final checkpoint (one
all-gather at the end), so a plain Orbax restore of ``state/model`` reads them on any machine;
step and best checkpoints of several processes keep the weights sharded (no gather to one host).

A thread of process 0 waits until Orbax has committed (Orbax's own barrier: every process has
finished its shards), then fsyncs the folder, writes ``manifest.json`` last and renames the folder
into place: a checkpoint is complete or invisible. A kill while writing leaves only a ``.tmp-*``
folder, which auto-resume ignores and the next run deletes. The next save, the end of the run and
every step's poll wait for or notice the sealing; plugin hooks (uploads) are called from the
training thread once a checkpoint is sealed.

Resume reshards: each variable is read straight into the sharding its layout gives it now, so a
checkpoint of 4 devices resumes on 2, on 1 or in another mesh, and ``kerastrain.load``,
``generate``, ``eval``, ``export`` and uploads read every checkpoint alike. ``--output-dir`` must
be a filesystem every process sees (one host, NFS, GCS FUSE) for several hosts to write one
checkpoint.

Each process's data position (its :class:`~kerastrain.data.pipeline.PipelineState`) is gathered to
process 0 and stored as ``pipeline_states/process_NNNNN.json.gz``. Resumed with the same number of
processes, each continues exactly; with another number, the shares of the stream change, so every
process starts its new share at the beginning of the oldest epoch the checkpoint's processes were in
(documents of that epoch read before the checkpoint are read again), and the run says so.
Checkpoints written before per-process positions hold one ``pipeline_state.json.gz``.
"""

from __future__ import annotations

import functools
import gzip
import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerastrain.data.pipeline import PipelineState
from kerastrain.errors import CheckpointError
from kerastrain.model.sharded_weights import (
    MODEL_ITEM,
    OPTIMIZER_ITEM,
    RNG_ITEM,
    STATE_DIR,
    describe,
    key,
    model_variables,
    nest,
    path_key,
)
from kerastrain.training.checkpoint import PIPELINE_FILE, seal, write_metadata
from kerastrain.training.processes import barrier, gather_bytes

STATES_DIR = "pipeline_states"


def _encode(state: PipelineState) -> bytes:
    from kerastrain.data.pipeline_state import plain

    return gzip.compress(json.dumps(state.saved(), default=plain).encode())


def _decode(blob: bytes) -> PipelineState:
    return PipelineState.from_dict(json.loads(gzip.decompress(blob)))


def _lora_scale(model) -> float | None:
    from kerastrain.model.lora import lora_layers

    for layer in lora_layers(model):
        if getattr(layer, "lora_enabled", False):
            return layer.lora_alpha / layer.lora_rank
    return None


def _host(array, gather: bool):
    """``array`` as a numpy copy when this process holds all of it, or (a collective) when
    ``gather``; else the sharded array itself (Orbax copies this process's shards)."""
    if getattr(array, "is_fully_addressable", True):
        return np.array(array)  # a copy: the next step donates the device buffer
    if gather:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return array


def model_trees(model, trainable, non_trainable, gather: bool = False) -> tuple[dict, dict]:
    """(``state/model``, ``state/rng``) trees of the training state's model arrays: weights keyed
    by variable path, seed-generator states by position."""
    weight_ids = {id(w) for w in model.weights}
    weights, rngs = {}, {}
    arrays = list(trainable) + list(non_trainable)
    for var, array in zip(model_variables(model), arrays, strict=True):
        if id(var) in weight_ids:
            weights[path_key(var.path)] = _host(array, gather)
        else:  # a few replicated integers
            rngs[(key(len(rngs)),)] = _host(array, gather=True)
    return nest(weights), nest(rngs)


@dataclass(frozen=True)
class CheckpointRecord:
    """What every checkpoint of a run holds beside its arrays: the request, what the run resolved,
    the tokenizer, the chat template, the mesh in words and the tokens of one update."""

    run_config: object  # RunConfig
    resolved: object  # ResolvedRun
    tokenizer: object
    chat_template: object = None  # `chat`, `generate --chat` and export read it
    mesh: str = "one device"
    tokens_per_update: int = 0


class Checkpointer:
    """Writes the checkpoints of a run's ``model`` and ``optimizer`` (any mesh, one device
    included) into ``output_dir``; ``primary``: this process writes the metadata and seals;
    ``on_sealed(path, step, kind)`` is called from the training thread once a checkpoint is
    sealed.

    Every process calls :meth:`save` at the same step (a collective), :meth:`poll` after each step
    and :meth:`finish` at the end of the run."""

    def __init__(self, output_dir: Path, model, optimizer, record: CheckpointRecord, *,
                 primary: bool, process_count: int, on_sealed=None):
        self.output_dir, self.model, self.optimizer, self.record = (output_dir, model, optimizer,
                                                                    record)
        self.primary, self.process_count = primary, process_count
        self.on_sealed = on_sealed or (lambda path, step, kind: None)
        self._sealer: threading.Thread | None = None
        self._sealed: list[tuple[Path, int, str]] = []  # sealed, on_sealed not yet called
        self._error: CheckpointError | None = None

    @functools.cached_property
    def _orbax(self):
        """Orbax's writer, made (and Orbax imported: ~1 s) at the first save, not before the
        first step; every process saves at the same steps, so all make it at the same one."""
        import orbax.checkpoint as ocp

        return ocp.AsyncCheckpointer(ocp.CompositeCheckpointHandler())

    def save(self, state, name: str, kind: str, *, step: int, best_val: float | None,
             pipeline_state: PipelineState | None) -> Path:
        """Start writing checkpoint ``name`` of ``state`` after update ``step``; returns once the
        state is copied to host memory."""
        import orbax.checkpoint as ocp

        self.wait_until_sealed()  # one write at a time: the previous checkpoint is sealed first
        blobs = gather_bytes(_encode(pipeline_state or PipelineState()))  # collective
        path = self.output_dir / name
        # The same temporary name in every process: Orbax writes one folder together.
        tmp = self.output_dir / f".tmp-{name}"
        if self.primary:
            if tmp.exists():
                shutil.rmtree(tmp)  # left by a killed run
            # Now, not by Orbax's writer thread: the metadata below goes in beside its folder.
            tmp.mkdir(parents=True)
        barrier(f"clean {tmp.name} at step {step}")
        trainable, non_trainable, opt_vars = state
        model, optimizer, record = self.model, self.optimizer, self.record
        weights, rngs = model_trees(model, trainable, non_trainable,
                                    gather=kind == "final" and self.process_count > 1)
        items = {MODEL_ITEM: ocp.args.StandardSave(weights),
                 OPTIMIZER_ITEM: ocp.args.StandardSave({key(i): a for i, a in enumerate(opt_vars)})}
        if rngs:
            items[RNG_ITEM] = ocp.args.StandardSave(rngs)
        # Returns once the arrays are copied to host memory; the files are written meanwhile.
        self._orbax.save((tmp / STATE_DIR).absolute(), args=ocp.args.Composite(**items))
        if self.primary:
            state_record = {
                "step": step, "kind": kind, "best_val_loss": best_val,
                "epoch": pipeline_state.epoch if pipeline_state else None,
                "tokens_seen": step * record.tokens_per_update,
                "processes": self.process_count, "format": "orbax", "mesh": record.mesh,
                "model_variables": describe(model_variables(model),
                                            {id(w) for w in model.weights}),
                "weights": {"count": len(model.weights)},
                "optimizer": {"count": len(optimizer.variables),
                              "paths": [v.path for v in optimizer.variables],
                              "shapes": [list(v.shape) for v in optimizer.variables]},
                "lora_scale": _lora_scale(model),
            }
            files = {f"{STATES_DIR}/process_{i:05d}.json.gz": b for i, b in enumerate(blobs)}
            if record.chat_template is not None:
                from kerastrain.data.chat_template import TEMPLATE_FILE

                files[TEMPLATE_FILE] = record.chat_template.to_bytes()
            write_metadata(tmp, state_record, run_config=record.run_config,
                           resolved=record.resolved, tokenizer=record.tokenizer, extra_files=files)
            self._sealer = threading.Thread(target=self._seal, args=(tmp, path, step, kind),
                                            name=f"seal-{name}", daemon=True)
            self._sealer.start()
        return path

    def _seal(self, tmp: Path, path: Path, step: int, kind: str) -> None:
        try:
            self._orbax.wait_until_finished()  # every process has written its shards
            seal(tmp, path, step)
            self._sealed.append((path, step, kind))
        except Exception as exc:  # reported by the training thread (poll / finish)
            self._error = CheckpointError(
                f"writing checkpoint {path} failed ({exc}); the previous complete checkpoint "
                f"is kept. Check free space and permissions of {path.parent}")
            self._error.__cause__ = exc

    def wait_until_sealed(self) -> None:
        """Block until the checkpoint being written is sealed (hooks called)."""
        self._orbax.wait_until_finished()
        if self._sealer is not None:
            self._sealer.join()
            self._sealer = None
        self.poll()

    def poll(self) -> list[Path]:
        """Checkpoints sealed since the last call: ``on_sealed`` is called for each now."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        done, self._sealed = self._sealed, []
        for path, step, kind in done:
            self.on_sealed(path, step, kind)
        return [path for path, _, _ in done]

    def abandon(self) -> None:
        """The run failed: in one process, still seal the checkpoint being written."""
        if self.process_count > 1:
            return  # sealing waits for every process; they may be gone
        try:
            self._orbax.wait_until_finished()
            if self._sealer is not None:
                self._sealer.join()
        except Exception:  # noqa: BLE001 - the run's own error is the one to report
            pass

    def finish(self) -> None:
        """Wait until the last checkpoint is sealed (in every process)."""
        try:
            self.wait_until_sealed()
        finally:
            self._orbax.close()
        barrier("checkpoints sealed")


def restore_data_position(checkpoint: Path, process_index: int, process_count: int,
                          say) -> PipelineState:
    """This process's data position from ``checkpoint`` (see the module docstring)."""
    checkpoint = Path(checkpoint)
    files = sorted((checkpoint / STATES_DIR).glob("process_*.json.gz"))
    if files:
        states = [_decode(f.read_bytes()) for f in files]
    elif (checkpoint / PIPELINE_FILE).exists():
        states = [PipelineState.load(checkpoint / PIPELINE_FILE)]
    else:
        return PipelineState()
    if len(states) == process_count:
        mine = states[process_index]
        say(f"Data position: epoch {mine.epoch}, after {mine.batches} batches of "
            + ("the data" if process_count == 1 else f"this process's share ({process_index})"))
        return mine
    epoch = min(s.epoch for s in states)
    say(f"Data position: the checkpoint was written by {len(states)} process(es), this run has "
        f"{process_count}; each process starts its share of epoch {epoch} from the beginning "
        "(documents of that epoch read before the checkpoint are read again)")
    return PipelineState(epoch=epoch)
