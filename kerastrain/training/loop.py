"""The training loop: jitted stateless steps over Keras' model and optimizer.

Why not ``model.fit``: exact resume needs the data position of the very batch a checkpoint follows,
per-update hooks, a one-step-late loss read (the device never idles waiting for the host) and a
non-finite check naming the step; ``fit`` gives neither the position nor mid-epoch resume
(``BackupAndRestore`` restarts the epoch). The loop still uses Keras for everything numeric:
``model.stateless_call`` and ``optimizer.stateless_apply`` (AdamW, schedule, clipping, gradient
accumulation). ``benchmarks/bench_loop.py`` compares its speed with ``fit``.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import keras
import numpy as np

from kerastrain.data.pipeline import PipelineState, Prefetcher
from kerastrain.errors import UserError
from kerastrain.training.checkpoint import prune_step_checkpoints
from kerastrain.training.flops import MfuMeter
from kerastrain.training.loss import chunked_eval_loss, chunked_lm_loss
from kerastrain.training.metrics_log import MetricsLog
from kerastrain.training.sharded_checkpoint import Checkpointer


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
    step: int = 0
    total_steps: int = 0
    logs: dict = field(default_factory=dict)
    # (trainable, non-trainable, optimizer) values after the latest update; read them in a hook
    # only (the next update reuses their buffers). The Keras variables lag until a checkpoint.
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


def lm_loss(labels, logits):
    """Mean next-token cross-entropy, computed in float32 whatever the compute dtype."""
    logits = keras.ops.cast(logits, "float32")
    losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return keras.ops.mean(losses)


def initial_state(model, optimizer) -> tuple:
    """The (trainable, non-trainable, optimizer) values the jitted steps thread through."""
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )


def make_steps(model, optimizer, mesh_plan=None):
    """Jitted (train_step, eval_step) over explicit state tuples.

    With a ``mesh_plan`` (``kerastrain.training.distribution``) the train step keeps every state
    array in the sharding it was created with and takes the batch split over the mesh's batch
    axes: XLA's SPMD partitioner does the rest.
    """

    def loss_fn(trainable, non_trainable, x, y):
        # The output projection and cross-entropy run in chunks (never the whole batch's logits).
        return chunked_lm_loss(model, trainable, non_trainable, x, y, training=True)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    def eval_step(trainable, non_trainable, x, y):
        return chunked_eval_loss(model, trainable, non_trainable, x, y)

    if mesh_plan is not None:
        shardings = mesh_plan.state_shardings(initial_state(model, optimizer))
        batch = mesh_plan.batch_sharding
        return jax.jit(train_step, donate_argnums=0, in_shardings=(shardings, batch, batch),
                       out_shardings=(mesh_plan.replicated, shardings)), jax.jit(eval_step)
    return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)


class Trainer:
    """Runs updates until the data, ``--max-steps`` or a signal ends the run."""

    def __init__(self, run: TrainingRun, model, optimizer, schedule, train_pipeline,
                 val_pipeline_factory, hooks, start_step: int = 0, best_val: float | None = None,
                 mesh_plan=None):
        self.run = run
        self.cfg = run.config
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.train_pipeline = train_pipeline
        self.val_pipeline_factory = val_pipeline_factory
        self.hooks = hooks
        self.step = start_step
        self.best_val = best_val
        self.stop_signal: int | None = None
        self.first_step_seconds: float | None = None
        self.process_start = process_start_time()
        self.mesh_plan = mesh_plan
        # In a multi-process run only process 0 writes metrics and checkpoints.
        self.primary = mesh_plan is None or mesh_plan.process_index == 0
        self.train_step, self.eval_step = make_steps(model, optimizer, mesh_plan)
        self.tokens_per_update = run.resolved.tokens_per_update
        self.mfu = MfuMeter(run.resolved.model)
        # Every run, one device or a mesh, checkpoints asynchronously through Orbax.
        self.checkpointer = Checkpointer(self)
        self._steady_start: tuple[float, int] | None = None  # (time, step) after the compile

    # -- state -------------------------------------------------------------------------------
    def _place(self, batch) -> tuple:
        """(inputs, labels) as the step takes them: global arrays over the mesh, if any."""
        if self.mesh_plan is None:
            return batch.inputs, batch.labels
        return self.mesh_plan.place_batch(batch.inputs), self.mesh_plan.place_batch(batch.labels)

    # -- pieces ------------------------------------------------------------------------------
    def evaluate(self, state) -> dict | None:
        if self.val_pipeline_factory is None:
            return None
        trainable, non_trainable, _ = state
        total, count = 0.0, 0
        for batch in self.val_pipeline_factory():
            s, n = self.eval_step(trainable, non_trainable, batch.inputs, batch.labels)
            total += float(s)
            count += int(n)
        if count == 0:
            return None
        loss = total / count
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0)), "val_tokens": count}

    def save(self, state, name: str, kind: str, pipeline_state: PipelineState | None) -> Path:
        """Start checkpoint ``name``: blocks for the copy to host only; its hooks run once it is
        sealed (:meth:`Checkpointer.poll`)."""
        return self.checkpointer.save(state, name, kind, pipeline_state)

    def _in_use(self) -> set:
        """Checkpoint folders a plugin still needs (e.g. uploading): pruning must not delete
        them. The plugins answer through the ``checkpoints_in_use`` hook."""
        return {Path(p) for paths in self.hooks.checkpoints_in_use(run=self.run) for p in paths}

    def _should_stop(self) -> bool:
        """A signal stops the run; in several processes all stop after the same step."""
        if self.mesh_plan is None or not self.mesh_plan.multi_process:
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
        cfg, out = self.cfg, self.run.output_dir
        accum = cfg.train.gradient_accumulation_steps
        total = self.run.total_steps
        if self.primary:
            metrics = MetricsLog(out, publish=lambda record: self.hooks.on_metrics(
                run=self.run, record=record))
        else:
            from kerastrain.training.processes import DiscardedMetrics

            metrics = DiscardedMetrics()
        self.run.metrics = metrics  # samples and other plugins log through run.log_metrics
        state = initial_state(self.model, self.optimizer)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        batches = Prefetcher(self.train_pipeline, depth=4)
        pending = None  # (step, loss array): read one step late so the device stays busy
        window_losses: list[float] = []
        window_start, window_wait = time.perf_counter(), 0.0
        last_pipeline_state = self.train_pipeline.state
        last_saved_step = self.step
        first_loss = last_loss = None
        task = progress.add_task("train", total=total, completed=self.step, loss=float("nan"),
                                 lr=0.0, tps=0.0, mfu=0.0, epoch=self.train_pipeline.state.epoch)
        reason = "data exhausted"
        try:
            while total is None or self.step < total:
                micro = []
                for _ in range(accum):
                    batch = next(batches, None)
                    if batch is None:
                        break
                    micro.append(batch)
                if len(micro) < accum:
                    break  # not enough data left for a whole update
                losses = []
                for batch in micro:  # Keras' optimizer accumulates and applies on the last one
                    loss, state = self.train_step(state, *self._place(batch))
                    losses.append(loss)
                if accum > 1:  # the update's loss: the mean over its micro-batches
                    loss = sum(losses[1:], losses[0]) / accum
                self.step += 1
                self.run.state = state
                last_pipeline_state = micro[-1].state
                if pending is not None:
                    value = self._read_loss(pending)
                    window_losses.append(value)
                    first_loss = value if first_loss is None else first_loss
                    last_loss = value
                elif self.first_step_seconds is None:
                    loss.block_until_ready()
                    self.first_step_seconds = time.time() - self.process_start
                    self._steady_start = (time.perf_counter(), self.step)
                pending = (self.step, loss)
                self.hooks.on_train_step(run=self.run, step=self.step, logs=self.run.logs)
                if self.step % cfg.output.log_every == 0 or self.step == total:
                    value = self._read_loss(pending)
                    window_losses.append(value)
                    first_loss = value if first_loss is None else first_loss
                    last_loss, pending = value, None
                    now = time.perf_counter()
                    wait = batches.wait_seconds - window_wait
                    elapsed = max(now - window_start, 1e-9)
                    steps_in_window = len(window_losses)
                    logs = {
                        "loss": float(np.mean(window_losses)),
                        "lr": float(self.schedule(self.step)),
                        "epoch": last_pipeline_state.epoch,
                        "tokens_per_sec": steps_in_window * self.tokens_per_update / elapsed,
                        "step_ms": 1000 * elapsed / steps_in_window,
                        "data_wait_share": wait / elapsed,
                        "tokens_seen": self.step * self.tokens_per_update,
                    }
                    logs["mfu"] = self.mfu(logs["tokens_per_sec"])
                    metrics.write("train", self.step, logs)
                    self.run.logs = logs
                    progress.update(task, completed=self.step, loss=logs["loss"], lr=logs["lr"],
                                    tps=logs["tokens_per_sec"], epoch=logs["epoch"],
                                    mfu=100 * logs["mfu"])
                    if progress.disable:
                        self.run.say(
                            f"step {self.step}/{total} epoch {logs['epoch']} loss {logs['loss']:.4f} "
                            f"lr {logs['lr']:.2e} {logs['tokens_per_sec']:,.0f} tok/s "
                            f"MFU {100 * logs['mfu']:.1f}%"
                        )
                    window_losses, window_start, window_wait = [], now, batches.wait_seconds
                last_step = self.step == total
                if self.val_pipeline_factory and self.step % cfg.output.eval_every == 0 \
                        and not last_step:  # the final evaluation follows
                    self._evaluate_and_keep_best(state, metrics, last_pipeline_state)
                if self.step % cfg.output.save_every == 0 and not last_step:
                    self.save(state, f"checkpoint_step_{self.step}", "step", last_pipeline_state)
                    last_saved_step = self.step
                if self.checkpointer.poll() and self.primary:
                    prune_step_checkpoints(out, cfg.output.keep_last, keep=self._in_use())
                if self._should_stop():
                    reason = "interrupted"
                    break
            else:
                reason = "max steps reached"
            if pending is not None:
                last_loss = self._read_loss(pending)
                first_loss = last_loss if first_loss is None else first_loss
        except BaseException:
            self.checkpointer.abandon()  # seal what is written, if it can be done alone
            raise
        finally:
            batches.close()
            for s, handler in old_handlers.items():
                signal.signal(s, handler)
        summary = {"steps": self.step, "reason": reason, "first_loss": first_loss,
                   "first_step_seconds": self.first_step_seconds,
                   "last_loss": last_loss, "data_wait_seconds": batches.wait_seconds}
        summary.update(self._throughput())
        if reason == "interrupted":
            summary["signal"] = int(self.stop_signal)
            if self.step != last_saved_step:
                path = self.save(state, f"checkpoint_step_{self.step}", "step", last_pipeline_state)
            else:
                path = out / f"checkpoint_step_{self.step}"
            summary["checkpoint"] = str(path)
        else:
            final = self.evaluate(state)
            if final:
                summary.update(final)
                metrics.write("eval", self.step, final)
                self.hooks.on_evaluate(run=self.run, step=self.step, logs=final)
                self._maybe_best(state, final, last_pipeline_state)
            summary["checkpoint"] = str(self.save(state, "final_checkpoint", "final",
                                                  last_pipeline_state))
        self.checkpointer.finish()
        if self.primary:
            prune_step_checkpoints(out, cfg.output.keep_last, keep=self._in_use())
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
        value = float(loss)
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the loss became {value} at step {step}; training stopped and the last good "
                f"checkpoint in {self.run.output_dir} is kept. Lower --learning-rate or "
                "--grad-clip, or check the data"
            )
        return value

    def _evaluate_and_keep_best(self, state, metrics, pipeline_state) -> None:
        result = self.evaluate(state)
        if not result:
            return
        metrics.write("eval", self.step, result)
        self.hooks.on_evaluate(run=self.run, step=self.step, logs=result)
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
