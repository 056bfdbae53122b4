"""Zero-shot maps: grid alignment, bands, preview, errors, CLI, real NEON tile."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from PIL import Image
from typer.testing import CliRunner

from terrascribe.apply.zeroshot_map import (
    MapError,
    map_geotiff,
    parse_classes,
    plan_windows,
)

CLASSES = "water,forest,buildings,road,field"


def test_input_grid_keeps_crs_transform_and_bands(sample_region, tiny_model, tmp_path):
    res = map_geotiff(
        sample_region.geotiff, CLASSES, tiny_model, tmp_path / "m.tif", progress=False
    )
    assert res.window_px == 64 and res.stride_px == 32 and res.shape == (16, 16)
    with rasterio.open(sample_region.geotiff) as src, rasterio.open(res.class_map) as cls:
        assert cls.crs == src.crs and cls.transform == src.transform
        assert cls.shape == src.shape and cls.count == 1 and cls.dtypes[0] == "uint8"
        labels = cls.read(1)
        assert labels.max() < 5 and cls.nodata == 255
        assert cls.tags()["class_2"] == "buildings"
        assert cls.colormap(1)[0][:3] != cls.colormap(1)[1][:3]
    with rasterio.open(res.probabilities) as pr:
        assert pr.count == 5 and pr.descriptions == tuple(CLASSES.split(","))
        assert pr.transform == src.transform
        p = pr.read().astype(np.int32)
    assert np.all(np.abs(p.sum(axis=0) - 255) <= 3)  # uint8-scaled probabilities sum to 1
    # the class band holds the most probable class (uint8 rounding of near ties: within 1)
    chosen = np.take_along_axis(p, labels[None].astype(np.int64), axis=0)[0]
    assert np.all(chosen >= p.max(axis=0) - 1)
    assert Image.open(res.preview).size[0] > 300
    assert sum(res.class_fractions.values()) == pytest.approx(1.0, abs=1e-3)


def test_coarse_grid_is_aligned_and_float(sample_region, tiny_model, tmp_path):
    res = map_geotiff(
        sample_region.geotiff,
        CLASSES,
        tiny_model,
        tmp_path / "c.tif",
        grid="coarse",
        probabilities="float32",
        stride_px=64,
        preview=False,
        progress=False,
    )
    with rasterio.open(sample_region.geotiff) as src, rasterio.open(res.class_map) as cls:
        assert cls.shape == (8, 8)
        assert cls.transform.a == pytest.approx(src.transform.a * 64)
        assert (cls.transform.c, cls.transform.f) == (src.transform.c, src.transform.f)
    with rasterio.open(res.probabilities) as pr:
        p = pr.read()
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-4)
    assert res.preview is None


def test_deterministic(sample_region, tiny_model, tmp_path):
    a = map_geotiff(
        sample_region.geotiff,
        CLASSES,
        tiny_model,
        tmp_path / "a.tif",
        grid="coarse",
        preview=False,
        progress=False,
    )
    b = map_geotiff(
        sample_region.geotiff,
        CLASSES,
        tiny_model,
        tmp_path / "b.tif",
        grid="coarse",
        preview=False,
        progress=False,
    )
    with rasterio.open(a.probabilities) as x, rasterio.open(b.probabilities) as y:
        assert np.array_equal(x.read(), y.read())


def test_errors_name_the_file(tmp_path, tiny_model):
    plain = tmp_path / "nocrs.tif"
    with rasterio.open(
        plain, "w", driver="GTiff", width=80, height=80, count=3, dtype="uint8"
    ) as d:
        d.write(np.full((3, 80, 80), 120, np.uint8))
    with pytest.raises(MapError, match=r"nocrs.tif: raster has no CRS"):
        map_geotiff(plain, "a,b", tiny_model, tmp_path / "o.tif", progress=False)
    res = map_geotiff(
        plain,
        "a,b",
        tiny_model,
        tmp_path / "o.tif",
        allow_no_crs=True,
        preview=False,
        progress=False,
    )
    with rasterio.open(res.class_map) as m:
        assert m.crs is None and m.shape == (80, 80)
    with pytest.raises(MapError, match=r"missing.tif: no such raster"):
        map_geotiff(tmp_path / "missing.tif", "a,b", tiny_model, tmp_path / "o.tif")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    with pytest.raises(MapError, match=r"broken.tif: cannot open raster"):
        map_geotiff(broken, "a,b", tiny_model, tmp_path / "o.tif")
    with pytest.raises(MapError, match="at least two"):
        parse_classes("water")
    with pytest.raises(MapError, match="repeat"):
        parse_classes("a,b,a")
    with pytest.raises(MapError, match="no '\\{\\}'"):
        map_geotiff(
            plain, "a,b", tiny_model, tmp_path / "o.tif", templates=["plain"], allow_no_crs=True
        )


def test_plan_windows():
    plan = plan_windows(1000, 500, native_gsd=0.5, input_px=224, gsd_m=1.0)
    assert plan.window == 448 and plan.stride == 224 and (plan.rows, plan.cols) == (3, 5)
    with pytest.raises(MapError, match="stride"):
        plan_windows(100, 100, 1.0, 64, stride_px=65)


def test_cli_map(sample_region, tmp_path):
    from terrascribe.cli import app

    out = tmp_path / "cli.tif"
    r = CliRunner().invoke(
        app,
        [
            "map",
            str(sample_region.geotiff),
            "--classes",
            CLASSES,
            "--out",
            str(out),
            "--grid",
            "coarse",
            "--template",
            "an aerial photo of {}.",
        ],
    )
    assert r.exit_code == 0, r.output
    assert out.exists() and out.with_suffix(".png").exists()
    with rasterio.open(out) as m:
        assert m.tags()["grid"] == "coarse"


@pytest.mark.real_data
def test_real_neon_tile(shared_data, tiny_model, tmp_path):
    src_path = shared_data / "aerial" / "neon" / "OSBS_029.tif"
    res = map_geotiff(
        src_path, "tree,grass,sand,road,water", tiny_model, tmp_path / "n.tif", progress=False
    )
    with rasterio.open(src_path) as src, rasterio.open(res.class_map) as m:
        assert m.crs == src.crs and m.transform == src.transform and m.shape == (400, 400)
    with rasterio.open(res.probabilities) as p:
        assert p.count == 5 and p.descriptions[0] == "tree"


def test_known_land_cover_names_get_conventional_distinct_colours():
    from terrascribe.apply.zeroshot_map import _colours

    water, forest, sports, farm, other, lake = _colours(
        ["Water", "forest", "sports field", "farmland", "solar farm panels", "lake"]
    )
    assert water == (0, 100, 200) and forest == (0, 100, 0)
    assert sports != farm  # "sports field" is not farmland
    assert _colours(["parking", "park"]) == [(110, 110, 110), (150, 210, 90)]
    assert len({water, forest, sports, farm, other, lake}) == 6  # lake must not reuse water's
