"""The command line (click): the ``kerastrain`` group, the ``run`` options and the model commands.
Imports anything below it (training, model, data, storage, core); nothing imports it but plugins."""

from kerastrain.cli.main import cli, main

__all__ = ["cli", "main"]
