"""``--config FILE``: the options of ``kerastrain run`` from a TOML, YAML or JSON file.

Keys are option names, with ``_`` or ``-`` (``batch_size``, ``batch-size``), at the top level
or in tables named after the ``--help`` groups (``[training]``, ``[data_loading]``,
``["Checkpoint & logging"]``...). The ``run_config.json`` every run writes is read too, so
``kerastrain run --config OUT/run_config.json --output-dir NEW`` runs the same training again.

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

# run_config.json sections (RunConfig's fields) → option names, where they differ.
RUN_CONFIG_RENAMES = {
    ("tokenizer", "kind"): "tokenizer_kind",
    ("tokenizer", "train_examples"): "tokenizer_train_examples",
    ("tokenizer", "retrain"): "retrain_tokenizer",
    ("tokenizer", "path"): "tokenizer_path",
    ("model", "mixed_precision"): "use_mixed_precision",
    ("cloud", "provider"): "cloud_provider",
    ("cloud", "bucket"): "cloud_bucket",
    ("cloud", "region"): "cloud_region",
    ("cloud", "prefix"): "cloud_prefix",
}
# Model switches stored as use_X that the command line spells --no-X.
RUN_CONFIG_NEGATED = {"use_rmsnorm": "no_rmsnorm", "use_swiglu": "no_swiglu", "use_rope": "no_rope"}
# Fields that are results or secrets, not options: the model's vocabulary follows the tokenizer;
# the SAS token is never written (it reads "<redacted>").
RUN_CONFIG_SKIPPED = {("model", "vocab_size"), ("model", "tie_embeddings"),
                      ("cloud", "azure_sas_token")}
RUN_CONFIG_SECTIONS = {"data", "tokenizer", "model", "train", "output", "cloud"}


def _norm(name: str) -> str:
    """``"Checkpoint & logging"`` → ``checkpoint_logging``; ``batch-size`` → ``batch_size``."""
    name = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return name.replace("_and_", "_")


class OptionKeys:
    """Which file keys name which option, and the ``--help`` group of each option."""

    def __init__(self, options_table: list) -> None:
        self.param_of: dict[str, str] = {}  # accepted key → click parameter name
        self.group_of: dict[str, str] = {}  # click parameter name → its group's title
        self.groups: dict[str, str] = {}  # normalized group name → title
        for section, decls, _ in options_table:
            names = [d for d in decls if not d.startswith("-")]
            longs = [d.split("/")[0] for d in decls if d.startswith("--")]
            param = names[0] if names else _norm(longs[0])
            for key in {param, *(_norm(d) for d in longs)}:
                self.param_of[key] = param
            self.group_of[param] = section
            self.groups[_norm(section)] = section

    def param(self, key: str, where: str, group: str | None = None) -> str:
        """The parameter a key names; a one-line error naming the closest key otherwise."""
        norm = _norm(key)
        if norm not in self.param_of:
            close = difflib.get_close_matches(norm, list(self.param_of), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else "; see kerastrain run --help"
            raise ConfigError(f"{where}: unknown option {key!r}{hint}")
        param = self.param_of[norm]
        if group is not None and self.group_of[param] != group:
            right = _norm(self.group_of[param])
            raise ConfigError(
                f"{where}: {key!r} belongs in [{right}] or at the top level, not in "
                f"[{_norm(group)}]"
            )
        return param


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


def is_run_config(data: dict) -> bool:
    """True for the ``run_config.json`` a run writes (RunConfig's sections)."""
    return {"data", "train", "model"} <= set(data) and all(
        isinstance(data[s], dict) for s in RUN_CONFIG_SECTIONS & set(data)
    )


def from_run_config(data: dict, keys: OptionKeys) -> dict[str, Any]:
    """Option values that reproduce the run that wrote ``data`` (a run_config.json)."""
    values: dict[str, Any] = {}
    known_params = set(keys.group_of)
    for section in RUN_CONFIG_SECTIONS & set(data):
        for field_name, value in data[section].items():
            if (section, field_name) in RUN_CONFIG_SKIPPED or value is None:
                continue
            if field_name in RUN_CONFIG_NEGATED:
                values[RUN_CONFIG_NEGATED[field_name]] = not value
                continue
            param = RUN_CONFIG_RENAMES.get((section, field_name), field_name)
            if param in known_params:  # fields without an option of that name are not options
                values[param] = value
    if data.get("preset"):
        values["preset"] = data["preset"]
    if values.get("auto_vocab_size"):
        values.pop("vocab_size", None)  # chosen from the data again, as the first run did
    return values


def option_values(path: Path, keys: OptionKeys) -> dict[str, Any]:
    """``{parameter name: value}`` from a config file (grouped or flat, or a run_config.json)."""
    data = read_file(path)
    if is_run_config(data):
        return from_run_config(data, keys)
    values: dict[str, Any] = {}
    where = f"--config {path}"

    def put(param: str, value: Any, key: str) -> None:
        if param in values:
            raise ConfigError(f"{where}: {key!r} is given twice")
        values[param] = value

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


def config_file_option(options_table: list):
    """The ``--config FILE`` option: eager, so the file's values are click's defaults before
    any other option is read."""
    keys = OptionKeys(options_table)

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
