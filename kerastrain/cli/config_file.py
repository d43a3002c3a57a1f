"""``--config FILE``: the options of ``kerastrain run`` from a TOML, YAML or JSON file.

Keys are option names, with ``_`` or ``-`` (``batch_size``, ``batch-size``), at the top level
or in the table of their section (``[data]``, ``[train]``, ``[output]``...): the name of their
``--help`` group and of their ``run_config.json`` section. The ``run_config.json`` every run
writes is such a file (its sections are those tables, its keys the options' field names), so
``kerastrain run --config OUT/run_config.json --output-dir NEW`` runs the same training again;
an option it holds that no installed plugin declares is an error, never dropped.

The file's values become click's ``default_map``: options given on the command line override
them, and click converts and checks every value exactly as if it had been typed.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import click

from kerastrain.errors import ConfigError
from kerastrain.schema import REDACTED, Declared


def _norm(name: str) -> str:
    """``batch-size`` → ``batch_size``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class OptionKeys:
    """Which file keys name which option (and whether they negate it), and each option's group."""

    def __init__(self, declared: list[Declared]) -> None:
        self.param_of: dict[str, tuple[str, bool]] = {}  # key -> (click parameter, negated)
        self.group_of: dict[str, str] = {}  # click parameter name -> its group's title
        self.groups: dict[str, str] = {}  # normalized group name -> title
        self.by_param = {d.param: d for d in declared}
        for d in declared:
            for flag in d.flags:
                on, _, off = flag.partition("/")
                self.param_of[_norm(on)] = (d.param, False)
                if off:
                    self.param_of[_norm(off)] = (d.param, True)
            for key in (*d.spec.keys, d.name):  # the field's name too: run_config.json's
                self.param_of.setdefault(_norm(key), (d.param, False))
            self.group_of[d.param] = d.group
            self.groups[d.group] = d.group

    def param(self, key: str, where: str, group: str | None = None) -> tuple[str, bool]:
        """The parameter a key names (and whether it negates it); a one-line error naming the
        closest key otherwise."""
        norm = _norm(key)
        if norm not in self.param_of:
            close = difflib.get_close_matches(norm, list(self.param_of), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else "; see kerastrain run --help"
            raise ConfigError(f"{where}: unknown option {key!r}{hint}")
        param, negated = self.param_of[norm]
        if group is not None and self.group_of[param] != group:
            right = _norm(self.group_of[param])
            raise ConfigError(
                f"{where}: {key!r} belongs in [{right}] or at the top level, not in "
                f"[{_norm(group)}]"
            )
        return param, negated


def read_file(path: Path) -> dict:
    """The file's mapping, by its suffix: .toml, .yaml/.yml, .json."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"--config {path}: use a .toml, .yaml, .yml or .json file")
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error type; all mean a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--config {path}: not valid {suffix[1:].upper()}: {first}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: the file must hold a mapping of option names")
    return data


def option_values(path: Path, keys: OptionKeys) -> dict[str, Any]:
    """``{parameter name: value}`` from a config file (grouped or flat, or a run_config.json)."""
    data = read_file(path)
    values: dict[str, Any] = {}
    where = f"--config {path}"

    def put(found: tuple[str, bool], value: Any, key: str) -> None:
        if value is None or value == REDACTED:  # unset; a secret run_config.json never holds
            return
        param, negated = found
        if param in values:
            raise ConfigError(f"{where}: {key!r} is given twice")
        if negated and isinstance(value, bool):
            value = not value
        values[param] = keys.by_param[param].to_click_value(value)

    for key, value in data.items():
        if isinstance(value, dict):
            group = keys.groups.get(_norm(key))
            if group is None:
                close = difflib.get_close_matches(_norm(key), list(keys.groups), n=1)
                hint = f"; did you mean [{close[0]}]?" if close else (
                    f"; groups: {', '.join(sorted(keys.groups))}")
                raise ConfigError(f"{where}: unknown table [{key}]{hint}")
            for inner, inner_value in value.items():
                put(keys.param(inner, where, group), inner_value, inner)
        else:
            put(keys.param(key, where), value, key)
    return values


def config_file_option(declared: list[Declared]):
    """The ``--config FILE`` option: eager, so the file's values are click's defaults before
    any other option is read."""
    keys = OptionKeys(declared)

    def apply(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is None or ctx.resilient_parsing:
            return
        values = option_values(Path(value), keys)
        ctx.default_map = {**(ctx.default_map or {}), **values}

    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), is_eager=True,
        expose_value=False, callback=apply,
        help="[Config] Read options from a TOML, YAML or JSON file (or a run's run_config.json); "
             "command-line options override it",
    )
