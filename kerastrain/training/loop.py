"""The training loop: jitted stateless steps over Keras' model and optimizer.

Why not ``model.fit``: exact resume needs the data position of the very batch a checkpoint follows,
per-update hooks, a one-step-late loss read (the device never idles waiting for the host) and a
non-finite check naming the step; ``fit`` gives neither the position nor mid-epoch resume
(``BackupAndRestore`` restarts the epoch). The loop still uses Keras for everything numeric:
``model.stateless_call`` and ``optimizer.stateless_apply`` (AdamW, schedule, clipping, gradient
accumulation). ``benchmarks/bench_loop.py`` compares its speed with ``fit``.

Its parts, each in its own module: the micro-batches of an update (``update_batches``), the log
record and timings (``step_log``), the signals that stop a run (``stop_signals``), the
asynchronous checkpoints (``sharded_checkpoint``); uploads (``storage.cloud_sync``), trackers
(``tracking``) and samples (``samples``) are called where their events happen, and outside
plugins through their hooks.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import numpy as np

from kerastrain.data.counts import summary_counts
from kerastrain.data.pipeline import PipelineState
from kerastrain.data.prefetch import Prefetcher
from kerastrain.training.checkpoint import prune_step_checkpoints
from kerastrain.training.loss_window import LossWindow
from kerastrain.training.metrics_log import MetricsLog
from kerastrain.training.optimizer import applied_rates
from kerastrain.training.preference_loss import eval_logs
from kerastrain.training.processes import DiscardedMetrics, summed_over_processes
from kerastrain.training.progress_display import Display
from kerastrain.training.sharded_checkpoint import Checkpointer, CheckpointRecord
from kerastrain.training.step_log import StepLog
from kerastrain.training.steps import initial_state, make_steps, update_counts
from kerastrain.training.stop_signals import StopSignals
from kerastrain.training.tracking import Trackers
from kerastrain.training.training_run import TrainingRun
from kerastrain.training.update_batches import UpdateBatches


class Trainer:
    """Runs updates until the data, ``--max-steps`` or a signal ends the run.

    ``hooks``: outside plugins' hooks; ``uploads``, ``trackers``, ``samples``: the built-in parts
    (process 0 only; None where the run has none); ``primary``: this process writes metrics and
    the checkpoints' metadata."""

    def __init__(self, run: TrainingRun, model, optimizer, train_pipeline, val_batches, hooks, *,
                 mesh_plan, primary: bool, start_step: int = 0, best_val: float | None = None,
                 objective=None, frozen=None, uploads=None, trackers=None, samples=None):
        self.run, self.cfg = run, run.config
        self.model, self.optimizer = model, optimizer
        self.train_pipeline, self.val_batches = train_pipeline, val_batches
        self.hooks, self.uploads, self.samples = hooks, uploads, samples
        self.trackers = trackers if trackers is not None else Trackers([], run.say)
        self.step, self.best_val, self.primary = start_step, best_val, primary
        self.mesh_plan = mesh_plan
        segmented = bool(getattr(train_pipeline, "packed", False))  # packed rows
        self.segmented = segmented
        # A preference objective (--objective dpo...): pair steps, counts and metrics.
        self.objective, self.pairs = objective, bool(getattr(objective, "pairs", False))
        self.train_step, self.eval_step = make_steps(
            model, optimizer, mesh_plan, segmented, z_loss=self.cfg.train.z_loss,
            objective=objective, train=self.cfg.train, frozen=frozen)
        # The rates the optimizer applies, read from its own state before the update that uses
        # them (logged; never a recomputed schedule).
        self.read_rates = jax.jit(lambda opt_vars: applied_rates(optimizer, opt_vars))
        self._rates: dict = {}
        train = self.cfg.train
        self.updates = UpdateBatches(train_pipeline, train.gradient_accumulation_steps, mesh_plan,
                                     segmented, mesh_plan.multi_process and not train.max_steps)
        self.signals = StopSignals(mesh_plan.multi_process)
        # Every run, on any mesh (one device is a mesh of one), checkpoints asynchronously.
        self.checkpointer = Checkpointer(
            run.output_dir, model, optimizer,
            CheckpointRecord(run.config, run.resolved, run.tokenizer, run.chat_template,
                             mesh_plan.label, run.resolved.tokens_per_update),
            primary=primary, process_count=jax.process_count(), on_sealed=self._sealed)
        self.log = StepLog(run.resolved, objective, run.output_dir)

    # -- loop --------------------------------------------------------------------------------
    def fit(self, progress) -> dict:
        """Update until the data, ``--max-steps`` or a signal ends the run; then the final
        evaluation and checkpoint (or, interrupted, a checkpoint to resume from)."""
        total = self.run.total_steps
        metrics = self._open_metrics()
        state = self.mesh_plan.place_state(initial_state(self.model, self.optimizer))
        batches = Prefetcher(self.train_pipeline, depth=4)
        losses = LossWindow(self.log.read_loss)
        position = self.train_pipeline.state  # the data position after the latest update
        saved_at = self.step
        self.display = Display(progress, self.run.say, self.step, total)
        self.log.start()
        # The step compiles while the first batches are read: the first shuffle window fills
        # before a batch comes out (0.2-0.3 s of a nano start, now beside the compile).
        self._compile_start = time.perf_counter()
        self.display.waiting("compiling the step")
        self._compile_ahead(state)
        self.display.waiting("reading the first batch")
        # A run of --epochs ends with its data: its updates were counted (run_length).
        reason = "data exhausted" if self.cfg.train.max_steps else "epochs completed"
        try:
            with self.signals:
                while total is None or self.step < total:
                    micro = self.updates.next(batches, self.step, total)
                    if micro is None:
                        break  # not enough data left for a whole update
                    state, loss = self._update(state, micro)
                    position = micro[-1].state
                    losses.add(self.step, loss)
                    self.hooks.on_train_step(run=self.run, step=self.step, logs=self.run.logs)
                    if self.samples is not None:
                        self.samples.after_update(self.step, state)
                    if self.step % self.cfg.output.log_every == 0 or self.step == total:
                        self._log(*losses.take(), metrics, position, batches)
                    if self._periodic(state, metrics, position):
                        saved_at = self.step
                    if self.signals.should_stop():
                        reason = "interrupted"
                        break
                else:
                    reason = ("max steps reached" if self.cfg.train.max_steps
                              else "epochs completed")
                losses.take()  # the last update's loss, read and checked
        except BaseException:
            self.checkpointer.abandon()  # seal what is written, if it can be done alone
            raise
        finally:
            batches.close()
        summary = {"steps": self.step, "reason": reason, "first_loss": losses.first,
                   "first_step_seconds": self.log.first_step_seconds, "last_loss": losses.last,
                   "data_wait_seconds": batches.wait_seconds, **self.log.throughput(self.step),
                   **self._trained(position)}
        return self._finish(state, metrics, summary, position, saved_at)

    def _update(self, state, micro: list) -> tuple:
        """One optimizer update: a train step per micro-batch (Keras' optimizer accumulates and
        applies on the last); returns the new state and ``[loss, trained tokens]`` of the update:
        the mean over every trained token of its micro-batches (``make_steps``), a device array
        read later, so the device never waits for the host."""
        counts = update_counts(micro, self.pairs)
        losses = []
        step = self.step + 1
        logged = step % self.cfg.output.log_every == 0 or step == self.run.total_steps
        first = self.log.first_step_seconds is None
        if first:
            self.display.waiting("running the first update")
        for i, batch in enumerate(micro):
            if logged and i == len(micro) - 1:  # the micro-step that applies the update
                self._rates = self.read_rates(state[2])
            out, state = self.train_step(state, *self.updates.place(batch, counts))
            losses.append(out)
        loss = losses[0] if len(losses) == 1 else sum(losses[1:], losses[0])
        loss = loss.at[1].set(losses[0][1])  # the parts add up; the token count does not
        self.step += 1
        self.run.state = state
        if first:  # the compile: time from process start
            loss.block_until_ready()
            self.display.first_update(self.log.first_update_done(self.step)
                                      - self._compile_start)
        return state, loss

    def _compile_ahead(self, state) -> None:
        """Compile the train step for batches shaped as the data's (an empty micro-batch, placed
        as the loop places them): the first update's call finds what ``trace(...).lower()
        .compile()`` made, and the step is traced once (``tests/training/test_run.py``)."""
        twin = self.updates.empty_batch(None)
        counts = update_counts([twin] * self.cfg.train.gradient_accumulation_steps, self.pairs)
        self.train_step.trace(state, *self.updates.place(twin, counts)).lower().compile()

    # -- logs, evaluation --------------------------------------------------------------------
    def _open_metrics(self):
        """Where records go: process 0 writes them and hands them to the trackers and the
        ``on_metrics`` hooks, the others discard them. Samples and plugins log through
        ``run.log_metrics``."""
        if self.primary:
            def publish(record: dict) -> None:
                self.trackers.log(record)
                self.hooks.on_metrics(run=self.run, record=record)

            metrics = MetricsLog(self.run.output_dir, publish=publish)
        else:
            metrics = DiscardedMetrics()
        self.run.metrics = metrics
        return metrics

    def _log(self, losses: list[float], tokens: list[float], metrics, position, batches) -> None:
        """The log record of the updates since the previous one: mean loss, rate, throughput."""
        logs, eta = self.log.record(self.step, self.run.total_steps, losses, tokens, self._rates,
                                    position, batches.wait_seconds)
        metrics.write("train", self.step, logs)
        self.run.logs = logs
        self.display.logged(self.step, logs, eta)

    def _trained(self, position) -> dict:
        """What the run trained, counted from its batches, of every process
        (``kerastrain.data.counts``), and the epochs it completed."""
        counts = summary_counts(summed_over_processes(position.trained), self.segmented)
        done = not self.cfg.train.max_steps and self.step == self.run.total_steps
        # else: the epochs begun before the one this update is in
        return {**counts, "epochs_completed": self.cfg.train.epochs if done else position.epoch}

    def evaluate(self, state) -> dict | None:
        if self.val_batches is None:
            return None
        trainable, non_trainable, _ = state
        total, count = 0.0, 0
        for batch in self.val_batches():
            out = np.asarray(self.eval_step(trainable, non_trainable, batch.inputs, batch.labels,
                                            batch.segments))
            total, count = total + out, count + (1 if self.pairs else int(out[1]))
        if count == 0 or self.pairs:  # pairs: the objective's loss and TRL's metrics
            return eval_logs(total, self.objective) if count else None
        loss = float(total[0]) / count
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0)), "val_tokens": count}

    def _evaluated(self, state, metrics, result: dict) -> None:
        """An evaluation's record: logged, handed to the hooks, then a sample (when asked)."""
        metrics.write("eval", self.step, result)
        self.hooks.on_evaluate(run=self.run, step=self.step, logs=result)
        if self.samples is not None:
            self.samples.after_evaluation(self.step, state)

    def _evaluate_and_keep_best(self, state, metrics, pipeline_state) -> None:
        result = self.evaluate(state)
        if not result:
            return
        self._evaluated(state, metrics, result)
        improved = self._maybe_best(state, result, pipeline_state)
        self.run.say(
            f"step {self.step}: validation loss {result['val_loss']:.4f} "
            f"(perplexity {result['val_perplexity']:.1f})" + (" - new best, saved" if improved else "")
        )

    def _maybe_best(self, state, result, pipeline_state) -> bool:
        if self.best_val is not None and result["val_loss"] >= self.best_val:
            return False
        self.best_val = result["val_loss"]
        self.save(state, "best_checkpoint", "best", pipeline_state)
        return True

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, state, name: str, kind: str, pipeline_state: PipelineState | None) -> Path:
        """Start checkpoint ``name``: blocks for the copy to host only; :meth:`_sealed` runs once
        it is sealed (:meth:`Checkpointer.poll`)."""
        return self.checkpointer.save(state, name, kind, step=self.step, best_val=self.best_val,
                                      pipeline_state=pipeline_state)

    def _sealed(self, path: Path, step: int, kind: str) -> None:
        """A checkpoint is complete: upload it, hand the final one to the trackers."""
        if self.uploads is not None:
            self.uploads.submit(path)
        if kind == "final":
            self.trackers.log_checkpoint(path)
        self.hooks.on_checkpoint_saved(run=self.run, path=path, step=step, kind=kind)

    def _prune(self) -> None:
        """``--keep-last``: never a checkpoint still uploading, or that a plugin still needs (its
        ``checkpoints_in_use``)."""
        keep = self.uploads.in_use() if self.uploads is not None else set()
        keep |= {Path(p) for paths in self.hooks.checkpoints_in_use(run=self.run) for p in paths}
        prune_step_checkpoints(self.run.output_dir, self.cfg.output.keep_last, keep=keep)

    def _periodic(self, state, metrics, position) -> bool:
        """``--eval-every`` and ``--save-every`` (the last update has its own, in
        :meth:`_finish`); prunes once a checkpoint is sealed. True when a checkpoint started."""
        out, last = self.cfg.output, self.step == self.run.total_steps
        if self.val_batches and self.step % out.eval_every == 0 and not last:
            self._evaluate_and_keep_best(state, metrics, position)
        saving = self.step % out.save_every == 0 and not last
        if saving:
            self.save(state, f"checkpoint_step_{self.step}", "step", position)
        if self.checkpointer.poll() and self.primary:
            self._prune()
        return saving

    def _finish(self, state, metrics, summary: dict, position, saved_at: int) -> dict:
        """Interrupted: a checkpoint of this very update. Otherwise the final evaluation, best
        and final checkpoints. Then every checkpoint sealed, pruned, and the summary logged."""
        if summary["reason"] == "interrupted":
            summary["signal"] = int(self.signals.received)
            name = f"checkpoint_step_{self.step}"
            path = (self.save(state, name, "step", position) if self.step != saved_at
                    else self.run.output_dir / name)
            summary["checkpoint"] = str(path)
        else:
            final = self.evaluate(state)
            if final:
                summary.update(final)
                self._evaluated(state, metrics, final)
                self._maybe_best(state, final, position)
            summary["checkpoint"] = str(self.save(state, "final_checkpoint", "final", position))
        self.checkpointer.finish()
        self._write_back(state)  # on_train_end hooks and callers see the trained model
        if self.primary:
            self._prune()
        metrics.write("summary", self.step, summary)
        metrics.close()
        self.run.metrics = None
        return summary

    def _write_back(self, state) -> None:
        """The Keras variables take the loop's values (they lag while it runs: see
        ``TrainingRun.state``)."""
        variables = (self.model.trainable_variables, self.model.non_trainable_variables,
                     self.optimizer.variables)
        for group, values in zip(variables, state, strict=True):
            for var, value in zip(group, values, strict=True):
                var.assign(value)
