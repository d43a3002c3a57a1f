"""The plugin manager: built-in parts and third-party plugins, loaded the same way.

Built-in modules in ``DEFAULT_PLUGINS`` are registered exactly like outside plugins; outside
plugins come from the ``kerastrain`` entry-point group. ``KERASTRAIN_LOAD_PLUGINS`` (a comma
separated list of entry-point or distribution names; empty for none) restricts which outside
plugins load. Plugin modules must import quickly: heavy imports belong inside their functions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from kerastrain import hookspecs
from kerastrain.config import SECTIONS, RunConfig
from kerastrain.errors import PluginError
from kerastrain.schema import Declared, OptionSpec, declared_fields
from kerastrain.validation import (
    FORMAT_MEMBERS,
    SOURCE_MEMBERS,
    TOKENIZER_MEMBERS,
    check_backend,
    check_members,
    check_preset,
    register_checked,
)

ENTRY_POINT_GROUP = "kerastrain"
LOAD_ENV = "KERASTRAIN_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "kerastrain.data.corpus",
    "kerastrain.data.preference_format",  # before formats: --data-format auto tries it first
    "kerastrain.data.formats",
    "kerastrain.data.tokenizer",
    "kerastrain.storage.backends",
    "kerastrain.model.presets",
    "kerastrain.model.families",
    "kerastrain.cli.model_commands",
    "kerastrain.cli.eval_command",
    "kerastrain.training.optimizer",
    "kerastrain.training.schedules",
    "kerastrain.training.objectives",
    "kerastrain.cli.storage_commands",
    "kerastrain.cli.export_command",
    "kerastrain.cli.chat_command",
    "kerastrain.cli.serve_command",
)

pm = pluggy.PluginManager("kerastrain")
pm.add_hookspecs(hookspecs)
_loaded = False


def _load_entry_points() -> None:
    wanted = os.environ.get(LOAD_ENV)
    allowed = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else None
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not break every command
            raise PluginError(
                f"plugin {ep.name!r} ({dist}) failed to import: {exc}; reinstall it or exclude it "
                f"with {LOAD_ENV}"
            ) from exc
        register_checked(pm, plugin, name=ep.name)  # a misspelt hook: one line naming it
        if dist:
            _dist_of[ep.name] = dist


_dist_of: dict[str, str] = {}


def get_plugin_manager() -> pluggy.PluginManager:
    """The loaded plugin manager (built-ins first, then entry points; loaded once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for name in DEFAULT_PLUGINS:
            if pm.get_plugin(name) is None:
                register_checked(pm, importlib.import_module(name), name=name)
        _load_entry_points()
        pm.check_pending()  # a hookimpl that matches no hookspec is an error
    return pm


@dataclass
class Registered:
    """One part a plugin registered."""

    name: str
    obj: Any
    plugin: str
    extra: dict = field(default_factory=dict)


def _collect(
    hook_name: str,
    kind: str,
    key: Callable[..., str],
    check: Callable[..., None] | None = None,
    problems: list[dict] | None = None,
) -> dict[str, Registered]:
    """What every plugin registers through ``hook_name``, checked as it is registered. A part
    registered twice or failing its check raises :class:`PluginError`, or, when ``problems`` is a
    list, is recorded there (``kerastrain plugins`` lists everything, marking the problems)."""
    manager = get_plugin_manager()
    found: dict[str, Registered] = {}
    hook = getattr(manager.hook, hook_name)
    for impl in hook.get_hookimpls():  # registration order
        plugin_name = impl.plugin_name

        def register(obj, *args, _plugin=plugin_name, **kwargs):
            name = key(obj, *args, **kwargs)
            try:
                if check is not None:
                    check(obj, *args, plugin=_plugin, **kwargs)
                if name in found:
                    raise PluginError(
                        f"{kind} {name!r} is registered by both plugin {found[name].plugin!r} and "
                        f"plugin {_plugin!r}; uninstall one or exclude it with {LOAD_ENV}"
                    )
            except PluginError as exc:
                if problems is None:
                    raise
                problems.append(
                    {"plugin": _plugin, "kind": kind, "name": name, "error": exc.format_message()}
                )
                return
            found[name] = Registered(name, obj, _plugin, {"args": args, **kwargs})

        impl.function(register=register)
    return found


def _check_source(obj, *args, plugin: str, **kwargs) -> None:
    check_members("data source", obj, SOURCE_MEMBERS, plugin)


def _check_format(obj, *args, plugin: str, **kwargs) -> None:
    check_members("data format", obj, FORMAT_MEMBERS, plugin)


def _check_tokenizer(obj, *args, plugin: str, **kwargs) -> None:
    check_members("tokenizer", obj, TOKENIZER_MEMBERS, plugin)


def _check_objective(obj, *args, plugin: str, **kwargs) -> None:
    check_members("objective", obj, ("name", "description", "pairs", "reference", "metric_names",
                                     *(("pair_loss",) if getattr(obj, "pairs", False) else ())),
                  plugin)


def _check_backend(obj, *args, plugin: str, **kwargs) -> None:
    check_backend(obj, plugin)


def architectures(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Model architectures (export targets, ``--init-from`` sources), in registration order."""
    return _collect("register_architectures", "architecture", lambda a: a.name, None, problems)


def _check_preset(name, fields=None, description="", *, plugin: str) -> None:
    check_preset(name, fields if fields is not None else {}, plugin)


def data_sources(problems: list[dict] | None = None) -> dict[str, Registered]:
    return _collect("register_data_sources", "data source", lambda s: s.name, _check_source,
                    problems)


def data_formats(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Data formats (``--data-format NAME``), in registration order (``auto`` tries them so)."""
    return _collect("register_data_formats", "data format", lambda f: f.name, _check_format,
                    problems)


def tokenizer_kinds(problems: list[dict] | None = None) -> dict[str, Registered]:
    return _collect("register_tokenizers", "tokenizer", lambda t: t.name, _check_tokenizer,
                    problems)


def storage_backends(problems: list[dict] | None = None) -> dict[str, Registered]:
    return _collect("register_storage_backends", "storage backend",
                    lambda b: getattr(b, "scheme", repr(b)), _check_backend, problems)


def trackers(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Experiment trackers (``--tracker NAME``), in registration order."""
    return _collect("register_trackers", "tracker", lambda t: t.name, None, problems)


def objectives(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Training objectives (``--objective NAME``), in registration order."""
    return _collect("register_objectives", "objective", lambda o: o.name, _check_objective,
                    problems)


def optimizers(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Optimizers (``--optimizer NAME``): ``Registered(name, make, plugin)``."""
    return _named_factories("register_optimizers", "optimizer", problems)


def lr_schedules(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Learning-rate schedules (``--lr-schedule NAME``): ``Registered(name, make, plugin)``."""
    return _named_factories("register_lr_schedules", "schedule", problems)


def _named_factories(hook_name: str, kind: str, problems) -> dict[str, Registered]:
    """Parts registered as ``register(name, make)``: ``Registered.obj`` is ``make``."""
    found = _collect(hook_name, kind, lambda name, make: name, None, problems)
    for reg in found.values():
        reg.obj = reg.extra.pop("args")[0]
    return found


def run_option_declarations(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Options plugins add to ``kerastrain run``: ``Registered(name, name, plugin, {spec})``."""
    return _collect("register_run_options", "run option", lambda name, **spec: name, None,
                    problems)


def presets(problems: list[dict] | None = None) -> dict[str, Registered]:
    """Model presets: ``Registered(name, fields_dict, plugin, {"description": ...})``; the fields
    are checked (known keys, a model that can build) as they are registered."""

    def key(name, fields=None, description=""):
        return name

    found = _collect("register_presets", "preset", key, _check_preset, problems)
    for reg in found.values():
        fields = reg.extra.get("fields")
        if fields is None and reg.extra.get("args"):
            fields = reg.extra["args"][0]
        reg.obj = dict(fields or {})
    return found


def plugin_report() -> list[dict]:
    """What ``kerastrain plugins`` prints: each plugin, its version, hooks and registrations."""
    manager = get_plugin_manager()
    registered: dict[str, list[str]] = {}
    problems: list[dict] = []
    for kind, parts in (
        ("data source", data_sources(problems)),
        ("data format", data_formats(problems)),
        ("tokenizer", tokenizer_kinds(problems)),
        ("storage", storage_backends(problems)),
        ("preset", presets(problems)),
        ("architecture", architectures(problems)),
        ("tracker", trackers(problems)),
        ("optimizer", optimizers(problems)),
        ("schedule", lr_schedules(problems)),
        ("objective", objectives(problems)),
        ("option", run_option_declarations(problems)),
    ):
        for reg in parts.values():
            registered.setdefault(reg.plugin, []).append(f"{kind}:{reg.name}")
    commands = plugin_commands()
    rows = []
    for name, plugin in manager.list_name_plugin():
        hooks = sorted(h.name for h in manager.get_hookcallers(plugin) or [])
        dist = _dist_of.get(name)
        version = None
        if dist:
            version = importlib.metadata.version(dist)
        elif name in DEFAULT_PLUGINS:
            version = importlib.metadata.version("kerastrain")
        rows.append(
            {
                "name": name,
                "builtin": name in DEFAULT_PLUGINS,
                "distribution": dist or ("kerastrain" if name in DEFAULT_PLUGINS else None),
                "version": version,
                "hooks": hooks,
                "registers": registered.get(name, []),
                "commands": commands.get(name, []),
                "problems": [p["error"] for p in problems if p["plugin"] == name],
            }
        )
    return rows


def plugin_commands() -> dict[str, list[str]]:
    """The command names each plugin adds through ``register_commands``."""
    import click

    found: dict[str, list[str]] = {}
    for impl in get_plugin_manager().hook.register_commands.get_hookimpls():
        group = click.Group()
        impl.function(cli=group)
        found[impl.plugin_name] = sorted(group.commands)
    return found


def run_options() -> list[Declared]:
    """Every option of ``kerastrain run``: RunConfig's fields (:mod:`kerastrain.config`), then
    the options plugins declare."""
    return [*declared_fields(RunConfig), *plugin_options()]


def plugin_options() -> list[Declared]:
    """The options plugins declare (``register_run_options``); a bad declaration is one line."""
    found: list[Declared] = []
    for reg in run_option_declarations().values():
        spec = dict(reg.extra)
        spec.pop("args", None)
        section, default, kind = spec.pop("section", None), spec.pop("default", None), \
            spec.pop("type", str)
        if section not in SECTIONS or section == "model":
            raise PluginError(f"run option {reg.name!r} of plugin {reg.plugin!r}: section must be "
                              f"one of {', '.join(s for s in SECTIONS if s != 'model')}")
        if reg.name in {d.name for d in declared_fields(SECTIONS[section], section)}:
            raise PluginError(f"run option {reg.name!r} of plugin {reg.plugin!r} is a kerastrain "
                              f"option already; choose another name")
        try:
            option_spec = OptionSpec(**spec)
        except TypeError as exc:
            raise PluginError(f"run option {reg.name!r} of plugin {reg.plugin!r}: {exc}") from None
        found.append(Declared(section, reg.name, option_spec,
                              kind | None if default is None else kind, default))
    return found
