"""Built-in plugin: the experiment trackers a run names with ``--tracker`` follow the loop.

Trackers are a plugin kind (``register_trackers``); this module is the one adapter between the
loop hooks and every tracker, so a tracker plugin only says how to start, log a record, store the
final checkpoint and finish. Records come from ``on_metrics``, the same ones ``metrics.jsonl``
gets, in memory. A tracker that fails mid-run (server down, disk full) never stops training: the
run says so once and goes on without it. The started trackers live on the run
(``run.plugin_state``: a list of (tracker class, tracker)).
"""

from __future__ import annotations

from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl


def tracker_classes() -> dict[str, type]:
    from kerastrain.plugins import trackers

    return {name: reg.obj for name, reg in trackers().items()}


def check_trackers(names: list[str]) -> None:
    """Each ``--tracker`` names a registered tracker; a one-line error otherwise."""
    known = tracker_classes()
    for name in names:
        if name not in known:
            have = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"--tracker {name}: no tracker plugin of that name is installed (installed: "
                f"{have}); install kerastrain-{name} (bundled trackers: kerastrain-mlflow, "
                "kerastrain-wandb)"
            )


def _call(run, action: str, *args) -> None:
    active = run.plugin_state.get(__name__, [])
    for entry in list(active):
        cls, tracker = entry
        try:
            getattr(tracker, action)(*args)
        except Exception as exc:  # any client error: the run and its checkpoints matter more
            active.remove(entry)
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            run.say(f"{cls.label}: {action} failed ({first}); training goes on without {cls.label}")


@hookimpl
def on_train_start(run):
    names = run.config.output.trackers or []
    if names:
        classes = tracker_classes()
        run.plugin_state[__name__] = [(classes[n], classes[n].start(run)) for n in names]


@hookimpl
def on_metrics(run, record):
    _call(run, "log", record)


@hookimpl
def on_checkpoint_saved(run, path, step, kind):
    if kind == "final":
        _call(run, "log_checkpoint", path)


@hookimpl
def on_train_end(run, logs):
    _call(run, "finish", logs)
    run.plugin_state.pop(__name__, None)
