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
from kerastrain.errors import PluginError

ENTRY_POINT_GROUP = "kerastrain"
LOAD_ENV = "KERASTRAIN_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "kerastrain.data.corpus",
    "kerastrain.data.tokenizer",
    "kerastrain.storage.backends",
    "kerastrain.model.presets",
    "kerastrain.model.architectures",
    "kerastrain.storage.cloud_sync",
    "kerastrain.cli.model_commands",
    "kerastrain.cli.export_command",
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
        pm.register(plugin, name=ep.name)
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
                pm.register(importlib.import_module(name), name=name)
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


def _collect(hook_name: str, kind: str, key: Callable[..., str]) -> dict[str, Registered]:
    manager = get_plugin_manager()
    found: dict[str, Registered] = {}
    hook = getattr(manager.hook, hook_name)
    for impl in hook.get_hookimpls():  # registration order
        plugin_name = impl.plugin_name

        def register(obj, *args, _plugin=plugin_name, **kwargs):
            name = key(obj, *args, **kwargs)
            if name in found:
                raise PluginError(
                    f"{kind} {name!r} is registered by both plugin {found[name].plugin!r} and "
                    f"plugin {_plugin!r}; uninstall one or exclude it with {LOAD_ENV}"
                )
            found[name] = Registered(name, obj, _plugin, {"args": args, **kwargs})

        impl.function(register=register)
    return found


def data_sources() -> dict[str, Registered]:
    return _collect("register_data_sources", "data source", lambda s: s.name)


def tokenizer_kinds() -> dict[str, Registered]:
    return _collect("register_tokenizers", "tokenizer", lambda t: t.name)


def storage_backends() -> dict[str, Registered]:
    return _collect("register_storage_backends", "storage backend", lambda b: b.scheme)


def architectures() -> dict[str, Registered]:
    """Model architectures (export targets, ``--init-from`` sources), in registration order."""
    return _collect("register_architectures", "architecture", lambda a: a.name)


def presets() -> dict[str, Registered]:
    """Model presets: ``Registered(name, fields_dict, plugin, {"description": ...})``."""

    def key(name, fields=None, description=""):
        return name

    found = _collect("register_presets", "preset", key)
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
    for kind, parts in (
        ("data source", data_sources()),
        ("tokenizer", tokenizer_kinds()),
        ("storage", storage_backends()),
        ("preset", presets()),
        ("architecture", architectures()),
    ):
        for reg in parts.values():
            registered.setdefault(reg.plugin, []).append(f"{kind}:{reg.name}")
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
            }
        )
    return rows
