"""Merging: requested proportions, provenance, prefixed keys, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terrascribe.curate.merge import merge_datasets, parse_input, plan_merge
from terrascribe.shards import Dataset
from tests.test_curate_helpers import make_dataset


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("merge")
    return make_dataset(root / "a", 20, seed=1).path, make_dataset(root / "b", 6, seed=2).path


def test_weights_give_proportions_and_provenance(two, tmp_path: Path) -> None:
    a, b = two
    info = merge_datasets([f"big={a}:1", f"small={b}:1"], tmp_path / "m", total=20, progress=False)
    out = Dataset(tmp_path / "m")
    assert len(out) == 20
    keys = out.manifest()["key"]
    assert keys.str.startswith("big-").sum() == 10  # subsampled 20 -> 10
    assert keys.str.startswith("small-").sum() == 10  # oversampled 6 -> 10 (copies -r1)
    assert keys.str.endswith("-r1").sum() == 4
    sample = next(out.samples(keys=["small-img-000"]))
    prov = sample.extra["provenance"]
    assert prov == {"dataset": "small", "path": str(b), "key": "img-000", "copy": 0}
    assert {r["name"]: r["written"] for r in info["report"]["inputs"]} == {"big": 10, "small": 10}


def test_deterministic_and_seeded(two, tmp_path: Path) -> None:
    a, b = two
    merge_datasets([f"x={a}:3", f"y={b}:1"], tmp_path / "1", total=12, seed=4, progress=False)
    merge_datasets([f"x={a}:3", f"y={b}:1"], tmp_path / "2", total=12, seed=4, progress=False)
    for name in ("shard-000000.tar", "manifest.parquet"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
    p1 = plan_merge([parse_input(f"x={a}:3")], total=5, seed=4)
    p2 = plan_merge([parse_input(f"x={a}:3")], total=5, seed=5)
    assert p1["copies"].sum() == p2["copies"].sum() == 5
    assert (p1["copies"] != p2["copies"]).any()


def test_default_total_keeps_everything(two, tmp_path: Path) -> None:
    a, b = two
    merge_datasets([str(a), str(b)], tmp_path / "m", progress=False)
    out = Dataset(tmp_path / "m")
    assert len(out) == 26
    stats = json.loads((tmp_path / "m" / "shard-000000.stats.json").read_text())
    assert stats["skipped"] == 0


def test_parse_input_and_errors(two, tmp_path: Path) -> None:
    a, _ = two
    assert parse_input(f"{a}:0.5").weight == 0.5
    assert parse_input(str(a)).name == "a"
    with pytest.raises(ValueError, match="positive"):
        parse_input(f"{a}:-1")
    with pytest.raises(ValueError, match="letters"):
        parse_input(f"bad name={a}")
    with pytest.raises(ValueError, match="distinct"):
        merge_datasets([f"x={a}", f"x={a}"], tmp_path / "m", progress=False)


def test_weights_for_all_or_none(two, tmp_path: Path) -> None:
    a, b = two
    with pytest.raises(ValueError, match="every input or to none"):
        merge_datasets([f"{a}:2", str(b)], tmp_path / "m", progress=False)
