"""The ``kerastrain`` command line (click). Heavy imports happen inside commands."""

from __future__ import annotations

import json
import os
import sys

import click

from kerastrain import __version__
from kerastrain.cli.options import with_run_options
from kerastrain.cli.plugin_template import new_plugin_command


class PluginCommandsGroup(click.Group):
    """Loads plugin commands (``register_commands``) and builds ``run`` (its options include the
    plugins') the first time commands are listed or run: a broken plugin is then a one-line
    error of the command, not of importing the CLI."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            PluginCommandsGroup._plugins_added = True
            from kerastrain.plugins import get_plugin_manager

            self.add_command(_run_command())
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
    from kerastrain.compile_cache import enable_compile_cache

    enable_compile_cache()  # cheap: JAX is not imported for it


def _run_command() -> click.Command:
    return click.command(name="run")(with_run_options(run))


def run(config):
    """Train a language model (on the embedded corpus unless --dataset-id is given)."""
    from rich.console import Console

    from kerastrain.training.runner import run_training

    console = Console()
    try:
        summary = run_training(config, console)
    except KeyboardInterrupt:  # before the loop (which saves on Ctrl-C) or a second Ctrl-C
        console.print("Interrupted; nothing new was saved. Run the same command to start again.")
        sys.exit(130)
    except Exception as exc:
        from kerastrain.errors import EXIT_PROCESS_LOST
        from kerastrain.training.processes import exit_at_once, lost_process_message

        lost = lost_process_message(exc)
        if lost is None:
            raise
        exit_at_once(lost, EXIT_PROCESS_LOST)
    reason = summary.get("reason")
    if reason == "interrupted":
        console.print(
            f"Stopped at step {summary['steps']}: checkpoint saved to {summary['checkpoint']}. "
            "Run the same command again to resume.", soft_wrap=True,
        )
        sys.exit(128 + summary.get("signal", 2))  # 130 for Ctrl-C, 143 for SIGTERM
    if reason != "already complete":
        val = summary.get("val_loss")
        console.print(
            f"Done: {_steps_done(summary)}, loss {summary.get('first_loss') or float('nan'):.4f}"
            f" -> {summary.get('last_loss') or float('nan'):.4f}"
            + (f", validation loss {val:.4f}" if val is not None else "")
            + (f", {summary['tokens_per_sec']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}%"
               if summary.get("mfu") is not None else "")
            + f"; model in {summary['checkpoint']}",
            highlight=False, soft_wrap=True,
        )
        if summary.get("overlong_truncated") or summary.get("overlong_dropped"):
            console.print(f"Examples longer than --seq-len: {summary['overlong_truncated']} "
                          f"truncated, {summary['overlong_dropped']} dropped (--overlong)",
                          highlight=False)
        if summary.get("mixture_shares"):
            console.print("Mixture, realised shares of documents (tokens): " + ", ".join(
                f"{name} {s['documents']:.1%} ({s['tokens']:.1%})"
                for name, s in summary["mixture_shares"].items()), highlight=False)
    if summary.get("not_uploaded"):
        from kerastrain.errors import EXIT_NOT_UPLOADED

        console.print(
            f"{len(summary['not_uploaded'])} checkpoint(s) did not reach {summary.get('remote')}; "
            f"they are kept locally: run `kerastrain sync {config.output.output_dir}` once it is "
            "reachable",
            highlight=False, soft_wrap=True,  # a path longer than the line stays whole to copy
        )
        sys.exit(EXIT_NOT_UPLOADED)


def _steps_done(summary: dict) -> str:
    """``N steps`` for a fresh run; ``N steps this run (of M in total)`` for a resumed one."""
    total, start = summary["steps"], summary.get("start_step") or 0
    if not start:
        return f"{total} steps"
    return f"{total - start} steps this run (steps {start + 1}-{total}; {total} in total)"


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def plugins(ctx, as_json):
    """List installed plugins, their versions, what each registered and the commands it adds
    (`kerastrain plugins new NAME` starts a new plugin)."""
    if ctx.invoked_subcommand is not None:
        return
    from kerastrain.plugins import plugin_report

    rows = plugin_report()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from kerastrain.cli.tables import table_console

    table = Table("plugin", "version", "registers", "commands", "hooks")
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        name = row["name"] + ("" if row["builtin"] else f" ({row['distribution']})")
        registers = row["registers"] + [f"[red]CONFLICT/ERROR:[/] {p}" for p in row["problems"]]
        table.add_row(name, row["version"] or "", "\n".join(registers),
                      ", ".join(row["commands"]), ", ".join(row["hooks"]))
    table_console().print(table)
    if any(row["problems"] for row in rows):
        click.echo("Some plugins conflict or registered something invalid (marked above).",
                   err=True)


plugins.add_command(new_plugin_command)


@cli.command()
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "png", default=None, help="PNG path [default: OUTPUT_DIR/training_curves.png]")
def plot(output_dir, png):
    """Plot the loss and learning-rate curves of a run to a PNG."""
    from kerastrain.training.plotting import plot_run

    path = plot_run(output_dir, png)
    click.echo(f"Wrote {path}")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--num-processes", type=int, required=True, help="Processes to start")
@click.option("--devices-per-process", type=int, default=None,
              help="Forced host (CPU) devices per process")
@click.option("--port", type=int, default=None, help="Coordinator port [default: a free one]")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def launch(num_processes, devices_per_process, port, command):
    """Start N local processes of one run: kerastrain launch --num-processes 2 -- run ..."""
    from kerastrain.training.launch import launch as launch_processes

    sys.exit(launch_processes(num_processes, list(command), devices_per_process, port,
                              say=lambda m: click.echo(m, err=True)))


# Commands that only read and print: once done, the process ends without the interpreter's
# teardown (freeing JAX's backends and ~2,000 modules), which took 0.7-1.1 s after a generate's
# last line on the 2-core machine (0.3 s with os._exit, December 2026). Nothing of theirs waits
# in an atexit handler: they write no checkpoint, upload or tracker run.
ENDS_AT_ONCE = frozenset({"generate", "chat"})


def main():
    from kerastrain.lean_imports import install

    install()  # before anything imports Keras: it skips pandas, matplotlib, scikit-learn
    try:
        cli(prog_name="kerastrain")
    except SystemExit as done:
        if sys.argv[1:2] and sys.argv[1] in ENDS_AT_ONCE and isinstance(done.code, int | None):
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(done.code or 0)
        raise


if __name__ == "__main__":
    main()
