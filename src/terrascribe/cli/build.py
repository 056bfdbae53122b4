"""``terrascribe build ...``: one sub-command per dataset construction method."""

from __future__ import annotations

import typer

from terrascribe.cli import build_annotations, build_llm, build_osm

app = typer.Typer(
    help="Build image-text datasets (OSM + imagery, boxes/masks, caption sets, LLM captions).",
    no_args_is_help=True,
)

for _module in (build_osm, build_annotations, build_llm):
    _module.register(app)


def register(root: typer.Typer) -> None:
    """Add the ``build`` group to the root app."""
    root.add_typer(app, name="build")
