"""Splits: geographic cells never straddle splits, shares hold, duplicates stay together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from terrascribe.curate.split import assign_splits, grid_cells, parse_fractions, split_dataset
from terrascribe.curate.views import read_view
from terrascribe.shards import Dataset
from tests.test_curate_helpers import make_dataset


def _grid_manifest(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lon = rng.uniform(24.0, 25.0, n)
    lat = rng.uniform(60.0, 60.5, n)
    return pd.DataFrame(
        {
            "key": [f"k{i:04d}" for i in range(n)],
            "west": lon,
            "east": lon + 0.001,
            "south": lat,
            "north": lat + 0.001,
            "capture_date": [f"{2018 + i % 5}-01-01" for i in range(n)],
        }
    )


@pytest.mark.parametrize("grid,size", [("metric", 5000.0), ("degrees", 0.1)])
def test_geo_split_has_no_cell_on_both_sides(grid: str, size: float) -> None:
    result = assign_splits(_grid_manifest(), method="geo", cell_size=size, grid=grid, seed=3)
    a = result.assignment
    assert (a.groupby("cell")["split"].nunique() == 1).all()
    assert result.report["cells_on_several_splits"] == 0
    shares = a["split"].value_counts(normalize=True)
    # Cells hold ~5-20 samples each: shares land within a few percent of 70/20/10.
    for name, target in zip(("train", "val", "test"), (0.7, 0.2, 0.1), strict=True):
        assert abs(shares[name] - target) < 0.05
    assert result.report["cells"] > 20


def test_random_split_exact_shares_and_seeded() -> None:
    m = _grid_manifest(1000)
    a = assign_splits(m, method="random", seed=1).assignment
    assert a["split"].value_counts().to_dict() == {"train": 700, "val": 200, "test": 100}
    again = assign_splits(m.sample(frac=1, random_state=5), method="random", seed=1).assignment
    pd.testing.assert_frame_equal(a, again)  # row order of the input does not matter
    other = assign_splits(m, method="random", seed=2).assignment
    assert (a["split"] != other["split"]).any()


def test_stratified_spreads_every_stratum() -> None:
    result = assign_splits(_grid_manifest(2000), method="stratified", cell_size=0.5, grid="degrees")
    a = result.assignment
    assert a["stratum"].str.contains("|", regex=False).all()
    per = a.groupby("stratum")["split"].value_counts(normalize=True).unstack(fill_value=0)
    sizes = a["stratum"].value_counts()
    big = per.loc[sizes[sizes >= 100].index]
    assert len(big) >= 5
    assert ((big["train"] - 0.7).abs() < 0.03).all()
    assert ((big["test"] - 0.1).abs() < 0.03).all()


def test_groups_keep_duplicates_together() -> None:
    m = _grid_manifest(300)
    groups = pd.Series({f"k{i:04d}": i // 3 for i in range(0, 300)})  # triples of "duplicates"
    a = assign_splits(m, method="random", groups=groups, seed=0).assignment
    assert (a.groupby(a["key"].map(groups))["split"].nunique() == 1).all()


def test_no_location_is_its_own_cell() -> None:
    m = pd.DataFrame({"key": ["a", "b", "c"], "capture_date": [None, None, None]})
    result = assign_splits(m, method="geo", fractions=(0.5, 0.5), names=("train", "test"))
    assert result.report["no_location"] == 3
    assert result.assignment["cell"].isna().all()


def test_bad_arguments() -> None:
    m = _grid_manifest(10)
    with pytest.raises(ValueError, match="sum to 1"):
        parse_fractions("0.5,0.2")
    with pytest.raises(ValueError, match="method"):
        assign_splits(m, method="kmeans")
    with pytest.raises(ValueError, match="one distinct name"):
        assign_splits(m, fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="cell_size"):
        grid_cells(np.zeros(1), np.zeros(1), 0)
    with pytest.raises(ValueError, match="grid"):
        grid_cells(np.zeros(1), np.zeros(1), 1, grid="h3")


def test_split_dataset_view_and_materialised(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", 40)
    result = split_dataset(
        ds,
        tmp_path / "views",
        method="geo",
        cell_size=0.04,
        grid="degrees",
        materialise=tmp_path / "splits",
        progress=False,
    )
    view, meta = read_view(tmp_path / "views" / "split.parquet")
    assert meta["method"] == "geo"
    assert set(view.columns) >= {"key", "split", "cell"}
    assert (tmp_path / "views" / "split_report.json").exists()
    counts = {n: len(Dataset(tmp_path / "splits" / n)) for n in ("train", "val", "test")}
    assert sum(counts.values()) == 40
    assert counts == result.assignment["split"].value_counts().to_dict()
    train_keys = set(Dataset(tmp_path / "splits" / "train").manifest()["key"])
    assert train_keys == set(view.loc[view["split"] == "train", "key"])
