"""The ``kerastrain`` command line (click). Heavy imports happen inside commands."""

from __future__ import annotations

import json
import sys

import click

from kerastrain import __version__
from kerastrain.cli.options import with_run_options


class PluginCommandsGroup(click.Group):
    """Loads plugin commands (``register_commands``) the first time commands are listed or run."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            PluginCommandsGroup._plugins_added = True
            from kerastrain.plugins import get_plugin_manager

            get_plugin_manager().hook.register_commands(cli=self)

    def list_commands(self, ctx):
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, cmd_name):
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)


@click.group(cls=PluginCommandsGroup)
@click.version_option(__version__, prog_name="kerastrain")
def cli():
    """kerastrain: train GPT-style language models with Keras 3 on JAX, from raw text."""


@cli.command()
@with_run_options
def run(config, explicit_vocab):
    """Train a language model (on the embedded corpus unless --dataset-id is given)."""
    from rich.console import Console

    from kerastrain.training.runner import run_training

    console = Console()
    try:
        summary = run_training(config, console, explicit_vocab=explicit_vocab)
    except KeyboardInterrupt:  # before the loop (which saves on Ctrl-C) or a second Ctrl-C
        console.print("Interrupted; nothing new was saved. Run the same command to start again.")
        sys.exit(130)
    reason = summary.get("reason")
    if reason == "interrupted":
        console.print(
            f"Stopped at step {summary['steps']}: checkpoint saved to {summary['checkpoint']}. "
            "Run the same command again to resume."
        )
        sys.exit(128 + summary.get("signal", 2))  # 130 for Ctrl-C, 143 for SIGTERM
    if reason != "already complete":
        val = summary.get("val_loss")
        console.print(
            f"Done: {summary['steps']} steps, loss {summary.get('first_loss') or float('nan'):.4f}"
            f" -> {summary.get('last_loss') or float('nan'):.4f}"
            + (f", validation loss {val:.4f}" if val is not None else "")
            + (f", {summary['tokens_per_sec']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}%"
               if summary.get("mfu") is not None else "")
            + f"; model in {summary['checkpoint']}",
            highlight=False,
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def plugins(as_json):
    """List installed plugins, their versions and what each registered."""
    from kerastrain.plugins import plugin_report

    rows = plugin_report()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "version", "registers", "hooks")
    for row in rows:
        name = row["name"] + ("" if row["builtin"] else f" ({row['distribution']})")
        table.add_row(name, row["version"] or "", "\n".join(row["registers"]), ", ".join(row["hooks"]))
    Console().print(table)


@cli.command()
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "png", default=None, help="PNG path [default: OUTPUT_DIR/training_curves.png]")
def plot(output_dir, png):
    """Plot the loss and learning-rate curves of a run to a PNG."""
    from kerastrain.training.plotting import plot_run

    path = plot_run(output_dir, png)
    click.echo(f"Wrote {path}")


def main():
    cli(prog_name="kerastrain")


if __name__ == "__main__":
    main()
