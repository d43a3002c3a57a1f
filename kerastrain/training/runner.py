"""``kerastrain run`` end to end, read top to bottom: each stage takes what it needs as arguments
and returns what the next one needs.

1. processes and mesh (one device is a mesh of one; process 0 prints, logs, writes, uploads);
2. checks before anything is written, and what ``--init-from`` is;
3. the data; 4. the output directory and the resume point; 5. the tokenizer;
6. what the run resolves (model shape, vocabulary, steps) and the pipelines;
7. model, optimizer and restored state; 8. the loop, with uploads, trackers and samples.
"""

from __future__ import annotations

from pathlib import Path

from kerastrain.config import RunConfig
from kerastrain.data.preparation import check_vocab, open_data, tokenizer_path, vocab_trained_for
from kerastrain.data.run_pipelines import training_pipeline, validation_pipeline
from kerastrain.plugins import get_plugin_manager
from kerastrain.storage.cloud_sync import start_uploads
from kerastrain.training.build import (
    StartState,
    build_model_and_optimizer,
    prepare_run_tokenizer,
    restore_state,
)
from kerastrain.training.distribution import make_mesh_plan
from kerastrain.training.init_from import resolve_init_from
from kerastrain.training.loop import Trainer
from kerastrain.training.objectives import check_objective
from kerastrain.training.optimizer import make_schedule
from kerastrain.training.preference_loss import frozen_reference_weights
from kerastrain.training.preflight import check_before_writing, check_memory_fits
from kerastrain.training.processes import SilentHooks, initialize_processes
from kerastrain.training.progress_display import make_progress
from kerastrain.training.resolved import recorded_warmup, resolve, write_run_records
from kerastrain.training.resume import find_resume_point, prepare_output_dir, truncate_metrics
from kerastrain.training.run_length import count_updates
from kerastrain.training.samples import Samples
from kerastrain.training.tracking import Trackers
from kerastrain.training.training_run import TrainingRun


def run_training(config: RunConfig, console) -> dict:
    """Train as configured; returns the summary (steps, losses, checkpoint path)."""

    def say(msg: str) -> None:
        console.print(msg, highlight=False)

    # -- 1. processes and mesh -------------------------------------------------------------------
    config.validate()
    processes = initialize_processes(config)  # before any other JAX call
    mesh = make_mesh_plan(config)  # a bad mesh fails here, before anything is written
    primary = mesh.process_index == 0
    if not primary:  # only process 0 prints, logs, writes and uploads
        console.quiet = True
    hooks = get_plugin_manager().hook if primary else SilentHooks()

    # -- 2. checks before anything is written ---------------------------------------------------
    output_dir = Path(config.output.output_dir)
    check_before_writing(config, output_dir, primary)  # output dir, remote, trackers, kinds
    init_from = resolve_init_from(config)  # nothing, a checkpoint or a model folder: once

    # -- 3. data ----------------------------------------------------------------------------------
    data = open_data(config, init_from.model_folder, say)  # bad records fail here, in one line
    say(f"Data: {data.what}")
    objective = check_objective(config, data.plan)  # pairs need preference data, --init-from

    # -- 4. output directory and resume point -----------------------------------------------------
    resume = find_resume_point(config, output_dir, init_from, say)
    tok_path = tokenizer_path(config, output_dir)
    if primary:
        prepare_output_dir(config, output_dir, resume, init_from, tok_path, say)

    # -- 5. tokenizer -----------------------------------------------------------------------------
    tokenizer, pretrained, trained_now = prepare_run_tokenizer(
        config, init_from, data.train, tok_path, primary, say, data.plan)

    # -- 6. what the run resolves -----------------------------------------------------------------
    model_config = (pretrained.config if pretrained is not None
                    else config.model.replace(vocab_size=tokenizer.vocab_size))
    check_vocab(config, model_config.vocab_size,
                vocab_trained_for(config, tok_path, trained_now, resume.previous))
    model_config.validate()
    # What the run trains on is also what its length is counted from (run_length).
    seq_len = model_config.seq_len
    train_pipeline = training_pipeline(config, seq_len, data.train, tokenizer, data.plan,
                                       data.names, rows=mesh.local_rows,
                                       process=(mesh.process_index, processes))
    val_batches = None if data.val is None else (
        lambda: validation_pipeline(config, seq_len, data.val, tokenizer, data.plan))
    total_steps, steps_note = count_updates(config, data.train, train_pipeline, say)
    check_memory_fits(config.replace(model=model_config), mesh.shape)
    schedule, warmup = make_schedule(config, total_steps, recorded_warmup(resume.path))
    resolved = resolve(config, model=model_config, tokenizer_path=tok_path,
                       total_steps=total_steps, warmup_steps=warmup, steps_note=steps_note,
                       mesh_plan=mesh, processes=processes,
                       pretrained=pretrained.architecture.name if pretrained else None)

    # -- 7. model, optimizer, restored state ------------------------------------------------------
    # --init-from's weights, unless the run resumes; DPO's frozen reference needs them anyway.
    frozen_reference = objective.reference and not config.model.use_lora
    initial = None
    if init_from.source and (resume.path is None or frozen_reference):
        initial = pretrained if pretrained is not None else init_from.checkpoint
    model, optimizer = build_model_and_optimizer(config, resolved, schedule, mesh, initial, say)
    frozen = None
    if objective.reference:  # before a resume restores the trained weights
        frozen = frozen_reference_weights(model) if frozen_reference else None
        say("Reference model: " + ("the base model, adapters off in the same step (LoRA)"
                                   if frozen is None else "the starting weights, held frozen"))
    start = StartState()
    if resume.path is not None:
        start = restore_state(model, optimizer, resume.path, mesh, processes, say,
                              shown_as=config.output.resume_from)
        if primary:
            truncate_metrics(output_dir, start.step)
        if start.step >= total_steps:
            say(f"Training is already complete at step {start.step} of {total_steps}; pass "
                "--overwrite to start again, or raise --epochs / --max-steps to continue")
            return {"steps": start.step, "reason": "already complete",
                    "checkpoint": str(resume.path)}
    if primary:
        write_run_records(output_dir, config, resolved, data.plan.context.template)

    # -- 8. the loop ------------------------------------------------------------------------------
    train_pipeline.restore(start.data)
    run = TrainingRun(config=config, resolved=resolved, output_dir=output_dir, console=console,
                      model=model, tokenizer=tokenizer, chat_template=data.plan.context.template,
                      step=start.step, total_steps=total_steps)
    say(resolved.describe(config.preset, model.count_params()))
    if not mesh.single_device:
        say(mesh.describe(seq_len, config.train.gradient_accumulation_steps))
    # Process 0 uploads, tracks and samples; every process trains and checkpoints.
    uploads = start_uploads(config.cloud, console) if primary else None
    trackers = Trackers.start(config.output.trackers if primary else [], run)
    samples = Samples(model, tokenizer, config, say, run.log_metrics,
                      terminal=getattr(console, "is_terminal", False)) if primary else None
    trainer = Trainer(run, model, optimizer, train_pipeline, val_batches, hooks, mesh_plan=mesh,
                      primary=primary, start_step=start.step, best_val=start.best_val,
                      objective=objective, frozen=frozen, uploads=uploads, trackers=trackers,
                      samples=samples)
    hooks.on_train_start(run=run)
    summary: dict = {}
    try:
        with make_progress(console) as progress:
            summary = trainer.fit(progress)
        summary["start_step"] = start.step  # the summary line says what this invocation ran
    finally:
        if uploads is not None:  # what did not upload: `kerastrain run` exits with code 3
            summary.update(uploads.finish())
        trackers.finish(summary)
        hooks.on_train_end(run=run, logs=summary)
    return summary
