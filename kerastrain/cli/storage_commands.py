"""Built-in plugin: ``kerastrain sync`` (upload what a run left behind locally)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kerastrain.hookspecs import hookimpl


@click.command()
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--cloud-provider",
    default=None,
    help="Override the run's provider (s3, gcs, azure, a plugin's)",
)
@click.option("--cloud-bucket", default=None, help="Override the run's bucket or container")
@click.option("--cloud-prefix", default=None, help="Override the run's key prefix")
@click.option("--cloud-region", default=None, help="Override the run's region")
@click.option(
    "--cloud-option",
    "cloud_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting handed to the storage backend (repeatable)",
)
@click.option(
    "--azure-sas-token",
    default=None,
    envvar="AZURE_STORAGE_SAS_TOKEN",
    help="Azure SAS token (or $AZURE_STORAGE_SAS_TOKEN)",
)
@click.option(
    "--upload-timeout",
    type=float,
    default=600.0,
    show_default=True,
    envvar="KERASTRAIN_UPLOAD_TIMEOUT",
    help="Seconds to wait for the uploads",
)
def sync(
    output_dir,
    cloud_provider,
    cloud_bucket,
    cloud_prefix,
    cloud_region,
    cloud_options,
    azure_sas_token,
    upload_timeout,
):
    """Upload the complete local checkpoints of OUTPUT_DIR that its remote lacks (manifest last).

    The remote is the one the run used (OUTPUT_DIR/run_config.json) unless overridden. Exits 3
    when some checkpoint still did not upload.
    """
    from rich.console import Console

    from kerastrain.cli.options import parse_cloud_options
    from kerastrain.errors import EXIT_NOT_UPLOADED
    from kerastrain.storage.sync import saved_cloud_config, sync_output_dir

    cloud = saved_cloud_config(
        Path(output_dir),
        provider=cloud_provider,
        bucket=cloud_bucket,
        prefix=cloud_prefix,
        region=cloud_region,
        backend_options=parse_cloud_options(cloud_options),
        azure_sas_token=azure_sas_token,
    )
    if sync_output_dir(Path(output_dir), cloud, Console(stderr=True), upload_timeout):
        sys.exit(EXIT_NOT_UPLOADED)


@hookimpl
def register_commands(cli) -> None:
    cli.add_command(sync)
