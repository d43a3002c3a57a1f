"""The option schema: each option of a run is declared once, as a dataclass field.

A field of a section of :class:`kerastrain.config.RunConfig` made with :func:`option` carries its
flag spellings, help, check and secrecy in its metadata. Its section is its one address: the
``--help`` group (``[train]``), the config-file table (``[train]``) and the ``run_config.json``
section (``train.batch_size``) all carry the section's name. Everything else is
derived from that declaration: the click options of ``run``, ``plan`` and ``eval``
(:mod:`kerastrain.cli.options`), the keys and tables a ``--config`` file may use
(:mod:`kerastrain.cli.config_file`), ``run_config.json`` and reading it back, the checks, and the
option reference in ``docs/options.md``. Plugins declare options the same way through the
``register_run_options`` hook (:func:`kerastrain.plugins.run_options` lists both); their values
live in their section's ``extra``.

(Why not draccus or pydantic: the CLI must stay click, with the seed guide's flag spellings and
``--help`` groups; a field's metadata gives exactly that with no new dependency.)
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass
from typing import Any

from kerastrain.errors import ConfigError

REDACTED = "<redacted>"
# The keys of KEY=VALUE settings (--cloud-option, --data-option) whose values are credentials.
SECRET_KEY = re.compile(r"key|secret|token|password|credential|connection_string|sas", re.I)
UNSET = type("Unset", (), {"__repr__": lambda self: "UNSET"})()  # "no shown default declared"


@dataclass(frozen=True)
class OptionSpec:
    """How one configuration value is offered to the user."""

    help: str
    flags: tuple[str, ...] = ()  # click declarations; default: --FIELD-NAME
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    secret: bool = False  # never written to disk or logs
    envvar: str | None = None
    metavar: str | None = None
    keys: tuple[str, ...] = ()  # extra config-file keys (besides the flag spellings)
    shown_default: Any = UNSET  # the default --help shows where the field's default is None
    cli_default_none: bool = False  # the click default is None (model fields: a preset applies)


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
           **spec: Any) -> Any:
    """A dataclass field that is a user option (see :class:`OptionSpec` for ``spec``)."""
    metadata = {"option": OptionSpec(help=help, **spec)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# -- checks (each returns what is wrong with a value, or None) -------------------------------------
def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v >= low else f"must be at least {low}, got {v}"


def positive(v) -> str | None:
    return None if v is None or v > 0 else f"must be positive, got {v}"


def not_negative(v) -> str | None:
    return None if v is None or v >= 0 else f"cannot be negative, got {v}"


def fraction(v) -> str | None:
    return None if v is None or 0 <= v < 1 else f"must be in [0, 1), got {v}"


# -- the declared fields ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Declared:
    """One declared option: where it lives and how it is spelled."""

    section: str | None  # None: a top-level field of RunConfig
    name: str  # the dataclass field
    spec: OptionSpec
    type: Any  # the field's type (``int | None`` etc.)
    default: Any

    @property
    def param(self) -> str:
        """The click parameter name (unique across sections)."""
        return f"{self.section}__{self.name}" if self.section else self.name

    @property
    def group(self) -> str:
        """Its section: the ``--help`` group, config-file table and run_config.json section
        (``--preset``, a top-level field of run_config.json, is shown with the model's)."""
        return self.section or "model"

    @property
    def flags(self) -> tuple[str, ...]:
        return self.spec.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def flag(self) -> str:
        """The main spelling, as messages name it (``--batch-size``)."""
        return self.flags[0].split("/")[0]

    @property
    def base_type(self) -> Any:
        """``int`` for ``int | None``; ``list`` / ``dict`` for containers."""
        t = self.type
        if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        return typing.get_origin(t) or t

    @property
    def item_type(self) -> Any:
        """``float`` for ``list[float]`` (the items of a list option; ``str`` when untyped)."""
        t = self.type
        if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        args = typing.get_args(t)
        return (typing.get_origin(args[0]) or args[0]) if args else str

    @property
    def shown_default(self) -> Any:
        return self.default if self.spec.shown_default is UNSET else self.spec.shown_default

    def check(self, value: Any) -> None:
        if self.spec.check is not None:
            problem = self.spec.check(value)
            if problem:
                raise ConfigError(f"{self.flag} {problem}")

    def to_click_value(self, value: Any) -> Any:
        """A stored value as click takes it (``--cloud-option`` pairs as KEY=VALUE strings)."""
        if self.base_type is dict:
            return [f"{k}={v}" for k, v in (value or {}).items()]
        if self.base_type is list:  # one value for a list (an older run's single dataset id)
            items = [] if value is None else [value] if isinstance(value, str | dict) else value
            return [json.dumps(v) if isinstance(v, dict) else str(v) for v in items]
        return value

    def from_click_value(self, value: Any) -> Any:
        """click's value as stored (tuples as lists, KEY=VALUE pairs as a dict)."""
        if self.base_type is dict:  # settings that are credentials are never written
            return {k: Secret(v) if SECRET_KEY.search(k) and v != REDACTED else v
                    for k, v in parse_pairs(self.flag, value or ()).items() if v != REDACTED}
        if self.base_type is list:
            return [item for v in (value or ()) for item in self.list_items(v)]
        return Secret(value) if self.spec.secret and value else value


    def list_items(self, value: Any) -> list:
        """One click value of a list option as its items: ``0.7,0.3`` for a list of numbers,
        ``KEY=VALUE,...`` or a JSON object for a list of tables (``[[dataset]]``)."""
        if not isinstance(value, str):
            return [value]
        item = self.item_type
        if item in (int, float):
            try:
                return [item(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"{self.flag} {value!r}: give numbers, e.g. 0.7,0.3") from None
        if item is dict:
            if value.lstrip().startswith("{"):
                try:
                    table = json.loads(value)
                except ValueError as exc:
                    raise ConfigError(f"{self.flag} {value!r} is not a JSON object: {exc}") from None
                if not isinstance(table, dict):
                    raise ConfigError(f"{self.flag} {value!r} is not a JSON object")
                return [table]
            return [parse_pairs(self.flag, value.split(","))]
        return [value]


def parse_pairs(flag: str, pairs) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict (a key given twice: the last wins)."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r} is not KEY=VALUE")
        found[key.strip()] = value
    return found


def declared_fields(cls: type, section: str | None = None) -> Iterator[Declared]:
    """Every option field of dataclass ``cls`` (sections recursed, in declaration order)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            if section is None and dataclasses.is_dataclass(hints[f.name]):
                yield from declared_fields(hints[f.name], f.name)
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        yield Declared(section, f.name, spec, hints[f.name], default)


def section_values(cls: type, values: dict[str, Any]) -> Any:
    """An instance of section ``cls`` from the values given (the others keep their defaults)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


class Secret(str):
    """The value of a secret option: equal to its text, but never written or shown."""

    def __repr__(self) -> str:
        return "Secret('***')"


def redacted(data: dict) -> dict:
    """``data`` (a RunConfig as a dict, by section) with every :class:`Secret` replaced."""
    def hide(v):
        if isinstance(v, dict):  # KEY=VALUE settings
            return {n: hide(x) for n, x in v.items()}
        return REDACTED if isinstance(v, Secret) else v

    return {k: ({n: hide(v) for n, v in section.items()} if isinstance(section, dict)
                else section) for k, section in data.items()}

