"""``terrascribe build`` commands for this construction method (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this method's commands to the ``build`` group."""
