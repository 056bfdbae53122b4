"""Cutting imagery archives into search tiles: GeoTIFF/COG files, XYZ tile folders, datasets.

Each tile is described by a :class:`TileRef` (where it is, what it was cut from, how to cut it
again) and comes with its RGB pixels. A tile's identity (:attr:`TileRef.tile_key`) is a hash of
its source, its bounds in the tiling CRS and its pixel size, so appending the same archive to an
index twice finds every tile already there.

Rasters are tiled on a grid anchored at the raster's top-left corner, in its own CRS (UTM of the
centre for geographic rasters), with ``tile_px`` pixels of ``gsd_m`` metres a side and a stride of
``tile_px * (1 - overlap)``; reads are rasterio windowed reads resampled to the GSD (through
:class:`terrascribe.sources.imagery.RasterSource`). XYZ folders are tiled the same way in web
mercator, cell by cell. Dataset samples are one tile each.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import box

from terrascribe.geo import (
    WEB_MERCATOR,
    GeoError,
    as_crs,
    lonlat_bounds,
    pixel_window,
    units_per_metre,
)

SOURCE_KINDS = ("raster", "xyz", "dataset")


class TilingError(ValueError):
    """A tiling input or parameter is unusable (the message names the input)."""


@dataclass(frozen=True)
class TilingParams:
    """How imagery is cut into tiles.

    Attributes:
        tile_px: Tile side in pixels.
        gsd_m: Ground sampling distance of the tiles in metres (None: each source's native GSD).
        overlap: Fraction of a tile shared with its neighbour, in ``[0, 0.9]``.
        min_valid: Tiles with less than this share of valid pixels are skipped.
    """

    tile_px: int = 256
    gsd_m: float | None = None
    overlap: float = 0.0
    min_valid: float = 0.5

    def __post_init__(self) -> None:
        if not 8 <= self.tile_px <= 4096:
            raise TilingError(f"tile_px must lie in [8, 4096], got {self.tile_px}")
        if self.gsd_m is not None and not (self.gsd_m > 0 and math.isfinite(self.gsd_m)):
            raise TilingError(f"gsd_m must be a positive number, got {self.gsd_m}")
        if not 0.0 <= self.overlap <= 0.9:
            raise TilingError(f"overlap must lie in [0, 0.9], got {self.overlap}")
        if not 0.0 <= self.min_valid <= 1.0:
            raise TilingError(f"min_valid must lie in [0, 1], got {self.min_valid}")


@dataclass(frozen=True)
class TileRef:
    """One search tile: where it lies and how to read it again.

    Attributes:
        tile_key: Identity (hash of kind, source, item, CRS, bounds and size).
        source_kind: ``raster``, ``xyz`` or ``dataset``.
        source: The file, tile folder or dataset folder (resolved path).
        item: The XYZ cell or dataset sample key ("" for rasters).
        crs: CRS of ``bounds`` (authority string or WKT).
        minx, miny, maxx, maxy: Tile bounds in ``crs``.
        col_off, row_off, width, height: Window in the source raster's pixels (-1 when the tile
            is not on the source's own grid: XYZ, datasets, reprojected rasters).
        tile_px: Tile side in pixels. gsd_m: Its ground sampling distance.
        date: Capture date ``YYYY-MM-DD`` or None. sensor, licence: As the source says.
        west, south, east, north: Lon/lat bounds of the footprint.
        valid_fraction: Share of pixels with data.
    """

    tile_key: str
    source_kind: str
    source: str
    item: str
    crs: str
    minx: float
    miny: float
    maxx: float
    maxy: float
    col_off: int
    row_off: int
    width: int
    height: int
    tile_px: int
    gsd_m: float
    date: str | None
    sensor: str | None
    licence: str | None
    west: float
    south: float
    east: float
    north: float
    valid_fraction: float

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in :attr:`crs`."""
        return (self.minx, self.miny, self.maxx, self.maxy)

    def footprint(self) -> shapely.Polygon:
        """The footprint in lon/lat as a polygon (the reprojected tile outline)."""
        from terrascribe.geo import WGS84, transform_geometry

        outline = box(*self.bounds).segmentize(max(self.maxx - self.minx, 1e-9) / 8)
        return transform_geometry(outline, self.crs, WGS84)

    def to_row(self) -> dict[str, Any]:
        """Plain dict (metadata table row, without the geometry)."""
        return asdict(self)


def tile_key(kind: str, source: str, item: str, crs: str, bounds: Sequence[float], px: int) -> str:
    """Stable identity of a tile (bounds rounded to 1e-6 CRS units)."""
    text = "|".join([kind, source, item, crs, *(f"{v:.6f}" for v in bounds), str(px)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def crs_text(crs: CRS) -> str:
    """Short authority string (``EPSG:32633``) when there is one, else WKT."""
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()


# --------------------------------------------------------------------------------------------
# Sources


@dataclass
class TileInput:
    """One thing to tile: an imagery source (raster file or XYZ cell) or a dataset folder."""

    kind: str
    path: str
    source: Any = None  # ImagerySource for raster/xyz


def resolve_inputs(
    specs: Sequence[str | Path],
    *,
    xyz_layout: str | None = None,
    xyz_zoom: int | None = None,
    capture_date: str | None = None,
) -> list[TileInput]:
    """Turn user paths into tiling inputs.

    A folder holding ``dataset.json`` is a terrascribe dataset; anything else goes through
    :func:`terrascribe.sources.imagery.open_imagery` (raster files, folders of rasters, XYZ tile
    folders, STAC catalogues).

    Raises:
        TilingError: If a path is missing or holds nothing to tile (the message names it).
    """
    from terrascribe.sources.imagery import ImageryError, RasterSource, XyzSource, open_imagery

    inputs: list[TileInput] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and (path / "dataset.json").exists():
            inputs.append(TileInput("dataset", str(path.resolve())))
            continue
        try:
            sources = open_imagery(
                spec, layout=xyz_layout, zoom=xyz_zoom, capture_date=capture_date
            )
        except ImageryError as err:
            raise TilingError(str(err)) from None
        for s in sources:
            if isinstance(s, XyzSource):
                inputs.append(TileInput("xyz", str(path.resolve()), s))
            elif isinstance(s, RasterSource):
                local = Path(s.path)
                where = str(local.resolve()) if local.exists() else s.path
                inputs.append(TileInput("raster", where, s))
            else:  # pragma: no cover - open_imagery only returns the two kinds above
                raise TilingError(f"{spec}: unsupported imagery source {type(s).__name__}")
    return inputs


# --------------------------------------------------------------------------------------------
# Grids


def grid_bounds(
    extent: tuple[float, float, float, float], size: float, stride: float
) -> Iterator[tuple[float, float, float, float]]:
    """Tile bounds covering ``extent`` (row-major from the top-left), the last ones may overhang."""
    left, bottom, right, top = extent
    ncols = max(1, math.ceil((right - left - size) / stride - 1e-9) + 1)
    nrows = max(1, math.ceil((top - bottom - size) / stride - 1e-9) + 1)
    for r in range(nrows):
        y1 = top - r * stride
        for c in range(ncols):
            x0 = left + c * stride
            yield (x0, y1 - size, x0 + size, y1)


def _units_per_metre(crs: CRS, lon: float, lat: float) -> float:
    # Metric projected CRSs (UTM...) state GSD in their own units, as raster resolutions do;
    # web mercator and geographic CRSs need the local scale.
    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    if crs.is_projected and unit in ("metre", "meter") and not crs.equals(WEB_MERCATOR):
        return 1.0
    return units_per_metre(crs, lon, lat)


def _raster_grid(path: str) -> tuple[tuple[float, float, float, float], tuple[float, ...]]:
    """Bounds and affine transform of a raster file (its own grid)."""
    import rasterio

    with rasterio.open(path) as ds:
        return tuple(ds.bounds), tuple(ds.transform)[:6]  # type: ignore[return-value]


def _source_extent(inp: TileInput, crs: CRS) -> tuple[float, float, float, float]:
    src = inp.source
    if inp.kind == "xyz":
        import mercantile

        xs = [mercantile.xy_bounds(*t) for t in src.tiles]
        return (
            min(b.left for b in xs),
            min(b.bottom for b in xs),
            max(b.right for b in xs),
            max(b.top for b in xs),
        )
    from terrascribe.geo import crs_bounds

    return crs_bounds(src.footprint.bounds, crs)


def iter_source_tiles(
    inp: TileInput, params: TilingParams, skipped: dict[str, int] | None = None
) -> Iterator[tuple[TileRef, np.ndarray]]:
    """Cut one raster or XYZ cell into tiles: ``(TileRef, (H, W, 3) uint8)`` pairs.

    Tiles with less than ``params.min_valid`` valid pixels are counted in ``skipped`` (by
    reason) and not yielded.
    """
    src = inp.source
    centre = src.footprint.centroid
    crs = src.crs if inp.kind == "xyz" else src.tile_crs(centre.x, centre.y)
    gsd = params.gsd_m or src.gsd_m
    k = _units_per_metre(crs, centre.x, centre.y)
    size = params.tile_px * gsd * k
    stride = size * (1.0 - params.overlap)
    crs_str = crs_text(crs)
    transform = None
    if inp.kind == "raster" and crs.equals(src.crs):
        extent, transform = _raster_grid(src.path)
    else:
        extent = _source_extent(inp, crs)
    item = src.name if inp.kind == "xyz" else ""
    for bounds in grid_bounds(extent, size, stride):
        if inp.kind == "xyz" and not src.footprint.intersects(box(*lonlat_bounds(bounds, crs))):
            continue  # outside this cell's tiles (cells are not rectangles at folder edges)
        tile = src.read(bounds, (params.tile_px, params.tile_px), crs)
        frac = tile.valid_fraction
        if frac < params.min_valid or frac == 0.0:
            if skipped is not None:
                skipped["nodata"] = skipped.get("nodata", 0) + 1
            continue
        window = (-1, -1, -1, -1)
        if transform is not None:
            with contextlib.suppress(GeoError):
                window = tuple(round(v) for v in pixel_window(bounds, transform))
        west, south, east, north = lonlat_bounds(bounds, crs)
        ref = TileRef(
            tile_key=tile_key(inp.kind, inp.path, item, crs_str, bounds, params.tile_px),
            source_kind=inp.kind,
            source=inp.path,
            item=item,
            crs=crs_str,
            minx=bounds[0],
            miny=bounds[1],
            maxx=bounds[2],
            maxy=bounds[3],
            col_off=window[0],
            row_off=window[1],
            width=window[2],
            height=window[3],
            tile_px=params.tile_px,
            gsd_m=float(gsd),
            date=src.capture_date,
            sensor=src.sensor,
            licence=src.licence,
            west=west,
            south=south,
            east=east,
            north=north,
            valid_fraction=round(frac, 4),
        )
        yield ref, tile.rgb


def iter_dataset_tiles(
    inp: TileInput, skipped: dict[str, int] | None = None
) -> Iterator[tuple[TileRef, np.ndarray]]:
    """Each sample of a terrascribe dataset as one tile (samples without bounds are skipped)."""
    from terrascribe.images import ImageError, decode_rgb
    from terrascribe.shards import Dataset

    ds = Dataset(inp.path)
    for sample in ds.samples(with_images=True):
        b = sample.bounds
        if b is None:
            if skipped is not None:
                skipped["no_bounds"] = skipped.get("no_bounds", 0) + 1
            continue
        try:
            img = decode_rgb(sample.image, source=f"{inp.path}:{sample.key}")
        except ImageError:
            if skipped is not None:
                skipped["bad_image"] = skipped.get("bad_image", 0) + 1
            continue
        rgb = np.asarray(img)
        if b.native is not None and b.crs:
            crs_str, bounds = b.crs, tuple(b.native)
        else:
            crs_str, bounds = "EPSG:4326", (b.west, b.south, b.east, b.north)
        yield (
            TileRef(
                tile_key=tile_key("dataset", inp.path, sample.key, crs_str, bounds, rgb.shape[1]),
                source_kind="dataset",
                source=inp.path,
                item=sample.key,
                crs=crs_str,
                minx=bounds[0],
                miny=bounds[1],
                maxx=bounds[2],
                maxy=bounds[3],
                col_off=-1,
                row_off=-1,
                width=-1,
                height=-1,
                tile_px=int(rgb.shape[1]),
                gsd_m=float(sample.gsd_m or 0.0),
                date=sample.capture_date,
                sensor=sample.sensor,
                licence=sample.licence,
                west=b.west,
                south=b.south,
                east=b.east,
                north=b.north,
                valid_fraction=1.0,
            ),
            rgb,
        )


def iter_tiles(
    inputs: Sequence[TileInput], params: TilingParams, skipped: dict[str, int] | None = None
) -> Iterator[tuple[TileRef, np.ndarray]]:
    """All tiles of all inputs, in input order."""
    for inp in inputs:
        if inp.kind == "dataset":
            yield from iter_dataset_tiles(inp, skipped)
        else:
            yield from iter_source_tiles(inp, params, skipped)


def read_tile(ref: TileRef | dict[str, Any], size_px: int, *, _cache: dict | None = None):
    """Read a tile again from its source, resampled to ``size_px`` a side (a PIL image).

    Raises:
        TilingError: If the source has gone or cannot serve the tile.
    """
    from PIL import Image

    from terrascribe.images import decode_rgb
    from terrascribe.sources.imagery import ImageryError

    row = ref.to_row() if isinstance(ref, TileRef) else ref
    kind, path = row["source_kind"], row["source"]
    try:
        if kind == "dataset":
            from terrascribe.shards import Dataset

            for sample in Dataset(path).samples(keys=[row["item"]]):
                img = decode_rgb(sample.image, source=f"{path}:{row['item']}")
                img.thumbnail((size_px, size_px))
                return img
            raise TilingError(f"{path}: sample {row['item']} not found")
        src = _open_source(kind, path, row["item"], _cache)
        bounds = (row["minx"], row["miny"], row["maxx"], row["maxy"])
        tile = src.read(bounds, (size_px, size_px), as_crs(row["crs"]))
        return Image.fromarray(tile.rgb, mode="RGB")
    except (ImageryError, OSError, ValueError) as err:
        if isinstance(err, TilingError):
            raise
        raise TilingError(f"{path}: cannot read tile ({err})") from None


def _open_source(kind: str, path: str, item: str, cache: dict | None):
    from terrascribe.sources.imagery import RasterSource, open_xyz

    key = (kind, path)
    if cache is not None and key in cache:
        src = cache[key]
    elif kind == "raster":
        src = RasterSource(path)
    elif kind == "xyz":
        zoom = re.search(r"-z(\d+)-", item)
        cells = open_xyz(path, zoom=int(zoom[1]) if zoom else None)
        src = cells[0]  # every cell mosaics the whole folder (all_tiles)
    else:
        raise TilingError(f"unknown source kind {kind!r}")
    if cache is not None:
        cache[key] = src
    return src


__all__ = [
    "SOURCE_KINDS",
    "TileInput",
    "TileRef",
    "TilingError",
    "TilingParams",
    "grid_bounds",
    "iter_tiles",
    "read_tile",
    "resolve_inputs",
    "tile_key",
]
