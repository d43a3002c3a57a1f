"""Checks made when a plugin registers something, so its author hears of a mistake at once.

Each check raises a one-line :class:`PluginError` naming the plugin and, for a misspelling, the
closest valid name: a preset with an unknown key or one that cannot build, a hook implementation
that matches no hook, a storage backend class or data source missing a required member.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from typing import Any

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError, PluginError

# Short preset keys -> ModelConfig fields (the built-in preset files use the short ones).
PRESET_ALIASES = {"layers": "num_layers", "heads": "num_heads"}
# Preset keys that are not model fields but are accepted (description; a named architecture).
PRESET_EXTRA_KEYS = ("description", "architecture")  # architecture: checked when resolved
# A preset's value is what ``kerastrain run`` would otherwise get from these options.
_FLAG_TO_KEY = {
    "--num-layers": "layers",
    "--num-heads": "heads",
    "--d-model": "d_model",
    "--d-ff": "d_ff",
    "--seq-len": "seq_len",
    "--vocab-size": "vocab_size",
    "--dropout-rate": "dropout_rate",
    "--activation": "activation",
    "--lora-rank": "lora_rank",
    "--no-rope": "use_rope: false",
}

BACKEND_MEMBERS = ("scheme", "from_config", "upload_file", "download_file", "list_keys", "exists",
                   "delete")  # fmt: skip
SOURCE_MEMBERS = ("name", "open", "splits")
FORMAT_MEMBERS = ("name", "description", "columns", "packed", "needs_template", "matches", "text",
                  "encode")
TOKENIZER_MEMBERS = ("name", "train", "can_load", "load")


def preset_keys() -> list[str]:
    """Every key a preset may use."""
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    return [*PRESET_ALIASES, *fields, *PRESET_EXTRA_KEYS]


def closest(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_preset(name: str, fields: dict, plugin: str) -> dict:
    """Validate a registered preset; returns its ModelConfig fields (aliases resolved)."""
    if not isinstance(fields, dict):
        raise PluginError(f"preset {name!r} of plugin {plugin!r}: fields must be a dict, "
                          f"got {type(fields).__name__}")
    valid = preset_keys()
    out = {}
    for key, value in fields.items():
        if key not in valid:
            raise PluginError(
                f"preset {name!r} of plugin {plugin!r} has unknown key {key!r}"
                f"{closest(key, valid)}; valid keys: {', '.join(valid)}"
            )
        if key not in PRESET_EXTRA_KEYS:
            out[PRESET_ALIASES.get(key, key)] = value
    try:
        ModelConfig(**out).validate()
    except (ConfigError, TypeError) as exc:
        message = exc.format_message() if isinstance(exc, ConfigError) else str(exc)
        for flag, key in _FLAG_TO_KEY.items():
            message = re.sub(rf"{re.escape(flag)}(?![\w-])", key, message)
        raise PluginError(f"preset {name!r} of plugin {plugin!r} cannot build: {message}") from None
    return out


def check_members(kind: str, obj: Any, members: tuple[str, ...], plugin: str) -> None:
    """``obj`` (a class or an instance) has every member of its interface."""
    missing = [m for m in members if not hasattr(obj, m)]
    if missing:
        what = obj.__name__ if inspect.isclass(obj) else type(obj).__name__
        raise PluginError(
            f"{kind} {what} of plugin {plugin!r} lacks {', '.join(missing)} "
            "(see docs/plugins.md for the interface)"
        )


def check_backend(obj: Any, plugin: str) -> None:
    """A storage backend must be a class with every member of ``StorageBackend``."""
    if not inspect.isclass(obj):
        raise PluginError(
            f"plugin {plugin!r} registered a storage backend that is not a class "
            f"({type(obj).__name__}); register the class itself"
        )
    check_members("storage backend", obj, BACKEND_MEMBERS, plugin)
    if not isinstance(getattr(obj, "scheme", None), str) or not obj.scheme:
        raise PluginError(f"storage backend {obj.__name__} of plugin {plugin!r}: scheme must be a "
                          "non-empty string (the URL scheme it serves)")


def check_hook_names(pm) -> None:
    """Every hook implementation matches a hook (pluggy's ``check_pending``, as one line)."""
    specs = [name for name, caller in vars(pm.hook).items() if getattr(caller, "spec", None)]
    for name, caller in vars(pm.hook).items():
        if name.startswith("_") or getattr(caller, "spec", None) is not None:
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} implements {name!r}, which is not a kerastrain "
                    f"hook{closest(name, specs)}"
                )


def register_checked(pm, plugin: Any, name: str | None = None) -> str:
    """``pm.register`` with pluggy's validation errors (a hook with wrong arguments, a hook that
    does not exist) as one-line :class:`PluginError` s; a refused plugin is left unregistered."""
    import pluggy

    try:
        registered = pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PluginError(f"plugin {name or exc.plugin!r} is invalid: {first}") from None
    try:
        check_hook_names(pm)
    except PluginError:
        pm.unregister(name=registered)
        raise
    return registered
