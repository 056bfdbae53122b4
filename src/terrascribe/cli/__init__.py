"""The ``terrascribe`` command line: a typer app of thin wrappers over public functions.

Each area registers its commands from its own module, so ``terrascribe --help`` stays fast: heavy
libraries (torch, rasterio, faiss) are imported inside the commands, not here.
"""

from __future__ import annotations

import typer

from terrascribe import __version__
from terrascribe.cli import apply, build, curate, data, evaluate, train

app = typer.Typer(
    name="terrascribe",
    help="Remote-sensing vision-language toolkit: build image-text datasets, curate them, "
    "train CLIP, evaluate, search imagery and map it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"terrascribe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Remote-sensing vision-language toolkit."""


for _module in (data, build, curate, train, evaluate, apply):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
