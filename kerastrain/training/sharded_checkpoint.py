"""Checkpoints of a multi-process run, and each process's data position in them.

What is done (and what is not): every process takes part in gathering the sharded state into whole
arrays (an XLA all-gather over the mesh), then process 0 alone writes the ordinary checkpoint
format (``model.weights.h5``, ``optimizer.npz``: whole arrays, no mesh in them) through
:func:`kerastrain.training.checkpoint.save_checkpoint`: fsync'ed, sealed by the manifest, renamed
into place. So ``kerastrain.load``, ``generate`` and cloud uploads read it as any other, and any
mesh or process count can resume from it (each variable is resharded by its layout on load).
This is *not* Orbax's sharded, asynchronous write: process 0 needs host memory for the whole
state and training waits while it writes. Multi-host runs need ``--output-dir`` on a filesystem
every process sees (NFS, GCS FUSE) to resume.

Each process's data position (its :class:`~kerastrain.data.pipeline.PipelineState`) is gathered to
process 0 and stored as ``pipeline_states/process_NNNNN.json.gz``. Resumed with the same number of
processes, each continues exactly; with another number, the shares of the stream change, so every
process starts its new share at the beginning of the oldest epoch the checkpoint's processes were in
(documents of that epoch read before the checkpoint are read again), and the run says so.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from kerastrain.data.pipeline import PipelineState
from kerastrain.training.checkpoint import PIPELINE_FILE, save_checkpoint
from kerastrain.training.processes import barrier, gather_bytes

STATES_DIR = "pipeline_states"


def _encode(state: PipelineState) -> bytes:
    # numpy arrays (the window shuffle buffer) as lists, as PipelineState.save writes them
    return gzip.compress(json.dumps(state.__dict__, default=lambda o: o.tolist()).encode())


def _decode(blob: bytes) -> PipelineState:
    return PipelineState(**json.loads(gzip.decompress(blob)))


def save_from_all_processes(trainer, state, name: str, kind: str, pipeline_state) -> Path:
    """Every process calls this at the same step; process 0 writes the checkpoint."""
    plan = trainer.mesh_plan
    whole = plan.gathered(state)  # collective: whole arrays on every process
    variables = (trainer.model.trainable_variables + trainer.model.non_trainable_variables
                 + trainer.optimizer.variables)
    for var, value in zip(variables, [v for part in whole for v in part], strict=True):
        # Bypass Variable.assign, which would reshard by the layout: saving needs whole arrays.
        var._value = value
    blobs = gather_bytes(_encode(pipeline_state or PipelineState()))  # collective
    path = trainer.run.output_dir / name
    if plan.process_index == 0:
        files = {f"{STATES_DIR}/process_{i:05d}.json.gz": b for i, b in enumerate(blobs)}
        save_checkpoint(
            path, model=trainer.model, optimizer=trainer.optimizer,
            state={"step": trainer.step, "kind": kind, "best_val_loss": trainer.best_val,
                   "epoch": pipeline_state.epoch if pipeline_state else None,
                   "tokens_seen": trainer.step * trainer.tokens_per_update,
                   "processes": plan.process_count},
            run_config=trainer.cfg, tokenizer=trainer.run.tokenizer, extra_files=files,
        )
        trainer.hooks.on_checkpoint_saved(run=trainer.run, path=path, step=trainer.step, kind=kind)
    trainer._write_back(state)  # back to the sharded values (frees the whole copies)
    barrier(f"saved {name} at step {trainer.step}")
    return path


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
        say(f"Data position: epoch {mine.epoch}, {mine.next_doc} documents into "
            + ("the epoch" if process_count == 1 else f"this process's share ({process_index})"))
        return mine
    epoch = min(s.epoch for s in states)
    say(f"Data position: the checkpoint was written by {len(states)} process(es), this run has "
        f"{process_count}; each process starts its share of epoch {epoch} from the beginning "
        "(documents of that epoch read before the checkpoint are read again)")
    return PipelineState(epoch=epoch)
