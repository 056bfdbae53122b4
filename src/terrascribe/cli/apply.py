"""Commands that put models to work: ``index build|add|info``, ``search``, ``serve``, ``map``.

Thin wrappers over :mod:`terrascribe.search` and :mod:`terrascribe.apply`; heavy libraries are
imported inside the commands so ``terrascribe --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

index_app = typer.Typer(
    help="Build and grow text-searchable indexes of imagery archives.", no_args_is_help=True
)

_MODEL = typer.Option("ts-tiny", "--model", help="open_clip architecture or zoo name.")
_PRETRAINED = typer.Option(None, "--pretrained", help="Weights: tag, file, or hf-hub:org/name.")
_DEVICE = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 or auto.")
_SEED = typer.Option(0, "--seed", help="Seed of a random init and of IVF-PQ training.")
# Tiling and embedding options shared by `index build` and `index add`.
_TILE_PX = typer.Option(256, "--tile-px", help="Tile side in pixels.")
_GSD = typer.Option(None, "--gsd", help="Tile GSD in metres (default: native).")
_OVERLAP = typer.Option(0.0, "--overlap", help="Overlap fraction between tiles.")
_MIN_VALID = typer.Option(0.5, "--min-valid", help="Minimum valid-pixel share.")
_BATCH_SIZE = typer.Option(64, "--batch-size", help="Tiles per forward pass.")
_CACHE_DIR = typer.Option(
    None, "--cache-dir", help="Embedding cache (default: the shared $TERRASCRIBE_CACHE/embeddings)."
)
_DATE = typer.Option(None, "--date", help="Capture date for undated sources (YYYY-MM-DD).")
_XYZ_LAYOUT = typer.Option(None, "--xyz-layout", help="z/x/y, x-y-z or z-x-y.")
_XYZ_ZOOM = typer.Option(None, "--xyz-zoom", help="Zoom of a mixed-zoom XYZ folder.")


def _load(model: str, pretrained: str | None, device: str, seed: int):
    from terrascribe.models.zoo import load_model

    return load_model(model, pretrained, device=device, seed=seed)


def _add_options(
    tile_px: int,
    gsd: float | None,
    overlap: float,
    min_valid: float,
    batch_size: int,
    cache_dir: Path | None,
    date: str | None,
    xyz_layout: str | None,
    xyz_zoom: int | None,
) -> dict[str, object]:
    """Keyword arguments of build_index/add_to_index from the shared options."""
    return {
        "tile_px": tile_px,
        "gsd_m": gsd,
        "overlap": overlap,
        "min_valid": min_valid,
        "batch_size": batch_size,
        "cache_dir": cache_dir,
        "capture_date": date,
        "xyz_layout": xyz_layout,
        "xyz_zoom": xyz_zoom,
    }


def _print_report(report) -> None:
    from rich.console import Console

    Console(stderr=True).print(
        f"[bold]{report.added}[/] tiles added, {report.already_indexed} already indexed, "
        f"skipped {report.skipped or 'none'}; index holds {report.total} tiles "
        f"({report.index_type}{', rebuilt' if report.rebuilt else ''})"
    )


@index_app.command("build")
def index_build(
    sources: list[Path] = typer.Argument(..., help="GeoTIFFs, folders, XYZ folders, datasets."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder."),
    model: str = _MODEL,
    pretrained: str = _PRETRAINED,
    device: str = _DEVICE,
    seed: int = _SEED,
    index_type: str = typer.Option("auto", "--index-type", help="auto, flat, hnsw or ivfpq."),
    tile_px: int = _TILE_PX,
    gsd: float = _GSD,
    overlap: float = _OVERLAP,
    min_valid: float = _MIN_VALID,
    batch_size: int = _BATCH_SIZE,
    cache_dir: Path = _CACHE_DIR,
    date: str = _DATE,
    xyz_layout: str = _XYZ_LAYOUT,
    xyz_zoom: int = _XYZ_ZOOM,
) -> None:
    """Tile imagery, embed the tiles and write a search index (appends if OUT holds one)."""
    from terrascribe.search.index import build_index

    options = _add_options(
        tile_px, gsd, overlap, min_valid, batch_size, cache_dir, date, xyz_layout, xyz_zoom
    )
    bundle = _load(model, pretrained, device, seed)
    report = build_index(sources, bundle, out, index_type=index_type, seed=seed, **options)
    _print_report(report)


@index_app.command("add")
def index_add(
    index: Path = typer.Argument(..., help="Index folder."),
    sources: list[Path] = typer.Argument(..., help="Imagery to append."),
    model: str = typer.Option(None, "--model", help="Must be the index's model (checked)."),
    pretrained: str = _PRETRAINED,
    device: str = _DEVICE,
    tile_px: int = _TILE_PX,
    gsd: float = _GSD,
    overlap: float = _OVERLAP,
    min_valid: float = _MIN_VALID,
    batch_size: int = _BATCH_SIZE,
    cache_dir: Path = _CACHE_DIR,
    date: str = _DATE,
    xyz_layout: str = _XYZ_LAYOUT,
    xyz_zoom: int = _XYZ_ZOOM,
) -> None:
    """Append imagery to an index (ids continue; tiles already indexed are skipped)."""
    from terrascribe.search.index import add_to_index, read_manifest

    options = _add_options(
        tile_px, gsd, overlap, min_valid, batch_size, cache_dir, date, xyz_layout, xyz_zoom
    )
    bundle = None
    if model is not None:
        seed = read_manifest(index)["model"]["seed"]
        bundle = _load(model, pretrained, device, seed)
    report = add_to_index(index, sources, bundle, device=device, **options)
    _print_report(report)


@index_app.command("info")
def index_info_cmd(
    index: Path = typer.Argument(..., help="Index folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show an index: model, index type, tile count, sources, dates."""
    from rich.console import Console
    from rich.table import Table

    from terrascribe.search.index import index_info

    info = index_info(index)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    m = info["model"]
    console = Console()
    console.print(
        f"[bold]{index}[/]: {info['count']} tiles, {info['index']['type']} "
        f"{info['index']['params']}\nmodel {m['name']} (pretrained={m['pretrained']}, "
        f"dim {m['embed_dim']}, fingerprint {m['fingerprint'][:12]}), dates {info['date_range']}"
    )
    table = Table("kind", "source", "tiles")
    for row in info["sources"]:
        table.add_row(row["source_kind"], row["source"], str(row["tiles"]))
    console.print(table)


def _parse_point(value: str) -> tuple[float, float]:
    try:
        lon, lat = (float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected LON,LAT, got {value!r}") from None
    return lon, lat


def search_cmd(
    index: Path = typer.Argument(..., help="Index folder."),
    text: str = typer.Argument(None, help="Text query, e.g. 'a solar farm'."),
    image: Path = typer.Option(None, "--image", help="Query by an example image."),
    near: str = typer.Option(None, "--near", help="LON,LAT: more like the tile there."),
    k: int = typer.Option(10, "-k", "--top-k", help="Number of hits."),
    bbox: str = typer.Option(None, "--bbox", help="W,S,E,N lon/lat filter."),
    date_from: str = typer.Option(None, "--date-from", help="YYYY-MM-DD (inclusive)."),
    date_to: str = typer.Option(None, "--date-to", help="YYYY-MM-DD (inclusive)."),
    template: str = typer.Option(None, "--template", help="e.g. 'a satellite image of {}.'"),
    geojson: Path = typer.Option(None, "--geojson", help="Write hits as GeoJSON."),
    sheet: Path = typer.Option(None, "--sheet", help="Write a contact-sheet PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON."),
    device: str = _DEVICE,
) -> None:
    """Search an index by text, example image or place; print a table (or JSON)."""
    from rich.console import Console

    from terrascribe.search.index import SearchIndex
    from terrascribe.search.query import search

    point = _parse_point(near) if near else None  # before the index is loaded
    idx = SearchIndex(index, device=device)
    dates = (date_from, date_to) if (date_from or date_to) else None
    results = search(
        idx,
        text,
        image=image,
        near=point,
        k=k,
        bbox=bbox,
        date_range=dates,
        template=template,
    )
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in results.hits], indent=1))
    else:
        Console().print(results.to_table())
    if geojson:
        results.write_geojson(geojson)
    if sheet:
        results.contact_sheet(idx, sheet)


def serve_cmd(
    index: Path = typer.Argument(..., help="Index folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback by default)."),
    port: int = typer.Option(8765, "--port"),
    api_key_env: str = typer.Option(
        "TERRASCRIBE_API_KEY", "--api-key-env", help="Env var holding the API key (if set)."
    ),
    max_k: int = typer.Option(100, "--max-k", help="Largest k a request may ask."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds allowed per query."),
    device: str = _DEVICE,
) -> None:
    """Serve an index: JSON API and a map page (http://127.0.0.1:8765/)."""
    from terrascribe.search.service import ServiceLimits, serve

    key = os.environ.get(api_key_env) or None
    serve(
        index,
        host=host,
        port=port,
        api_key=key,
        limits=ServiceLimits(max_k=max_k, query_timeout_s=timeout),
        device=device,
    )


def map_cmd(
    geotiff: Path = typer.Argument(..., help="Input GeoTIFF."),
    classes: str = typer.Option(..., "--classes", help="Comma-separated class names."),
    out: Path = typer.Option(..., "--out", "-o", help="Class map GeoTIFF (MAP.tif)."),
    model: str = _MODEL,
    pretrained: str = _PRETRAINED,
    device: str = _DEVICE,
    seed: int = _SEED,
    template: list[str] = typer.Option(
        None, "--template", help="Prompt template with {} (repeatable)."
    ),
    gsd: float = typer.Option(None, "--gsd", help="GSD the model sees (default: native)."),
    stride: int = typer.Option(None, "--stride", help="Window step in source pixels."),
    grid: str = typer.Option("input", "--grid", help="input (same grid) or coarse."),
    probs: str = typer.Option("uint8", "--probs", help="uint8, float32 or none."),
    batch_size: int = typer.Option(64, "--batch-size"),
    allow_no_crs: bool = typer.Option(False, "--allow-no-crs", help="Map in pixel space."),
) -> None:
    """Zero-shot map a GeoTIFF: class GeoTIFF, probability bands and a PNG preview."""
    from rich.console import Console

    from terrascribe.apply.zeroshot_map import DEFAULT_TEMPLATES, map_geotiff

    bundle = _load(model, pretrained, device, seed)
    result = map_geotiff(
        geotiff,
        classes,
        bundle,
        out,
        templates=template or DEFAULT_TEMPLATES,
        gsd_m=gsd,
        stride_px=stride,
        grid=grid,
        probabilities=probs,
        batch_size=batch_size,
        allow_no_crs=allow_no_crs,
    )
    Console(stderr=True).print(
        f"wrote {result.class_map}"
        + (f", {result.probabilities}" if result.probabilities else "")
        + (f", {result.preview}" if result.preview else "")
        + f" (window {result.window_px}px, stride {result.stride_px}px); "
        + ", ".join(f"{k} {v:.0%}" for k, v in result.class_fractions.items())
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(index_app, name="index")
    app.command("search")(search_cmd)
    app.command("serve")(serve_cmd)
    app.command("map")(map_cmd)
