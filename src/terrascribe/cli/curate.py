"""``terrascribe curate``: score, filter, dedup, contamination, split, merge.

Each command wraps one public function of :mod:`terrascribe.curate` and prints a short rich table;
the full report is a JSON file in the output folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

curate_app = typer.Typer(
    help="Curate datasets: CLIP-score filtering, de-duplication, benchmark contamination, "
    "splits, merging.",
    no_args_is_help=True,
)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad arguments (ValueError/KeyError from the library) become one ``Error:`` line."""
    try:
        yield
    except (ValueError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        typer.echo(f"Error: {msg}", err=True)
        raise typer.Exit(1) from None


def _table(title: str, rows: list[tuple], columns: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="right" if i else "left")
    for row in rows:
        table.add_row(*(str(x) for x in row))
    Console().print(table)


@curate_app.command()
def score(
    dataset: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(None, help="View to write (default: DATASET/scores.parquet)."),
    model: str = typer.Option("ts-tiny", help="Architecture or zoo name (remoteclip-vit-b-32...)."),
    pretrained: str = typer.Option(None, help="Weights: open_clip tag, file, or hf-hub:org/name."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1 or auto."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    cache_dir: Path = typer.Option(
        None, help="Embedding cache (default: the shared $TERRASCRIBE_CACHE/embeddings)."
    ),
) -> None:
    """Image-caption cosine similarity (clip_score) of every sample, as a view."""
    from terrascribe.curate.score import score_dataset
    from terrascribe.models.zoo import load_model

    out = out or dataset / "scores.parquet"
    bundle = load_model(model, pretrained, device=device)
    scores = score_dataset(dataset, bundle, out, batch_size=batch_size, cache_dir=cache_dir)
    s = scores["clip_score"]
    _table(
        f"clip_score with {bundle.name} ({bundle.fingerprint[:12]})",
        [
            ("samples", len(s)),
            ("mean", f"{s.mean():.4f}"),
            ("p10", f"{s.quantile(0.1):.4f}"),
            ("median", f"{s.median():.4f}"),
            ("p90", f"{s.quantile(0.9):.4f}"),
        ],
        ("", "value"),
    )
    typer.echo(f"scores written to {out}")


@curate_app.command("filter")
def filter_(
    dataset: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Argument(..., help="New dataset folder."),
    scores: Path = typer.Option(None, help="Score view (default: DATASET/scores.parquet)."),
    score_column: str = typer.Option("clip_score", "--score", help="Score column to rank by."),
    threshold: float = typer.Option(None, help="Drop samples scoring below this."),
    top: float = typer.Option(None, help="Keep this fraction (0-1], overall or per group."),
    by: str = typer.Option(None, help="Group column for quotas: labels, source, extra.FIELD."),
    min_per_group: int = typer.Option(0, help="With --by: keep at least this many per group."),
    workers: int = typer.Option(1, help="Parallel processes."),
) -> None:
    """Keep the best-scoring samples: threshold, top fraction, or per-group quotas."""
    from terrascribe.curate.filter import filter_dataset, format_rules

    with _user_errors():
        result = filter_dataset(
            dataset,
            out,
            scores=scores or dataset / "scores.parquet",
            score=score_column,
            threshold=threshold,
            top=top,
            by=by,
            min_per_group=min_per_group,
            workers=workers,
        )
    r = result.report
    rows = [*format_rules(r), ("kept", r["kept"], f"of {r['samples']}")]
    _table("filter: removed by rule", rows, ("rule", "removed", "most removed groups"))
    typer.echo(f"filtered dataset written to {out} (report: {out / 'filter_report.json'})")


@curate_app.command()
def dedup(
    source: Path = typer.Argument(..., help="Dataset folder, or a plain folder of images."),
    out: Path = typer.Argument(..., help="Output folder (the de-duplicated dataset + clusters)."),
    max_distance: int = typer.Option(1, help="Largest Hamming distance of a near-duplicate."),
    hash_kind: list[str] = typer.Option(["phash"], "--hash", help="phash, dhash (all must match)."),
    keep: str = typer.Option("largest", help="Cluster survivor: largest (then key) or first."),
    exact: bool = typer.Option(True, help="Also join byte-identical images (sha256)."),
    clusters_only: bool = typer.Option(False, help="Write the clusters, not the new dataset."),
    workers: int = typer.Option(1, help="Parallel processes."),
) -> None:
    """Find near- and exact-duplicate clusters; keep one of each."""
    from terrascribe.curate.dedup import dedup_dataset, dedup_folder

    with _user_errors():
        if (source / "dataset.json").exists():
            result = dedup_dataset(
                source,
                out,
                kinds=hash_kind,
                max_distance=max_distance,
                keep=keep,
                exact=exact,
                materialise=not clusters_only,
                workers=workers,
            )
        else:
            result = dedup_folder(
                source,
                out,
                kinds=hash_kind,
                max_distance=max_distance,
                keep=keep,
                exact=exact,
                workers=workers,
            )
    r = result.report
    rows = [
        ("items", r["items"]),
        ("unreadable", r["unreadable"]),
        ("clusters", r["clusters"]),
        ("items in clusters", r["in_clusters"]),
        ("removed", r["removed"]),
        ("of which byte-identical", r["exact_duplicates_removed"]),
        ("kept", r["kept"]),
    ]
    _table(f"dedup (Hamming <= {max_distance}, {'+'.join(hash_kind)})", rows, ("", "count"))
    typer.echo(f"clusters written to {out / 'dedup_clusters.json'}")


@curate_app.command()
def contamination(
    dataset: Path = typer.Argument(..., help="Dataset folder (the training data)."),
    benchmarks: list[str] = typer.Option(
        ...,
        "--benchmarks",
        "-b",
        help="NAME=PATH or PATH: an image folder, or a caption-set file (repeatable).",
    ),
    out: Path = typer.Option(None, help="Folder for contamination.json (default: DATASET)."),
    drop: Path = typer.Option(None, help="Also write a cleaned dataset here."),
    max_distance: int = typer.Option(1, help="Largest Hamming distance of an image overlap."),
    hash_kind: list[str] = typer.Option(["phash"], "--hash", help="phash, dhash."),
    workers: int = typer.Option(1, help="Parallel processes."),
) -> None:
    """Check a dataset against benchmark images and captions; optionally drop the overlaps."""
    from terrascribe.curate.contamination import CONTAMINATION_FILE, contamination_dataset

    with _user_errors():
        result = contamination_dataset(
            dataset,
            benchmarks,
            out_dir=out,
            drop=drop,
            kinds=hash_kind,
            max_distance=max_distance,
            workers=workers,
        )
    keys = result.overlaps.groupby("benchmark")["key"].nunique()
    rows = [
        (c["benchmark"], c["kind"], c["images"], c["captions"], int(keys.get(c["benchmark"], 0)))
        for c in result.record["checked_against"]
    ]
    _table("contamination", rows, ("benchmark", "kind", "images", "captions", "overlapping keys"))
    typer.echo(
        f"{result.record['n_overlapping_keys']} overlapping keys; record written to "
        f"{(out or dataset) / CONTAMINATION_FILE}"
        + (f"; cleaned dataset in {drop}" if drop else "")
    )


@curate_app.command()
def split(
    dataset: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(None, help="View file or folder (default: DATASET/split.parquet)."),
    method: str = typer.Option("geo", help="random, geo (whole cells) or stratified (cell×year)."),
    fractions: str = typer.Option("0.7,0.2,0.1", help="Shares of the splits (GAIA: 70/20/10)."),
    names: str = typer.Option("train,val,test", help="Split names."),
    cell_size: float = typer.Option(10000.0, help="Cell side: metres (metric) or degrees."),
    grid: str = typer.Option("metric", help="metric (equal-area EPSG:6933) or degrees."),
    seed: int = typer.Option(0, help="Seed."),
    clusters: Path = typer.Option(None, help="dedup_clusters.parquet: keep duplicates together."),
    materialise: Path = typer.Option(None, help="Also write one dataset per split here."),
    workers: int = typer.Option(1, help="Parallel processes (materialising)."),
) -> None:
    """Assign samples to train/val/test without spatial leakage; writes split.parquet."""
    from terrascribe.curate.split import split_dataset

    with _user_errors():
        result = split_dataset(
            dataset,
            out or dataset / "split.parquet",
            method=method,
            fractions=fractions,
            names=names.split(","),
            cell_size=cell_size,
            grid=grid,
            seed=seed,
            clusters=clusters,
            materialise=materialise,
            workers=workers,
        )
    r = result.report
    rows = [
        (name, s["samples"], f"{s['share']:.3f}", f"{s['target']:.3f}", s["cells"])
        for name, s in r["splits"].items()
    ]
    _table(f"split ({method})", rows, ("split", "samples", "share", "target", "cells"))
    typer.echo(
        f"cells on several splits: {r['cells_on_several_splits']}; "
        f"samples without location: {r['no_location']}"
    )


@curate_app.command()
def merge(
    out: Path = typer.Argument(..., help="New dataset folder."),
    inputs: list[str] = typer.Argument(..., help="NAME=PATH:WEIGHT (name and weight optional)."),
    total: int = typer.Option(None, help="Output size (default: sum of the inputs)."),
    seed: int = typer.Option(0, help="Seed of the sampling."),
    workers: int = typer.Option(1, help="Parallel processes."),
) -> None:
    """Merge datasets in requested proportions, keeping provenance."""
    from terrascribe.curate.merge import merge_datasets

    with _user_errors():
        info = merge_datasets(inputs, out, total=total, seed=seed, workers=workers)
    rows = [
        (
            r["name"],
            r["samples"],
            r["weight"] if r["weight"] is not None else "size",
            r["written"],
            f"{r['share']:.3f}",
            r["repeated"],
            r["left_out"],
        )
        for r in info["report"]["inputs"]
    ]
    _table(
        "merge",
        rows,
        ("input", "samples", "weight", "written", "share", "repeated", "left out"),
    )
    typer.echo(f"merged dataset written to {out}")


def register(app: typer.Typer) -> None:
    """Add the ``curate`` command group to the root app."""
    app.add_typer(curate_app, name="curate")
