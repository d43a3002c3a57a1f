"""The option reference, ``docs/options.md``, generated from the declared schema."""

from __future__ import annotations

from kerastrain.cli.options import in_help_order
from kerastrain.plugins import run_options
from kerastrain.schema import UNSET


def reference_markdown() -> str:
    """``docs/options.md``: every option of ``kerastrain run``, by section, with its
    config-file key and run_config.json field (generated: ``python -m kerastrain.cli.reference``)."""
    lines = ["# `kerastrain run` options", "",
             "Generated from the declarations in `kerastrain/config.py` (and the installed "
             "plugins' `register_run_options`) by `python -m kerastrain.cli.reference > "
             "docs/options.md`; do not edit by hand.", "",
             "A config file (`--config FILE`, TOML/YAML/JSON) takes each option by its name with "
             "`_` or `-`, at the top level or in the table of its section (`[data]`, "
             "`[train]`, ...): the same name as its `--help` group and its `run_config.json` "
             "section (`train.batch_size`)."]
    group = None
    for d in in_help_order(run_options()):
        if d.group != group:
            group = d.group
            lines += ["", f"## {group}", "", "| option | config key | run_config.json | default | "
                      "help |", "|---|---|---|---|---|"]
        key = d.flags[0].split("/")[0].lstrip("-").replace("-", "_")
        field_path = f"{d.section}.{d.name}" if d.section else d.name
        shown = d.shown_default if d.spec.shown_default is not UNSET or d.default is not None \
            else ""
        flags = " ".join(f"`{f}`" for f in d.flags)
        help_text = d.spec.help.replace("|", "\\|") + (" (secret: never written)"
                                                        if d.spec.secret else "")
        lines.append(f"| {flags} | `{key}` | `{field_path}` | {shown} | {help_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
