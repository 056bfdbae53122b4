"""The OSM x imagery builder (SkyScript's method): tiles, captions, skips, resume, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given
from hypothesis import strategies as st
from rasterio.transform import from_origin
from shapely.geometry import box

from terrascribe.build.osm import OsmBuildError, TileOptions, build_osm_dataset
from terrascribe.geo import transformer
from terrascribe.shards import Dataset, DatasetError

CRS = "EPSG:32633"
ORIGIN = (400000.0, 5500200.0)  # top-left of a 400 x 400 px, 0.5 m raster (200 m a side)
CAPTURE = "2020:05:17 10:00:00"


def _lonlat(x: float, y: float) -> tuple[float, float]:
    """Raster metres from the top-left corner (x right, y down) to lon/lat."""
    return transformer(CRS, "EPSG:4326").transform(ORIGIN[0] + x, ORIGIN[1] - y)


def write_scene(root: Path) -> tuple[Path, Path]:
    """A textured GeoTIFF and an OSM file of objects on it (plus a few that must be skipped)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = rng.integers(60, 120, (3, 400, 400), dtype=np.uint8)
    tif = root / "scene.tif"
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        width=400,
        height=400,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(*ORIGIN, 0.5, 0.5),
    ) as dst:
        dst.write(img)
        dst.update_tags(TIFFTAG_DATETIME=CAPTURE)
    nodes: list[str] = []
    ways: list[str] = []
    next_node = [1]

    def node(x: float, y: float, tags: dict[str, str] | None = None, **meta: str) -> int:
        lon, lat = _lonlat(x, y)
        nid = int(meta.get("id", 0)) or next_node[0] + 100
        next_node[0] += 1
        body = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in (tags or {}).items())
        ts = meta.get("timestamp", "2015-01-01T00:00:00Z")
        nodes.append(
            f'<node id="{nid}" version="{meta.get("version", "1")}" timestamp="{ts}" '
            f'lat="{lat:.7f}" lon="{lon:.7f}">{body}</node>'
        )
        return nid

    def way(wid: int, pts, tags: dict[str, str], closed: bool, **meta: str) -> None:
        ids = [node(x, y) for x, y in pts]
        if closed:
            ids.append(ids[0])
        refs = "".join(f'<nd ref="{i}"/>' for i in ids)
        body = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        ts = meta.get("timestamp", "2015-01-01T00:00:00Z")
        version = meta.get("version", "2")
        ways.append(f'<way id="{wid}" version="{version}" timestamp="{ts}">{refs}{body}</way>')

    def rect(x: float, y: float, w: float, h: float):
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]

    way(10, rect(40, 40, 12, 10), {"building": "yes", "roof:shape": "hipped"}, True)
    way(11, rect(56, 40, 10, 10), {"building": "yes"}, True)
    way(12, rect(100, 42, 14, 9), {"building": "house", "name": "Zürich ☕ «x» \u202e"}, True)
    way(13, rect(40, 120, 30, 20), {"amenity": "parking"}, True)
    way(14, [(30, 62), (100, 64), (170, 66)], {"highway": "residential"}, False)
    way(
        15,
        rect(130, 120, 12, 12),
        {"building": "yes"},
        True,
        version="1",
        timestamp="2022-03-01T00:00:00Z",
    )  # mapped after the image was taken
    way(16, rect(5, 5, 190, 190), {"landuse": "residential"}, True)  # larger than any tile
    way(17, rect(190, 40, 30, 10), {"building": "yes"}, True)  # mostly east of the raster
    node(150, 60, {"natural": "tree"}, id=9)
    node(160, 160, {"name": "only a name"})  # nothing visible: never extracted
    osm = root / "scene.osm"
    osm.write_text(
        "<?xml version='1.0' encoding='UTF-8'?>\n<osm version=\"0.6\" generator=\"test\">\n"
        + "\n".join(nodes + ways)
        + "\n</osm>\n",
        encoding="utf-8",
    )
    return osm, tif


TILES = TileOptions(tile_px_range=(48, 128), max_offcentre=0.2, min_valid_fraction=0.9)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_scene(tmp_path_factory.mktemp("scene"))


def _build(scene, out: Path, **kwargs):
    osm, tif = scene
    opts = {"tiles": TILES, "seed": 0, "progress": False, "licence": "CC0-1.0"}
    opts.update(kwargs)
    return build_osm_dataset(osm, tif, out, **opts)


def _skips(out: Path) -> dict[str, tuple[str, str]]:
    found = {}
    for stats in sorted(out.glob("shard-*.stats.json")):
        for s in json.loads(stats.read_text())["skips"]:
            found[s["item"]] = (s["reason"], s["detail"])
    return found


def test_builds_captioned_tiles_with_objects_in_pixel_space(scene, tmp_path: Path):
    out = tmp_path / "ds"
    wide = TileOptions(tile_px_range=(128, 256), max_offcentre=0.2)  # room for neighbours
    info = _build(scene, out, tiles=wide)
    ds = Dataset(out)
    samples = {s.source_ids[0]: s for s in ds.samples()}
    assert set(samples) == {"w10", "w11", "w12", "w13", "w14", "w15", "n9"}
    assert info["counts"]["samples"] == 7
    building = samples["w10"]
    assert building.key == "osm-w10-scene" and building.source == "osm"
    assert building.capture_date == "2020-05-17" and building.gsd_m == pytest.approx(0.5, rel=1e-2)
    assert set(building.extra["caption_styles"]) == {"title", "title_multi_objects", "grounded"}
    assert building.captions[0] == building.extra["caption_styles"]["title"]
    assert "building" in building.captions[0] and "hipped" in building.captions[0]
    assert "ODbL" in building.licence and "CC0-1.0" in building.licence
    # The focus object is stored in pixel space, fully inside the tile, with its outline.
    focus = next(o for o in building.objects if o.source_id == "w10")
    w = h = ds.manifest().set_index("key").loc[building.key, "width"]
    x0, y0, x1, y1 = focus.bbox_xyxy
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (x1 - x0) == pytest.approx(24, abs=1.5) and (y1 - y0) == pytest.approx(20, abs=1.5)
    assert focus.polygon is not None and len(focus.polygon) == 4
    assert focus.tags["roof:shape"] == "hipped"
    # Other objects really in the tile are stored too (the neighbour building and the road).
    assert {"w11", "w14"} <= {o.source_id for o in building.objects}
    # Odd Unicode tags survive to the sample metadata.
    assert samples["w12"].extra["osm"]["tags"]["name"].startswith("Zürich ☕")
    # The road tile is centred on one of its nodes, the tree on itself.
    assert samples["n9"].extra["osm"]["kind"] == "point"
    assert samples["w14"].extra["osm"]["kind"] == "line"
    # At the native GSD, tiles lie on the raster's pixel grid: their reads copy pixels.
    for sample in samples.values():
        left, _, _, top = sample.bounds.native
        col, row = (left - ORIGIN[0]) / 0.5, (ORIGIN[1] - top) / 0.5
        assert col == pytest.approx(round(col), abs=1e-6)
        assert row == pytest.approx(round(row), abs=1e-6)


def test_tiles_read_coarser_than_the_imagery_are_resampled(scene, tmp_path: Path):
    coarse = TileOptions(tile_px_range=(48, 128), max_offcentre=0.2, gsd_m=0.8)
    info = _build(scene, tmp_path / "ds", tiles=coarse)
    ds = Dataset(tmp_path / "ds")
    widths = ds.manifest().set_index("key")["width"]
    samples = list(ds.samples(with_images=False))
    assert len(samples) == info["counts"]["samples"] >= 5
    for sample in samples:
        assert sample.gsd_m == pytest.approx(0.8)
        left, _, right, _ = sample.bounds.native
        assert (right - left) / 0.8 == pytest.approx(widths[sample.key], rel=1e-3)


def test_skips_are_recorded_with_reasons(scene, tmp_path: Path):
    out = tmp_path / "ds"
    info = _build(scene, out)
    skips = _skips(out)
    assert skips["w16"][0] == "object larger than tile"
    assert skips["w17"][0] == "outside imagery"
    assert info["counts"]["skip_reasons"] == {"object larger than tile": 1, "outside imagery": 1}
    report = info["report"]
    assert report["samples_per_source"] == {"scene": 7}
    assert report["samples_per_tag"]["building=yes"] >= 2
    assert report["history_flags"] == {"mapped_after_capture": 1}
    assert (out / report["map"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_policy_flags_or_drops_late_objects(scene, tmp_path: Path):
    flagged = Dataset(tmp_path / "flag") if _build(scene, tmp_path / "flag") else None
    late = next(s for s in flagged.samples() if s.source_ids == ["w15"])
    assert late.extra["history"] == "mapped_after_capture"
    _build(scene, tmp_path / "drop", history_policy="drop")
    assert _skips(tmp_path / "drop")["w15"][0] == "mapped after capture"
    assert "w15" not in {s.source_ids[0] for s in Dataset(tmp_path / "drop").samples()}
    with pytest.raises(OsmBuildError, match="history_policy"):
        _build(scene, tmp_path / "bad", history_policy="maybe")


def test_per_tag_quota(scene, tmp_path: Path):
    info = _build(scene, tmp_path / "q", per_tag_quota=1)
    assert max(info["report"]["samples_per_tag"].values()) == 1
    assert "tag quota reached" in info["counts"]["skip_reasons"]


def test_same_seed_same_bytes_other_seed_other_tiles(scene, tmp_path: Path):
    _build(scene, tmp_path / "a")
    _build(scene, tmp_path / "b", objects_per_shard=2)  # other job split, same samples
    _build(scene, tmp_path / "c")
    for name in ("shard-000000.tar", "manifest.parquet", "samples_map.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name

    def tiles(path: Path) -> dict[str, object]:
        return {s.key: (s.extra["tile"], s.captions, s.image) for s in Dataset(path).samples()}

    assert tiles(tmp_path / "a") == tiles(tmp_path / "b")
    _build(scene, tmp_path / "d", seed=1)
    offsets_a = {k: v[0]["offset_px"] for k, v in tiles(tmp_path / "a").items()}
    offsets_d = {k: v[0]["offset_px"] for k, v in tiles(tmp_path / "d").items()}
    assert offsets_a != offsets_d


def test_shards_hold_objects_in_a_seeded_order_not_id_order(scene, tmp_path: Path):
    # id order puts all nodes before all ways; a shard must be a random sample of its source
    def shard_refs(out: Path) -> list[str]:
        manifest = Dataset(out).manifest(columns=["key", "shard", "source_ids"])
        return [str(ids[0]) for ids in manifest.sort_values(["shard", "key"])["source_ids"]]

    _build(scene, tmp_path / "a", objects_per_shard=2)
    _build(scene, tmp_path / "b", objects_per_shard=2)
    _build(scene, tmp_path / "c", objects_per_shard=2, seed=1)
    a, b, c = (shard_refs(tmp_path / n) for n in "abc")
    assert a == b and sorted(a) == sorted(c) and a != c


def test_resume_rewrites_only_missing_shards_without_duplicates(scene, tmp_path: Path):
    out = tmp_path / "ds"
    _build(scene, out, objects_per_shard=3)
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    assert len(before) == 3
    (out / "shard-000001.stats.json").unlink()  # as if the run died while writing shard 1
    (out / "shard-000001.tar").unlink()
    info = _build(scene, out, objects_per_shard=3)
    after = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    assert after == before
    keys = Dataset(out).manifest()["key"].tolist()
    assert len(keys) == len(set(keys)) == info["counts"]["samples"] == 7
    with pytest.raises(DatasetError, match="other parameters"):
        _build(scene, out, objects_per_shard=3, seed=5)


def test_imagery_that_does_not_overlap_is_a_clear_error(scene, tmp_path: Path):
    osm, _ = scene
    far = tmp_path / "far.tif"
    with rasterio.open(
        far,
        "w",
        driver="GTiff",
        width=10,
        height=10,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(300000.0, 5000000.0, 0.5, 0.5),
    ) as dst:
        dst.write(np.full((3, 10, 10), 90, np.uint8))
    with pytest.raises(OsmBuildError, match="does not overlap the OSM data"):
        build_osm_dataset(osm, far, tmp_path / "ds", progress=False)


def test_blank_and_nodata_tiles_are_skipped(scene, tmp_path: Path):
    osm, tif = scene
    blank = tmp_path / "blank.tif"
    with rasterio.open(tif) as src:
        profile = src.profile
    with rasterio.open(blank, "w", **profile) as dst:
        dst.write(np.full((3, 400, 400), 128, np.uint8))
    info = build_osm_dataset(osm, blank, tmp_path / "ds", tiles=TILES, progress=False)
    assert info["counts"]["samples"] == 0
    assert info["counts"]["skip_reasons"]["blank tile"] == 7


class _FlakyRaster:
    """Wraps a raster source; every other read fails, as a flaky network COG would."""

    def __init__(self, source) -> None:
        self._source = source
        self.reads = 0

    def __getattr__(self, name: str):
        return getattr(self._source, name)

    def read(self, bounds, size_px, crs=None):
        self.reads += 1
        if self.reads % 2 == 0:
            raise OSError("connection reset")
        return self._source.read(bounds, size_px, crs)


class _OneReadAtATime:
    """Wraps a raster source: slow reads that fail if another read is running (GDAL handles
    are not thread-safe); every other read is a plain copy, so the builder reads those in line.
    """

    def __init__(self, source) -> None:
        import threading

        self._source = source
        self._busy = threading.Lock()
        self.calls = 0

    def __getattr__(self, name: str):
        return getattr(self._source, name)

    def copies_pixels(self, bounds, size_px, crs=None) -> bool:
        self.calls += 1
        return self.calls % 2 == 0

    def read(self, bounds, size_px, crs=None):
        import time

        if not self._busy.acquire(blocking=False):
            raise RuntimeError("two reads at once")
        try:
            time.sleep(0.02)
            return self._source.read(bounds, size_px, crs)
        finally:
            self._busy.release()


def test_tiles_are_never_read_by_two_threads_at_once(scene, tmp_path: Path, monkeypatch):
    import terrascribe.build.osm as osm_builder
    from terrascribe.sources.imagery import RasterSource

    monkeypatch.setattr(osm_builder, "_READ_BATCH", 1)  # a batch per tile: in line or not
    osm, tif = scene
    source = _OneReadAtATime(RasterSource(tif, licence="CC0-1.0"))
    info = build_osm_dataset(osm, [source], tmp_path / "ds", tiles=TILES, progress=False)
    assert "tile failed" not in info["counts"]["skip_reasons"]
    assert info["counts"]["samples"] == 7


def test_failed_reads_are_recorded_and_the_shard_carries_on(scene, tmp_path: Path):
    from terrascribe.sources.imagery import RasterSource

    osm, tif = scene
    flaky = _FlakyRaster(RasterSource(tif, licence="CC0-1.0"))
    info = build_osm_dataset(osm, [flaky], tmp_path / "ds", tiles=TILES, progress=False)
    failed = {k: v for k, v in _skips(tmp_path / "ds").items() if v[0] == "tile failed"}
    assert len(failed) == flaky.reads // 2 >= 3
    assert {detail for _, detail in failed.values()} == {"OSError: connection reset"}
    assert info["counts"]["samples"] == 7 - len(failed)


def test_cli_build_osm(scene, tmp_path: Path):
    from typer.testing import CliRunner

    from terrascribe.cli import app

    osm, tif = scene
    out = tmp_path / "cli"
    args = [
        "build",
        "osm",
        "--osm",
        str(osm),
        "--imagery",
        str(tif),
        "--out",
        str(out),
        "--tile-min",
        "48",
        "--tile-max",
        "128",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "7 samples" in result.output and len(Dataset(out)) == 7
    extract = CliRunner().invoke(
        app,
        ["build", "osm-extract", "--osm", str(osm), "--out", str(tmp_path / "x"), "--no-progress"],
    )
    assert extract.exit_code == 0, extract.output
    assert "9 objects" in extract.output
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=4, height=4, count=3, dtype="uint8") as d:
        d.write(np.zeros((3, 4, 4), np.uint8))
    bad = CliRunner().invoke(app, [*args[:5], str(nocrs), "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "nocrs.tif: raster has no CRS" in bad.output


@pytest.mark.slow
def test_two_workers_give_the_same_dataset(scene, tmp_path: Path):
    _build(scene, tmp_path / "one", objects_per_shard=2)
    _build(scene, tmp_path / "two", objects_per_shard=2, workers=2)
    for p in sorted((tmp_path / "one").glob("shard-*.tar")):
        assert p.read_bytes() == (tmp_path / "two" / p.name).read_bytes()


@pytest.mark.slow
def test_ray_executor(scene, tmp_path: Path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        _build(scene, tmp_path / "local", objects_per_shard=4)
        _build(scene, tmp_path / "ray", objects_per_shard=4, executor="ray")
    finally:
        ray.shutdown()
    for p in sorted((tmp_path / "local").glob("shard-*.tar")):
        assert p.read_bytes() == (tmp_path / "ray" / p.name).read_bytes()


@pytest.mark.real_data
def test_real_sintra_dataset_captions_name_objects_in_the_tiles(shared_data: Path, tmp_path: Path):
    import shapely
    from shapely.geometry import shape

    root = shared_data / "aerial" / "sintra_z17"
    out = tmp_path / "sintra"
    info = build_osm_dataset(
        root / "labels.geojson",
        root / "tiles",
        out,
        tiles=TileOptions(tile_px_range=(96, 512)),
        progress=False,
    )
    assert info["counts"]["samples"] >= 8
    features = json.loads((root / "labels.geojson").read_text())["features"]
    geoms: dict[str, list] = {}
    for f in features:
        ref = f["properties"]["@type"][0] + str(f["properties"]["@id"])
        geoms.setdefault(ref, []).append(shape(f["geometry"]))
    for sample in Dataset(out).samples():
        b = sample.bounds
        tile = box(b.west, b.south, b.east, b.north)
        ref = sample.source_ids[0]
        assert any(g.intersects(tile) for g in geoms[ref]), ref  # the focus is really there
        focus = next(o for o in sample.objects if o.source_id == ref)
        assert focus.label in sample.captions[0], (focus.label, sample.captions[0])
        # Every other object stored for the tile really reaches into it.
        for obj in sample.objects:
            assert shapely.union_all(geoms[obj.source_id]).intersects(tile), obj.source_id
    names = " ".join(s.caption for s in Dataset(out).samples())
    for phrase in ("parking lot", "water tower", "ruins", "cliff", "tertiary road"):
        assert phrase in names


# --- fast paths give the slow paths' results ------------------------------------------------


@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=50))
def test_round2_matches_python_round(values):
    from terrascribe.build.osm import _round2

    got = _round2(np.array(values)).tolist()
    assert got == [round(v, 2) for v in values]


def test_round2_on_decimal_ties_matches_python_round():
    from terrascribe.build.osm import _round2

    ties = [0.125, 0.285, 1.005, 2.675, 0.145, -0.125, 10.015, 123.455, 0.005, -2.675]
    grid = [i / 1000 for i in range(-3000, 3000)]
    values = np.array(ties + grid).reshape(-1, 2)
    assert _round2(values).tolist() == [[round(a, 2), round(b, 2)] for a, b in values.tolist()]


def test_main_rings_match_per_geometry_rings():
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    from terrascribe.build.osm import _main_ring, _main_rings

    rng = np.random.default_rng(0)
    geoms = [
        box(0.123, 0.456, 10.789, 20.015),
        Polygon([(0, 0), (5.555, 1.0051), (3.3333, 7.777)]),
        MultiPolygon([box(0, 0, 1, 1), box(2, 2, 5.125, 5.675)]),
        shapely.Point(1, 1),
        Polygon(),
        *(shapely.Point(*rng.uniform(0, 100, 2)).buffer(rng.uniform(1, 9)) for _ in range(20)),
    ]
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = geoms
    wanted = np.array([g.geom_type != "Point" and not g.is_empty for g in geoms])
    rings = _main_rings(arr, wanted)
    assert set(rings) == set(np.flatnonzero(wanted).tolist())
    for j, ring in rings.items():
        assert ring == _main_ring(shapely.orient_polygons(geoms[j], exterior_cw=True))
        # clockwise in pixel coordinates, whichever way the input ran
        assert not shapely.LinearRing(ring).is_ccw
    reversed_ = arr.copy()
    reversed_[1] = shapely.reverse(geoms[1])
    assert _main_rings(reversed_, wanted)[1] == rings[1]


def test_image_object_checked_by_caller_equals_the_checked_constructor():
    from terrascribe.records import ImageObject

    args = (
        "building",
        (1.0, 2.5, 3.25, 4.0),
        {"building": "yes"},
        ((0.0, 0.0), (1.0, 0.5), (0.5, 1.0)),
        "w1",
    )
    fast = ImageObject.checked_by_caller(*args)
    assert fast == ImageObject(*args)
    assert fast.to_dict() == ImageObject(*args).to_dict()


@pytest.mark.parametrize("std", [0.0, 1.0, 1.99, 2.0, 2.5, 40.0])
def test_blank_bound_never_passes_a_blank_tile(std):
    from terrascribe.build.osm import _surely_not_blank

    rng = np.random.default_rng(1)
    rgb = np.clip(rng.normal(128, std, (64, 64, 3)).round(), 0, 255).astype(np.uint8)
    if _surely_not_blank(rgb, 2.0):
        assert rgb.std() >= 2.0
    # a tile whose variation lies outside the sampled rows is still tested exactly
    flat = np.full((64, 64, 3), 100, np.uint8)
    flat[40:] = 200
    assert not _surely_not_blank(flat, 2.0) and flat.std() >= 2.0


@pytest.mark.parametrize("shape", [(1, 5, 3), (17, 33, 3), (300, 301, 3)])
@pytest.mark.parametrize("std", [1.0, 2.0, 3.0, 30.0])
def test_blank_bound_is_numpys_std_of_the_top_rows(shape, std):
    from terrascribe.build.osm import _surely_not_blank

    rng = np.random.default_rng(2)
    rgb = np.clip(rng.normal(128, std, shape).round(), 0, 255).astype(np.uint8)
    rows = max(shape[0] // 16, 1)
    bound = float(rgb[:rows].std()) * (rows / shape[0]) ** 0.5
    if abs(bound - 2.0) > 1e-3:  # OpenCV's std may differ from numpy's in the last bits
        assert _surely_not_blank(rgb, 2.0) == (bound >= 2.0)


@pytest.mark.parametrize("n", [0, 1, 7, 9, 10, 11, 1818, 2001])
@pytest.mark.parametrize("most", [1, 3, 10, 1000])
def test_even_chunks_keep_order_and_bound_and_balance(n, most):
    from terrascribe.build.osm import _even_chunks

    items = [f"n{i}" for i in range(n)]
    chunks = list(_even_chunks(items, most))
    assert [x for c in chunks for x in c] == items
    assert len(chunks) == -(-n // most)  # as few shards as before
    assert all(0 < len(c) <= most for c in chunks)
    if chunks:
        assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
