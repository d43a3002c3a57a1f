"""Built-in plugin: ``kerastrain sync`` (upload what a run left behind locally)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kerastrain.hookspecs import hookimpl


def _cloud_options(f):
    """The run's cloud options (plugins' too), each unset by default: unset means the run's."""
    from kerastrain.cli.options import declared_option
    from kerastrain.plugins import run_options

    for d in reversed([d for d in run_options() if d.section == "cloud"]):
        f = declared_option(d, default_none=d.name != "upload_timeout",
                            help_suffix="" if d.name == "upload_timeout" else
                            " [default: the run's]")(f)
    return f


def _sync_command():
    """Built when registered: the plugins' cloud options are known only once they are loaded."""
    return click.command(name="sync")(click.argument(
        "output_dir", type=click.Path(exists=True, file_okay=False))(_cloud_options(sync)))


def sync(output_dir, **options):
    """Upload the complete local checkpoints of OUTPUT_DIR that its remote lacks (manifest last).

    The remote is the one the run used (OUTPUT_DIR/run_config.json) unless overridden. Exits 3
    when some checkpoint still did not upload.
    """
    from rich.console import Console

    from kerastrain.errors import EXIT_NOT_UPLOADED
    from kerastrain.plugins import run_options
    from kerastrain.storage.sync import saved_cloud_config, sync_output_dir

    values = {d.name: d.from_click_value(options[d.param]) for d in run_options()
              if d.section == "cloud"}
    timeout = values.pop("upload_timeout")
    cloud = saved_cloud_config(Path(output_dir), values)
    if sync_output_dir(Path(output_dir), cloud, Console(stderr=True), timeout):
        sys.exit(EXIT_NOT_UPLOADED)


@hookimpl
def register_commands(cli) -> None:
    cli.add_command(_sync_command())
