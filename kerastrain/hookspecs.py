"""The hooks a kerastrain plugin may implement.

Registration hooks hand the plugin a ``register`` callback (as ``llm`` does) rather than asking it
to return lists, so one plugin can register several parts and the manager knows which plugin
registered what. Training hooks let plugins observe the loop: ``on_metrics`` hands each logged
record to its sinks in memory (nothing reads ``metrics.jsonl`` during a run), and
``checkpoints_in_use`` keeps folders a plugin still needs from ``--keep-last`` pruning, so the loop
imports no plugin. A plugin keeps per-run state on the run (``run.plugin_state``), never in module
globals. The plugin author's guide, ``docs/plugins.md``, documents every interface these hooks
hand over.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("kerastrain")
hookimpl = pluggy.HookimplMarker("kerastrain")


@hookspec
def register_data_sources(register):
    """Register data sources: ``register(source)`` with a :class:`kerastrain.data.sources.DataSource`."""


@hookspec
def register_data_formats(register):
    """Register data formats: ``register(fmt)`` with a :class:`kerastrain.data.formats.DataFormat`
    (how records become token ids and loss masks; ``--data-format NAME`` selects it)."""


@hookspec
def register_tokenizers(register):
    """Register tokenizer kinds: ``register(kind)`` with a :class:`kerastrain.data.tokenizer.TokenizerKind`."""


@hookspec
def register_storage_backends(register):
    """Register storage backends: ``register(backend_class)`` with a
    :class:`kerastrain.storage.backends.StorageBackend` class (its ``scheme`` names it)."""


@hookspec
def register_presets(register):
    """Register model presets: ``register(name, fields: dict, description="")``."""


@hookspec
def register_architectures(register):
    """Register model families: ``register(family)`` with a
    :class:`kerastrain.model.families.Family` entry (export and ``--init-from`` formats)."""


@hookspec
def register_trackers(register):
    """Register experiment trackers: ``register(tracker_class)`` with a class that has ``name``
    (what ``--tracker NAME`` selects), ``label`` (for messages), ``start(run) -> tracker`` (a
    classmethod) and, on the tracker, ``log(record)`` (each record of ``on_metrics``),
    ``log_checkpoint(path)`` and ``finish(summary)`` (see :mod:`kerastrain.training.tracking`)."""


@hookspec
def register_optimizers(register):
    """Register optimizers: ``register(name, make)`` where ``make(train, model, **common)`` returns
    a Keras optimizer (``train``: the run's :class:`kerastrain.config.TrainConfig`; ``common``:
    the keyword arguments every Keras optimizer takes that the run sets: ``learning_rate`` (the
    schedule), ``global_clipnorm``, ``gradient_accumulation_steps``). kerastrain builds it.
    ``--optimizer NAME`` selects it; its own settings are options it adds with
    ``register_run_options`` (section ``train``)."""


@hookspec
def register_lr_schedules(register):
    """Register learning-rate schedules: ``register(name, make)`` where ``make(train, total_steps)``
    returns ``(schedule, warmup_steps)``: a Keras ``LearningRateSchedule`` evaluated at the update
    count (0, 1, ..., ``total_steps - 1``), and the warm-up it applies. ``train.warmup_steps`` is
    the run's warm-up, decided by its first invocation and kept by every resume.
    ``--lr-schedule NAME`` selects it."""


@hookspec
def register_objectives(register):
    """Register training objectives: ``register(objective)`` with a
    :class:`kerastrain.training.objectives.Objective` (``--objective NAME`` selects it): the
    language-model loss, or a loss on the summed log-probs of chosen / rejected pairs."""


@hookspec
def register_run_options(register):
    """Add options to ``kerastrain run`` (as pytest's ``pytest_addoption``):
    ``register(name, section=..., help=..., default=None, type=str, secret=False,
    envvar=None, flags=(...))``. The value is read as ``config.<section>.<name>`` (e.g.
    ``config.cloud.azure_sas_token``); the section is its ``--help`` group and config-file table
    (``[cloud]``), and it is part of ``run_config.json`` (redacted when ``secret``)."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``kerastrain`` command group."""


@hookspec
def on_train_start(run):
    """Called once the model, data and optimizer are ready, before the first step."""


@hookspec
def on_train_step(run, step: int, logs: dict):
    """Called after every optimizer update. ``logs`` holds the latest logged metrics (loss, lr,
    tokens/s...), refreshed every ``--log-every`` steps."""


@hookspec
def on_evaluate(run, step: int, logs: dict):
    """Called after each validation pass."""


@hookspec
def on_metrics(run, record: dict):
    """Called with each record the run logs (``kind``: train, eval, sample, summary; ``step``,
    ``time`` and its values), just after ``metrics.jsonl`` got the same record: trackers and other
    sinks take records from here, so nothing re-reads the file during a run. Do not modify it."""


@hookspec
def checkpoints_in_use(run) -> list:
    """Local checkpoint folders this plugin still needs (e.g. still uploading): return a list of
    paths, possibly empty. ``--keep-last`` pruning deletes none of the folders any plugin names."""


@hookspec
def on_checkpoint_saved(run, path, step: int, kind: str):
    """Called after a checkpoint is complete on local disk (``kind``: step, best, final)."""


@hookspec
def on_train_end(run, logs: dict):
    """Called once when training stops, normally or not."""
