"""Imagery sources: GeoTIFF (any CRS), XYZ tile folders, static STAC catalogues."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import mercantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from terrascribe.geo import WGS84, transformer
from terrascribe.sources.imagery import (
    ImageryError,
    RasterSource,
    XyzSource,
    open_imagery,
    open_stac,
    open_xyz,
    scan_xyz,
    tile_bounds,
)

# A 200 x 200 px, 0.5 m UTM 33N raster whose pixels encode their own row/column.
ORIGIN = (400000.0, 5500100.0)


def _pattern(h: int, w: int) -> np.ndarray:
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([rows % 256, cols % 256, (rows + cols) % 256]).astype(np.uint8)


def write_geotiff(
    path: Path,
    *,
    crs: str | None = "EPSG:32633",
    data: np.ndarray | None = None,
    nodata: float | None = None,
    date: str | None = "2020:05:17 10:00:00",
    transform=None,
) -> Path:
    data = _pattern(200, 200) if data is None else data
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "transform": transform or from_origin(*ORIGIN, 0.5, 0.5),
    }
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if date:
            dst.update_tags(TIFFTAG_DATETIME=date)
    return path


def test_geotiff_metadata_and_native_window(tmp_path: Path):
    src = RasterSource(write_geotiff(tmp_path / "scene.tif"), sensor="test-cam", licence="CC0-1.0")
    assert src.name == "scene" and src.capture_date == "2020-05-17"
    assert src.gsd_m == pytest.approx(0.5, rel=2e-3)
    assert src.crs.to_epsg() == 32633
    west, south, east, north = src.footprint.bounds
    assert 13.6 < west < east < 13.7 and 49.6 < south < north < 49.7
    # A native-resolution window fully inside is an exact slice of the file.
    bounds = (
        ORIGIN[0] + 10,
        ORIGIN[1] - 40,
        ORIGIN[0] + 30,
        ORIGIN[1] - 10,
    )  # cols 20-60, rows 20-80
    tile = src.read(bounds, (40, 60))
    assert tile.rgb.shape == (60, 40, 3) and tile.valid.all()
    np.testing.assert_array_equal(tile.rgb, np.moveaxis(_pattern(200, 200), 0, -1)[20:80, 20:60])
    # Half of this window lies outside the raster: the mask says so.
    outside = src.read((ORIGIN[0] - 10, ORIGIN[1] - 20, ORIGIN[0] + 10, ORIGIN[1]), (40, 40))
    assert outside.valid_fraction == pytest.approx(0.5, abs=0.03)
    assert not outside.rgb[:, :18].any()
    described = src.describe()
    assert described["sensor"] == "test-cam" and described["licence"] == "CC0-1.0"


def test_reads_resample_and_reproject(tmp_path: Path):
    src = RasterSource(write_geotiff(tmp_path / "scene.tif"))
    lon, lat = src.footprint.centroid.x, src.footprint.centroid.y
    # Twice the native GSD: a 50 px tile covers 50 m.
    bounds, crs = tile_bounds(src, lon, lat, (50, 50), 1.0)
    assert crs == src.crs and bounds[2] - bounds[0] == pytest.approx(50, rel=1e-3)  # UTM scale
    coarse = src.read(bounds, (50, 50), crs)
    assert coarse.rgb.shape == (50, 50, 3) and coarse.valid.all()
    # The same place read in web mercator: a different grid over the same ground.
    x, y = transformer(WGS84, "EPSG:3857").transform(lon, lat)
    k = 1 / np.cos(np.radians(lat))
    merc = src.read((x - 25 * k, y - 25 * k, x + 25 * k, y + 25 * k), (50, 50), "EPSG:3857")
    assert merc.valid.mean() > 0.95
    diff = np.abs(merc.rgb[20:30, 20:30, 2].astype(int) - coarse.rgb[20:30, 20:30, 2].astype(int))
    assert np.median(diff) < 12


def test_geographic_raster_gets_metric_tiles(tmp_path: Path):
    path = write_geotiff(
        tmp_path / "wgs84.tif", crs="EPSG:4326", transform=from_origin(10.0, 50.0, 1e-5, 1e-5)
    )
    src = RasterSource(path)
    assert src.gsd_m == pytest.approx((0.716 + 1.112) / 2, rel=0.02)  # degrees to metres
    assert src.tile_crs(10.001, 49.999).to_epsg() == 32632
    bounds, crs = tile_bounds(src, 10.001, 49.999, (32, 32), 1.0)
    tile = src.read(bounds, (32, 32), crs)
    assert tile.valid.all() and tile.rgb.std() > 0


def test_geotiff_without_crs_names_the_file(tmp_path: Path):
    path = write_geotiff(tmp_path / "nocrs.tif", crs=None)
    with pytest.raises(ImageryError, match=r"nocrs\.tif: raster has no CRS"):
        RasterSource(path)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageryError, match=r"broken\.tif: cannot open raster"):
        RasterSource(broken)
    with pytest.raises(ImageryError, match="no such imagery"):
        open_imagery(tmp_path / "missing")


def test_nodata_and_16_bit_rasters(tmp_path: Path):
    data = (_pattern(200, 200).astype(np.uint16) * 40) + 100
    data[:, :100, :] = 0
    src = RasterSource(write_geotiff(tmp_path / "u16.tif", data=data, nodata=0))
    tile = src.read((ORIGIN[0], ORIGIN[1] - 100, ORIGIN[0] + 100, ORIGIN[1]), (100, 100))
    assert tile.rgb.dtype == np.uint8
    assert tile.valid_fraction == pytest.approx(0.5, abs=0.01)
    assert not tile.all_valid  # a raster with nodata: checks must count the mask
    assert tile.rgb[tile.valid].max() > 200  # stretched to use the 8-bit range


def test_snap_puts_native_resolution_tiles_on_the_pixel_grid(tmp_path: Path):
    src = RasterSource(write_geotiff(tmp_path / "a.tif"))
    # 50 px at 0.5 m, 0.6 px right of column 20 and 0.4 px below row 70
    left, top = ORIGIN[0] + 10.3, ORIGIN[1] - 35.2
    snapped = src.snap((left, top - 25.0, left + 25.0, top), (50, 50))
    assert snapped == (ORIGIN[0] + 10.5, ORIGIN[1] - 60.0, ORIGIN[0] + 35.5, ORIGIN[1] - 35.0)
    tile = src.read(snapped, (50, 50))
    # the raster's own pixels (they encode their row and column), not a resampling of them
    rows, cols = np.mgrid[70:120, 21:71]
    assert np.array_equal(tile.rgb[..., 0], rows % 256)
    assert np.array_equal(tile.rgb[..., 1], cols % 256)
    # reads at another resolution or in another CRS keep their bounds
    coarse = (left, top - 25.0, left + 25.0, top)
    assert src.snap(coarse, (25, 25)) == coarse
    assert src.snap(coarse, (50, 50), "EPSG:3857") == coarse
    # only the snapped read is a plain copy of pixels (builders read those in line)
    assert src.copies_pixels(snapped, (50, 50))
    assert not src.copies_pixels(coarse, (50, 50))  # between pixels: resampled
    assert not src.copies_pixels(snapped, (25, 25))  # at another resolution
    off = (ORIGIN[0] - 5.2, ORIGIN[1] - 20.0, ORIGIN[0] + 19.8, ORIGIN[1] + 5.0)
    assert not src.copies_pixels(off, (50, 50))  # reaching off the raster, between pixels


@pytest.mark.parametrize("nodata", [None, 0])
def test_tiles_on_the_grid_reaching_off_the_raster_copy_the_pixels_it_has(tmp_path, nodata):
    from rasterio.transform import from_bounds
    from rasterio.vrt import WarpedVRT

    data = _pattern(200, 200)
    data[:, 15:, 12] = 0  # a column of nodata (when nodata is 0)
    src = RasterSource(write_geotiff(tmp_path / "a.tif", data=data, nodata=nodata))
    # 50 px a side, reaching 10 px left of and above the raster
    bounds = (ORIGIN[0] - 5.0, ORIGIN[1] - 20.0, ORIGIN[0] + 20.0, ORIGIN[1] + 5.0)
    assert src.copies_pixels(bounds, (50, 50))
    tile = src.read(bounds, (50, 50))
    assert not tile.valid[:10].any() and not tile.valid[:, :10].any()
    # pixel (0, 0) is (0, 0, 0) too: nodata when nodata is 0
    assert tile.valid[10:, 10:].sum() == 40 * 40 - (0 if nodata is None else 26)
    inner = tile.valid[10:, 10:]
    assert np.array_equal(tile.rgb[10:, 10:][inner], np.moveaxis(data[:, :40, :40], 0, -1)[inner])
    # what GDAL's warp of the same window gives
    with (
        rasterio.open(tmp_path / "a.tif") as ds,
        WarpedVRT(
            ds,
            crs=ds.crs,
            transform=from_bounds(*bounds, 50, 50),
            width=50,
            height=50,
            resampling=rasterio.enums.Resampling.bilinear,
            add_alpha=nodata is None,
        ) as vrt,
    ):
        warped, warped_valid = vrt.read([1, 2, 3]), vrt.dataset_mask() > 0
    assert np.array_equal(warped_valid, tile.valid)
    assert np.array_equal(np.moveaxis(warped, 0, -1)[warped_valid], tile.rgb[tile.valid])
    # wholly off the raster, on its grid: nothing to copy, no data
    away = (ORIGIN[0] - 200.0, ORIGIN[1] - 20.0, ORIGIN[0] - 175.0, ORIGIN[1] + 5.0)
    assert src.copies_pixels(away, (50, 50))
    tile = src.read(away, (50, 50))
    assert not tile.valid.any() and not tile.rgb.any()


def test_windows_off_the_grid_by_rounding_error_are_read_as_whole_pixels():
    from rasterio.windows import Window

    from terrascribe.sources.imagery import _on_grid

    # what float arithmetic leaves of bounds computed from the grid: read without resampling
    assert _on_grid(Window(20.9999999999, 70.0000000001, 50.0000000002, 49.9999999997)) == Window(
        21, 70, 50, 50
    )
    off = Window(20.6, 70.0, 50.0, 50.0)  # really between pixels: left to GDAL's resampling
    assert _on_grid(off) is off


def test_folder_of_rasters_and_pickling(tmp_path: Path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    write_geotiff(tmp_path / "imgs" / "a.tif")
    write_geotiff(tmp_path / "imgs" / "sub" / "a.tif")
    sources = open_imagery(tmp_path / "imgs", licence="CC-BY-4.0")
    assert [s.name for s in sources] == ["a", "sub_a"]
    assert all(s.licence == "CC-BY-4.0" for s in sources)
    first = sources[0]
    first.read((ORIGIN[0], ORIGIN[1] - 10, ORIGIN[0] + 10, ORIGIN[1]), (20, 20))
    clone = pickle.loads(pickle.dumps(first))  # open GDAL handles are not pickled
    tile = clone.read((ORIGIN[0], ORIGIN[1] - 10, ORIGIN[0] + 10, ORIGIN[1]), (20, 20))
    assert tile.valid.all() and tile.all_valid  # no nodata, no mask: known valid


# --- XYZ tiles ------------------------------------------------------------------------------

Z = 17
X0, Y0 = 62092, 50162


def _tile_pixels(x: int, y: int) -> np.ndarray:
    # Colour encodes the global pixel position, so mosaics can be checked exactly.
    gy, gx = np.mgrid[0:256, 0:256]
    gx, gy = gx + (x - X0) * 256, gy + (y - Y0) * 256
    return np.stack([gx % 256, gy % 256, (gx // 256) * 60 + (gy // 256) * 20], -1).astype(np.uint8)


def write_tiles(root: Path, layout: str, skip: set[tuple[int, int]] = frozenset()) -> Path:
    for x in range(X0, X0 + 3):
        for y in range(Y0, Y0 + 3):
            if (x, y) in skip:
                continue
            rel = {
                "x-y-z": f"{x}-{y}-{Z}.png",
                "z-x-y": f"{Z}-{x}-{y}.png",
                "z/x/y": f"{Z}/{x}/{y}.png",
            }
            path = root / rel[layout]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_tile_pixels(x, y)).save(path)
    return root


@pytest.mark.parametrize("layout", ["x-y-z", "z-x-y", "z/x/y"])
def test_xyz_layouts_are_recognised(tmp_path: Path, layout: str):
    root = write_tiles(tmp_path / "tiles", layout)
    found, tiles = scan_xyz(root)
    assert found == layout and len(tiles) == 9
    assert (X0, Y0, Z) in tiles


def test_xyz_mosaic_across_tile_edges(tmp_path: Path):
    root = write_tiles(tmp_path / "tiles", "x-y-z", skip={(X0, Y0)})
    sources = open_xyz(root, licence="test")
    assert len(sources) == 1
    src = sources[0]
    assert isinstance(src, XyzSource) and src.crs.to_epsg() == 3857
    lat = src.footprint.centroid.y
    assert src.gsd_m == pytest.approx(1.19432 * np.cos(np.radians(lat)), rel=1e-3)
    # A native window straddling the corner of four tiles: pixels 456..568 of the 3x3 mosaic.
    ul = mercantile.xy_bounds(X0, Y0, Z)
    res = (ul.right - ul.left) / 256
    left, top = ul.left + 456 * res, ul.top - 456 * res
    tile = src.read((left, top - 112 * res, left + 112 * res, top), (112, 112))
    assert tile.valid.all()
    mosaic = np.zeros((768, 768, 3), np.uint8)
    for x in range(3):
        for y in range(3):
            mosaic[y * 256 : (y + 1) * 256, x * 256 : (x + 1) * 256] = _tile_pixels(X0 + x, Y0 + y)
    np.testing.assert_array_equal(tile.rgb, mosaic[456:568, 456:568])
    # The missing north-west tile reads as nodata.
    corner = src.read((ul.left, ul.top - 64 * res, ul.left + 64 * res, ul.top), (64, 64))
    assert corner.valid_fraction == 0


def test_xyz_ambiguous_names_need_a_layout(tmp_path: Path):
    root = tmp_path / "one"
    root.mkdir()
    Image.fromarray(_tile_pixels(X0, Y0)).save(root / "5-6-7.png")
    with pytest.raises(ImageryError, match="x-y-z or z-x-y"):
        scan_xyz(root)
    assert scan_xyz(root, layout="x-y-z")[1] == {(5, 6, 7): root / "5-6-7.png"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageryError, match="no rasters, STAC catalogue or XYZ tiles"):
        open_imagery(empty)


# --- STAC ------------------------------------------------------------------------------------


def write_catalogue(root: Path, cog: Path) -> Path:
    import pystac
    from shapely.geometry import mapping

    src = RasterSource(cog)
    catalogue = pystac.Catalog(id="test", description="static test catalogue")
    for i, day in enumerate((dt.datetime(2019, 7, 1), dt.datetime(2021, 7, 1))):
        item = pystac.Item(
            id=f"scene-{i}",
            geometry=mapping(src.footprint),
            bbox=list(src.footprint.bounds),
            datetime=day,
            properties={"platform": "test-sat", "license": "CC-BY-4.0", "gsd": 0.5},
        )
        item.add_asset("visual", pystac.Asset(href=str(cog), media_type=pystac.MediaType.COG))
        catalogue.add_item(item)
    catalogue.normalize_hrefs(str(root))
    catalogue.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def test_static_stac_catalogue_search(tmp_path: Path):
    cog = write_geotiff(tmp_path / "scene.tif")
    path = write_catalogue(tmp_path / "stac", cog)
    sources = open_stac(path)
    assert [s.name for s in sources] == ["scene-0", "scene-1"]
    assert sources[1].capture_date == "2021-07-01" and sources[1].sensor == "test-sat"
    assert sources[1].licence == "CC-BY-4.0"
    bbox = sources[0].footprint.bounds
    assert [s.name for s in open_stac(path, bbox=bbox, datetime="2021-01-01/2021-12-31")] == [
        "scene-1"
    ]
    assert open_stac(path, bbox=(0.0, 0.0, 1.0, 1.0)) == []
    assert len(open_imagery(tmp_path / "stac")) == 2
    tile = sources[0].read((ORIGIN[0], ORIGIN[1] - 10, ORIGIN[0] + 10, ORIGIN[1]), (20, 20))
    assert tile.valid.all()
    with pytest.raises(ImageryError, match="cannot open STAC catalogue"):
        open_stac(tmp_path / "nope.json")


@pytest.mark.real_data
def test_real_sintra_tiles_and_rasters(shared_data: Path):
    sources = open_imagery(shared_data / "aerial" / "sintra_z17" / "tiles")
    assert len(sources) == 1 and sources[0].gsd_m == pytest.approx(0.93, abs=0.01)
    west, _, _, north = sources[0].footprint.bounds
    assert (west, north) == pytest.approx((-9.45923, 38.85254), abs=1e-5)
    landsat = open_imagery(shared_data / "aerial" / "RGB.byte.tif")[0]
    assert landsat.gsd_m == pytest.approx(300, rel=0.01)
    c = landsat.footprint.centroid
    bounds, crs = tile_bounds(landsat, c.x, c.y, (64, 64), landsat.gsd_m)
    assert 0.5 < landsat.read(bounds, (64, 64), crs).valid_fraction <= 1.0


def test_rewritten_raster_is_not_served_from_the_open_handle(tmp_path: Path):
    # Open datasets are shared per process; a file rewritten at the same path must be reread.
    path = write_geotiff(tmp_path / "scene.tif")
    first = RasterSource(path)
    bounds = first.footprint.bounds
    assert first.read(first._native_bounds, (20, 20)).rgb.any()
    write_geotiff(path, data=np.zeros((3, 100, 100), np.uint8), date=None)
    again = RasterSource(path)
    assert again._shape == (100, 100) and again.footprint.bounds != bounds
    assert not again.read(again._native_bounds, (20, 20)).rgb.any()
    first.close()
    assert not again.read(again._native_bounds, (20, 20)).rgb.any()  # reopens if closed


@pytest.mark.parametrize("bands", [3, 1])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_window_reads_equal_rasterio_planar_reads(tmp_path: Path, bands: int, dtype: str):
    # The fast path reads pixel-interleaved; it must give rasterio's own pixels, resampled or not.
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    data = _pattern(200, 200)[:bands].astype(dtype)
    path = write_geotiff(tmp_path / f"b{bands}-{dtype}.tif", data=data)
    src = RasterSource(path, value_range=(0, 255) if dtype == "uint16" else None)
    left, top = ORIGIN[0] + 10.25, ORIGIN[1] - 20.75  # fractional pixel offsets (0.5 m pixels)
    for side_m, out_px in ((50.0, 100), (50.0, 64), (37.5, 90)):
        tile = src.read((left, top - side_m, left + side_m, top), (out_px, out_px))
        with rasterio.open(path) as ds:
            planar = ds.read(
                window=Window(20.5, 41.5, side_m * 2, side_m * 2),
                out_shape=(bands, out_px, out_px),
                resampling=Resampling[src.resampling],
            )
        expected = np.moveaxis(np.repeat(planar, 3 // bands, axis=0), 0, -1).astype(np.uint8)
        assert tile.rgb.flags.c_contiguous and tile.rgb.shape == (out_px, out_px, 3)
        np.testing.assert_array_equal(tile.rgb, expected)
