"""``terrascribe build boxes|masks|captions|counting``: RemoteCLIP's annotation methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def _label_names(values: list[str]) -> dict[str, str]:
    names = {}
    for value in values:
        source, sep, target = value.partition("=")
        if not sep or not source or not target:
            raise typer.BadParameter(f"expected SOURCE=NAME (e.g. 0=tree), got {value!r}")
        names[source] = target
    return names


def _classes(value: str | None) -> Any:
    """A class file path, or a comma-separated list of names."""
    if value is None:
        return None
    return Path(value) if Path(value).exists() else [c.strip() for c in value.split(",")]


def _options(describe_all: bool, positions: bool, sizes: bool, n_captions: int, centre: float):
    from terrascribe.text.boxes import B2COptions

    return B2COptions(
        n_captions=n_captions,
        centre_fraction=centre,
        describe_all=describe_all,
        positions=positions,
        sizes=sizes,
    )


def _print_build(info: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    counts = info["counts"]
    console.print(f"[bold]{counts['samples']}[/] samples in {counts['shards']} shards -> {out}")
    report = info.get("report", {})
    for title, key in (("class", "class_counts"), ("split", "splits")):
        if report.get(key):
            table = Table(title, "count")
            for name, n in report[key].items():
                table.add_row(str(name), str(n))
            console.print(table)
    if counts["skip_reasons"]:
        table = Table("skip reason", "items", title="skipped")
        for reason, n in counts["skip_reasons"].items():
            table.add_row(reason, str(n))
        console.print(table)


# shared option declarations
_OUT = typer.Option(..., "--out", help="Dataset folder (re-running resumes).")
_IMAGES = typer.Option(..., "--images", help="Image folder.")
_SEED = typer.Option(0, "--seed", help="Seed: same inputs and seed, same output.")
_LABEL = typer.Option([], "--label", help="Rename a source label: SOURCE=NAME (repeatable).")
_ALL = typer.Option(False, "--describe-all", help="Captions 3-5 describe every category.")
_POS = typer.Option(False, "--positions", help="Say where objects are / what they are next to.")
_SIZES = typer.Option(False, "--sizes", help="Add object sizes in metres (needs a GSD).")
_NCAP = typer.Option(5, "--captions-per-image", min=1, help="Captions per image.")
_CENTRE = typer.Option(0.5, "--centre", help="Share of each axis that is the central region.")
_TILE = typer.Option(None, "--tile-size", help="Tile images larger than this (px).")
_OVERLAP = typer.Option(0, "--tile-overlap", help="Overlap between tiles (px).")
_VIS = typer.Option(0.5, "--min-visibility", help="Drop boxes less visible in a tile.")
_GSD = typer.Option(None, "--gsd", help="GSD (m/px) when annotations and images give none.")
_TEMPLATES = typer.Option(None, "--templates", help="B2C template file (default: packaged).")
_LICENCE = typer.Option(None, "--licence", help="Licence of images and annotations.")
_EMPTY = typer.Option(False, "--keep-empty", help="Keep images without objects.")
_WORKERS = typer.Option(1, "--workers", min=1, help="Parallel workers.")
_EXECUTOR = typer.Option("local", "--executor", help="'local' processes or 'ray'.")
_PROGRESS = typer.Option(True, "--progress/--no-progress")


def build_boxes(
    format: str = typer.Option(..., "--format", help="coco, dota, voc (DIOR), yolo or csv."),
    annotations: Path = typer.Option(..., "--annotations", help="Annotation file or folder."),
    images: Path = _IMAGES,
    out: Path = _OUT,
    classes: str | None = typer.Option(
        None, "--classes", help="YOLO class names: a file, or names separated by commas."
    ),
    label: list[str] = _LABEL,
    seed: int = _SEED,
    describe_all: bool = _ALL,
    positions: bool = _POS,
    sizes: bool = _SIZES,
    n_captions: int = _NCAP,
    centre: float = _CENTRE,
    tile_size: int | None = _TILE,
    tile_overlap: int = _OVERLAP,
    min_visibility: float = _VIS,
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="Pixels a box may stick out of the image (default 2%)."
    ),
    gsd: float | None = _GSD,
    templates: Path | None = _TEMPLATES,
    licence: str | None = _LICENCE,
    keep_empty: bool = _EMPTY,
    images_per_shard: int = typer.Option(1000, "--images-per-shard", min=1),
    workers: int = _WORKERS,
    executor: str = _EXECUTOR,
    progress: bool = _PROGRESS,
) -> None:
    """Build a dataset from detection boxes with Box-to-Caption (RemoteCLIP's B2C)."""
    from terrascribe.build.annotations import build_boxes_dataset

    info = build_boxes_dataset(
        out,
        annotations=annotations,
        images=images,
        format=format,
        classes=_classes(classes),
        label_names=_label_names(label),
        seed=seed,
        options=_options(describe_all, positions, sizes, n_captions, centre),
        templates=templates,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        min_visibility=min_visibility,
        tolerance=tolerance,
        gsd_m=gsd,
        licence=licence,
        keep_empty=keep_empty,
        images_per_shard=images_per_shard,
        workers=workers,
        executor=executor,
        progress=progress,
    )
    _print_build(info, out)


def build_masks(
    masks: Path = typer.Option(..., "--masks", help="Folder of label or colour-coded masks."),
    images: Path = _IMAGES,
    out: Path = _OUT,
    palette: str | None = typer.Option(
        None, "--palette", help="isaid, potsdam, vaihingen, loveda, or a palette JSON file."
    ),
    classes: Path | None = typer.Option(
        None, "--classes", help='Class map JSON for label masks: {"1": "building", ...}.'
    ),
    ignore: list[str] = typer.Option(
        [], "--ignore", help="Class that is not an object (repeatable; default: palette's)."
    ),
    min_area: float = typer.Option(0.0, "--min-area", help="Smallest box area kept (px²)."),
    seed: int = _SEED,
    describe_all: bool = _ALL,
    positions: bool = _POS,
    sizes: bool = _SIZES,
    n_captions: int = _NCAP,
    centre: float = _CENTRE,
    tile_size: int | None = _TILE,
    tile_overlap: int = _OVERLAP,
    min_visibility: float = _VIS,
    gsd: float | None = _GSD,
    templates: Path | None = _TEMPLATES,
    licence: str | None = _LICENCE,
    keep_empty: bool = _EMPTY,
    images_per_shard: int = typer.Option(500, "--images-per-shard", min=1),
    workers: int = _WORKERS,
    executor: str = _EXECUTOR,
    progress: bool = _PROGRESS,
) -> None:
    """Build a dataset from segmentation masks: Mask-to-Box, then Box-to-Caption."""
    from terrascribe.build.annotations import build_masks_dataset

    if (palette is None) == (classes is None):
        raise typer.BadParameter("give exactly one of --palette or --classes")
    info = build_masks_dataset(
        out,
        masks=masks,
        images=images,
        palette=palette,
        classes=classes,
        ignore=ignore or None,
        min_area=min_area,
        seed=seed,
        options=_options(describe_all, positions, sizes, n_captions, centre),
        templates=templates,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        min_visibility=min_visibility,
        gsd_m=gsd,
        licence=licence,
        keep_empty=keep_empty,
        images_per_shard=images_per_shard,
        workers=workers,
        executor=executor,
        progress=progress,
    )
    _print_build(info, out)


def build_captions(
    captions: Path = typer.Option(..., "--captions", help="dataset_*.json or caption CSV."),
    images: Path = _IMAGES,
    out: Path = _OUT,
    format: str = typer.Option(
        "auto", "--format", help="rsicd, rsitmd, ucm, sydney or auto (from name/content)."
    ),
    licence: str | None = _LICENCE,
    seed: int = _SEED,
    images_per_shard: int = typer.Option(2000, "--images-per-shard", min=1),
    workers: int = _WORKERS,
    executor: str = _EXECUTOR,
    progress: bool = _PROGRESS,
) -> None:
    """Build a dataset from an RS caption set (RSICD, RSITMD, UCM, Sydney) and its images."""
    from terrascribe.build.annotations import build_caption_set_dataset

    info = build_caption_set_dataset(
        out,
        captions=captions,
        images=images,
        format=format,
        licence=licence,
        seed=seed,
        images_per_shard=images_per_shard,
        workers=workers,
        executor=executor,
        progress=progress,
    )
    _print_build(info, out)


def caption_stats(
    captions: Path = typer.Argument(..., help="dataset_*.json or caption CSV."),
    format: str = typer.Option("auto", "--format", help="rsicd, rsitmd, ucm, sydney or auto."),
) -> None:
    """Read a caption set (no images needed) and print its counts as JSON."""
    from terrascribe.sources import caption_sets

    records = caption_sets.read(captions, format=format)
    if not records:  # the dataset name below comes from a record
        raise caption_sets.CaptionSetError(f"{captions}: no captioned images")
    typer.echo(json.dumps({"dataset": records[0].dataset, **caption_sets.summary(records)}))


def build_counting(
    format: str = typer.Option(..., "--format", help="coco, dota, voc (DIOR), yolo or csv."),
    annotations: Path = typer.Option(..., "--annotations", help="Annotation file or folder."),
    images: Path = _IMAGES,
    out: Path = typer.Option(..., "--out", help="Benchmark folder."),
    classes: str | None = typer.Option(None, "--classes", help="YOLO class names (file/list)."),
    label: list[str] = _LABEL,
    category: list[str] = typer.Option([], "--category", help="Only this category (repeatable)."),
    min_count: int = typer.Option(1, "--min-count", min=1),
    max_count: int = typer.Option(10, "--max-count", min=1),
    tile_size: int | None = _TILE,
    tile_overlap: int = _OVERLAP,
    caption: str = typer.Option(
        "a satellite image of {objects}", "--caption", help="Caption with {objects}."
    ),
    name: str | None = typer.Option(None, "--name", help="Benchmark name (default: folder)."),
    source: str | None = typer.Option(None, "--source", help="Where the data comes from."),
    licence: str | None = _LICENCE,
    seed: int = _SEED,
    progress: bool = _PROGRESS,
) -> None:
    """Build a counting benchmark (RemoteCount-style, counts 1-10) from box annotations."""
    from rich.console import Console

    from terrascribe.build.counting import build_counting_benchmark

    summary = build_counting_benchmark(
        out,
        annotations=annotations,
        images=images,
        format=format,
        classes=_classes(classes),
        label_names=_label_names(label),
        categories=category or None,
        min_count=min_count,
        max_count=max_count,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        caption_template=caption,
        name=name,
        source=source,
        licence=licence,
        seed=seed,
        progress=progress,
    )
    Console().print(
        f"[bold]{summary['rows']}[/] images, categories {summary['categories']}, counts "
        f"{summary['count_histogram']}, {summary['skipped']} skipped -> {out}"
    )


def register(app: typer.Typer) -> None:
    """Add this method's commands to the ``build`` group."""
    app.command("boxes")(build_boxes)
    app.command("masks")(build_masks)
    app.command("captions")(build_captions)
    app.command("caption-stats")(caption_stats)
    app.command("counting")(build_counting)
