"""Small, pure geometry helpers: CRSs, ground sampling distance, metre sizes, pixel windows.

Everything here works on plain numbers, shapely geometries and pyproj CRSs (no files), so the
sources and builders can share one definition of "metres", "GSD" and "pixel space". Geographic
inputs are lon/lat WGS84 (``EPSG:4326``, x = longitude) unless said otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry.base import BaseGeometry

WGS84 = CRS.from_epsg(4326)
WEB_MERCATOR = CRS.from_epsg(3857)
_GEOD = Geod(ellps="WGS84")

# Web-mercator world width in metres (2 * pi * 6378137).
_MERCATOR_WORLD_M = 2.0 * math.pi * 6378137.0


class GeoError(ValueError):
    """A CRS, transform or geometry is missing or unusable."""


def as_crs(crs: CRS | str | int) -> CRS:
    """A pyproj CRS from an authority string, EPSG code, WKT or CRS (rasterio CRSs included)."""
    if isinstance(crs, CRS):
        return crs
    if hasattr(crs, "to_wkt"):  # rasterio.crs.CRS
        return CRS.from_wkt(crs.to_wkt())
    try:
        return CRS.from_user_input(crs)
    except Exception as err:  # pyproj raises CRSError, a bare Exception subclass
        raise GeoError(f"unusable CRS {crs!r}: {err}") from None


@lru_cache(maxsize=256)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def transformer(src: CRS | str | int, dst: CRS | str | int) -> Transformer:
    """A cached, always-xy (lon, lat order) pyproj transformer from ``src`` to ``dst``."""
    return _transformer(_crs_key(src), _crs_key(dst))


def _crs_key(crs: CRS | str | int) -> str:
    # A pyproj CRS keeps the text it was made from: using it as the cache key saves a WKT export
    # (~10 us) on every call, which tile builders make several times per tile.
    if isinstance(crs, CRS):
        return crs.srs or crs.to_wkt()
    return as_crs(crs).to_wkt()


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone CRS (``EPSG:326xx`` north, ``327xx`` south) containing a point."""
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise GeoError(f"not a lon/lat point: ({lon}, {lat})")
    return CRS.from_epsg(_utm_epsg(lon, lat))


@lru_cache(maxsize=128)
def _utm_from_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(WGS84, CRS.from_epsg(epsg), always_xy=True)


def _utm_epsg(lon: float, lat: float) -> int:
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def local_metric_crs(geom: BaseGeometry) -> CRS:
    """A metric CRS (the UTM zone of the centroid) suited to measuring a lon/lat geometry."""
    if geom.is_empty:
        raise GeoError("cannot choose a metric CRS for an empty geometry")
    c = geom.centroid
    return utm_crs(c.x, c.y)


def transform_geometry(
    geom: BaseGeometry, src: CRS | str | int, dst: CRS | str | int
) -> BaseGeometry:
    """Reproject a shapely geometry from ``src`` to ``dst`` (vectorised over all coordinates)."""
    t = transformer(src, dst)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def to_pixels(geom: BaseGeometry, to_pixel: Callable[[np.ndarray], np.ndarray]) -> BaseGeometry:
    """Apply an ``(N, 2) -> (N, 2)`` coordinate function (e.g. an inverse affine) to a geometry."""
    return shapely.transform(geom, to_pixel)


@dataclass(frozen=True, slots=True)
class MetricSize:
    """Sizes of a lon/lat geometry, measured in its local UTM zone (metres)."""

    area_m2: float
    length_m: float
    width_m: float
    height_m: float

    @property
    def extent_m(self) -> float:
        """The larger side of the bounding box."""
        return max(self.width_m, self.height_m)


def metric_size(geom: BaseGeometry) -> MetricSize:
    """Area, length (perimeter for polygons) and bounding-box sides of a lon/lat geometry.

    Raises:
        GeoError: If the geometry is empty.
    """
    if geom.is_empty:
        raise GeoError("cannot measure an empty geometry")
    minx, miny, maxx, maxy = geom.bounds  # the bbox centre picks the zone: cheaper than centroid
    t = _utm_from_lonlat(_utm_epsg((minx + maxx) / 2, (miny + maxy) / 2))
    local = shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    minx, miny, maxx, maxy = local.bounds
    return MetricSize(
        area_m2=float(local.area),
        length_m=float(local.length),
        width_m=float(maxx - minx),
        height_m=float(maxy - miny),
    )


def metric_sizes(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`metric_size` for an array of non-empty lon/lat geometries, in one pass.

    Each geometry is measured in the UTM zone of its bounding-box centre, exactly as
    :func:`metric_size` does, but with one pyproj call per zone instead of one per geometry
    (the per-object cost dominated OSM extraction).

    Returns:
        ``(area_m2, length_m, width_m, height_m)`` float arrays.
    """
    geoms = np.asarray(geoms, dtype=object)
    n = len(geoms)
    area, length, width, height = (np.zeros(n) for _ in range(4))
    if n == 0:
        return area, length, width, height
    bounds = shapely.bounds(geoms)
    cx = (bounds[:, 0] + bounds[:, 2]) / 2
    cy = (bounds[:, 1] + bounds[:, 3]) / 2
    zone = np.minimum(((cx + 180.0) // 6.0).astype(np.int64) + 1, 60)
    epsg = np.where(cy >= 0, 32600, 32700) + zone
    for code in np.unique(epsg):
        sel = np.flatnonzero(epsg == code)
        t = _utm_from_lonlat(int(code))
        local = shapely.transform(
            geoms[sel], lambda xy, t=t: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))
        )
        lb = shapely.bounds(local)
        area[sel] = shapely.area(local)
        length[sel] = shapely.length(local)
        width[sel] = lb[:, 2] - lb[:, 0]
        height[sel] = lb[:, 3] - lb[:, 1]
    return area, length, width, height


def units_per_metre(crs: CRS | str | int, lon: float, lat: float) -> float:
    """How many CRS units make one ground metre near ``(lon, lat)`` (east-west direction).

    1 for UTM-like CRSs (within the scale factor), ``1 / cos(lat)`` for web mercator, about
    ``1 / 111 km`` for geographic CRSs. Measured geodesically, so it holds for any CRS.
    """
    crs = as_crs(crs)
    t = transformer(WGS84, crs)
    step_deg = 1e-4
    x0, y0 = t.transform(lon, lat)
    x1, y1 = t.transform(lon + step_deg, lat)
    _, _, ground = _GEOD.inv(lon, lat, lon + step_deg, lat)
    if ground <= 0:
        raise GeoError(f"cannot measure CRS units near ({lon}, {lat})")
    return math.hypot(x1 - x0, y1 - y0) / ground


def pixel_size_m(
    crs: CRS | str | int,
    transform: tuple[float, ...],
    col: float,
    row: float,
) -> tuple[float, float]:
    """Ground size in metres of one pixel ``(x, y)`` at pixel ``(col, row)`` of a raster grid.

    Args:
        crs: The raster's CRS (projected or geographic).
        transform: Its affine transform (``rasterio`` ``Affine`` or its 6 first coefficients).
        col: Column of the pixel (usually the raster centre).
        row: Row of the pixel.

    Returns:
        ``(x_size_m, y_size_m)`` measured geodesically between neighbouring pixel centres.
    """
    a, b, c, d, e, f = tuple(transform)[:6]
    to_lonlat = transformer(crs, WGS84)

    def lonlat(cc: float, rr: float) -> tuple[float, float]:
        return to_lonlat.transform(a * cc + b * rr + c, d * cc + e * rr + f)

    lon0, lat0 = lonlat(col, row)
    lon1, lat1 = lonlat(col + 1, row)
    lon2, lat2 = lonlat(col, row + 1)
    return (abs(_GEOD.inv(lon0, lat0, lon1, lat1)[2]), abs(_GEOD.inv(lon0, lat0, lon2, lat2)[2]))


def raster_gsd_m(
    crs: CRS | str | int, transform: tuple[float, ...], width: int, height: int
) -> float:
    """Ground sampling distance in metres at the centre of a raster (mean of x and y pixel sizes).

    Works for geographic CRSs too (degrees are converted geodesically at the centre).
    """
    if crs is None:
        raise GeoError("raster has no CRS: cannot compute its GSD in metres")
    sx, sy = pixel_size_m(crs, transform, width / 2.0, height / 2.0)
    return (sx + sy) / 2.0


def web_mercator_gsd_m(zoom: int, lat: float, tile_px: int = 256) -> float:
    """Ground size of one pixel of an XYZ tile of ``tile_px`` pixels at ``zoom`` and latitude."""
    return _MERCATOR_WORLD_M / (tile_px * 2**zoom) * math.cos(math.radians(lat))


def bounds_around(
    x: float, y: float, size_px: tuple[int, int], gsd_m: float, units_per_m: float = 1.0
) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a ``(width, height)`` pixel tile centred on ``(x, y)``."""
    half_w = size_px[0] * gsd_m * units_per_m / 2.0
    half_h = size_px[1] * gsd_m * units_per_m / 2.0
    return (x - half_w, y - half_h, x + half_w, y + half_h)


def lonlat_bounds(
    bounds: tuple[float, float, float, float], crs: CRS | str | int, densify: int = 21
) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of CRS bounds, densified so curved edges are covered."""
    crs = as_crs(crs)
    if crs.equals(WGS84):
        return tuple(float(v) for v in bounds)  # type: ignore[return-value]
    west, south, east, north = transformer(crs, WGS84).transform_bounds(
        *bounds, densify_pts=densify
    )
    return (float(west), float(south), float(east), float(north))


def crs_bounds(
    lonlat: tuple[float, float, float, float], crs: CRS | str | int, densify: int = 21
) -> tuple[float, float, float, float]:
    """Inverse of :func:`lonlat_bounds`: lon/lat bounds expressed in ``crs``."""
    crs = as_crs(crs)
    if crs.equals(WGS84):
        return tuple(float(v) for v in lonlat)  # type: ignore[return-value]
    out = transformer(WGS84, crs).transform_bounds(*lonlat, densify_pts=densify)
    return tuple(float(v) for v in out)  # type: ignore[return-value]


def pixel_window(
    bounds: tuple[float, float, float, float], transform: tuple[float, ...]
) -> tuple[float, float, float, float]:
    """``(col_off, row_off, width, height)`` in fractional pixels of CRS bounds (north-up grid).

    Raises:
        GeoError: If the grid is rotated (use a warped read for those).
    """
    a, b, c, d, e, f = tuple(transform)[:6]
    if b != 0 or d != 0:
        raise GeoError("rotated raster grids need a warped read, not a pixel window")
    left, bottom, right, top = bounds
    col0, col1 = (left - c) / a, (right - c) / a
    row0, row1 = (top - f) / e, (bottom - f) / e
    col_off, row_off = min(col0, col1), min(row0, row1)
    return (col_off, row_off, abs(col1 - col0), abs(row1 - row0))


def pixel_transform(
    bounds: tuple[float, float, float, float], size_px: tuple[int, int]
) -> Callable[[np.ndarray], np.ndarray]:
    """A coordinate function mapping CRS ``(x, y)`` inside ``bounds`` to pixels of a tile.

    Pixel ``(0, 0)`` is the top-left corner of the tile, y points down.
    """
    left, bottom, right, top = bounds
    sx = size_px[0] / (right - left)
    sy = size_px[1] / (top - bottom)

    def apply(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(((xy[:, 0] - left) * sx, (top - xy[:, 1]) * sy))

    return apply


def repair(geom: BaseGeometry) -> tuple[BaseGeometry, str | None]:
    """Return a valid version of ``geom`` and why it was invalid (``None`` when it was valid).

    Self-intersecting polygons are repaired with :func:`shapely.make_valid` (GEOS "structure"
    method keeps the area); the reason string is GEOS's explanation, e.g. "Self-intersection".
    """
    if geom.is_valid:
        return geom, None
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    return fixed, reason
