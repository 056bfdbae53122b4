"""``terrascribe build osm`` (SkyScript's method) and its helpers ``osm-extract|overpass|tags``."""

from __future__ import annotations

from pathlib import Path

import typer


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"expected WEST,SOUTH,EAST,NORTH in degrees, got {text!r}"
        ) from None
    return (west, south, east, north)


def build_osm(
    osm: Path = typer.Option(
        ..., "--osm", help="OSM input: .osm.pbf/.osm/.osm.bz2, GeoJSON, or an extract folder."
    ),
    imagery: str = typer.Option(
        ..., "--imagery", help="Raster file/folder, XYZ tile folder, STAC catalogue or URL."
    ),
    out: Path = typer.Option(..., "--out", help="Dataset folder (re-running resumes)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel workers."),
    executor: str = typer.Option("local", "--executor", help="'local' processes or 'ray'."),
    seed: int = typer.Option(0, "--seed", help="Seed for tile placement, quotas and wording."),
    tile_min: int = typer.Option(224, "--tile-min", help="Smallest tile side in native pixels."),
    tile_max: int = typer.Option(512, "--tile-max", help="Largest tile side in native pixels."),
    out_size: int | None = typer.Option(
        None, "--out-size", help="Resample tiles to this side (px)."
    ),
    gsd: float | None = typer.Option(None, "--gsd", help="Read at this GSD (m) instead of native."),
    max_offcentre: float = typer.Option(
        0.25, "--max-offcentre", help="Largest random shift (fraction of tile)."
    ),
    min_valid: float = typer.Option(
        0.9, "--min-valid", help="Skip tiles with less valid data than this."
    ),
    too_large: str = typer.Option(
        "skip", "--too-large", help="Polygons larger than --tile-max: 'skip' or 'fit'."
    ),
    quota: int | None = typer.Option(
        None, "--quota", help="At most this many samples per main tag."
    ),
    history: str = typer.Option(
        "flag", "--history", help="Objects mapped after capture: 'flag' or 'drop'."
    ),
    table: Path | None = typer.Option(None, "--table", help="Tag table file (default: packaged)."),
    objects_per_shard: int = typer.Option(1000, "--objects-per-shard", min=1),
    capture_date: str | None = typer.Option(
        None, "--capture-date", help="Imagery date YYYY-MM-DD."
    ),
    sensor: str | None = typer.Option(None, "--sensor", help="Imagery sensor/product name."),
    licence: str | None = typer.Option(None, "--licence", help="Imagery licence."),
    index: str = typer.Option(
        "auto", "--index", help="Node-location index: auto, flex_mem, sparse_file_array,FILE..."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Build an image-caption dataset from OSM objects and overhead imagery (SkyScript's method)."""
    from rich.console import Console
    from rich.table import Table

    from terrascribe.build.osm import TileOptions, build_osm_dataset

    tiles = TileOptions(
        tile_px_range=(tile_min, tile_max),
        out_size_px=out_size,
        gsd_m=gsd,
        max_offcentre=max_offcentre,
        min_valid_fraction=min_valid,
        too_large=too_large,
    )
    info = build_osm_dataset(
        osm,
        imagery,
        out,
        tiles=tiles,
        per_tag_quota=quota,
        history_policy=history,
        seed=seed,
        workers=workers,
        executor=executor,
        table=table,
        objects_per_shard=objects_per_shard,
        capture_date=capture_date,
        sensor=sensor,
        licence=licence,
        index=index,
        progress=progress,
    )
    report = info.get("report", {})
    console = Console()
    console.print(
        f"[bold]{info['counts']['samples']}[/] samples in "
        f"{info['counts']['shards']} shards -> {out}"
    )
    tags = Table("main tag", "samples", title="samples per tag (top 15)")
    for tag, n in list(report.get("samples_per_tag", {}).items())[:15]:
        tags.add_row(tag, str(n))
    console.print(tags)
    skips = Table("skip reason", "objects", title="skipped")
    for reason, n in info["counts"]["skip_reasons"].items():
        skips.add_row(reason, str(n))
    console.print(skips)
    if report.get("map"):
        console.print(f"map of samples: {out / report['map']}")


def osm_extract(
    osm: Path = typer.Option(
        ..., "--osm", help=".osm.pbf/.osm/.osm.bz2 or GeoJSON of OSM features."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder of partitioned GeoParquet."),
    all_tags: bool = typer.Option(
        False, "--all-tags", help="Keep every tagged object, not only visible ones."
    ),
    table: Path | None = typer.Option(None, "--table", help="Tag table file (default: packaged)."),
    cell_deg: float = typer.Option(1.0, "--cell-deg", help="Partition cell size in degrees."),
    index: str = typer.Option(
        "auto", "--index", help="Node-location index (auto, flex_mem, sparse_file_array,FILE...)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Extract OSM objects (visible tags only by default) into partitioned GeoParquet."""
    from rich.console import Console
    from rich.table import Table

    from terrascribe.sources.osm import extract_osm, visible_tag_filter

    keep = None
    if not all_tags:
        from terrascribe.text.osm_tags import TagTable

        keep = visible_tag_filter(TagTable.load(table))
    result = extract_osm(osm, out, keep=keep, cell_deg=cell_deg, index=index, progress=progress)
    console = Console()
    console.print(f"[bold]{result.objects}[/] objects in {result.parts} parts -> {out}")
    kept = Table("kept", "objects")
    for k, n in result.stats.get("kept", {}).items():
        kept.add_row(k, str(n))
    for k, n in result.stats.get("dropped", {}).items():
        kept.add_row(f"dropped: {k}", str(n))
    console.print(kept)


def osm_overpass(
    bbox: str = typer.Option(..., "--bbox", help="WEST,SOUTH,EAST,NORTH in degrees (small areas)."),
    out: Path = typer.Option(..., "--out", help="Output .osm file."),
    endpoint: str = typer.Option("https://overpass-api.de/api/interpreter", "--endpoint"),
    key: list[str] = typer.Option([], "--key", help="Only objects with this key (repeatable)."),
    cache: Path | None = typer.Option(None, "--cache", help="Cache folder for answers."),
) -> None:
    """Download the tagged OSM objects of a small area from an Overpass API server."""
    from terrascribe.sources.overpass import OverpassClient

    path = OverpassClient(endpoint, cache_dir=cache).download(_bbox(bbox), out, keys=key or None)
    typer.echo(f"wrote {path}")


def _read_tag_list(tags: list[str], tags_file: Path | None) -> list[tuple[str, str]]:
    lines = list(tags)
    if tags_file is not None:
        lines += [ln.strip() for ln in tags_file.read_text(encoding="utf-8").splitlines()]
    pairs = []
    for i, line in enumerate(ln for ln in lines if ln and not ln.startswith("#")):
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            where = f"{tags_file}" if tags_file else "--tag"
            raise typer.BadParameter(f"{where}: entry {i + 1} is not KEY=VALUE: {line!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def osm_tags(
    out: Path = typer.Option(..., "--out", help="Extended tag table (CSV) to write."),
    tag: list[str] = typer.Option([], "--tag", help="An unseen tag KEY=VALUE (repeatable)."),
    tags_file: Path = typer.Option(None, help="A file of KEY=VALUE lines."),
    model: str = typer.Option(
        None, help="Embed tags with this model's text tower (default: hashed character n-grams)."
    ),
    pretrained: str = typer.Option(None, help="Weights for --model."),
    table: Path = typer.Option(None, help="Tag table to extend (default: the packaged one)."),
    threshold: float = typer.Option(0.5, help="Visibility probability above which a tag is kept."),
    seed: int = typer.Option(0, help="Seed of the classifier fit and the held-out split."),
) -> None:
    """Extend the tag table to unseen tags with the learned classifier (SkyScript's two stages).

    The classifier is fitted on the table's reviewed rows ("is KEY VALUE visible from above, and
    down to which GSD?"). Predicted rows are marked source=classifier: review them.
    """
    from rich.console import Console
    from rich.table import Table

    from terrascribe.text.osm_tags import TagTable, table_meta_path
    from terrascribe.text.tag_classifier import (
        HashedNgramEmbedder,
        evaluate_tag_classifier,
        extend_table,
        fit_tag_classifier,
        model_embedder,
    )

    pairs = _read_tag_list(tag, tags_file)
    if not pairs:
        raise typer.BadParameter("give unseen tags with --tag KEY=VALUE or --tags-file")
    base = TagTable.load(table)
    if model:
        from terrascribe.models.zoo import load_model

        embed = model_embedder(load_model(model, pretrained, seed=seed))
    else:
        embed = HashedNgramEmbedder()
    held_out = evaluate_tag_classifier(base, embed, seed=seed)
    extended = extend_table(
        base, pairs, fit_tag_classifier(base, embed, seed=seed), threshold=threshold
    )
    from terrascribe.shards import atomic_write_text, dumps

    # The version goes in the sibling <stem>.meta.json that TagTable.load reads back.
    atomic_write_text(out, extended.to_csv())
    meta = {
        "version": extended.version,
        "extended_from": base.version,
        "embedding": held_out["embedding"],
    }
    atomic_write_text(table_meta_path(out), dumps(meta))
    view = Table(title="unseen tags (predicted rows are marked source=classifier: review them)")
    for column in ("tag", "from", "visible", "max GSD (m)", "phrase"):
        view.add_column(column)
    for key, value in pairs:
        known, rule = base.lookup(key, value), extended.lookup(key, value)
        origin = "table" if known is not None else ("classifier" if rule else "dropped")
        if rule is None:
            view.add_row(f"{key}={value}", origin, "", "", "")
            continue
        view.add_row(f"{key}={value}", origin, str(rule.visible), str(rule.max_gsd_m), rule.phrase)
    console = Console()
    console.print(view)
    console.print(
        f"held-out check on the reviewed table ({held_out['n_test']} rows): visible? "
        f"{held_out['stage1_accuracy']:.2f} (majority {held_out['stage1_majority']:.2f}); "
        f"max GSD {held_out['stage2_accuracy']:.2f} (majority {held_out['stage2_majority']:.2f})"
    )
    console.print(f"extended table written to {out}")


def register(app: typer.Typer) -> None:
    """Add this method's commands to the ``build`` group."""
    app.command("osm")(build_osm)
    app.command("osm-extract")(osm_extract)
    app.command("osm-overpass")(osm_overpass)
    app.command("osm-tags")(osm_tags)
