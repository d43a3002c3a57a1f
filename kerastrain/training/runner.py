"""``kerastrain run`` end to end: output directory, resume, data, model, optimizer, loop."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kerastrain.config import RunConfig
from kerastrain.errors import CheckpointError, ConfigError
from kerastrain.training.optimizer import (
    check_kinds,
    describe_groups,
    make_optimizer,
    make_schedule,
    muon_groups,
)
from kerastrain.training.preflight import check_memory_fits, check_output_dir

# What an output directory holds that --overwrite clears (the tokenizer is kept and reused).
RUN_ARTIFACTS = ("metrics.jsonl", "tensorboard", "final_checkpoint", "best_checkpoint")


def find_resume_point(config: RunConfig, output_dir: Path, say):
    """The checkpoint to continue from, or None to start fresh."""
    from kerastrain.training.checkpoint import newest_verified_checkpoint

    source = config.output.resume_from
    if source:
        if "://" in source:
            from kerastrain.storage.remote import fetch_checkpoint

            say(f"Downloading checkpoint {source} ...")
            return fetch_checkpoint(source, output_dir / ".downloaded", config.cloud)
        path = Path(source)
        if not path.is_dir():
            raise CheckpointError(f"--resume-from {source}: no such checkpoint directory")
        return path
    if config.output.overwrite:
        return None
    found = newest_verified_checkpoint(output_dir, say)
    if found:
        say(f"Resuming from {found.path} (step {found.step}); pass --overwrite to start fresh")
        return found.path
    return None


def adopt_checkpoint_tokenizer(config: RunConfig, checkpoint: Path, target: Path, say) -> None:
    """Resuming in a new output directory, or starting from a kerastrain checkpoint
    (``--init-from``): take the tokenizer the checkpoint was trained with (to ``target``, the
    run's tokenizer path)."""
    from kerastrain.training.checkpoint import TOKENIZER_FILE

    source = checkpoint / TOKENIZER_FILE
    if source.exists() and not target.exists() and not config.tokenizer.retrain:
        shutil.copyfile(source, target)
        say(f"Tokenizer: taken from the checkpoint {checkpoint}")


def clear_previous_run(output_dir: Path) -> None:
    for name in RUN_ARTIFACTS:
        p = output_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in output_dir.glob("checkpoint_step_*"):
        shutil.rmtree(p, ignore_errors=True)


def truncate_metrics(output_dir: Path, step: int) -> None:
    """Drop metrics logged after the checkpoint we resume from: those steps run again.

    A line a crash left half written (the last one) is dropped too; the file is replaced whole."""
    path = output_dir / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step and row.get("kind") != "summary":
            keep.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def checkpoint_request(checkpoint: Path | None) -> RunConfig | None:
    """What the run that wrote ``checkpoint`` was asked (its ``run_config.json``), or None. A
    resumed run continues that run: this is its record, not a guess at what the user meant."""
    from kerastrain.training.checkpoint import RUN_CONFIG_FILE

    if checkpoint is None or not (Path(checkpoint) / RUN_CONFIG_FILE).is_file():
        return None
    try:
        from kerastrain.model.presets import resolve_preset

        return RunConfig.from_dict(json.loads((Path(checkpoint) / RUN_CONFIG_FILE).read_text()),
                                   resolve_preset)
    except (ValueError, TypeError, ConfigError):
        return None


def refuse_unused_init_from(config: RunConfig, resume: Path, previous: RunConfig | None) -> None:
    """``--init-from`` when the run resumes: honoured only if the checkpoint's run started from the
    same weights (the same command run again); otherwise refused, never silently dropped."""
    started_from = previous.train.init_from if previous is not None else None
    if config.train.init_from != started_from:
        raise ConfigError(
            f"--init-from {config.train.init_from} would be ignored: this run resumes {resume}, "
            f"which started from {started_from or 'random weights'}; pass --overwrite to start "
            "again from it, or a new --output-dir"
        )


def refuse_changed_accumulation(config: RunConfig, resume: Path, previous: RunConfig) -> None:
    """Keras' restored micro-step counter would put updates and the schedule at the wrong
    micro-steps under another k (and k=1 has no accumulators to restore): refused."""
    k, was = config.train.gradient_accumulation_steps, previous.train.gradient_accumulation_steps
    if k != was:
        raise ConfigError(f"--gradient-accumulation-steps {k} cannot resume {resume}, trained "
                          f"with {was}; pass --gradient-accumulation-steps {was}, or --overwrite")


def run_training(config: RunConfig, console) -> dict:
    """Train as configured; returns the summary (steps, losses, checkpoint path).

    The stages: processes and mesh; output directory and resume point; tokenizer; what the run
    resolves (model shape, vocabulary, steps); model, optimizer and restored state; data; loop."""
    from kerastrain.data.preparation import check_vocab, open_data, tokenizer_path
    from kerastrain.plugins import get_plugin_manager
    from kerastrain.training.distribution import make_mesh_plan
    from kerastrain.training.processes import SilentHooks, initialize_processes

    def say(msg: str) -> None:
        console.print(msg, highlight=False)

    config.validate()
    processes = initialize_processes(config)  # before any other JAX call
    mesh_plan = make_mesh_plan(config)  # a bad mesh fails here, before anything is written
    primary = mesh_plan.process_index == 0
    if not primary:  # only process 0 prints, logs, writes and uploads
        console.quiet = True
    output_dir = Path(config.output.output_dir)
    check_output_dir(output_dir)
    hooks = get_plugin_manager().hook if primary else SilentHooks()
    if config.cloud.provider and primary:  # open and probe the remote before any work is done
        from kerastrain.storage.probe import open_remote

        open_remote(config.cloud)
    from kerastrain.training.tracking import check_trackers

    check_trackers(config.output.trackers)
    check_kinds(config)

    # -- output directory, resume point, tokenizer ----------------------------------------------
    from kerastrain.training.init_from import resolve_init_from

    init_from = resolve_init_from(config)  # nothing, a checkpoint or a model folder: once
    data = open_data(config, init_from.model_folder, say)  # bad records fail here, in one line
    train_docs, val_docs, plan = data.train, data.val, data.plan
    say(f"Data: {data.what}")
    from kerastrain.training.objectives import check_objective

    objective = check_objective(config, data.plan)  # pairs need preference data, --init-from
    resume = find_resume_point(config, output_dir, say)
    previous = checkpoint_request(resume)
    if resume is not None and init_from.source:
        refuse_unused_init_from(config, resume, previous)
    if previous is not None:
        refuse_changed_accumulation(config, resume, previous)
    if primary:
        from kerastrain.training.checkpoint import remove_leftovers

        remove_leftovers(output_dir)  # half-written checkpoints of a killed run
    if resume is None and config.output.overwrite and primary:
        clear_previous_run(output_dir)
    tok_path = tokenizer_path(config, output_dir)
    if resume is not None and primary:
        adopt_checkpoint_tokenizer(config, resume, tok_path, say)
    elif init_from.checkpoint is not None and primary:
        # A kerastrain checkpoint's weights mean its tokenizer's ids: never train another one.
        adopt_checkpoint_tokenizer(config, init_from.checkpoint, tok_path, say)
    tokenizer, pretrained, trained_now = _prepare_tokenizer(config, init_from, train_docs,
                                                            tok_path, primary, say, plan)

    # -- what the run resolves ------------------------------------------------------------------
    model_config = (pretrained.config if pretrained is not None
                    else config.model.replace(vocab_size=tokenizer.vocab_size))
    from kerastrain.data.preparation import vocab_trained_for

    check_vocab(config, model_config.vocab_size,
                vocab_trained_for(config, tok_path, trained_now, previous))
    model_config.validate()
    # The data: what the run trains on is also what its length is counted from (run_length).
    from kerastrain.data.run_pipelines import training_pipeline, validation_pipeline

    seq_len = model_config.seq_len
    train_pipeline = training_pipeline(
        config, seq_len, train_docs, tokenizer, plan, data.names,
        rows=mesh_plan.local_rows, process=(mesh_plan.process_index, processes))
    val_batches = None if val_docs is None else (
        lambda: validation_pipeline(config, seq_len, val_docs, tokenizer, plan))
    from kerastrain.training.run_length import count_updates

    total_steps, steps_note = count_updates(config, train_docs, train_pipeline, say)
    check_memory_fits(config.replace(model=model_config), mesh_plan.shape)
    from kerastrain.training.resolved import RESOLVED_FILE, recorded_warmup, resolve
    schedule, warmup = make_schedule(config, total_steps, recorded_warmup(resume))

    resolved = resolve(config, model=model_config, tokenizer_path=tok_path,
                       total_steps=total_steps, warmup_steps=warmup, steps_note=steps_note,
                       mesh_plan=mesh_plan, processes=processes,
                       pretrained=pretrained.architecture.name if pretrained else None)

    # -- model, optimizer, restored state -------------------------------------------------------
    # --init-from's weights, unless the run resumes; DPO's frozen reference needs them anyway.
    frozen_reference = objective.reference and not config.model.use_lora
    initial = None
    if init_from.source and (resume is None or frozen_reference):
        initial = pretrained if pretrained is not None else init_from.checkpoint
    model, optimizer = _build_model_and_optimizer(config, resolved, schedule, mesh_plan, initial,
                                                  say)
    frozen = None
    if objective.reference:  # before a resume restores the trained weights
        from kerastrain.training.preference_loss import frozen_reference_weights

        frozen = frozen_reference_weights(model) if frozen_reference else None
        say("Reference model: " + ("the base model, adapters off in the same step (LoRA)"
                                   if frozen is None else "the starting weights, held frozen"))
    from kerastrain.data.pipeline import PipelineState

    start_step, best_val, pipeline_state = 0, None, PipelineState()
    if resume is not None:
        from kerastrain.training.checkpoint import restore_model, restore_optimizer
        from kerastrain.training.sharded_checkpoint import restore_data_position

        state = restore_model(model, resume)
        restore_optimizer(optimizer, resume, state)
        start_step, best_val = int(state["step"]), state.get("best_val_loss")
        say(f"Resumed from {config.output.resume_from or resume} at step {start_step}")
        pipeline_state = restore_data_position(
            resume, mesh_plan.process_index, processes, say)
        if primary:
            truncate_metrics(output_dir, start_step)
        if start_step >= total_steps:
            say(f"Training is already complete at step {start_step} of {total_steps}; pass "
                "--overwrite to start again, or raise --epochs / --max-steps to continue")
            return {"steps": start_step, "reason": "already complete", "checkpoint": str(resume)}
    if primary:
        config.save(output_dir / "run_config.json")
        resolved.save(output_dir / RESOLVED_FILE)
        resolved.model.save(output_dir / "model_config.json")
        if plan.context.template is not None:  # export and `kerastrain chat` use it
            from kerastrain.data.chat_template import TEMPLATE_FILE

            plan.context.template.save(output_dir / TEMPLATE_FILE)

    # -- loop -----------------------------------------------------------------------------------
    train_pipeline.restore(pipeline_state)
    from kerastrain.storage.cloud_sync import start_uploads
    from kerastrain.training.loop import Trainer, TrainingRun
    from kerastrain.training.samples import Samples
    from kerastrain.training.tracking import Trackers

    run = TrainingRun(config=config, resolved=resolved, output_dir=output_dir, console=console,
                      model=model, tokenizer=tokenizer, chat_template=plan.context.template,
                      step=start_step, total_steps=total_steps)
    say(resolved.describe(config.preset, model.count_params()))
    if not mesh_plan.single_device:
        say(mesh_plan.describe(model_config.seq_len, config.train.gradient_accumulation_steps))
    # Process 0 uploads, samples and tracks; every process trains and checkpoints.
    uploads = start_uploads(config.cloud, console) if primary else None
    trackers = Trackers.start(config.output.trackers if primary else [], run)
    samples = Samples(model, tokenizer, config, say, run.log_metrics,
                      terminal=getattr(console, "is_terminal", False)) if primary else None
    trainer = Trainer(run, model, optimizer, schedule, train_pipeline, val_batches, hooks,
                      primary=primary, start_step=start_step, best_val=best_val,
                      mesh_plan=mesh_plan, objective=objective, frozen=frozen, uploads=uploads,
                      trackers=trackers, samples=samples)
    hooks.on_train_start(run=run)
    summary: dict = {}
    try:
        from kerastrain.training.progress_display import make_progress

        with make_progress(console) as progress:
            summary = trainer.fit(progress)
        summary["start_step"] = start_step  # the summary line says what this invocation ran
    finally:
        if uploads is not None:  # what did not upload: `kerastrain run` exits with code 3
            summary.update(uploads.finish())
        trackers.finish(summary)
        hooks.on_train_end(run=run, logs=summary)
    return summary


def _prepare_tokenizer(config: RunConfig, init_from, train_docs, path: Path, primary: bool, say,
                       plan=None):
    """(tokenizer, the ``--init-from`` folder's model or None, whether the tokenizer was trained
    now): the folder's tokenizer, or the run's own, trained or reused by process 0 and read by
    the others."""
    from kerastrain.data.preparation import prepare_tokenizer
    from kerastrain.training.processes import barrier

    if init_from.model_folder is not None:
        from kerastrain.data.preparation import add_turn_end
        from kerastrain.data.tokenizer import load_tokenizer
        from kerastrain.model.hf_import import adopt_pretrained

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


def _build_model_and_optimizer(config: RunConfig, resolved, schedule, mesh_plan, initial, say):
    """The model and its optimizer, created sharded over the mesh (of one device, perhaps).
    ``initial``: the weights to start from (a model folder's, a kerastrain checkpoint), or None."""
    import keras

    from kerastrain.model.gpt import apply_lora, apply_precision, build_model

    def scope():
        return mesh_plan.scope(resolved.model)

    apply_precision(resolved.model)
    keras.utils.set_random_seed(config.train.seed)
    with scope():
        model = build_model(resolved.model)
    if isinstance(initial, Path):
        from kerastrain.training.checkpoint import restore_model

        restore_model(model, initial, rng=False, grow=True)  # chat markers may have been added
    elif initial is not None:
        initial.load_into(model)
    if initial is not None:
        say(f"Initialized weights from {config.train.init_from}")
    if config.model.use_lora:
        with scope():
            apply_lora(model, config.model.lora_rank)
    with scope():
        optimizer = make_optimizer(config, schedule, model)
    groups = muon_groups(optimizer, model.trainable_variables)
    if groups is not None:
        say(describe_groups(groups))
    return model, optimizer
