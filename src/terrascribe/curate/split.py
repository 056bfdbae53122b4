"""Splits that do not leak: random, by geographic cell, or stratified in space × time.

Every method assigns *units* (groups of samples that must land in the same split) to splits, in
a seeded random order, each to the split furthest below its target share, so the shares hold to
within one unit overall and within each stratum:

* ``random``: a unit is one sample;
* ``geo``: a unit is a grid cell, so neighbouring tiles never straddle train and test (cells are
  squares of ``cell_size`` metres on an equal-area grid, EPSG:6933, or of ``cell_size`` degrees
  on a lon/lat grid);
* ``stratified``: GAIA's split: strata are (cell, year); units are samples, shuffled within
  each stratum and strata are visited in turn, so every region and year is spread 70/20/10 (the
  default fractions) over the splits.

Optionally, samples that are duplicates of each other (``dedup_clusters.parquet`` from
``curate dedup``) are merged into one unit, so a duplicate pair never straddles splits. Samples
without a location are their own cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from terrascribe.curate.views import open_dataset, read_view, write_report, write_subset, write_view
from terrascribe.shards import Dataset

SPLIT_METHODS = ("random", "geo", "stratified")
GRIDS = ("metric", "degrees")
DEFAULT_FRACTIONS = (0.7, 0.2, 0.1)  # GAIA
DEFAULT_NAMES = ("train", "val", "test")
EQUAL_AREA_CRS = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global: metres, equal area


@dataclass
class SplitResult:
    """A split assignment: ``assignment`` has ``key, split, cell, unit, stratum``; ``report``."""

    assignment: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.7,0.2,0.1"`` (or numbers) as fractions that sum to 1.

    Raises:
        ValueError: If a fraction is negative, none is positive, or they do not sum to 1.
    """
    values = [float(x) for x in text.split(",")] if isinstance(text, str) else list(text)
    if not values or any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {values} (sum {sum(values)})")
    return tuple(values)


def grid_cells(
    lon: np.ndarray, lat: np.ndarray, cell_size: float, grid: str = "metric"
) -> np.ndarray:
    """Cell ids (strings) of points; NaN coordinates give ``None``.

    Args:
        lon, lat: Point coordinates in degrees (WGS84).
        cell_size: Cell side in metres (``metric``) or degrees (``degrees``).
        grid: ``"metric"`` (equal-area EPSG:6933 squares) or ``"degrees"``.
    """
    if cell_size <= 0:
        raise ValueError(f"cell_size must be positive, got {cell_size}")
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose from {GRIDS}")
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if grid == "metric":
        from pyproj import Transformer

        x, y = np.full(len(lon), np.nan), np.full(len(lon), np.nan)
        if ok.any():
            to_metric = Transformer.from_crs("EPSG:4326", EQUAL_AREA_CRS, always_xy=True)
            x[ok], y[ok] = to_metric.transform(lon[ok], lat[ok])
        prefix = f"m{cell_size:g}"
    else:
        x, y, prefix = lon, lat, f"d{cell_size:g}"
    cells = np.full(len(lon), None, dtype=object)
    ix = np.floor(x[ok] / cell_size).astype(np.int64)
    iy = np.floor(y[ok] / cell_size).astype(np.int64)
    cells[ok] = [f"{prefix}:{a}:{b}" for a, b in zip(ix.tolist(), iy.tolist(), strict=True)]
    return cells


def _union_units(keys: np.ndarray, *labels: np.ndarray) -> np.ndarray:
    """Unit id per key: keys sharing any non-null label (cell, cluster) end up in one unit."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(keys)
    src, dst, offset = [np.arange(n)], [np.arange(n)], n
    for lab in labels:
        present = pd.notna(lab)
        codes, _ = pd.factorize(pd.Series(lab)[present])
        src.append(np.flatnonzero(present))
        dst.append(offset + codes)
        offset += (codes.max() + 1) if len(codes) else 0
    a, b = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(offset, offset)).tocsr()
    return connected_components(graph, directed=False)[1][:n]


def _assign_sequential(sizes: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Give each unit (in order) to the split furthest below its share of what is assigned."""
    frac = np.asarray(fractions, dtype=float)
    counts = np.zeros(len(frac))
    out = np.empty(len(sizes), dtype=np.int64)
    total = 0.0
    for i, size in enumerate(sizes):
        deficit = frac * (total + size) - counts
        s = int(np.argmax(deficit))
        out[i] = s
        counts[s] += size
        total += size
    return out


def assign_splits(
    manifest: pd.DataFrame,
    *,
    method: str = "geo",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    names: Sequence[str] = DEFAULT_NAMES,
    cell_size: float = 10_000.0,
    grid: str = "metric",
    seed: int = 0,
    groups: pd.Series | None = None,
) -> SplitResult:
    """Assign every manifest row to a split.

    Args:
        manifest: Rows with ``key`` and, for ``geo``/``stratified``, ``west, south, east, north``
            (cells use the centre) and ``capture_date`` (years for ``stratified``).
        method: One of :data:`SPLIT_METHODS`.
        fractions: Target share of each split (sum 1).
        names: Split names, one per fraction.
        cell_size: Grid cell side (metres for ``metric``, degrees for ``degrees``).
        grid: One of :data:`GRIDS`.
        seed: Seed for the order in which units are dealt out.
        groups: Optional ``key -> group`` (e.g. dedup cluster): a group never straddles splits.

    Returns:
        The assignment (``key, split, cell, unit, stratum``) and a report.

    Raises:
        ValueError: On an unknown method or grid, or fractions and names that do not match.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; choose from {SPLIT_METHODS}")
    fractions = parse_fractions(fractions)
    if len(names) != len(fractions) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per fraction, got {names} for {fractions}")
    df = manifest.sort_values("key").reset_index(drop=True)
    keys = df["key"].to_numpy(dtype=object)
    if all(c in df for c in ("west", "south", "east", "north")):
        lon = ((df["west"] + df["east"]) / 2).to_numpy(float)
        lat = ((df["south"] + df["north"]) / 2).to_numpy(float)
    else:
        lon = lat = np.full(len(df), np.nan)
    cells = grid_cells(lon, lat, cell_size, grid)
    dates = df["capture_date"] if "capture_date" in df else pd.Series([None] * len(df))
    years = np.array([str(d)[:4] if isinstance(d, str) and d else "unknown" for d in dates])
    group = (
        df["key"].map(groups).to_numpy(dtype=object)
        if groups is not None
        else np.full(len(df), None)
    )
    # Units: what must stay together (a cell for geo; always a duplicate cluster).
    units = _union_units(keys, cells, group) if method == "geo" else _union_units(keys, group)
    cell_or_key = np.where(pd.isna(cells), "none", cells).astype(object)
    stratum = (
        np.char.add(np.char.add(cell_or_key.astype(str), "|"), years)
        if method == "stratified"
        else np.full(len(df), "all")
    )
    # A unit's stratum is its first key's (keys are sorted), so units never split.
    unit_table = (
        pd.DataFrame({"unit": units, "stratum": stratum})
        .groupby("unit", sort=True)
        .agg(stratum=("stratum", "first"), size=("stratum", "size"))
        .reset_index()
    )
    rng = np.random.default_rng(seed)
    strata = np.array(sorted(unit_table["stratum"].unique()), dtype=object)
    stratum_rank = dict(zip(strata[rng.permutation(len(strata))], range(len(strata)), strict=True))
    unit_table["stratum_rank"] = unit_table["stratum"].map(stratum_rank)
    unit_table["shuffle"] = rng.permutation(len(unit_table))
    unit_table = unit_table.sort_values(["stratum_rank", "shuffle"]).reset_index(drop=True)
    unit_table["split"] = np.asarray(names, dtype=object)[
        _assign_sequential(unit_table["size"].to_numpy(), fractions)
    ]
    split_of_unit = unit_table.set_index("unit")["split"]
    assignment = pd.DataFrame(
        {
            "key": keys.astype(str),
            "split": split_of_unit.reindex(units).to_numpy(),
            "cell": pd.Series(cells, dtype=object),
            "unit": units.astype(np.int64),
            "stratum": stratum.astype(str),
        }
    )
    report = split_report(assignment, names, fractions)
    report["params"] = {
        "method": method,
        "fractions": list(fractions),
        "names": list(names),
        "cell_size": cell_size,
        "grid": grid,
        "seed": seed,
        "grouped_by_clusters": groups is not None,
    }
    report["no_location"] = int(pd.isna(cells).sum())
    return SplitResult(assignment=assignment, report=report)


def split_report(
    assignment: pd.DataFrame, names: Sequence[str], fractions: Sequence[float]
) -> dict[str, Any]:
    """Counts, achieved shares and leakage checks (cells and units on more than one split)."""
    n = len(assignment)
    counts = assignment["split"].value_counts()
    located = assignment.dropna(subset=["cell"])
    cells_per_split = located.groupby("split")["cell"].nunique()
    shared_cells = int((located.groupby("cell")["split"].nunique() > 1).sum())
    shared_units = int((assignment.groupby("unit")["split"].nunique() > 1).sum())
    return {
        "samples": n,
        "splits": {
            name: {
                "samples": int(counts.get(name, 0)),
                "share": round(float(counts.get(name, 0)) / n, 4) if n else 0.0,
                "target": frac,
                "cells": int(cells_per_split.get(name, 0)),
            }
            for name, frac in zip(names, fractions, strict=True)
        },
        "cells": int(located["cell"].nunique()),
        "cells_on_several_splits": shared_cells,
        "units": int(assignment["unit"].nunique()),
        "units_on_several_splits": shared_units,
    }


def split_dataset(
    dataset: Dataset | str | Path,
    out: str | Path,
    *,
    method: str = "geo",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    names: Sequence[str] = DEFAULT_NAMES,
    cell_size: float = 10_000.0,
    grid: str = "metric",
    seed: int = 0,
    clusters: str | Path | None = None,
    materialise: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> SplitResult:
    """Split a dataset and write ``split.parquet`` (``key, split, cell, unit, stratum``).

    Args:
        dataset: The dataset.
        out: Path of the view (a ``.parquet`` file) or a folder to write ``split.parquet`` and
            ``split_report.json`` into.
        method, fractions, names, cell_size, grid, seed: See :func:`assign_splits`.
        clusters: ``dedup_clusters.parquet`` from ``curate dedup``: duplicates stay together.
        materialise: If given, also write one dataset per split under this folder
            (``train/``, ``val/``, ``test/``).
        workers: Parallel processes when materialising.
        progress: Show progress bars.

    Returns:
        The assignment and report.
    """
    ds = open_dataset(dataset)
    manifest = ds.manifest(columns=["key", "west", "south", "east", "north", "capture_date"])
    groups = None
    if clusters is not None:
        view, _ = read_view(clusters)
        groups = view.set_index("key")["cluster"]
    result = assign_splits(
        manifest,
        method=method,
        fractions=fractions,
        names=names,
        cell_size=cell_size,
        grid=grid,
        seed=seed,
        groups=groups,
    )
    result.report["source"] = str(ds.path)
    out = Path(out)
    view_path = out if out.suffix == ".parquet" else out / "split.parquet"
    write_view(view_path, result.assignment, meta=result.report["params"])
    write_report(view_path.parent, view_path.stem + "_report.json", result.report)
    if materialise is not None:
        split_of = result.assignment.set_index("key")["split"]
        for name in result.report["params"]["names"]:
            drops = {k: ("other split", s) for k, s in split_of.items() if s != name}
            write_subset(
                ds,
                Path(materialise) / name,
                drops,
                builder="curate.split",
                params={**result.report["params"], "split": name},
                seed=seed,
                workers=workers,
                report=result.report,
                progress=progress,
            )
    return result
