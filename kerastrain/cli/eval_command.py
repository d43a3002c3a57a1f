"""Built-in plugin adding ``kerastrain eval CHECKPOINT``: loss, perplexity and tokens of a
checkpoint on a dataset (by default the validation data of the run that made it)."""

from __future__ import annotations

import json

import click

from kerastrain.hookspecs import hookimpl


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset-id", default=None,
              help="Dataset to score (same forms as `run`) [default: the run's validation data]")
@click.option("--dataset-config", default=None, help="Dataset configuration/subset")
@click.option("--text-column", default=None, help="Column holding the text [default: text]")
@click.option("--split", default=None,
              help="Split to score [default: the run's validation split; with --dataset-id: "
                   "validation]")
@click.option("--data-dir", default=None, help="Data directory (TFDS)")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Score at most this many documents")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Windows per batch [default: the run's]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the last line)")
def eval_command(checkpoint, dataset_id, dataset_config, text_column, split, data_dir,
                 max_examples, batch_size, as_json):
    """Score a checkpoint (or a run's output directory): loss, perplexity, tokens."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kerastrain.training.evaluation import EvalRequest, evaluate_checkpoint

    request = EvalRequest(checkpoint, dataset_id, dataset_config, text_column, split, data_dir,
                          max_examples, batch_size)
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
    for name, value in (("checkpoint", result["checkpoint"]), ("data", result["dataset"]),
                        ("split", result["split"]), ("loss", f"{result['loss']:.4f}"),
                        ("perplexity", f"{result['perplexity']:.2f}"),
                        ("tokens", f"{result['tokens']:,}")):
        table.add_row(name, value)
    console.print(table)


@hookimpl
def register_commands(cli):
    cli.add_command(eval_command)
