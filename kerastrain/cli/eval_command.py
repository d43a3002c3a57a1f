"""Built-in plugin adding ``kerastrain eval CHECKPOINT``: loss, perplexity and tokens of a
checkpoint on a dataset (by default the validation data of the run that made it), or, with
``--task``, EleutherAI's lm-evaluation-harness tasks scored through ``kerastrain serve``."""

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
                           help="Score at most this many documents (with --task: examples "
                                "per task)")(command)
    command = _run_options(command)
    command = click.option("--seq-len", type=click.IntRange(2), default=2048, show_default=True,
                           help="With --task: context length for a Hugging Face / keras-hub "
                                "folder (a run has its own)")(command)
    command = click.option("--num-fewshot", type=click.IntRange(min=0), default=None,
                           help="With --task: examples shown before each question [default: "
                                "the task's]")(command)
    command = click.option("--task", "tasks", multiple=True, metavar="NAME|FILE.yaml",
                           help="Score lm-evaluation-harness tasks through a served model "
                                "instead of the loss (repeatable; needs the eval extra)")(command)
    command = click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))(command)
    return click.command(name="eval")(command)


def score(checkpoint, max_examples, as_json, tasks, num_fewshot, seq_len, **options):
    """Score a checkpoint (or a run's output directory): loss, perplexity, tokens. With --task:
    lm-evaluation-harness tasks (a model folder works too), through a server on a free port."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kerastrain.training.evaluation import EvalRequest, evaluate_checkpoint

    given = {key: options[key.replace(".", "__")] for key in EVAL_RUN_OPTIONS}
    if tasks:
        return _score_tasks(checkpoint, tasks, max_examples, num_fewshot, seq_len, as_json, given)
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


def _score_tasks(checkpoint, tasks, limit, num_fewshot, seq_len, as_json, given):
    from rich.console import Console
    from rich.table import Table

    from kerastrain.errors import ConfigError
    from kerastrain.serve.harness import HarnessRequest, require_lm_eval, run_tasks

    unused = [f"--{key.split('.')[1].replace('_', '-')}" for key, value in given.items()
              if value is not None and value != ()]
    if unused:
        raise ConfigError(f"{', '.join(unused)} apply to the loss, not to --task (a task "
                          "names its own data)")
    require_lm_eval()
    result = run_tasks(HarnessRequest(checkpoint, list(tasks), limit, num_fewshot, seq_len))
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table("task", "metric", "value", "stderr", title=f"lm-eval ({result['lm_eval_model']})")
    for task, metrics in result["results"].items():
        for key, value in metrics.items():
            metric, _, _ = key.partition(",")
            if metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(key.replace(metric, f"{metric}_stderr", 1))
            table.add_row(task, metric, f"{value:.4f}",
                          f"{stderr:.4f}" if isinstance(stderr, (int, float)) else "")
    Console().print(table)


@hookimpl
def register_commands(cli):
    cli.add_command(_eval_command())
