"""De-duplication: planted copies are found, distinct images are not, output is resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from terrascribe.curate.dedup import dedup_dataset, dedup_folder, find_duplicates
from terrascribe.curate.perceptual import hash_image, hash_to_uint64
from terrascribe.shards import Dataset
from tests.test_curate_helpers import jpeg, make_dataset, texture

PLANT = {3: ["reenc", "resize", "crop"], 7: ["reenc"], 12: ["resize"], 20: ["crop", "reenc"]}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("planted") / "ds", 30, plant=PLANT)


def _expected_clusters() -> set[frozenset[str]]:
    return {
        frozenset([f"img-{i:03d}", *(f"img-{i:03d}-{k}" for k in kinds)])
        for i, kinds in PLANT.items()
    }


def _clusters(result) -> set[frozenset[str]]:
    return {frozenset(g["key"]) for _, g in result.clusters.groupby("cluster")}


def test_planted_copies_found_and_nothing_else(planted: Dataset, tmp_path: Path) -> None:
    # Measured on these textures: JPEG q40 and 0.75x resizing move pHash by 0-2 bits, a 2-pixel
    # crop by up to 8; distinct images are >= 14 bits apart. pHash distances are always even.
    result = dedup_dataset(planted, tmp_path / "out", max_distance=8, progress=False)
    assert _clusters(result) == _expected_clusters()
    # The largest image of each cluster is kept: the 128 px original (the crop is 124 px).
    kept = set(result.clusters.loc[result.clusters["kept"], "key"])
    assert kept == {f"img-{i:03d}" for i in PLANT}
    out = Dataset(tmp_path / "out")
    assert len(out) == len(planted) - sum(len(k) for k in PLANT.values())
    assert not set(out.manifest()["key"]) & set(result.removed)
    stats = json.loads((tmp_path / "out" / "shard-000000.stats.json").read_text())
    assert set(stats["skip_reasons"]) <= {"duplicate"}
    on_disk = json.loads((tmp_path / "out" / "dedup_clusters.json").read_text())
    assert len(on_disk["clusters"]) == len(PLANT)
    assert pd.read_parquet(tmp_path / "out" / "dedup_clusters.parquet").shape[0] == len(
        result.clusters
    )


def test_default_threshold_is_remoteclip_strict(planted: Dataset, tmp_path: Path) -> None:
    # Distance < 2 (the default) only joins copies whose pHash did not move at all.
    result = dedup_dataset(planted, tmp_path / "out", materialise=False, progress=False)
    assert result.report["params"]["max_distance"] == 1
    assert (result.clusters["distance"] == 0).all()
    for cluster in _clusters(result):
        assert any(cluster <= expected for expected in _expected_clusters())


def test_dhash_must_agree_too(planted: Dataset, tmp_path: Path) -> None:
    both = dedup_dataset(
        planted,
        tmp_path / "b",
        kinds=["phash", "dhash"],
        max_distance=8,
        materialise=False,
        progress=False,
    )
    for cluster in _clusters(both):
        assert any(cluster <= expected for expected in _expected_clusters())
    assert "img-003-reenc" in set(both.clusters["key"])


def test_exact_duplicates_by_content_hash() -> None:
    rng = np.random.default_rng(5)
    a, b = jpeg(texture(rng)), jpeg(texture(rng))
    rows = [{"key": k, **hash_image(img)} for k, img in (("x", a), ("y", b), ("z", a))]
    table = pd.DataFrame(rows)
    # Even with pHash matching switched off (impossible distance 0 on scrambled hashes), the
    # identical bytes of x and z are joined.
    table["phash"] = np.array([1, 2**40, 2**63], dtype=np.uint64)
    result = find_duplicates(table, max_distance=0)
    assert _clusters(result) == {frozenset({"x", "z"})}
    assert result.clusters["exact"].all()
    assert len(find_duplicates(table, max_distance=0, exact=False).clusters) == 0


def test_keep_rules() -> None:
    table = pd.DataFrame(
        {
            "key": ["b", "a", "c"],
            "width": [200, 100, 200],
            "height": [200, 100, 200],
            "sha256": ["1", "2", "3"],
            "phash": np.array([7, 7, 7], dtype=np.uint64),
        }
    )
    largest = find_duplicates(table, keep="largest")
    assert largest.clusters.loc[largest.clusters["kept"], "key"].tolist() == ["b"]
    first = find_duplicates(table, keep="first")
    assert first.clusters.loc[first.clusters["kept"], "key"].tolist() == ["a"]
    assert first.removed == ["b", "c"]
    with pytest.raises(ValueError, match="keep rule"):
        find_duplicates(table, keep="random")
    with pytest.raises(ValueError, match="hash kind"):
        find_duplicates(table, kinds=["ahash"])
    with pytest.raises(ValueError, match="lacks columns"):
        find_duplicates(table.drop(columns=["sha256"]))


def test_resume_and_determinism(planted: Dataset, tmp_path: Path) -> None:
    a = tmp_path / "a"
    dedup_dataset(planted, a, max_distance=8, progress=False)
    first = {p.name: p.read_bytes() for p in a.glob("shard-*.tar")}
    manifest = (a / "manifest.parquet").read_bytes()
    # Interrupted run: one shard lost; the re-run rewrites exactly it.
    (a / "shard-000001.tar").unlink()
    (a / "shard-000001.stats.json").unlink()
    dedup_dataset(planted, a, max_distance=8, progress=False)
    assert {p.name: p.read_bytes() for p in a.glob("shard-*.tar")} == first
    assert (a / "manifest.parquet").read_bytes() == manifest
    b = tmp_path / "b"
    dedup_dataset(planted, b, max_distance=8, progress=False)
    assert {p.name: p.read_bytes() for p in b.glob("shard-*.tar")} == first
    assert (a / "dedup_clusters.json").read_bytes() == (b / "dedup_clusters.json").read_bytes()


def test_folder_with_a_corrupt_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    img = texture(rng)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "1.jpg").write_bytes(jpeg(img))
    (tmp_path / "imgs" / "a" / "2.jpg").write_bytes(jpeg(img, quality=90))
    (tmp_path / "imgs" / "a" / "3.jpg").write_bytes(jpeg(texture(rng)))
    (tmp_path / "imgs" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    result = dedup_folder(tmp_path / "imgs", tmp_path / "out", max_distance=4, progress=False)
    assert _clusters(result) == {frozenset({"a/1.jpg", "a/2.jpg"})}
    assert result.report["unreadable"] == 1
    assert "broken.jpg" in result.report["unreadable_items"][0]["error"]
    with pytest.raises(FileNotFoundError, match="no images"):
        dedup_folder(tmp_path / "out", tmp_path / "out2", progress=False)


def test_hash_packing() -> None:
    bits = np.zeros((8, 8), bool)
    bits[0, 0] = True
    bits[7, 7] = True
    assert hash_to_uint64(bits) == np.uint64(2**63 + 1)
    with pytest.raises(ValueError, match="64-bit"):
        hash_to_uint64(np.zeros(16, bool))


@pytest.mark.real_data
@pytest.mark.slow
def test_real_scenes_pixel_identical_pairs(shared_data: Path, tmp_path: Path) -> None:
    """The data card lists 5 pixel-identical pairs in SIRI-WHU; RSSCN7 has none."""
    result = dedup_folder(shared_data / "scenes", tmp_path, workers=2, progress=False)
    expected = {
        frozenset({f"siri_whu/{c}/{a}.jpg", f"siri_whu/{c}/{b}.jpg"})
        for c, a, b in [
            ("agriculture", "0002", "0106"),
            ("agriculture", "0008", "0112"),
            ("agriculture", "0101", "0103"),
            ("agriculture", "0109", "0114"),
            ("overpass", "0032", "0100"),
        ]
    }
    assert expected <= _clusters(result)
    assert result.report["hashed"] == 5198
