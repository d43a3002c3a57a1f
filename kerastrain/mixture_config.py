"""The datasets of a run, as the data options declare them: one, or a weighted mixture.

A mixture is declared either by repeating ``--dataset-id`` (with ``--mixture-weights``; the
other data options apply to every dataset), or by ``--dataset`` entries / ``[[dataset]]`` tables
of a config file, each with its own settings::

    [[dataset]]
    id = "s3://corpus/web/*.parquet"
    weight = 0.7

    [[dataset]]
    id = "data/chat.jsonl"
    format = "chat"
    weight = 0.3

:func:`datasets_of` turns either form into one list of :class:`DatasetSpec`; each dataset is
then opened with the run's data options overridden by its own (:meth:`DatasetSpec.data_config`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from kerastrain.errors import ConfigError

# The keys a dataset entry may set, and the data option each one overrides.
ENTRY_KEYS = {
    "id": "dataset_id", "dataset_id": "dataset_id", "name": "name", "weight": "weight",
    "text_column": "text_column", "column": "text_column", "split": "split",
    "config": "dataset_config", "dataset_config": "dataset_config", "format": "data_format",
    "data_format": "data_format", "val_split": "val_split", "data_dir": "data_dir",
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the run: its id, its name in metrics, its weight, its own settings."""

    dataset_id: str | None
    name: str
    weight: float = 1.0
    settings: dict = field(default_factory=dict)  # data options this dataset sets itself

    def data_config(self, data: Any) -> Any:
        """``data`` (the run's DataConfig) for this dataset alone."""
        return dataclasses.replace(data, dataset_id=[self.dataset_id] if self.dataset_id else [],
                                   datasets=[], mixture_weights=[], **self.settings)


def _entry(table: dict, where: str) -> tuple[str | None, str | None, float, dict]:
    """(id, name, weight, settings) of one ``[[dataset]]`` table; a one-line error otherwise."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of KEY = VALUE, got {table!r}")
    unknown = sorted(k for k in table if k.replace("-", "_") not in ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a dataset takes "
                          f"{', '.join(sorted(set(ENTRY_KEYS)))}")
    values = {ENTRY_KEYS[k.replace("-", "_")]: v for k, v in table.items()}
    if not values.get("dataset_id"):
        raise ConfigError(f"{where} has no id (the dataset: a hub id, path, glob or URL)")
    try:
        weight = float(values.pop("weight", 1.0))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: weight must be a number") from None
    return str(values.pop("dataset_id")), values.pop("name", None), weight, values


def _short_name(dataset_id: str | None) -> str:
    """A dataset's name in metrics: the last part of its id without extensions or globs."""
    if not dataset_id:
        return "builtin"
    parts = [p for p in re.split(r"[/:]", dataset_id) if p and not re.search(r"[*?\[{]", p)]
    name = parts[-1] if parts else dataset_id
    return re.sub(r"(\.(jsonl?|parquet|txt|csv|gz|zst|arrow))+$", "", name) or name


def datasets_of(data: Any) -> list[DatasetSpec]:
    """The run's datasets from its DataConfig (one, or the datasets of a mixture)."""
    ids, tables, weights = list(data.dataset_id), list(data.datasets), list(data.mixture_weights)
    if tables and ids:
        raise ConfigError("pass either --dataset-id or --dataset entries ([[dataset]] tables), "
                          "not both")
    if tables:
        if weights:
            raise ConfigError("--mixture-weights goes with repeated --dataset-id; a --dataset "
                              "entry ([[dataset]] table) sets its own weight")
        entries = [_entry(t, f"dataset {i + 1}") for i, t in enumerate(tables)]
    else:
        if weights and len(weights) != max(len(ids), 1):
            raise ConfigError(f"--mixture-weights gives {len(weights)} weight(s) for "
                              f"{len(ids)} --dataset-id; give one per dataset")
        entries = [(i, None, weights[k] if weights else 1.0, {})
                   for k, i in enumerate(ids or [None])]
    specs, seen = [], set()
    for dataset_id, name, weight, settings in entries:
        if not weight > 0:
            raise ConfigError(f"the weight of {dataset_id or 'the embedded corpus'} must be "
                              f"positive, got {weight}")
        name = base = name or _short_name(dataset_id)
        k = 2
        while name in seen:  # two datasets of the same name: web, web-2
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        specs.append(DatasetSpec(dataset_id, name, weight, settings))
    return specs
