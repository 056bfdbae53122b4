"""CRS helpers, GSD in metres, metric sizes and pixel windows (terrascribe.geo)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import LineString, Point, Polygon, box

from terrascribe import geo


def test_utm_zone_from_lon_lat():
    assert geo.utm_crs(24.94, 60.17).to_epsg() == 32635  # Helsinki
    assert geo.utm_crs(-9.45, 38.85).to_epsg() == 32629  # Sintra
    assert geo.utm_crs(151.2, -33.9).to_epsg() == 32756  # Sydney, southern hemisphere
    assert geo.utm_crs(180.0, 0.0).to_epsg() == 32660
    with pytest.raises(geo.GeoError, match="not a lon/lat"):
        geo.utm_crs(500000.0, 4000000.0)


def test_metric_size_of_a_100m_square():
    # 100 m x 100 m square built in UTM, measured back from lon/lat.
    utm = geo.utm_crs(24.94, 60.17)
    x, y = geo.transformer(geo.WGS84, utm).transform(24.94, 60.17)
    square = geo.transform_geometry(box(x, y, x + 100, y + 100), utm, geo.WGS84)
    size = geo.metric_size(square)
    assert size.area_m2 == pytest.approx(10_000, rel=1e-3)
    assert size.length_m == pytest.approx(400, rel=1e-3)
    assert size.width_m == pytest.approx(100, rel=2e-2)
    assert size.extent_m == pytest.approx(100, rel=2e-2)


def test_metric_size_of_line_and_point():
    line = LineString([(0.0, 0.0), (0.001, 0.0)])  # about 111 m along the equator
    assert geo.metric_size(line).length_m == pytest.approx(111.3, rel=1e-2)
    assert geo.metric_size(Point(5, 5)).area_m2 == 0
    with pytest.raises(geo.GeoError, match="empty"):
        geo.metric_size(Polygon())


def test_gsd_of_projected_and_geographic_rasters():
    # 0.5 m UTM grid.
    assert geo.raster_gsd_m("EPSG:32633", (0.5, 0, 400000, 0, -0.5, 5500000), 100, 100) == (
        pytest.approx(0.5, rel=2e-3)
    )
    # 1e-5 degree grid at the equator: about 1.11 m in both directions.
    gsd = geo.raster_gsd_m("EPSG:4326", (1e-5, 0, 10.0, 0, -1e-5, 0.001), 200, 200)
    assert gsd == pytest.approx(1.1, rel=2e-2)
    with pytest.raises(geo.GeoError, match="no CRS"):
        geo.raster_gsd_m(None, (1, 0, 0, 0, -1, 0), 1, 1)


def test_web_mercator_gsd_shrinks_with_latitude():
    equator = geo.web_mercator_gsd_m(17, 0.0)
    assert equator == pytest.approx(1.1943, rel=1e-3)
    assert geo.web_mercator_gsd_m(17, 38.85) == pytest.approx(
        equator * math.cos(math.radians(38.85))
    )


def test_units_per_metre():
    assert geo.units_per_metre("EPSG:32629", -9.0, 38.85) == pytest.approx(1.0, rel=1e-3)
    assert geo.units_per_metre("EPSG:3857", -9.0, 60.0) == pytest.approx(2.0, rel=1e-2)
    assert geo.units_per_metre("EPSG:4326", 0.0, 0.0) == pytest.approx(1 / 111_320, rel=1e-2)


def test_bounds_round_trip_and_windows():
    lonlat = (24.93, 60.16, 24.95, 60.18)
    utm = geo.utm_crs(24.94, 60.17)
    native = geo.crs_bounds(lonlat, utm)
    back = geo.lonlat_bounds(native, utm)
    assert back[0] <= lonlat[0] + 1e-6 and back[2] >= lonlat[2] - 1e-6
    window = geo.pixel_window((100.0, 0.0, 200.0, 50.0), (0.5, 0, 0.0, 0, -0.5, 100.0))
    assert window == (200.0, 100.0, 200.0, 100.0)
    with pytest.raises(geo.GeoError, match="rotated"):
        geo.pixel_window((0, 0, 1, 1), (1, 0.1, 0, 0.1, -1, 0))


def test_pixel_transform_puts_origin_top_left():
    to_px = geo.pixel_transform((0.0, 0.0, 100.0, 50.0), (200, 100))
    out = to_px(np.array([[0.0, 50.0], [100.0, 0.0], [50.0, 25.0]]))
    np.testing.assert_allclose(out, [[0, 0], [200, 100], [100, 50]])


def test_repair_self_intersecting_polygon():
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    fixed, reason = geo.repair(bowtie)
    assert reason is not None and "Self-intersection" in reason
    assert fixed.is_valid and fixed.area == pytest.approx(0.5)
    same, none = geo.repair(box(0, 0, 1, 1))
    assert none is None and same.equals(box(0, 0, 1, 1))


def test_metric_sizes_match_metric_size_one_by_one():
    # Mixed kinds across UTM zones and hemispheres: the bulk path must give the same numbers.
    geoms = [
        Point(24.94, 60.17),
        LineString([(24.94, 60.17), (24.95, 60.18)]),
        box(7.41, 43.72, 7.42, 43.73),
        box(151.20, -33.90, 151.21, -33.89),
        LineString([(-9.45, 38.85), (-9.44, 38.86), (-9.43, 38.85)]),
    ]
    area, length, width, height = geo.metric_sizes(np.array(geoms, dtype=object))
    for i, g in enumerate(geoms):
        one = geo.metric_size(g)
        assert (area[i], length[i], width[i], height[i]) == (
            one.area_m2,
            one.length_m,
            one.width_m,
            one.height_m,
        )
    assert [len(a) for a in geo.metric_sizes(np.array([], dtype=object))] == [0, 0, 0, 0]
