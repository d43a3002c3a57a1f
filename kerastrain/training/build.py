"""What a run trains with: its tokenizer, model and optimizer, and the state a resumed run
restores into them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras

from kerastrain.config import RunConfig
from kerastrain.data.pipeline import PipelineState
from kerastrain.data.preparation import add_turn_end, prepare_tokenizer
from kerastrain.data.tokenizer import load_tokenizer
from kerastrain.model.gpt import apply_lora, apply_precision, build_model
from kerastrain.model.hf_import import adopt_pretrained
from kerastrain.training.checkpoint import restore_model, restore_optimizer
from kerastrain.training.optimizer import describe_groups, make_optimizer, muon_groups
from kerastrain.training.processes import barrier
from kerastrain.training.sharded_checkpoint import restore_data_position


def prepare_run_tokenizer(config: RunConfig, init_from, train_docs, path: Path, primary: bool,
                          say, plan=None):
    """(tokenizer, the ``--init-from`` folder's model or None, whether the tokenizer was trained
    now): the folder's tokenizer, or the run's own, trained or reused by process 0 and read by
    the others."""
    if init_from.model_folder is not None:
        pretrained = adopt_pretrained(config, path, say)
        tokenizer = load_tokenizer(path)
        if plan is not None:  # a turn end the tokenizer lacks takes a padding row
            add_turn_end(tokenizer, plan, path, say, rows=pretrained.config.vocab_size)
        return tokenizer, pretrained, False
    tokenizer, trained = prepare_tokenizer(config, train_docs, path, say, plan=plan) if primary \
        else (None, False)
    barrier("tokenizer ready")
    if not primary:  # reuses process 0's tokenizer (shared disk) or trains the same one
        tokenizer, _ = prepare_tokenizer(config, train_docs, path, say, retrain=False, plan=plan)
        trained = True  # process 0 checks --vocab-size against this very file
    return tokenizer, None, trained


def build_model_and_optimizer(config: RunConfig, resolved, schedule, mesh_plan, initial, say):
    """The model and its optimizer, created sharded over the mesh (of one device, perhaps).
    ``initial``: the weights to start from (a model folder's, a kerastrain checkpoint), or None."""
    apply_precision(resolved.model)
    keras.utils.set_random_seed(config.train.seed)
    with mesh_plan.scope(resolved.model):
        model = build_model(resolved.model)
    if isinstance(initial, Path):
        restore_model(model, initial, rng=False, grow=True)  # chat markers may have been added
    elif initial is not None:
        initial.load_into(model)
    if initial is not None:
        say(f"Initialized weights from {config.train.init_from}")
    if config.model.use_lora:
        with mesh_plan.scope(resolved.model):
            apply_lora(model, config.model.lora_rank)
    with mesh_plan.scope(resolved.model):
        optimizer = make_optimizer(config, schedule, model)
    groups = muon_groups(optimizer, model.trainable_variables)
    if groups is not None:
        say(describe_groups(groups))
    return model, optimizer


@dataclass(frozen=True)
class StartState:
    """Where the loop starts: the update count, the best validation loss so far and this
    process's data position (a fresh run: 0, None, the beginning)."""

    step: int = 0
    best_val: float | None = None
    data: PipelineState = field(default_factory=PipelineState)


def restore_state(model, optimizer, checkpoint: Path, mesh_plan, processes: int, say,
                  shown_as=None) -> StartState:
    """Weights, optimizer state and data position from ``checkpoint``, verified; ``shown_as``:
    how the user named it (``--resume-from``)."""
    state = restore_model(model, checkpoint)
    restore_optimizer(optimizer, checkpoint, state)
    step = int(state["step"])
    say(f"Resumed from {shown_as or checkpoint} at step {step}")
    data = restore_data_position(checkpoint, mesh_plan.process_index, processes, say)
    return StartState(step, state.get("best_val_loss"), data)
