"""The ``terrascribe`` command line: a typer app of thin wrappers over public functions.

Each area registers its commands from its own module, so ``terrascribe --help`` stays fast: heavy
libraries (torch, rasterio, faiss) are imported inside the commands, not here.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from terrascribe import __version__
from terrascribe.cli import apply, build, curate, data, evaluate, train

# Errors a user can fix (bad input, missing files) get one clear line, not a traceback.
_USER_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _is_user_error(err: BaseException) -> bool:
    return isinstance(err, _USER_ERRORS) or type(err).__module__.startswith("terrascribe.")


class _UserErrorsGroup(TyperGroup):
    """Root group that prints terrascribe's own errors as ``Error: ...`` and exits with 1.

    Set ``TERRASCRIBE_DEBUG=1`` to get the traceback instead.
    """

    def invoke(self, ctx: typer.Context):
        # typer's own exceptions (usage errors, Exit, Abort) are not user errors here: they
        # pass through untouched and typer reports them as usual.
        try:
            return super().invoke(ctx)
        except Exception as err:
            if not _is_user_error(err) or os.environ.get("TERRASCRIBE_DEBUG"):
                raise
            typer.echo(f"Error: {err}", err=True)
            sys.exit(1)


app = typer.Typer(
    cls=_UserErrorsGroup,
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
