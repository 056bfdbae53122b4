"""``terrascribe sample-data``, ``info`` and ``demo``."""

from __future__ import annotations

from pathlib import Path

import typer


def sample_data(
    out: Path = typer.Argument(..., help="Folder to write the sample region into."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives byte-identical files."),
    size_px: int = typer.Option(2048, help="Side of the GeoTIFF in pixels (0.5 m GSD)."),
) -> None:
    """Write a small synthetic region: GeoTIFF, OSM (.osm + .osm.pbf), boxes, masks, scenes."""
    from terrascribe.sample_data import generate

    region = generate(out, seed=seed, size_px=size_px)
    typer.echo(f"sample region written to {region.root}")


def info(
    dataset: Path = typer.Argument(..., help="A terrascribe dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts, caption lengths, sources, GSD histogram and spatial extent of a dataset."""
    from terrascribe.stats import describe_dataset, format_json

    summary = describe_dataset(dataset)
    if as_json:
        typer.echo(format_json(summary))
        return
    _print_summary(summary)


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = Table(title=f"{s['path']}  ({s['builder']})", show_header=False)
    head.add_row("samples", str(s["samples"]))
    head.add_row("shards", str(s["shards"]))
    head.add_row("skipped", f"{s['skipped']}  {s['skip_reasons'] or ''}")
    cw, cps = s["caption_words"], s["captions_per_sample"]
    if cw.get("count"):
        head.add_row(
            "caption words",
            f"mean {cw['mean']}, median {cw['median']:g}, min {cw['min']:g}, max {cw['max']:g}",
        )
        head.add_row("captions per sample", f"mean {cps['mean']}, max {cps['max']:g}")
    head.add_row("sources", ", ".join(f"{k} {v}" for k, v in s["sources"].items()))
    head.add_row("licences", ", ".join(f"{k} {v}" for k, v in s["licences"].items()))
    ext = s["extent"]
    if ext.get("georeferenced"):
        head.add_row(
            "extent (lon/lat)",
            f"{ext['west']:.5f}, {ext['south']:.5f} -> {ext['east']:.5f}, {ext['north']:.5f}"
            f"  ({ext['georeferenced']} georeferenced)",
        )
    if s["top_labels"]:
        head.add_row("top labels", ", ".join(f"{k} {v}" for k, v in s["top_labels"].items()))
    console.print(head)
    if s["gsd_m"]["known"]:
        hist = Table(title="ground sampling distance (m)")
        hist.add_column("from")
        hist.add_column("to")
        hist.add_column("samples", justify="right")
        hist.add_column("")
        peak = max(b["count"] for b in s["gsd_m"]["histogram"]) or 1
        for b in s["gsd_m"]["histogram"]:
            bar = "█" * round(30 * b["count"] / peak)
            hist.add_row(
                f"{b['from']:g}", "∞" if b["to"] is None else f"{b['to']:g}", str(b["count"]), bar
            )
        console.print(hist)


def demo(
    out: Path = typer.Option(Path("demo"), help="Output folder; a re-run reuses finished steps."),
    seed: int = typer.Option(0, help="Seed of every random choice."),
    real_data: Path | None = typer.Option(
        None, help="Also use real data from a ../shared/data-style folder (scenes, tiles)."
    ),
    train_steps: int | None = typer.Option(None, help="Training steps (default 300)."),
) -> None:
    """Run the whole story on the sample region and write OUT/report.html."""
    from terrascribe.demo import run_demo

    report = run_demo(out, seed=seed, real_data=real_data, train_steps=train_steps)
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add ``sample-data``, ``info`` and ``demo`` to the root app."""
    app.command("sample-data")(sample_data)
    app.command("info")(info)
    app.command("demo")(demo)
