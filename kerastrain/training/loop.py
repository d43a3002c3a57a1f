"""The training loop: jitted stateless steps over Keras' model and optimizer.

Why not ``model.fit``: exact resume needs the data position of the very batch a checkpoint follows,
per-update hooks, a one-step-late loss read (the device never idles waiting for the host) and a
non-finite check naming the step; ``fit`` gives neither the position nor mid-epoch resume
(``BackupAndRestore`` restarts the epoch). The loop still uses Keras for everything numeric:
``model.stateless_call`` and ``optimizer.stateless_apply`` (AdamW, schedule, clipping, gradient
accumulation). ``benchmarks/bench_loop.py`` compares its speed with ``fit``.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from kerastrain.data.pipeline import PipelineState
from kerastrain.data.prefetch import Prefetcher
from kerastrain.errors import UserError
from kerastrain.training.checkpoint import prune_step_checkpoints
from kerastrain.training.flops import MfuMeter
from kerastrain.training.loss_window import LossWindow
from kerastrain.training.metrics_log import MetricsLog
from kerastrain.training.optimizer import applied_rates
from kerastrain.training.preference_loss import eval_logs, pair_logs
from kerastrain.training.progress_display import Display, steady_eta
from kerastrain.training.sharded_checkpoint import Checkpointer, CheckpointRecord
from kerastrain.training.steps import initial_state, make_steps, update_counts
from kerastrain.training.tracking import Trackers


def process_start_time() -> float:
    """When this process started (Linux /proc; else the import of this module)."""
    try:
        import os

        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


class NonFiniteLoss(UserError):
    exit_code = 1


@dataclass
class TrainingRun:
    """What hooks see of a run."""

    config: object  # RunConfig: what the user asked
    resolved: object  # ResolvedRun: what the run uses (model shape, vocabulary, steps, mesh)
    output_dir: Path
    console: object  # rich Console
    model: object = None
    tokenizer: object = None
    chat_template: object = None  # the ChatTemplate chat data was rendered with, else None
    step: int = 0
    total_steps: int = 0
    logs: dict = field(default_factory=dict)
    # (trainable, non-trainable, optimizer) values after the latest update; read them in a hook
    # only (the next update reuses their buffers). The Keras variables lag until the run ends.
    state: tuple | None = None
    # Each plugin's state for this run, under the plugin's module name: plugins keep none in
    # module globals, so two runs in one process (tests, notebooks) never share an uploader.
    plugin_state: dict = field(default_factory=dict)
    metrics: object = None  # the MetricsLog while the loop runs (see log_metrics)

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def log_metrics(self, kind: str, step: int, values: dict) -> dict | None:
        """Log a record (e.g. a generated sample) as the loop logs its own: ``metrics.jsonl``,
        TensorBoard and the ``on_metrics`` hooks. None when no loop is running."""
        return None if self.metrics is None else self.metrics.write(kind, step, values)


class Trainer:
    """Runs updates until the data, ``--max-steps`` or a signal ends the run."""

    def __init__(self, run: TrainingRun, model, optimizer, schedule, train_pipeline,
                 val_pipeline_factory, hooks, *, mesh_plan, primary: bool, start_step: int = 0,
                 best_val: float | None = None, objective=None, frozen=None,
                 uploads=None, trackers=None, samples=None):
        self.run = run
        self.cfg = run.config
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.train_pipeline = train_pipeline
        self.val_pipeline_factory = val_pipeline_factory
        self.hooks = hooks  # outside plugins; the built-in parts below are called directly
        self.uploads, self.samples = uploads, samples  # CloudSync, Samples (or None)
        self.trackers = trackers if trackers is not None else Trackers([], run.say)
        self.step = start_step
        self.best_val = best_val
        self.stop_signal: int | None = None
        self.first_step_seconds: float | None = None
        self.process_start = process_start_time()
        self.mesh_plan = mesh_plan
        self.primary = primary  # in a multi-process run only process 0 writes metrics
        self.segmented = bool(getattr(train_pipeline, "packed", False))  # packed rows
        # A preference objective (--objective dpo...): pair steps, counts and metrics.
        self.objective, self.pairs = objective, bool(getattr(objective, "pairs", False))
        self._pair_values: list = []  # each update's pair metrics since the last log line
        self.train_step, self.eval_step = make_steps(
            model, optimizer, mesh_plan, self.segmented, z_loss=self.cfg.train.z_loss,
            objective=objective, train=self.cfg.train, frozen=frozen)
        # The rates the optimizer applies, read from its own state before the update that uses
        # them (logged; never a recomputed schedule).
        self.read_rates = jax.jit(lambda opt_vars: applied_rates(optimizer, opt_vars))
        self._rates: dict = {}
        self.tokens_per_update = run.resolved.tokens_per_update
        self.mfu = MfuMeter(run.resolved.model)
        # Every run, one device or a mesh, checkpoints asynchronously through Orbax.
        self.checkpointer = Checkpointer(
            run.output_dir, model, optimizer,
            CheckpointRecord(run.config, run.resolved, run.tokenizer, run.chat_template,
                             mesh_plan.label,
                             run.resolved.tokens_per_update),
            primary=primary, process_count=jax.process_count(), on_sealed=self._sealed)
        self._steady_start: tuple[float, int] | None = None  # (time, step) after the compile

    # -- state -------------------------------------------------------------------------------
    def _write_back(self, state) -> None:
        """The Keras variables take the loop's values (they lag while it runs: see
        ``TrainingRun.state``)."""
        variables = (self.model.trainable_variables, self.model.non_trainable_variables,
                     self.optimizer.variables)
        for group, values in zip(variables, state, strict=True):
            for var, value in zip(group, values, strict=True):
                var.assign(value)

    def _place(self, batch, counts) -> tuple:
        """(inputs, labels, counts[, segments]) as the step takes them: global arrays over the
        mesh."""
        arrays = [batch.inputs, batch.labels] + ([batch.segments] if self.segmented else [])
        placed = [self.mesh_plan.place_batch(a) for a in arrays]
        return (*placed[:2], self.mesh_plan.place_rows(counts), *placed[2:])

    # -- pieces ------------------------------------------------------------------------------
    def evaluate(self, state) -> dict | None:
        if self.val_pipeline_factory is None:
            return None
        trainable, non_trainable, _ = state
        total, count = 0.0, 0
        for batch in self.val_pipeline_factory():
            out = np.asarray(self.eval_step(trainable, non_trainable, batch.inputs, batch.labels,
                                            batch.segments))
            total, count = total + out, count + (1 if self.pairs else int(out[1]))
        if count == 0 or self.pairs:  # pairs: the objective's loss and TRL's metrics
            return eval_logs(total, self.objective) if count else None
        loss = float(total[0]) / count
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0)), "val_tokens": count}

    def save(self, state, name: str, kind: str, pipeline_state: PipelineState | None) -> Path:
        """Start checkpoint ``name``: blocks for the copy to host only; its hooks run once it is
        sealed (:meth:`Checkpointer.poll`)."""
        return self.checkpointer.save(state, name, kind, step=self.step, best_val=self.best_val,
                                      pipeline_state=pipeline_state)

    def _sealed(self, path: Path, step: int, kind: str) -> None:
        """A checkpoint is complete: upload it, hand the final one to the trackers."""
        if self.uploads is not None:
            self.uploads.submit(path)
        if kind == "final":
            self.trackers.log_checkpoint(path)
        self.hooks.on_checkpoint_saved(run=self.run, path=path, step=step, kind=kind)

    def _in_use(self) -> set:
        """Checkpoint folders still uploading, or that a plugin still needs (its
        ``checkpoints_in_use``): pruning must not delete them."""
        uploading = self.uploads.in_use() if self.uploads is not None else set()
        return uploading | {Path(p) for paths in self.hooks.checkpoints_in_use(run=self.run)
                            for p in paths}

    def _should_stop(self) -> bool:
        """A signal stops the run; in several processes all stop after the same step."""
        if not self.mesh_plan.multi_process:
            return self.stop_signal is not None
        from kerastrain.training.processes import any_process

        if any_process(self.stop_signal is not None) and self.stop_signal is None:
            self.stop_signal = signal.SIGTERM  # another process was signalled
        return self.stop_signal is not None

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.stop_signal = signum

    # -- loop --------------------------------------------------------------------------------
    def fit(self, progress) -> dict:
        """Update until the data, ``--max-steps`` or a signal ends the run; then the final
        evaluation and checkpoint (or, interrupted, a checkpoint to resume from)."""
        total = self.run.total_steps
        metrics = self._open_metrics()
        state = initial_state(self.model, self.optimizer)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        batches = Prefetcher(self.train_pipeline, depth=4)
        losses = LossWindow(self._read_loss)
        position = self.train_pipeline.state  # the data position after the latest update
        saved_at = self.step
        self.display = Display(progress, self.run.say, self.step, total)
        self.display.waiting("reading the first batch")
        self._window = (time.perf_counter(), 0.0)  # (start, data wait so far) of the log window
        # A run of --epochs ends with its data: its updates were counted (run_length).
        reason = "data exhausted" if self.cfg.train.max_steps else "epochs completed"
        try:
            while total is None or self.step < total:
                micro = self._next_update(batches)
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
                if self._should_stop():
                    reason = "interrupted"
                    break
            else:
                reason = "max steps reached" if self.cfg.train.max_steps else "epochs completed"
            losses.take()  # the last update's loss, read and checked
        except BaseException:
            self.checkpointer.abandon()  # seal what is written, if it can be done alone
            raise
        finally:
            batches.close()
            for s, handler in old_handlers.items():
                signal.signal(s, handler)
        summary = {"steps": self.step, "reason": reason, "first_loss": losses.first,
                   "first_step_seconds": self.first_step_seconds, "last_loss": losses.last,
                   "data_wait_seconds": batches.wait_seconds, **self._throughput(),
                   **self._trained(position)}
        return self._finish(state, metrics, summary, position, saved_at)

    def _trained(self, position) -> dict:
        """What the run trained, counted from its batches, of every process
        (``kerastrain.data.counts``), and the epochs it completed."""
        from kerastrain.data.counts import summary_counts
        from kerastrain.training.processes import summed_over_processes

        counts = summary_counts(summed_over_processes(position.trained), self.segmented)
        done = not self.cfg.train.max_steps and self.step == self.run.total_steps
        # else: the epochs begun before the one this update is in
        return {**counts, "epochs_completed": self.cfg.train.epochs if done else position.epoch}

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
            from kerastrain.training.processes import DiscardedMetrics

            metrics = DiscardedMetrics()
        self.run.metrics = metrics
        return metrics

    def _next_update(self, batches) -> list | None:
        """The micro-batches of the next update, or None when the data has ended. The data's
        last update may hold fewer: it is completed with micro-batches that train nothing, so
        every example is trained and the update is the schedule's last (``run_length``)."""
        micro = []
        for _ in range(self.cfg.train.gradient_accumulation_steps):
            batch = next(batches, None)
            if batch is None:
                break
            micro.append(batch)
        if not micro and not self._share_ended():
            return None
        empty = self._empty_batch(micro[-1] if micro else None)
        return micro + [empty] * (self.cfg.train.gradient_accumulation_steps - len(micro))

    def _share_ended(self) -> bool:
        """Whether this process's share of the data has ended before the run's counted length:
        the other processes' shares hold more batches (``run_length``), and this one trains
        empty ones (they train nothing) until those end."""
        return (self.mesh_plan.multi_process
                and not self.cfg.train.max_steps and self.step < self.run.total_steps)

    def _empty_batch(self, last):
        """A micro-batch that trains nothing, shaped as the data's, at the data's position."""
        if last is not None:
            return dataclasses.replace(last, labels=np.full_like(last.labels, -1))
        from kerastrain.data.pipeline import Batch

        p = self.train_pipeline
        zeros = np.zeros((p.batch_size, p.seq_len), np.int32)
        return Batch(zeros, zeros - 1, p.state, segments=zeros if self.segmented else None)

    def _update(self, state, micro: list) -> tuple:
        """One optimizer update: a train step per micro-batch (Keras' optimizer accumulates and
        applies on the last); returns the new state and ``[loss, trained tokens]`` of the update:
        the mean over every trained token of its micro-batches (``make_steps``), a device array
        read later, so the device never waits for the host."""
        counts = update_counts(micro, self.pairs)
        losses = []
        step = self.step + 1
        logged = step % self.cfg.output.log_every == 0 or step == self.run.total_steps
        if self.first_step_seconds is None:
            self.display.waiting("compiling the step")
            compile_start = time.perf_counter()
        for i, batch in enumerate(micro):
            if logged and i == len(micro) - 1:  # the micro-step that applies the update
                self._rates = self.read_rates(state[2])
            out, state = self.train_step(state, *self._place(batch, counts))
            losses.append(out)
        loss = losses[0] if len(losses) == 1 else sum(losses[1:], losses[0])
        loss = loss.at[1].set(losses[0][1])  # the parts add up; the token count does not
        self.step += 1
        self.run.state = state
        if self.first_step_seconds is None:  # the compile: time from process start
            loss.block_until_ready()
            self.first_step_seconds = time.time() - self.process_start
            self._steady_start = (time.perf_counter(), self.step)
            self.display.first_update(self._steady_start[0] - compile_start)
        return state, loss

    def _log(self, losses: list[float], tokens: list[float], metrics, position, batches) -> None:
        """The log record of the updates since the previous one: mean loss, rate, throughput."""
        now = time.perf_counter()
        start, waited = self._window
        elapsed = max(now - start, 1e-9)
        logs = {
            "loss": float(np.mean(losses)),
            **{name: float(rate) for name, rate in self._rates.items()},
            "epoch": position.epoch,
            "tokens_per_sec": len(losses) * self.tokens_per_update / elapsed,
            "step_ms": 1000 * elapsed / len(losses),
            "data_wait_share": (batches.wait_seconds - waited) / elapsed,
            "tokens_seen": self.step * self.tokens_per_update,
            "trained_tokens": float(np.mean(tokens)),  # per update: what the loss averages
            **position.source_logs(),  # a mixture's tokens from each dataset
        }
        logs["mfu"] = self.mfu(logs["tokens_per_sec"])
        logs.update(pair_logs(self.objective, self._pair_values))  # rewards/chosen...
        self._pair_values = []
        metrics.write("train", self.step, logs)
        self.run.logs = logs
        self.display.logged(self.step, logs,
                            steady_eta(self.step, self.run.total_steps, self._steady_start, now))
        self._window = (now, batches.wait_seconds)

    def _periodic(self, state, metrics, position) -> bool:
        """``--eval-every`` and ``--save-every`` (the last update has its own, in
        :meth:`_finish`); prunes once a checkpoint is sealed. True when a checkpoint started."""
        out, last = self.cfg.output, self.step == self.run.total_steps
        if self.val_pipeline_factory and self.step % out.eval_every == 0 and not last:
            self._evaluate_and_keep_best(state, metrics, position)
        saving = self.step % out.save_every == 0 and not last
        if saving:
            self.save(state, f"checkpoint_step_{self.step}", "step", position)
        if self.checkpointer.poll() and self.primary:
            prune_step_checkpoints(self.run.output_dir, out.keep_last, keep=self._in_use())
        return saving

    def _finish(self, state, metrics, summary: dict, position, saved_at: int) -> dict:
        """Interrupted: a checkpoint of this very update. Otherwise the final evaluation, best
        and final checkpoints. Then every checkpoint sealed, pruned, and the summary logged."""
        if summary["reason"] == "interrupted":
            summary["signal"] = int(self.stop_signal)
            name = f"checkpoint_step_{self.step}"
            path = (self.save(state, name, "step", position) if self.step != saved_at
                    else self.run.output_dir / name)
            summary["checkpoint"] = str(path)
        else:
            final = self.evaluate(state)
            if final:
                summary.update(final)
                metrics.write("eval", self.step, final)
                self.hooks.on_evaluate(run=self.run, step=self.step, logs=final)
                if self.samples is not None:
                    self.samples.after_evaluation(self.step, state)
                self._maybe_best(state, final, position)
            summary["checkpoint"] = str(self.save(state, "final_checkpoint", "final", position))
        self.checkpointer.finish()
        self._write_back(state)  # on_train_end hooks and callers see the trained model
        if self.primary:
            prune_step_checkpoints(self.run.output_dir, self.cfg.output.keep_last,
                                   keep=self._in_use())
        metrics.write("summary", self.step, summary)
        metrics.close()
        self.run.metrics = None
        return summary

    def _throughput(self) -> dict:
        """Tokens/s and MFU over the steps after the first (which includes the compile)."""
        if self._steady_start is None or self.step <= self._steady_start[1]:
            return {}
        start, step = self._steady_start
        tps = (self.step - step) * self.tokens_per_update / max(time.perf_counter() - start, 1e-9)
        return {"tokens_per_sec": tps, "mfu": self.mfu(tps),
                "flops_per_token": self.mfu.flops_per_token, "peak_flops": self.mfu.peak}

    def _read_loss(self, pending) -> float:
        """The loss of a finished step as a float; a non-finite one stops the run."""
        step, loss = pending
        values = np.asarray(loss)
        value, tokens = float(values[0]), float(values[1])
        if self.pairs:
            self._pair_values.append(values[2:])
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the loss became {value} at step {step}; training stopped and the last good "
                f"checkpoint in {self.run.output_dir} is kept. Lower --learning-rate or "
                "--grad-clip, or check the data"
            )
        return value, tokens

    def _evaluate_and_keep_best(self, state, metrics, pipeline_state) -> None:
        result = self.evaluate(state)
        if not result:
            return
        metrics.write("eval", self.step, result)
        self.hooks.on_evaluate(run=self.run, step=self.step, logs=result)
        if self.samples is not None:
            self.samples.after_evaluation(self.step, state)
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
