"""Search index: tiling, faiss types, incremental appends, model fingerprint checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely

from terrascribe.search import vectors
from terrascribe.search.index import (
    SearchIndex,
    SearchIndexError,
    add_to_index,
    build_index,
    index_info,
)
from terrascribe.search.tiling import TilingError, TilingParams, grid_bounds, resolve_inputs


@pytest.fixture(scope="module")
def region_index(sample_region, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "idx"
    report = build_index(
        [sample_region.geotiff], tiny_model, out, tile_px=64, gsd_m=1.0, progress=False
    )
    return out, report


def test_build_writes_consistent_parts(region_index, sample_region):
    out, report = region_index
    # 512 px at 0.5 m = 256 m; 64 px tiles at 1 m = 64 m: a 4 x 4 grid.
    assert report.added == 16 and report.total == 16 and report.index_type == "flat"
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["count"] == 16
    assert manifest["index"]["type"] == "flat"
    assert manifest["model"]["name"] == "ts-tiny" and len(manifest["model"]["fingerprint"]) > 16
    table = pq.read_table(out / "tiles.parquet")
    assert b"geo" in table.schema.metadata
    df = table.to_pandas()
    assert df["id"].tolist() == list(range(16))
    assert df["tile_key"].is_unique
    assert set(df["date"]) == {"2021-06-01"}
    assert (df[["width", "height"]] == 128).all().all()  # 64 m at 0.5 m/px in source pixels
    with rasterio.open(sample_region.geotiff) as ds:
        west, south, east, north = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    union = shapely.union_all([shapely.from_wkb(g) for g in df["geometry"]])
    assert union.bounds == pytest.approx((west, south, east, north), abs=1e-6)


def test_index_vectors_match_embeddings(region_index, tiny_model, sample_region):
    out, _ = region_index
    from terrascribe.models.encode import encode_images
    from terrascribe.search.tiling import iter_tiles

    idx = SearchIndex(out)
    params = TilingParams(tile_px=64, gsd_m=1.0)
    tiles = [rgb for _, rgb in iter_tiles(resolve_inputs([sample_region.geotiff]), params)]
    emb = encode_images(tiny_model, tiles[:3], progress=False)
    np.testing.assert_allclose(idx.vector(0), emb[0], atol=1e-5)
    np.testing.assert_allclose(idx.vector(2), emb[2], atol=1e-5)


def test_append_skips_known_tiles_and_continues_ids(tmp_path, sample_region, tiny_model):
    out = tmp_path / "idx"
    build_index([sample_region.geotiff], tiny_model, out, tile_px=64, gsd_m=1.0, progress=False)
    again = add_to_index(
        out, [sample_region.geotiff], tiny_model, tile_px=64, gsd_m=1.0, progress=False
    )
    assert again.added == 0 and again.already_indexed == 16 and again.total == 16
    more = add_to_index(
        out, [sample_region.geotiff], tiny_model, tile_px=64, gsd_m=2.0, progress=False
    )
    assert more.added == 4 and more.total == 20  # 256 m / 128 m = 2 x 2 new tiles
    idx = SearchIndex(out)
    assert len(idx) == 20 and idx.tiles["id"].tolist() == list(range(20))
    assert idx.manifest["additions"][-1]["report"]["added"] == 4
    assert len(idx.manifest["additions"]) == 3


def test_overlap_makes_more_tiles(tmp_path, sample_region, tiny_model):
    report = build_index(
        [sample_region.geotiff],
        tiny_model,
        tmp_path / "i",
        tile_px=64,
        gsd_m=1.0,
        overlap=0.5,
        progress=False,
    )
    assert report.added == 7 * 7  # stride 32 m over 256 m


def test_refuses_another_model(tmp_path, sample_region, tiny_model):
    from terrascribe.models.zoo import load_model

    out = tmp_path / "idx"
    build_index([sample_region.geotiff], tiny_model, out, tile_px=128, progress=False)
    other = load_model("ts-tiny", seed=1)
    with pytest.raises(SearchIndexError, match="different models cannot be mixed"):
        add_to_index(out, [sample_region.geotiff], other, tile_px=128, progress=False)
    assert SearchIndex(out).manifest["count"] == 16  # untouched


def test_add_without_model_loads_the_index_model(tmp_path, sample_region, tiny_model):
    out = tmp_path / "idx"
    build_index([sample_region.geotiff], tiny_model, out, tile_px=128, progress=False)
    report = add_to_index(out, [sample_region.geotiff], tile_px=256, progress=False)
    assert report.added == 4  # 256 px at the native 0.5 m: 128 m tiles, 2 x 2


def test_index_info_and_damaged_index(region_index, tmp_path):
    out, _ = region_index
    info = index_info(out)
    assert info["count"] == 16 and info["sources"][0]["tiles"] == 16
    assert info["date_range"] == ["2021-06-01", "2021-06-01"]
    with pytest.raises(SearchIndexError, match="not a search index"):
        SearchIndex(tmp_path)
    (tmp_path / "index.json").write_text("{broken")
    with pytest.raises(SearchIndexError, match="unreadable index manifest"):
        SearchIndex(tmp_path)


@pytest.mark.parametrize("part", ["vectors.faiss", "tiles.parquet"])
def test_damaged_index_part_names_the_file(region_index, tmp_path, tiny_model, part):
    import shutil

    out, _ = region_index
    broken = tmp_path / "broken"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("cache"))
    (broken / part).write_bytes(b"not an index part")
    with pytest.raises(SearchIndexError, match=rf"{part}: unreadable index file"):
        SearchIndex(broken)
    with pytest.raises(SearchIndexError, match=rf"{part}: unreadable index file"):
        build_index([], tiny_model, broken, progress=False)


def test_bad_inputs_name_the_file(tmp_path, tiny_model):
    with pytest.raises(TilingError, match=r"nope.tif"):
        build_index([tmp_path / "nope.tif"], tiny_model, tmp_path / "i", progress=False)
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8") as d:
        d.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(TilingError, match=r"plain.tif: raster has no CRS"):
        build_index([plain], tiny_model, tmp_path / "i", progress=False)
    with pytest.raises(TilingError, match="overlap"):
        TilingParams(overlap=0.95)


def test_xyz_and_dataset_sources(tmp_path, sample_region, tiny_model):
    import mercantile
    from PIL import Image

    folder = tmp_path / "xyz"
    for t in mercantile.tiles(14.28, 50.084, 14.284, 50.0866, 17):
        path = folder / str(t.z) / str(t.x) / f"{t.y}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (256, 256), (t.x % 255, t.y % 255, 90)).save(path)
    report = build_index([folder], tiny_model, tmp_path / "i", tile_px=256, progress=False)
    assert report.added >= 4
    idx = SearchIndex(tmp_path / "i")
    assert (
        set(idx.tiles["source_kind"]) == {"xyz"} and idx.tiles["item"].str.contains("-z17-").all()
    )


def test_grid_bounds_cover_extent():
    boxes = list(grid_bounds((0, 0, 100, 50), 30, 30))
    assert len(boxes) == 4 * 2
    assert boxes[0] == (0, 20, 30, 50)
    assert max(b[2] for b in boxes) >= 100 and min(b[1] for b in boxes) <= 0


def test_choose_spec_by_size():
    assert vectors.choose_spec(10, 64).type == "flat"
    assert vectors.choose_spec(vectors.EXACT_MAX, 512).type == "hnsw"
    spec = vectors.choose_spec(vectors.HNSW_MAX, 512)
    assert spec.type == "ivfpq" and 512 % spec.params["m"] == 0
    with pytest.raises(vectors.VectorIndexError):
        vectors.choose_spec(10, 64, "annoy")


def test_grow_upgrades_flat_to_hnsw_without_reembedding(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    monkeypatch.setattr(vectors, "EXACT_MAX", 200)
    spec = vectors.choose_spec(150, 16)
    index = vectors.make_index(spec, 16)
    index.add(x[:150])
    index, spec, rebuilt = vectors.grow(index, spec, x[150:])
    assert rebuilt and spec.type == "hnsw" and index.ntotal == 300
    np.testing.assert_allclose(vectors.vectors_at(index, np.array([0, 299])), x[[0, 299]])
    _, ids = vectors.search_vectors(index, spec, x[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_filtered_search_respects_selection(kind):
    rng = np.random.default_rng(1)
    n, d = 3000, 32
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = vectors.choose_spec(n, d, kind)
    if kind == "ivfpq":
        spec.params.update(nlist=16, m=8)
    index = vectors.make_index(spec, d, train=x)
    index.add(x)
    allowed = np.arange(0, n, 3)
    big_allowed = np.arange(0, n)[np.arange(n) % 10 != 0]
    for sel in (allowed, big_allowed):
        _, ids = vectors.search_vectors(index, spec, x[:4], 10, sel)
        assert np.isin(ids[ids >= 0], sel).all()
        assert (ids >= 0).sum() == 40
    _, ids = vectors.search_vectors(index, spec, x[:1], 5, np.array([7, 8]))
    assert sorted(ids[0][:2].tolist()) == [7, 8] and (ids[0][2:] == -1).all()


@pytest.mark.real_data
def test_real_aerial_and_sintra(shared_data, tiny_model, tmp_path):
    aerial = shared_data / "aerial"
    rasters = sorted(aerial.glob("*.tif"))
    out = tmp_path / "real"
    first = build_index(rasters, tiny_model, out, tile_px=64, progress=False)
    second = add_to_index(
        out, [aerial / "sintra_z17" / "tiles"], tiny_model, tile_px=64, progress=False
    )
    assert first.added > 0 and second.added > 0
    idx = SearchIndex(out)
    kinds = idx.tiles.groupby("source_kind").size().to_dict()
    assert set(kinds) == {"raster", "xyz"}
    sintra = idx.tiles[idx.tiles["source_kind"] == "xyz"]
    assert sintra["west"].min() >= -9.4593 and sintra["east"].max() <= -9.4509
    assert idx.tiles["tile_key"].is_unique
