"""Tables meant for reading (``plugins``, ``presets``): whole when piped."""

from __future__ import annotations

PIPED_WIDTH = 10_000  # wide enough for any row: rich sizes a table to its content, not to this


def table_console(**kwargs):
    """A rich Console for such tables: a terminal's own width (cells fold, never cut); piped or
    redirected, as wide as the rows need, so ``kerastrain plugins | grep NAME`` sees each name
    whole (rich would otherwise cut everything to 80 columns)."""
    from rich.console import Console

    console = Console(**kwargs)
    return console if console.is_terminal else Console(width=PIPED_WIDTH, **kwargs)
