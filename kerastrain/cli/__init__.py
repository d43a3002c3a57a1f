"""The command line (click): the ``kerastrain`` group, the ``run`` options and the model commands.
Imports anything below it (training, model, data, storage, core); above it are only plugins and
the test fixtures in ``kerastrain.testing`` that drive the CLI."""

from kerastrain.cli.main import cli, main

__all__ = ["cli", "main"]
