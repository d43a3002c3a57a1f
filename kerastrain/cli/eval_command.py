"""Built-in plugin adding ``kerastrain eval CHECKPOINT``: loss, perplexity and tokens of a
checkpoint on a dataset (by default the validation data of the run that made it)."""

from __future__ import annotations

import json

import click

from kerastrain.hookspecs import hookimpl

# Options shared with `run` (declared once in kerastrain.config); unset means the run's value.
EVAL_RUN_OPTIONS = ("data.dataset_id", "data.dataset_config", "data.text_column", "data.split",
                    "data.data_dir", "data.data_format", "data.chat_template", "data.overlong",
                    "train.batch_size")


def _run_options(f):
    from kerastrain.cli.options import declared_option
    from kerastrain.plugins import run_options

    declared = {f"{d.section}.{d.name}": d for d in run_options()}
    for key in reversed(EVAL_RUN_OPTIONS):
        if key == "data.split":
            f = declared_option(declared[key], default_none=True, help="Split to score",
                                help_suffix=" [default: the run's validation split; with "
                                "--dataset-id: validation]")(f)
        else:
            f = declared_option(declared[key], default_none=True,
                                help_suffix=" [default: the run's]")(f)
    return f


def _eval_command():
    """Built when registered (the schema is read once the plugins are loaded)."""
    command = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object (the last line)")(score)
    command = click.option("--max-examples", type=click.IntRange(min=1), default=None,
                           help="Score at most this many documents")(command)
    command = _run_options(command)
    command = click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))(command)
    return click.command(name="eval")(command)


def score(checkpoint, max_examples, as_json, **options):
    """Score a checkpoint (or a run's output directory): loss, perplexity, tokens."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kerastrain.training.evaluation import EvalRequest, evaluate_checkpoint

    given = {key: options[key.replace(".", "__")] for key in EVAL_RUN_OPTIONS}
    request = EvalRequest(checkpoint, given, max_examples)
    console = Console(stderr=as_json)  # with --json, stdout holds the JSON object only
    progress = Progress(SpinnerColumn(), TextColumn("scoring: {task.fields[tokens]:,} tokens"),
                        TimeElapsedColumn(), console=console, transient=True,
                        disable=not console.is_terminal)
    with progress:
        task = progress.add_task("eval", tokens=0)
        result = evaluate_checkpoint(
            request, progress=lambda tokens: progress.update(task, tokens=tokens))
    if as_json:
        click.echo(json.dumps(result))
        return
    # One row per figure: narrow terminals fold long paths instead of cropping numbers.
    table = Table("", "", show_header=False)
    table.columns[1].overflow = "fold"
    figures = [("perplexity", f"{result['perplexity']:.2f}"), ("tokens", f"{result['tokens']:,}")
               ] if "tokens" in result else [("pairs", f"{result['pairs']:,}")] + [
        (k, f"{v:.4f}") for k, v in result.items() if "/" in k or k.startswith("log_odds")]
    for name, value in (("checkpoint", result["checkpoint"]), ("data", result["dataset"]),
                        ("split", result["split"]), ("loss", f"{result['loss']:.4f}"),
                        *figures):
        table.add_row(name, value)
    console.print(table)


@hookimpl
def register_commands(cli):
    cli.add_command(_eval_command())
