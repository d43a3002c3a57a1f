"""Built-in plugin: the experiment trackers a run names with ``--tracker`` follow the loop.

Trackers are a plugin kind (``register_trackers``); this module is the one adapter between the
loop hooks and every tracker, so a tracker plugin only says how to start, sync, store the final
checkpoint and finish. A tracker that fails mid-run (server down, disk full) never stops
training: the run says so once and goes on without it.
"""

from __future__ import annotations

from typing import Any

from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl

# id(run) -> [(tracker class, started tracker)]
_active: dict[int, list[tuple[type, Any]]] = {}


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
    for entry in list(_active.get(id(run), [])):
        cls, tracker = entry
        try:
            getattr(tracker, action)(*args)
        except Exception as exc:  # any client error: the run and its checkpoints matter more
            _active[id(run)].remove(entry)
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            run.say(f"{cls.label}: {action} failed ({first}); training goes on without {cls.label}")


@hookimpl
def on_train_start(run):
    names = run.config.output.trackers or []
    if names:
        classes = tracker_classes()
        _active[id(run)] = [(classes[n], classes[n].start(run)) for n in names]


@hookimpl
def on_train_step(run, step, logs):
    _call(run, "sync")


@hookimpl
def on_evaluate(run, step, logs):
    _call(run, "sync")


@hookimpl
def on_checkpoint_saved(run, path, step, kind):
    if kind == "final":
        _call(run, "log_checkpoint", path)


@hookimpl
def on_train_end(run, logs):
    _call(run, "finish", logs)
    _active.pop(id(run), None)
