"""Overhead imagery behind one interface: local rasters, XYZ tile folders and STAC catalogues.

An :class:`ImagerySource` is one georeferenced image (a GeoTIFF/COG/VRT file, one STAC item's
asset, or one cell of an XYZ tile folder). It reports where it is (``footprint`` in lon/lat), how
fine it is (``gsd_m``), when and by what it was captured, and its licence;
:meth:`~ImagerySource.read` returns any window of it resampled to the requested grid, as RGB
plus a validity mask.

:func:`open_imagery` turns what the user points at (a file, a folder, a STAC URL or
``catalog.json``) into a list of sources. Sources are picklable (file handles are reopened in each
worker), so builders can hand them to other processes or Ray tasks.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from terrascribe.geo import (
    WEB_MERCATOR,
    WGS84,
    as_crs,
    crs_bounds,
    lonlat_bounds,
    raster_gsd_m,
    utm_crs,
    web_mercator_gsd_m,
)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
TILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_ASSET_PREFERENCE = ("visual", "image", "rgb", "data", "ortho")


class ImageryError(ValueError):
    """An imagery input is missing, unreadable, not georeferenced, or cannot serve a read."""


@dataclass
class Tile:
    """A window read from a source.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 image.
        valid: ``(H, W)`` bool mask, false where the source has no data.
        bounds: ``(left, bottom, right, top)`` in ``crs``.
        crs: CRS of the tile grid.
        all_valid: True when the reader knows every pixel has data (``valid`` is all true),
            so checks need not count it.
    """

    rgb: np.ndarray
    valid: np.ndarray
    bounds: tuple[float, float, float, float]
    crs: CRS
    all_valid: bool = False

    @property
    def valid_fraction(self) -> float:
        """Share of pixels with data."""
        return float(self.valid.mean()) if self.valid.size else 0.0


class ImagerySource(ABC):
    """One georeferenced image that can serve windows at any resolution.

    Attributes:
        name: Stable short identity (used in sample keys and reports).
        footprint: Covered area as a lon/lat polygon.
        gsd_m: Native ground sampling distance in metres.
        capture_date: ``YYYY-MM-DD`` if known.
        sensor: Sensor or product name, if known.
        licence: Licence of the imagery, if known.
        crs: The CRS reads are cheapest in (the native one, or web mercator for tiles).
    """

    name: str
    capture_date: str | None = None
    sensor: str | None = None
    licence: str | None = None

    @property
    @abstractmethod
    def footprint(self) -> BaseGeometry:
        """Covered area in lon/lat."""

    @property
    @abstractmethod
    def gsd_m(self) -> float:
        """Native ground sampling distance in metres."""

    @property
    @abstractmethod
    def crs(self) -> CRS:
        """Native CRS."""

    @abstractmethod
    def read(
        self,
        bounds: tuple[float, float, float, float],
        size_px: tuple[int, int],
        crs: CRS | str | None = None,
    ) -> Tile:
        """Read ``bounds`` (in ``crs``, default :attr:`crs`) resampled to ``(width, height)``."""

    def snap(
        self,
        bounds: tuple[float, float, float, float],
        size_px: tuple[int, int],
        crs: CRS | str | None = None,
    ) -> tuple[float, float, float, float]:
        """``bounds`` moved onto the source's own pixel grid when a read of them would use it.

        A tile read at the native resolution but a fraction of a pixel off the grid costs a
        resampling of every pixel (and blurs the image) to shift it by less than a pixel.
        Sources whose reads can be plain copies of their pixels override this; the default
        leaves ``bounds`` as they are.

        Args:
            bounds: ``(left, bottom, right, top)`` in ``crs`` (default :attr:`crs`).
            size_px: The ``(width, height)`` the bounds will be read at.
            crs: CRS of ``bounds``.
        """
        return bounds

    def copies_pixels(
        self,
        bounds: tuple[float, float, float, float],
        size_px: tuple[int, int],
        crs: CRS | str | None = None,
    ) -> bool:
        """Whether reading ``bounds`` at ``size_px`` is a plain copy of local pixels.

        No resampling, no warping, no network: such a read costs less than handing it to a
        background thread and back (the GIL changes hands at every step), so builders read it
        in line. The default, False, suits any source.
        """
        return False

    def tile_crs(self, lon: float, lat: float) -> CRS:
        """A metric CRS for a tile at ``(lon, lat)``: the native one if projected, else UTM."""
        return self.crs if self.crs.is_projected else utm_crs(lon, lat)

    def describe(self) -> dict[str, Any]:
        """Plain-JSON description for reports and provenance."""
        return {
            "name": self.name,
            "kind": type(self).__name__,
            "gsd_m": round(self.gsd_m, 4),
            "capture_date": self.capture_date,
            "sensor": self.sensor,
            "licence": self.licence,
            "bounds": [round(v, 6) for v in self.footprint.bounds],
        }


def _date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from a datetime, a TIFF ``YYYY:MM:DD HH:MM:SS`` tag or an ISO string."""
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d")
    m = re.match(r"^\s*(\d{4})[:\-](\d{2})[:\-](\d{2})", str(value))
    return f"{m[1]}-{m[2]}-{m[3]}" if m else None


def _to_uint8(data: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    if data.dtype == np.uint8 and value_range is None:
        return data
    lo, hi = value_range if value_range is not None else (0.0, float(np.iinfo(np.uint16).max))
    scaled = (data.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-9))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Local rasters (GeoTIFF, COG, VRT) and STAC assets


class RasterSource(ImagerySource):
    """A raster file or URL readable by rasterio (GeoTIFF, COG, VRT...), in any CRS.

    Args:
        path: File path or URL (``/vsicurl/`` and ``https://`` COGs work through GDAL).
        name: Identity (default: the file stem).
        capture_date: Overrides the date found in the file's tags.
        sensor: Sensor or product name.
        licence: Licence of the imagery.
        bands: 1-based band indexes for R, G, B (default: the first three, or one grey band).
        value_range: ``(low, high)`` mapped to 0-255 for non-8-bit data (default: full uint16).
        resampling: rasterio resampling name used when the requested GSD differs from native.

    Raises:
        ImageryError: If the file cannot be opened or has no CRS.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        capture_date: str | None = None,
        sensor: str | None = None,
        licence: str | None = None,
        bands: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
        resampling: str = "bilinear",
    ) -> None:
        self.path = str(path)
        self.name = name or Path(self.path).name.split(".")[0]
        self.sensor = sensor
        self.licence = licence
        self.value_range = value_range
        self.resampling = resampling
        self._dataset: Any = None
        ds = self._open()
        if ds.crs is None:
            raise ImageryError(
                f"{self.path}: raster has no CRS (no georeferencing); add one with "
                "`gdal_edit.py -a_srs EPSG:XXXX` or use a world file"
            )
        self._crs = as_crs(ds.crs)
        self._transform = tuple(ds.transform)[:6]
        self._shape = (ds.width, ds.height)
        self._native_bounds = tuple(ds.bounds)
        self._has_mask = any(f.name != "all_valid" for f in ds.mask_flag_enums[0])
        self.bands = list(bands) if bands else ([1, 2, 3] if ds.count >= 3 else [1])
        if max(self.bands) > ds.count:
            raise ImageryError(f"{self.path}: has {ds.count} bands, asked for {self.bands}")
        if ds.dtypes[0] != "uint8" and value_range is None:
            self.value_range = _data_range(ds, self.bands)
        tags = ds.tags()
        self.capture_date = capture_date or _date(
            tags.get("TIFFTAG_DATETIME") or tags.get("ACQUISITIONDATETIME") or tags.get("datetime")
        )
        self._gsd = raster_gsd_m(self._crs, self._transform, ds.width, ds.height)
        self._footprint = box(*lonlat_bounds(self._native_bounds, self._crs))

    def _open(self) -> Any:
        if self._dataset is None or self._dataset.closed:
            self._dataset = _open_raster(self.path)
        return self._dataset

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dataset"] = None  # GDAL handles do not cross processes; reopened lazily
        return state

    def close(self) -> None:
        """Close the underlying dataset (it reopens on the next read)."""
        if self._dataset is not None:
            _OPEN_RASTERS.pop(_raster_key(self.path), None)
            self._dataset.close()
            self._dataset = None

    @property
    def footprint(self) -> BaseGeometry:
        return self._footprint

    @property
    def gsd_m(self) -> float:
        return self._gsd

    @property
    def crs(self) -> CRS:
        return self._crs

    def snap(
        self,
        bounds: tuple[float, float, float, float],
        size_px: tuple[int, int],
        crs: CRS | str | None = None,
    ) -> tuple[float, float, float, float]:
        width, height = size_px
        window = self._grid_window(bounds, self._crs if crs is None else as_crs(crs))
        if (
            window is None
            or abs(window.width / width - 1) >= _SNAP_TOLERANCE
            or abs(window.height / height - 1) >= _SNAP_TOLERANCE
        ):
            return bounds
        a, _, c, _, e, f = self._transform
        left, top = c + round(window.col_off) * a, f + round(window.row_off) * e
        return (left, top + height * e, left + width * a, top)

    def copies_pixels(
        self,
        bounds: tuple[float, float, float, float],
        size_px: tuple[int, int],
        crs: CRS | str | None = None,
    ) -> bool:
        window = self._grid_window(bounds, self._crs if crs is None else as_crs(crs))
        return (
            window is not None
            and _whole_pixels(window, size_px)
            and "://" not in self.path
            and not self.path.startswith("/vsi")
        )

    def _grid_window(self, bounds: tuple[float, float, float, float], crs: CRS) -> Any:
        """The raster window of ``bounds`` (maybe reaching outside the raster) if they are in
        its CRS on its north-up grid, else None."""
        from rasterio.windows import Window

        a, b, c, d, e, f = self._transform
        if not (crs.equals(self._crs) and b == 0 and d == 0 and e < 0 < a):
            return None
        col0, row0 = (bounds[0] - c) / a, (bounds[3] - f) / e
        col1, row1 = (bounds[2] - c) / a, (bounds[1] - f) / e
        return _on_grid(Window(col0, row0, col1 - col0, row1 - row0))

    def _inside(self, window: Any) -> bool:
        return (
            window.col_off >= 0
            and window.row_off >= 0
            and window.col_off + window.width <= self._shape[0]
            and window.row_off + window.height <= self._shape[1]
        )

    def read(
        self,
        bounds: tuple[float, float, float, float],
        size_px: tuple[int, int],
        crs: CRS | str | None = None,
    ) -> Tile:
        from rasterio.enums import Resampling
        from rasterio.transform import from_bounds
        from rasterio.vrt import WarpedVRT

        dst_crs = self._crs if crs is None else as_crs(crs)
        width, height = size_px
        ds = self._open()
        resampling = Resampling[self.resampling]
        window = self._grid_window(bounds, dst_crs)
        if window is not None and self._inside(window):  # the fast path: a plain windowed read
            # GDAL writes the bands pixel-interleaved into (H, W, bands) memory: no transposing
            # copy afterwards (a third of the read's cost), and GDAL does it without the GIL.
            interleaved = np.empty((height, width, len(self.bands)), ds.dtypes[self.bands[0] - 1])
            data = ds.read(
                self.bands,
                window=window,
                out=interleaved.transpose(2, 0, 1),
                resampling=resampling,
            )
            all_valid = not self._has_mask
            valid = (
                np.ones((height, width), bool)
                if all_valid
                else ds.dataset_mask(window=window, out_shape=(height, width)) > 0
            )
        elif window is not None and _whole_pixels(window, size_px):
            # On the grid but reaching outside the raster (tiles at its edges): the pixels it
            # has, copied, and no data elsewhere; what a warp gives, without warping.
            data, valid = self._read_on_grid_edge(ds, window)
            all_valid = False
        else:
            transform = from_bounds(*bounds, width, height)
            # Without nodata or a mask, GDAL calls everything valid, even outside the raster:
            # an alpha band makes the warp record what it actually covered.
            with WarpedVRT(
                ds,
                crs=dst_crs.to_wkt(),
                transform=transform,
                width=width,
                height=height,
                resampling=resampling,
                add_alpha=not self._has_mask,
            ) as vrt:
                data = vrt.read(self.bands)
                valid = vrt.dataset_mask() > 0
                all_valid = False
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        rgb = _to_uint8(np.moveaxis(data, 0, -1), self.value_range)
        return Tile(np.ascontiguousarray(rgb), valid, tuple(bounds), dst_crs, all_valid)

    def _read_on_grid_edge(self, ds: Any, window: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(bands, H, W)`` pixels and ``(H, W)`` validity of a whole-pixel window that reaches
        outside the raster: the part inside is copied, the rest is zero and invalid."""
        from rasterio.windows import Window

        width, height = window.width, window.height
        col0, row0 = max(window.col_off, 0), max(window.row_off, 0)
        col1 = min(window.col_off + width, self._shape[0])
        row1 = min(window.row_off + height, self._shape[1])
        interleaved = np.zeros((height, width, len(self.bands)), ds.dtypes[self.bands[0] - 1])
        valid = np.zeros((height, width), bool)
        if col1 > col0 and row1 > row0:
            inner = Window(col0, row0, col1 - col0, row1 - row0)
            rows = slice(row0 - window.row_off, row1 - window.row_off)
            cols = slice(col0 - window.col_off, col1 - window.col_off)
            part = np.empty((row1 - row0, col1 - col0, len(self.bands)), interleaved.dtype)
            ds.read(self.bands, window=inner, out=part.transpose(2, 0, 1))
            interleaved[rows, cols] = part
            valid[rows, cols] = ds.dataset_mask(window=inner) > 0 if self._has_mask else True
        return interleaved.transpose(2, 0, 1), valid


# A tile whose pixels are within this fraction of the raster's is read on the raster's grid
# (see ImagerySource.snap): 0.1% of a pixel per pixel, a quarter pixel across 256 pixels.
_SNAP_TOLERANCE = 1e-3


def _on_grid(window: Any) -> Any:
    """``window`` with whole-pixel offsets and sizes when it is that up to rounding error.

    Bounds snapped to the grid come back as ``1076.9999999998`` after the float arithmetic;
    GDAL would resample such a window (6x the cost of a plain copy) to move it by nothing.
    """
    values = (window.col_off, window.row_off, window.width, window.height)
    rounded = [round(v) for v in values]
    if all(abs(v - r) < 1e-6 for v, r in zip(values, rounded, strict=True)):
        return type(window)(*rounded)
    return window


def _whole_pixels(window: Any, size_px: tuple[int, int]) -> bool:
    """Whether ``window`` has whole-pixel offsets and exactly the ``size_px`` to read it at."""
    return (
        isinstance(window.col_off, int)
        and isinstance(window.row_off, int)
        and (window.width, window.height) == tuple(size_px)
    )


# One open dataset per raster and process: build jobs unpickle their own copy of a source, and
# reopening the file per job would also throw away GDAL's cache of decompressed blocks.
_OPEN_RASTERS: dict[tuple[str, int, int], Any] = {}
_MAX_OPEN_RASTERS = 64


def _raster_key(path: str) -> tuple[str, int, int]:
    try:  # a file rewritten in place must not be served from the old handle
        st = os.stat(path)
    except OSError:  # URLs and GDAL virtual paths
        return (path, 0, 0)
    return (path, st.st_mtime_ns, st.st_size)


def _open_raster(path: str) -> Any:
    key = _raster_key(path)
    ds = _OPEN_RASTERS.get(key)
    if ds is not None and not ds.closed:
        return ds
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        ds = rasterio.open(path)
    except RasterioIOError as err:
        raise ImageryError(f"{path}: cannot open raster ({err})") from None
    if len(_OPEN_RASTERS) >= _MAX_OPEN_RASTERS:  # a catalogue of many files: keep a bounded set
        _OPEN_RASTERS.pop(next(iter(_OPEN_RASTERS)))
    _OPEN_RASTERS[key] = ds
    return ds


def _data_range(ds: Any, bands: Sequence[int]) -> tuple[float, float]:
    # 2-98 % percentiles of a decimated read: a stable stretch for 16-bit imagery.
    scale = max(1, max(ds.width, ds.height) // 512)
    sample = ds.read(
        bands,
        out_shape=(len(bands), max(ds.height // scale, 1), max(ds.width // scale, 1)),
        masked=True,
    )
    values = sample.compressed() if hasattr(sample, "compressed") else sample.ravel()
    if values.size == 0:
        return (0.0, 255.0)
    lo, hi = np.percentile(values, [2, 98])
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


# --------------------------------------------------------------------------------------------
# XYZ / slippy-map tile folders


_NESTED = re.compile(r"^(\d+)/(\d+)/(\d+)\.(jpe?g|png|webp)$", re.I)
_FLAT = re.compile(r"^(\d+)-(\d+)-(\d+)\.(jpe?g|png|webp)$", re.I)


def scan_xyz(
    folder: str | Path, layout: str | None = None
) -> tuple[str, dict[tuple[int, int, int], Path]]:
    """Find the tiles of an XYZ folder and its layout.

    Recognised without flags: nested ``{z}/{x}/{y}.ext`` and flat ``{x}-{y}-{z}.ext`` or
    ``{z}-{x}-{y}.ext`` (told apart by which number is constant and small enough to be a zoom).

    Args:
        folder: Tile folder.
        layout: Force ``"z/x/y"``, ``"x-y-z"`` or ``"z-x-y"``.

    Returns:
        ``(layout, {(x, y, z): path})``.

    Raises:
        ImageryError: If no tiles are found or the flat layout is ambiguous.
    """
    folder = Path(folder)
    nested: dict[tuple[int, int, int], Path] = {}
    flat: list[tuple[tuple[int, int, int], Path]] = []
    for p in folder.rglob("*"):
        if not p.is_file() or p.suffix.lower() not in TILE_SUFFIXES:
            continue
        rel = p.relative_to(folder).as_posix()
        if m := _NESTED.match(rel):
            nested[(int(m[2]), int(m[3]), int(m[1]))] = p
        elif m := _FLAT.match(p.name):
            flat.append(((int(m[1]), int(m[2]), int(m[3])), p))
    if layout == "z/x/y" or (layout is None and nested and not flat):
        if not nested:
            raise ImageryError(f"{folder}: no {{z}}/{{x}}/{{y}} tiles found")
        return "z/x/y", nested
    if not flat:
        raise ImageryError(f"{folder}: no XYZ tiles found ({{z}}/{{x}}/{{y}}.jpg or x-y-z.jpg)")
    if layout is None:
        firsts = {n[0] for n, _ in flat}
        thirds = {n[2] for n, _ in flat}
        z_last = len(thirds) == 1 and next(iter(thirds)) <= 24
        z_first = len(firsts) == 1 and next(iter(firsts)) <= 24
        if z_last == z_first:
            raise ImageryError(
                f"{folder}: cannot tell whether tile names are x-y-z or z-x-y; pass the layout"
            )
        layout = "x-y-z" if z_last else "z-x-y"
    if layout == "x-y-z":
        return layout, {(a, b, c): p for (a, b, c), p in flat}
    if layout == "z-x-y":
        return layout, {(b, c, a): p for (a, b, c), p in flat}
    raise ImageryError(f"unknown XYZ layout {layout!r}; use 'z/x/y', 'x-y-z' or 'z-x-y'")


class XyzSource(ImagerySource):
    """One cell of an XYZ tile folder (web mercator), mosaicked across tile edges.

    A large folder is split into cells (the tiles under one parent tile at ``cell_zoom``) so that
    each cell can be one build job.

    Args:
        tiles: ``{(x, y, z): path}`` of this cell's tiles (one zoom level).
        name: Identity.
        capture_date, sensor, licence: Metadata (tile folders carry none).
        tile_px: Tile size in pixels (default: read from the first tile).
        all_tiles: Every tile of the folder, so windows near a cell edge mosaic across cells.
    """

    def __init__(
        self,
        tiles: dict[tuple[int, int, int], Path],
        *,
        name: str,
        capture_date: str | None = None,
        sensor: str | None = None,
        licence: str | None = None,
        tile_px: int | None = None,
        all_tiles: dict[tuple[int, int, int], Path] | None = None,
    ) -> None:
        import mercantile

        if not tiles:
            raise ImageryError(f"{name}: no tiles")
        zooms = {z for _, _, z in tiles}
        if len(zooms) != 1:
            raise ImageryError(f"{name}: tiles of several zoom levels {sorted(zooms)}; pick one")
        self.zoom = zooms.pop()
        self.name = name
        self.capture_date = capture_date
        self.sensor = sensor
        self.licence = licence
        self.tiles = dict(tiles)
        self.all_tiles = dict(all_tiles) if all_tiles is not None else self.tiles
        if tile_px is None:
            from terrascribe.images import read_rgb

            tile_px = read_rgb(next(iter(sorted(self.tiles.values())))).size[0]
        self.tile_px = tile_px
        boxes = [box(*mercantile.bounds(x, y, z)) for x, y, z in sorted(self.tiles)]
        self._footprint = shapely.union_all(boxes).buffer(0)
        lat = self._footprint.centroid.y
        self._gsd = web_mercator_gsd_m(self.zoom, lat, tile_px)

    @property
    def footprint(self) -> BaseGeometry:
        return self._footprint

    @property
    def gsd_m(self) -> float:
        return self._gsd

    @property
    def crs(self) -> CRS:
        return WEB_MERCATOR

    def read(
        self,
        bounds: tuple[float, float, float, float],
        size_px: tuple[int, int],
        crs: CRS | str | None = None,
    ) -> Tile:
        import mercantile
        from rasterio.enums import Resampling
        from rasterio.transform import from_bounds
        from rasterio.warp import reproject

        from terrascribe.images import ImageError, read_rgb

        dst_crs = WEB_MERCATOR if crs is None else as_crs(crs)
        west, south, east, north = lonlat_bounds(bounds, dst_crs)
        eps = 1e-9
        tiles = list(mercantile.tiles(west + eps, south + eps, east - eps, north - eps, self.zoom))
        xs = [t.x for t in tiles]
        ys = [t.y for t in tiles]
        x0, y0 = min(xs), min(ys)
        n = self.tile_px
        mosaic = np.zeros((3, (max(ys) - y0 + 1) * n, (max(xs) - x0 + 1) * n), np.uint8)
        present = np.zeros(mosaic.shape[1:], np.uint8)
        for t in tiles:
            path = self.all_tiles.get((t.x, t.y, t.z))
            if path is None:
                continue
            try:
                img = np.asarray(read_rgb(path))
            except ImageError:
                continue  # a corrupt tile reads as nodata; the builder's valid check handles it
            if img.shape[:2] != (n, n):
                continue
            r, c = (t.y - y0) * n, (t.x - x0) * n
            mosaic[:, r : r + n, c : c + n] = np.moveaxis(img, -1, 0)
            present[r : r + n, c : c + n] = 255
        ul = mercantile.xy_bounds(x0, y0, self.zoom)
        lr = mercantile.xy_bounds(max(xs), max(ys), self.zoom)
        src_transform = from_bounds(ul.left, lr.bottom, lr.right, ul.top, *mosaic.shape[:0:-1])
        width, height = size_px
        dst_transform = from_bounds(*bounds, width, height)
        out = np.zeros((3, height, width), np.uint8)
        mask = np.zeros((height, width), np.uint8)
        common = {
            "src_transform": src_transform,
            "src_crs": "EPSG:3857",
            "dst_transform": dst_transform,
            "dst_crs": dst_crs.to_wkt(),
        }
        reproject(mosaic, out, resampling=Resampling.bilinear, **common)
        reproject(present, mask, resampling=Resampling.nearest, **common)
        return Tile(np.ascontiguousarray(np.moveaxis(out, 0, -1)), mask > 0, tuple(bounds), dst_crs)


def open_xyz(
    folder: str | Path,
    *,
    layout: str | None = None,
    zoom: int | None = None,
    cell_zoom_offset: int = 4,
    capture_date: str | None = None,
    sensor: str | None = None,
    licence: str | None = None,
) -> list[XyzSource]:
    """Open an XYZ tile folder as sources, one per cell of ``2**cell_zoom_offset`` tiles a side.

    Raises:
        ImageryError: If no tiles are found, the layout is ambiguous, or zooms are mixed without
            ``zoom``.
    """
    import mercantile

    folder = Path(folder)
    _, tiles = scan_xyz(folder, layout)
    zooms = sorted({z for _, _, z in tiles})
    if zoom is None:
        if len(zooms) > 1:
            raise ImageryError(f"{folder}: tiles at zooms {zooms}; choose one with zoom=")
        zoom = zooms[0]
    tiles = {k: p for k, p in tiles.items() if k[2] == zoom}
    if not tiles:
        raise ImageryError(f"{folder}: no tiles at zoom {zoom}")
    cells: dict[tuple[int, int, int], dict[tuple[int, int, int], Path]] = {}
    parent_zoom = max(zoom - cell_zoom_offset, 0)
    for key, path in tiles.items():
        tile = mercantile.Tile(*key)
        parent = mercantile.parent(tile, zoom=parent_zoom) if parent_zoom < zoom else tile
        cells.setdefault((parent.x, parent.y, parent.z), {})[key] = path
    from terrascribe.images import read_rgb

    tile_px = read_rgb(tiles[min(tiles)]).size[0]
    return [
        XyzSource(
            cells[c],
            name=f"{folder.name}-z{zoom}-{c[2]}-{c[0]}-{c[1]}",
            capture_date=capture_date,
            sensor=sensor,
            licence=licence,
            tile_px=tile_px,
            all_tiles=tiles,
        )
        for c in sorted(cells)
    ]


# --------------------------------------------------------------------------------------------
# STAC


def open_stac(
    catalogue: str | Path,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    datetime: str | None = None,
    collections: Sequence[str] | None = None,
    asset: str | None = None,
    max_items: int | None = None,
    licence: str | None = None,
) -> list[RasterSource]:
    """Search a STAC API or a static catalogue for items and open their COG assets.

    Args:
        catalogue: STAC API URL, or a static ``catalog.json``/``collection.json`` (path or URL).
        bbox: ``(west, south, east, north)`` filter.
        datetime: STAC datetime filter (``"2020-01-01/2021-12-31"``).
        collections: Collection ids to search.
        asset: Asset key to read (default: ``visual``, ``image``, ``rgb``, ``data`` or the first
            GeoTIFF asset).
        max_items: Stop after this many items.
        licence: Override for the items' licence.

    Returns:
        One :class:`RasterSource` per item, with the item's date, platform and licence.

    Raises:
        ImageryError: If the catalogue cannot be opened or an item has no readable asset.
    """
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses

    target = str(catalogue)
    try:
        client = Client.open(target)
    except Exception as err:  # pystac raises many kinds (IO, JSON, validation)
        raise ImageryError(f"{target}: cannot open STAC catalogue ({err})") from None
    if client.conforms_to(ConformanceClasses.ITEM_SEARCH):
        search = client.search(
            bbox=bbox, datetime=datetime, collections=collections, max_items=max_items
        )
        items: Iterable[Any] = search.items()
    else:  # static catalogue: walk it and filter here
        items = _filter_static(client.get_items(recursive=True), bbox, datetime, collections)
    sources: list[RasterSource] = []
    for item in items:
        if max_items is not None and len(sources) >= max_items:
            break
        sources.append(_item_source(item, asset, licence))
    return sources


def _filter_static(items, bbox, datetime, collections):
    region = box(*bbox) if bbox is not None else None
    start = end = None
    if datetime:
        lo, _, hi = datetime.partition("/")
        start = lo if lo not in ("", "..") else None
        end = (hi or lo) if (hi or lo) not in ("", "..") else None
    for item in items:
        if collections and item.collection_id not in collections:
            continue
        if region is not None and item.bbox and not region.intersects(box(*item.bbox)):
            continue
        day = _date(item.datetime or item.properties.get("start_datetime"))
        if day and ((start and day < start[:10]) or (end and day > end[:10])):
            continue
        yield item


def _item_source(item: Any, asset: str | None, licence: str | None) -> RasterSource:
    assets = item.assets
    key = asset
    if key is None:
        key = next((k for k in _ASSET_PREFERENCE if k in assets), None)
    if key is None:
        key = next(
            (k for k, a in assets.items() if (a.media_type or "").startswith("image/tiff")), None
        )
    if key is None or key not in assets:
        raise ImageryError(f"STAC item {item.id}: no asset {asset or 'with a GeoTIFF'} to read")
    props = item.properties
    sensor = props.get("platform") or ",".join(props.get("constellation", []) or []) or None
    return RasterSource(
        assets[key].get_absolute_href(),
        name=item.id,
        capture_date=_date(item.datetime or props.get("start_datetime")),
        sensor=sensor or (",".join(props.get("instruments") or []) or None),
        licence=licence or props.get("license") or _collection_licence(item),
    )


def _collection_licence(item: Any) -> str | None:
    try:
        collection = item.get_collection()
    except Exception:  # a missing or unreachable parent collection only costs the licence
        return None
    return getattr(collection, "license", None) if collection is not None else None


# --------------------------------------------------------------------------------------------
# Dispatch


def open_imagery(
    spec: str | Path,
    *,
    capture_date: str | None = None,
    sensor: str | None = None,
    licence: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    datetime: str | None = None,
    layout: str | None = None,
    zoom: int | None = None,
) -> list[ImagerySource]:
    """Open what the user points at as imagery sources.

    * a raster file (``.tif``, ``.tiff``, ``.vrt``, ``.jp2``) -> one :class:`RasterSource`;
    * a folder of XYZ tiles (``{z}/{x}/{y}.jpg`` or flat ``x-y-z.jpg``) -> :class:`XyzSource` cells;
    * a folder holding ``catalog.json``/``collection.json``, such a file, or an ``http(s)`` URL
      -> STAC items (:func:`open_stac`, filtered by ``bbox`` and ``datetime``);
    * any other folder -> every raster file in it (recursively, sorted).

    ``capture_date``, ``sensor`` and ``licence`` fill in what the files do not say.

    Raises:
        ImageryError: If nothing usable is found; the message names the path.
    """
    text = str(spec)
    meta = {"capture_date": capture_date, "sensor": sensor, "licence": licence}
    if text.startswith(("http://", "https://")) and not text.lower().endswith(RASTER_SUFFIXES):
        return _with_meta(open_stac(text, bbox=bbox, datetime=datetime), meta)
    path = Path(spec)
    if not path.exists():
        raise ImageryError(f"{path}: no such imagery file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _with_meta(open_stac(path, bbox=bbox, datetime=datetime), meta)
        if path.name.lower().endswith(RASTER_SUFFIXES):
            return [RasterSource(path, **meta)]
        raise ImageryError(f"{path}: not a raster ({', '.join(RASTER_SUFFIXES)}) or STAC JSON")
    for name in ("catalog.json", "collection.json"):
        if (path / name).exists():
            return _with_meta(open_stac(path / name, bbox=bbox, datetime=datetime), meta)
    rasters = sorted(p for p in path.rglob("*") if p.name.lower().endswith(RASTER_SUFFIXES))
    if rasters:
        return [RasterSource(p, name=_unique_name(p, path), **meta) for p in rasters]
    try:
        return open_xyz(path, layout=layout, zoom=zoom, **meta)
    except ImageryError as err:
        raise ImageryError(
            f"{path}: no rasters, STAC catalogue or XYZ tiles found ({err})"
        ) from None


def _unique_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("").as_posix()
    return rel.replace("/", "_")


def _with_meta(sources: list[RasterSource], meta: dict[str, Any]) -> list[ImagerySource]:
    for s in sources:
        for k, v in meta.items():
            if v is not None:
                setattr(s, k, v)
    return list(sources)


def tile_bounds(
    source: ImagerySource,
    lon: float,
    lat: float,
    size_px: tuple[int, int],
    gsd_m: float,
    offset_px: tuple[float, float] = (0.0, 0.0),
) -> tuple[tuple[float, float, float, float], CRS]:
    """Bounds (and CRS) of a ``size_px`` tile at ``gsd_m`` centred on ``(lon, lat)`` + offset.

    The tile is square in ground metres: web-mercator units are scaled by the latitude.
    """
    from terrascribe.geo import transformer, units_per_metre

    crs = source.tile_crs(lon, lat)
    x, y = transformer(WGS84, crs).transform(lon, lat)
    k = units_per_metre(crs, lon, lat)
    x += offset_px[0] * gsd_m * k
    y -= offset_px[1] * gsd_m * k
    half_w, half_h = size_px[0] * gsd_m * k / 2, size_px[1] * gsd_m * k / 2
    return (x - half_w, y - half_h, x + half_w, y + half_h), crs


__all__ = [
    "ImageryError",
    "ImagerySource",
    "RasterSource",
    "Tile",
    "XyzSource",
    "crs_bounds",
    "open_imagery",
    "open_stac",
    "open_xyz",
    "scan_xyz",
    "tile_bounds",
]
