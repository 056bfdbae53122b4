"""``terrascribe models ...`` (the zoo) and ``terrascribe train`` (continual CLIP pre-training)."""

from __future__ import annotations

import typer

models_app = typer.Typer(help="The model zoo: RS CLIP checkpoints and open_clip models.")


@models_app.command("list")
def models_list(
    all_archs: bool = typer.Option(
        False, "--archs", help="Also list every open_clip architecture name."
    ),
) -> None:
    """Show the RS checkpoints terrascribe loads by name, and how each must be loaded."""
    from rich.console import Console
    from rich.table import Table

    from terrascribe.models.zoo import zoo_entries

    table = Table(title="terrascribe model zoo (load with --model NAME)")
    for col in ("name", "arch (activation)", "from", "download", "sha256", "licence"):
        table.add_column(col, overflow="fold")
    for e in zoo_entries().values():
        act = "QuickGELU" if e.quick_gelu else "GELU"
        sha = e.sha256[:12] + "…" if e.sha256 else "unverified"
        table.add_row(e.name, f"{e.arch} ({act})", e.initialised_from, e.location, sha, e.licence)
    console = Console()
    console.print(table)
    if all_archs:
        import open_clip

        import terrascribe.models  # noqa: F401  (registers ts-tiny)

        console.print(", ".join(open_clip.list_models()))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(models_app, name="models")
