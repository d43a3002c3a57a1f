"""The options of ``kerastrain run``, generated from the declared schema (:mod:`kerastrain.schema`),
and how click's values become one frozen :class:`kerastrain.config.RunConfig`.

Shared by every command that takes a run's options (``run``, ``plan``; ``eval`` and ``sync`` take
some of them through :func:`declared_option`).
"""

from __future__ import annotations

import dataclasses
import functools

import click

from kerastrain.cli.config_file import config_file_option
from kerastrain.config import RunConfig, build_run_config
from kerastrain.plugins import plugin_options, run_options
from kerastrain.schema import UNSET, Declared


def click_kwargs(d: Declared, *, default_none: bool = False) -> dict:
    """click's keyword arguments for one declared option."""
    spec = d.spec
    kwargs: dict = {"envvar": spec.envvar, "metavar": spec.metavar}
    help_text = f"[{d.group}] {spec.help}"
    base = d.base_type
    if base in (list, dict):
        kwargs["multiple"] = True
    elif base is bool:
        if "/" not in d.flags[0]:
            kwargs["is_flag"] = True
    elif spec.choices:
        kwargs["type"] = click.Choice(list(spec.choices))
    elif base in (int, float):
        kwargs["type"] = base
    if default_none or spec.cli_default_none or base in (list, dict):
        kwargs["default"] = None
        shown = d.shown_default if d.spec.shown_default is not UNSET or base not in (
            list, dict) else None
        if shown is not None and base is not bool and not default_none:
            help_text += f" [default: {'on' if shown is True else shown}]"
    else:
        kwargs["default"] = d.default
        if d.default is not None and (base is not bool or "/" in d.flags[0]):
            kwargs["show_default"] = True
        elif d.spec.shown_default is not UNSET:
            help_text += f" [default: {d.spec.shown_default}]"
    kwargs["help"] = help_text
    return kwargs


def declared_option(d: Declared, *, default_none: bool = False, help_suffix: str = "",
                    help: str | None = None):
    """A click option for one declared option (``default_none``: unset means "the run's";
    ``help``: another command's wording of the same option)."""
    if help is not None:
        d = dataclasses.replace(d, spec=dataclasses.replace(d.spec, help=help))
    kwargs = click_kwargs(d, default_none=default_none)
    kwargs["help"] += help_suffix
    return click.option(*d.flags, d.param, **kwargs)


def in_help_order(declared: list[Declared]) -> list[Declared]:
    """By section, in RunConfig's order; options keep their declaration order within one."""
    from kerastrain.config import SECTIONS

    order = list(SECTIONS)
    return sorted(declared, key=lambda d: order.index(d.group))


def run_option_decorator(f):
    """Add every ``kerastrain run`` option (and ``--config``) to a click command."""
    declared = in_help_order(run_options())
    for d in reversed(declared):
        f = declared_option(d)(f)
    return config_file_option(declared)(f)


def config_from_params(params: dict) -> RunConfig:
    """The RunConfig click's parameter values describe (not yet validated)."""
    values: dict[str, dict] = {}
    preset = None
    for d in run_options():
        value = d.from_click_value(params.get(d.param))
        if d.section is None:
            preset = value
        elif value is not None or not d.spec.cli_default_none:
            values.setdefault(d.section, {})[d.name] = value
    from kerastrain.model.presets import resolve_preset

    return build_run_config(values, preset, resolve_preset(preset) if preset else None)


def build_config(params: dict) -> RunConfig:
    """A validated RunConfig from click's parameters (plugins' options by their own checks)."""
    config = config_from_params(params)
    for d in plugin_options():
        d.check(config.value_of(d))
    config.validate()
    return config


def parse_run_args(argv: list[str]) -> RunConfig:
    """The validated RunConfig ``kerastrain run ARGV`` would train with (for scripts and tests)."""
    command = run_option_decorator(click.command()(lambda **kw: kw))
    return build_config(command.main(list(argv), standalone_mode=False))


def with_run_options(f):
    """Decorator: the command receives ``config`` (a validated RunConfig) in place of the run
    options; its own options pass through."""
    names = {d.param for d in run_options()}

    @run_option_decorator
    @functools.wraps(f)
    def wrapper(**params):
        own = {k: params.pop(k) for k in list(params) if k not in names}
        return f(config=build_config(params), **own)

    return wrapper

