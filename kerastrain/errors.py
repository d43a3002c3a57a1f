"""Errors a user can act on: printed as one line, exit code 2, no traceback.

Exit codes of ``kerastrain run``: 0 done; 2 bad input (a :class:`UserError`, nothing trained);
3 (:data:`EXIT_NOT_UPLOADED`) trained, but some checkpoints did not reach the remote (they are listed
and kept locally: ``kerastrain sync OUTPUT_DIR`` uploads them later); 4 (:data:`EXIT_PROCESS_LOST`)
another process of a multi-process run stopped, so this one could not go on; 130/143 interrupted.
"""

from __future__ import annotations

import click

EXIT_NOT_UPLOADED = 3
EXIT_PROCESS_LOST = 4


class UserError(click.ClickException):
    """Bad input: one line that says what is wrong and what to do."""

    exit_code = 2

    def show(self, file=None) -> None:  # one line, no "Usage:" block
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class ConfigError(UserError):
    """An option value out of range or options that do not fit together."""


class DataError(UserError):
    """A dataset that cannot be read as asked."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete or does not match the model."""


class StorageError(UserError):
    """A storage backend that cannot be reached or refuses an operation."""


class PluginError(UserError):
    """A plugin that conflicts with another or is not installed."""


class DependencyError(UserError):
    """An optional dependency a feature needs is not installed (the message says what to install)."""


class VerificationError(UserError):
    """An exported model whose outputs differ from the model it was exported from."""
