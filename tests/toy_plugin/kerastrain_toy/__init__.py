"""A third-party kerastrain plugin, installed as its own distribution (see the dist-info beside
it): a data source ``toy:N`` of N numbered documents, and a ``toy-hello`` command."""

from collections.abc import Iterator

import click

from kerastrain.hookspecs import hookimpl


class CountingDocuments:
    def __init__(self, n: int):
        self.n = n

    def iter_from(self, start: int) -> Iterator[str]:
        for i in range(start, self.n):
            yield f"toy document number {i}: " + "the quick brown fox " * (1 + i % 5)

    def __len__(self) -> int:
        return self.n


class ToySource:
    name = "toy"
    description = "Numbered toy documents: --dataset-id toy:N"

    def splits(self, request):
        return ["train", "validation"]

    def open(self, request):
        n = int(request.location or 100)
        return CountingDocuments(n if request.split == "train" else max(1, n // 10))


@hookimpl
def register_data_sources(register):
    register(ToySource())


@hookimpl
def register_commands(cli):
    @cli.command(name="toy-hello")
    def toy_hello():
        """Say hello from the toy plugin."""
        click.echo("hello from kerastrain-toy")


@hookimpl
def on_train_step(run, step, logs):
    # Lets a test slow training down to interrupt it between two checkpoints.
    import os
    import time

    delay = float(os.environ.get("KERASTRAIN_TOY_STEP_DELAY", "0"))
    if delay:
        time.sleep(delay)
