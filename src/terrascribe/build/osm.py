"""The SkyScript method: join OpenStreetMap objects with overhead imagery into captioned tiles.

Three stages, each restartable:

1. **Extract** (:func:`terrascribe.sources.osm.extract_osm`): OSM objects with at least one
   potentially visible tag -> partitioned GeoParquet in ``OUT/.osm-features`` (skipped when the
   input already is such an extract).
2. **Plan** (:func:`plan_osm_jobs`, in the calling process): for every object, the imagery sources
   whose footprint covers it and whose GSD is fine enough for its tags (``TagTable.max_gsd``); the
   finest (then the most recent) wins. Objects mapped after the image was captured are dropped or
   flagged; per-tag quotas are applied in a seeded order. Chosen objects are grouped by imagery
   source into jobs of at most ``objects_per_shard``, of even sizes (objects in a seeded order, so
   that a shard is a random sample of its source); every rejected object becomes a
   :class:`~terrascribe.records.Skip` with its reason, written in the last shard's stats.
3. **Tiles** (:func:`make_osm_items`, in workers): per object a tile centred on the point, on a
   random node of the line, or fitted to the polygon's bounding box within ``tile_px_range``, with
   a bounded random off-centre shift; tiles that are mostly nodata or blank are skipped. Every
   OSM object in the tile is stored in pixel space (box, clipped outline, tags) and three
   captions are written from tags: ``title``, ``title_multi_objects`` (SkyScript's two styles)
   and ``grounded`` (counts and simple relations).

Randomness for an object comes from ``(seed, object type, object id)``, so the output does not
depend on the number of workers or the order jobs run in.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from terrascribe.geo import WGS84, pixel_transform, transformer
from terrascribe.records import Bounds, ImageObject, Sample, Skip, make_key, normalise_captions
from terrascribe.sources.imagery import ImagerySource, Tile, open_imagery, tile_bounds
from terrascribe.sources.osm import (
    DONE_FILE,
    OsmObject,
    extract_osm,
    read_parquet_features,
    visible_feature_keys,
    visible_tag_filter,
)

if TYPE_CHECKING:
    from terrascribe.text.osm_tags import TagRule, TagTable

BUILDER = "osm"
CAPTION_STYLES = ("title", "title_multi_objects", "grounded")
HISTORY_POLICIES = ("flag", "drop")
OSM_LICENCE = "ODbL-1.0 (OpenStreetMap contributors)"
_TYPE_CODE = {"node": 1, "way": 2, "relation": 3}


class OsmBuildError(ValueError):
    """The OSM and imagery inputs cannot make a dataset (no overlap, bad options...)."""


@dataclass(frozen=True)
class TileOptions:
    """How tiles are cut and checked (recorded in ``dataset.json``; part of the resume check).

    Attributes:
        tile_px_range: Smallest and largest tile side in native pixels; points and lines get the
            smallest, polygons their bounding box plus ``margin`` clipped to this range.
        margin: Extra space around a polygon, as a fraction of its bounding-box side.
        out_size_px: Resample every tile to this side (``None``: keep the tile's pixel size).
        gsd_m: Read at this GSD instead of the native one (never finer than native).
        max_offcentre: Largest random shift of the tile centre, as a fraction of the tile side;
            polygons that fit are never shifted out of the tile.
        min_valid_fraction: Skip tiles with less data than this (nodata collars, missing tiles).
        min_std: Skip tiles whose pixel standard deviation is below this (blank, clouds, fill).
        too_large: What to do with polygons larger than the largest tile: ``"skip"`` or ``"fit"``
            (read them coarser so they fit).
        context_min_fraction: Keep another object as tile content only if at least this fraction
            of its area/length (or its point) lies in the tile.
    """

    tile_px_range: tuple[int, int] = (224, 512)
    margin: float = 0.2
    out_size_px: int | None = None
    gsd_m: float | None = None
    max_offcentre: float = 0.25
    min_valid_fraction: float = 0.9
    min_std: float = 2.0
    too_large: str = "skip"
    context_min_fraction: float = 0.05

    def __post_init__(self) -> None:
        lo, hi = self.tile_px_range
        if not (8 <= lo <= hi):
            raise OsmBuildError(f"tile_px_range must satisfy 8 <= min <= max, got {lo, hi}")
        if not 0 <= self.max_offcentre <= 0.5:
            raise OsmBuildError(f"max_offcentre must be in [0, 0.5], got {self.max_offcentre}")
        if not 0 <= self.min_valid_fraction <= 1:
            raise OsmBuildError(
                f"min_valid_fraction must be in [0, 1], got {self.min_valid_fraction}"
            )
        if self.too_large not in ("skip", "fit"):
            raise OsmBuildError(f"too_large must be 'skip' or 'fit', got {self.too_large!r}")


@dataclass
class OsmJob:
    """One shard's worth of work: objects to tile from one imagery source, or planning skips."""

    features: str
    source: ImagerySource | None
    refs: list[str]
    tiles: TileOptions
    seed: int
    table_path: str | None
    history_flags: dict[str, str] = field(default_factory=dict)
    skips: list[Skip] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Planning


@lru_cache(maxsize=8)
def _load_table(path: str | None) -> TagTable:
    # Cached per process: jobs of one build share the table instead of re-parsing the CSV.
    from terrascribe.text.osm_tags import TagTable

    return TagTable.load(path)


def _order_key(seed: int, obj: OsmObject) -> str:
    return hashlib.sha256(f"{seed}:{obj.ref}".encode()).hexdigest()


def _main_tag(table: TagTable, tags: Mapping[str, str], gsd_m: float) -> str | None:
    rules = table.visible_rules(tags, gsd_m)
    if not rules:
        return None
    rule = rules[0]
    value = rule.value if rule.value not in ("", "*") else tags.get(rule.key, "")
    return f"{rule.key}={value}"


def _history(obj: OsmObject, capture_date: str | None) -> str | None:
    """``mapped_after_capture`` (created after the image), ``edited_after_capture``, or None."""
    if capture_date is None or obj.timestamp is None:
        return None
    if obj.timestamp[:10] <= capture_date[:10]:
        return None
    return "mapped_after_capture" if obj.version <= 1 else "edited_after_capture"


@dataclass
class Plan:
    """Jobs plus what planning decided (for the report)."""

    jobs: list[OsmJob]
    chosen: int
    skips: list[Skip]
    per_source: dict[str, int]


def plan_osm_jobs(
    features: str | Path,
    sources: Sequence[ImagerySource],
    *,
    tiles: TileOptions,
    seed: int,
    table_path: str | None = None,
    per_tag_quota: int | None = None,
    history_policy: str = "flag",
    objects_per_shard: int = 1000,
) -> Plan:
    """Choose the imagery for every extracted object and group the choices into jobs.

    Raises:
        OsmBuildError: If no object lies inside any imagery footprint.
    """
    if history_policy not in HISTORY_POLICIES:
        raise OsmBuildError(f"history_policy must be one of {HISTORY_POLICIES}")
    table = _load_table(table_path)
    best: dict[str, tuple[tuple[Any, ...], ImagerySource, OsmObject]] = {}
    reasons: dict[str, tuple[str, str]] = {}
    flags: dict[str, str] = {}
    seen_any = False
    for source in sorted(sources, key=lambda s: s.name):
        footprint = source.footprint
        shapely.prepare(footprint)  # many point-in-polygon tests follow
        gsd = max(source.gsd_m, tiles.gsd_m or 0.0)
        for obj in read_parquet_features(features, bbox=footprint.bounds):
            seen_any = True
            if not footprint.intersects(obj.geometry.representative_point()):
                reasons.setdefault(obj.ref, ("outside imagery", f"not inside {source.name}"))
                continue
            max_gsd = table.max_gsd(obj.tags)
            if max_gsd is None or not table.visible_rules(obj.tags, gsd):
                reasons.setdefault(
                    obj.ref,
                    (
                        "imagery too coarse",
                        f"{source.name} at {gsd:.2f} m; tags need <= {max_gsd} m",
                    ),
                )
                continue
            history = _history(obj, source.capture_date)
            if history == "mapped_after_capture" and history_policy == "drop":
                reasons[obj.ref] = (
                    "mapped after capture",
                    f"created {obj.timestamp}, {source.name} captured {source.capture_date}",
                )
                continue
            rank = (gsd, _neg_date(source.capture_date), source.name)
            if obj.ref not in best or rank < best[obj.ref][0]:
                best[obj.ref] = (rank, source, obj)
                if history:
                    flags[obj.ref] = history
                else:
                    flags.pop(obj.ref, None)
    if not seen_any:
        extents = ", ".join(
            f"{s.name} {tuple(round(v, 5) for v in s.footprint.bounds)}" for s in sources
        )
        raise OsmBuildError(
            f"no OSM object in {features} lies within the imagery footprints ({extents}): "
            "the imagery does not overlap the OSM data"
        )
    for ref in best:
        reasons.pop(ref, None)
    # Quotas: a seeded order so that which objects of a frequent tag are kept is random but fixed.
    chosen = sorted(best.values(), key=lambda item: _order_key(seed, item[2]))
    per_tag: Counter[str] = Counter()
    groups: dict[str, list[str]] = {}
    by_name = {s.name: s for s in sources}
    for rank, source, obj in chosen:
        tag = _main_tag(table, obj.tags, rank[0]) or "unknown"
        if per_tag_quota is not None and per_tag[tag] >= per_tag_quota:
            reasons[obj.ref] = ("tag quota reached", f"{tag}: quota {per_tag_quota}")
            continue
        per_tag[tag] += 1
        groups.setdefault(source.name, []).append(obj.ref)
    jobs: list[OsmJob] = []
    for name in sorted(groups):
        # Kept in the seeded order, not id order: ids sort nodes before ways, so id-ordered shards
        # would each hold one kind of object; the trainer shuffles only across a few shards.
        refs = groups[name]
        for chunk in _even_chunks(refs, objects_per_shard):
            jobs.append(
                OsmJob(
                    features=str(features),
                    source=by_name[name],
                    refs=chunk,
                    tiles=tiles,
                    seed=seed,
                    table_path=table_path,
                    history_flags={r: flags[r] for r in chunk if r in flags},
                )
            )
    skips = [Skip(ref, reason, detail) for ref, (reason, detail) in sorted(reasons.items())]
    jobs.append(OsmJob(str(features), None, [], tiles, seed, table_path, skips=skips))
    return Plan(
        jobs, sum(len(v) for v in groups.values()), skips, {k: len(v) for k, v in groups.items()}
    )


def _even_chunks(items: list[str], most: int) -> Iterator[list[str]]:
    """``items`` in order, cut into the fewest chunks of at most ``most``, sizes differing by <= 1.

    Full chunks plus a remainder (1000 + 818) leave one worker waiting on the largest shard of
    a source; even chunks (909 + 909) keep workers equally busy.
    """
    n_chunks = -(-len(items) // most)
    base, extra = divmod(len(items), max(n_chunks, 1))
    start = 0
    for i in range(n_chunks):
        end = start + base + (1 if i < extra else 0)
        yield items[start:end]
        start = end


def _neg_date(date: str | None) -> str:
    # Later dates sort first: invert the digits of YYYY-MM-DD.
    if not date:
        return "~"
    return "".join(chr(ord("9") - ord(c) + ord("0")) if c.isdigit() else c for c in date)


def _ref_sort(ref: str) -> tuple[str, int]:
    return (ref[0], int(ref[1:]))


# --------------------------------------------------------------------------------------------
# Tiles


def make_osm_items(job: OsmJob) -> Iterator[Sample | Skip]:
    """Turn one job into samples (and skips). Module-level, so workers and Ray can pickle it.

    Tiles are read a batch of objects ahead of the rest of the work: on a background thread
    when reads resample, warp or fetch (the imagery read releases the GIL), in line when they
    are plain copies of local pixels. Items still come out in the job's order.
    """
    yield from job.skips
    if job.source is None or not job.refs:
        return
    table = _load_table(job.table_path)
    source = job.source
    context = _context(job.features, source)

    def finish(ref: str, placed: Skip | _Placement, read: Tile | Exception | None) -> Sample | Skip:
        if isinstance(placed, Skip):
            return placed
        try:
            if isinstance(read, Exception):
                raise read
            rgb = _checked_pixels(read, job.tiles)
            return _make_sample(placed, rgb, context, source, table, job)
        except Exception as err:  # one bad object (read error, odd geometry) must not stop a shard
            return _skip_for(ref, err)

    def finish_oldest() -> Iterator[Sample | Skip]:
        refs, placed, reading = pending.popleft()
        tiles = reading.result() if isinstance(reading, Future) else reading
        return map(finish, refs, placed, tiles)

    # One reader thread: a source's dataset handle is never used by two threads at once. It
    # reads a batch per task (a hand-over of the GIL per tile costs more than a cheap read).
    # Batches that are plain copies of local pixels are read in line, cheaper still, once the
    # reader has nothing left to read (never both at once: the handle is not thread-safe).
    pending: deque[tuple[list[str], list[Skip | _Placement], Future | list]] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="tile-read") as reader:
        for start in range(0, len(job.refs), _READ_BATCH):
            refs = job.refs[start : start + _READ_BATCH]
            placed = [_place(ref, context, source, job) for ref in refs]
            reader_idle = not any(isinstance(r, Future) and not r.done() for *_, r in pending)
            if reader_idle and all(_copies_pixels(source, p) for p in placed):
                pending.append((refs, placed, _read_tiles(source, placed)))
            else:
                pending.append((refs, placed, reader.submit(_read_tiles, source, placed)))
            if len(pending) > 1:
                yield from finish_oldest()
        while pending:
            yield from finish_oldest()


# Tiles read per reader task: one batch is read while the one before it is captioned; two
# batches of the largest tiles (512 px) hold 12 MB of pixels.
_READ_BATCH = 8


def _place(ref: str, context: _Context, source: ImagerySource, job: OsmJob) -> Skip | _Placement:
    """Where ``ref``'s tile lies, or why it is skipped."""
    obj = context.by_ref.get(ref)
    if obj is None:
        return Skip(ref, "object missing from extract", job.features)
    try:
        return _place_tile(obj, source, job)
    except Exception as err:
        return _skip_for(ref, err)


def _copies_pixels(source: ImagerySource, placed: Skip | _Placement) -> bool:
    if isinstance(placed, Skip):
        return True
    return source.copies_pixels(placed.bounds, (placed.out_px, placed.out_px), placed.crs)


def _read_tiles(
    source: ImagerySource, placed: list[Skip | _Placement]
) -> list[Tile | Exception | None]:
    """Read every placed tile; a failed read is returned, not raised (None for skips).

    Only reads run here: on the reader thread, each further step (numpy checks release and
    retake the GIL) would wait for the busy main thread to let go of the GIL.
    """
    tiles: list[Tile | Exception | None] = []
    for p in placed:
        if isinstance(p, Skip):
            tiles.append(None)
            continue
        try:
            tiles.append(source.read(p.bounds, (p.out_px, p.out_px), p.crs))
        except Exception as err:
            tiles.append(err)
    return tiles


_POINT, _LINE, _POLYGON = 0, 1, 2
_KIND_CODE = {"point": _POINT, "line": _LINE, "polygon": _POLYGON}


@dataclass
class _Context:
    """Everything extracted around one imagery source, shared by its jobs in a process."""

    objects: list[OsmObject]
    by_ref: dict[str, OsmObject]
    geoms: np.ndarray  # lon/lat geometries
    kinds: np.ndarray  # _POINT, _LINE or _POLYGON
    areas: np.ndarray  # in square degrees (lon/lat)
    refs: list[str]
    tags: list[dict[str, str]]  # tags as str -> str (what ImageObject stores)
    native: dict[str, tuple[np.ndarray, shapely.STRtree]] = field(default_factory=dict)
    labels: dict[tuple[int, float], tuple[str, TagRule | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: list[OsmObject]) -> _Context:
        # In ref order (nodes, then ways, then relations, by id), so that a tile's objects,
        # taken in index order, are already in the order samples list them.
        objects = sorted(objects, key=lambda o: _ref_sort(o.ref))
        geoms = np.empty(len(objects), dtype=object)
        geoms[:] = [o.geometry for o in objects]
        refs = [o.ref for o in objects]
        return cls(
            objects,
            dict(zip(refs, objects, strict=True)),
            geoms,
            np.array([_KIND_CODE[o.kind] for o in objects], dtype=np.int8),
            shapely.area(geoms),
            refs,
            [{str(k): str(v) for k, v in o.tags.items()} for o in objects],
        )

    def label(self, i: int, table: TagTable, gsd: float) -> tuple[str, TagRule | None]:
        """Object ``i``'s label at ``gsd`` and its main visible rule there (None: nothing shows).

        Tiles share most of their objects with their neighbours: asked once per object and GSD.
        """
        key = (i, gsd)
        found = self.labels.get(key)
        if found is None:
            tags = self.objects[i].tags
            rules = table.visible_rules(tags, gsd)
            label = rules[0].phrase if rules else next(iter(sorted(tags.items())), ("object",))[0]
            if len(self.labels) >= 200_000:  # bounded: fit-to-size tiles bring many GSDs
                self.labels.clear()
            found = self.labels[key] = (label or "object", rules[0] if rules else None)
        return found

    def in_crs(self, crs: Any) -> tuple[np.ndarray, shapely.STRtree]:
        """All objects' geometries in ``crs`` and a tree over them, made once and kept.

        Tiles are queried in their own CRS, where a tile is a plain rectangle: the same
        objects as a query with the tile's outline in lon/lat, at a quarter of the cost.
        """
        key = crs.srs or crs.to_wkt()
        found = self.native.get(key)
        if found is None:
            t = transformer(WGS84, crs)
            geoms = shapely.transform(
                self.geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))
            )
            if len(self.native) >= 4:  # geographic sources tile in several UTM zones
                self.native.clear()
            found = self.native[key] = (geoms, shapely.STRtree(geoms))
        return found


_CONTEXTS: dict[tuple[Any, ...], _Context] = {}


def _context(features: str, source: ImagerySource) -> _Context:
    """Objects around ``source`` (a tile may reach outside its footprint), cached per process.

    Jobs of one source read the same objects: reading and indexing them once per process
    instead of once per job is most of a job's fixed cost. The key holds the parts' sizes and
    times, so a rewritten extract is read again.
    """
    pad = 0.01
    west, south, east, north = source.footprint.bounds
    bbox = (west - pad, south - pad, east + pad, north + pad)
    root = Path(features)
    parts = sorted(root.rglob("part-*.parquet")) if root.is_dir() else [root]
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in parts if p.exists())
    key = (features, bbox, stamp)
    context = _CONTEXTS.get(key)
    if context is None:
        context = _Context.of(list(read_parquet_features(features, bbox=bbox)))
        if len(_CONTEXTS) >= 2:  # bounded: one or two sources' objects per process
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[key] = context
    return context


class _SkipTile(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _skip_for(ref: str, err: Exception) -> Skip:
    """The skip recorded for an object whose tile failed: its stated reason, or the error."""
    if isinstance(err, _SkipTile):
        return Skip(ref, err.reason, err.detail)
    return Skip(ref, "tile failed", f"{type(err).__name__}: {err}")


def _tile_geometry(
    obj: OsmObject, gsd: float, opts: TileOptions, rng: np.random.Generator
) -> tuple[float, float, int, float, tuple[float, float]]:
    """Centre ``(lon, lat)``, tile side (px), GSD and offset (px) for an object."""
    lo, hi = opts.tile_px_range
    geom = obj.geometry
    extent_px = 0.0
    if obj.kind == "point":
        lon, lat = geom.x, geom.y
    elif obj.kind == "line":
        coords = shapely.get_coordinates(geom)
        lon, lat = coords[int(rng.integers(len(coords)))]
    else:
        minx, miny, maxx, maxy = geom.bounds
        lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
        extent_px = max(obj.width_m, obj.height_m) / gsd * (1 + opts.margin)
    side = int(min(max(math.ceil(extent_px), lo), hi))
    if extent_px > hi:
        if opts.too_large == "skip":
            raise _SkipTile(
                "object larger than tile",
                f"{max(obj.width_m, obj.height_m):.0f} m needs {extent_px:.0f} px > {hi} px",
            )
        gsd = gsd * extent_px / hi
    reach = opts.max_offcentre * side
    if extent_px:  # keep a polygon that fits fully inside the tile
        reach = min(reach, max((side - extent_px) / 2, 0.0))
    offset = (
        (float(rng.uniform(-reach, reach)), float(rng.uniform(-reach, reach)))
        if reach
        else (0.0, 0.0)
    )
    return float(lon), float(lat), side, gsd, offset


@dataclass
class _Placement:
    """Where an object's tile lies, and the object's random generator (captions draw from it)."""

    obj: OsmObject
    rng: np.random.Generator
    side: int
    offset: tuple[float, float]
    bounds: tuple[float, float, float, float]
    crs: Any
    out_px: int
    out_gsd: float


def _place_tile(obj: OsmObject, source: ImagerySource, job: OsmJob) -> _Placement:
    opts = job.tiles
    rng = np.random.default_rng([job.seed, _TYPE_CODE[obj.osm_type], obj.osm_id])
    gsd = max(source.gsd_m, opts.gsd_m or 0.0)
    lon, lat, side, gsd, offset = _tile_geometry(obj, gsd, opts, rng)
    bounds, crs = tile_bounds(source, lon, lat, (side, side), gsd, offset)
    out_px = opts.out_size_px or side
    # At the native resolution the tile moves (by under half a pixel) onto the imagery's pixel
    # grid, so its read is a copy of pixels rather than a resampling of them.
    bounds = source.snap(bounds, (out_px, out_px), crs)
    return _Placement(obj, rng, side, offset, bounds, crs, out_px, gsd * side / out_px)


def _checked_pixels(tile: Tile, opts: TileOptions) -> np.ndarray:
    """The tile's RGB pixels, or :class:`_SkipTile` if it is mostly nodata or blank."""
    n_valid = tile.valid.size if tile.all_valid else int(np.count_nonzero(tile.valid))
    valid_fraction = n_valid / tile.valid.size if tile.valid.size else 0.0
    if valid_fraction < opts.min_valid_fraction:
        raise _SkipTile("tile mostly nodata", f"{valid_fraction:.2f} of pixels have data")
    all_valid = n_valid == tile.valid.size
    if not (all_valid and _surely_not_blank(tile.rgb, opts.min_std)):
        if all_valid:  # same pixels, same order: no boolean-mask copy
            std = float(tile.rgb.std())
        else:
            std = float(tile.rgb[tile.valid].std()) if n_valid else 0.0
        if std < opts.min_std:
            raise _SkipTile("blank tile", f"pixel std {std:.2f} < {opts.min_std}")
    return tile.rgb


def _make_sample(
    placement: _Placement,
    rgb: np.ndarray,
    context: _Context,
    source: ImagerySource,
    table: TagTable,
    job: OsmJob,
) -> Sample:
    from terrascribe.text import osm_captions

    obj, rng, side, offset = placement.obj, placement.rng, placement.side, placement.offset
    bounds, crs, out_px, out_gsd = (
        placement.bounds,
        placement.crs,
        placement.out_px,
        placement.out_gsd,
    )
    tile_box = shapely.box(*bounds)  # the array function: same polygon, no Python class overhead
    native, tree = context.in_crs(crs)
    hits = np.sort(tree.query(tile_box, predicate="intersects"))
    to_px = pixel_transform(bounds, (out_px, out_px))
    in_tile = _image_objects(context, native, hits, to_px, out_px, table, out_gsd, job.tiles)
    # The focus first, then the others in ref order (the context's order).
    refs = context.refs
    at = next((k for k, (i, _, _) in enumerate(in_tile) if refs[i] == obj.ref), None)
    if at is None:
        raise _SkipTile("object not in tile", "the focus object does not reach the tile")
    in_tile.insert(0, in_tile.pop(at))
    focus_io = in_tile[0][1]
    objects = context.objects
    # The other objects that show at this GSD, each with its main rule (its kind in captions).
    others = [(objects[i], io, kind) for i, io, kind in in_tile[1:] if kind is not None]
    focus_t = osm_captions.TileObject(obj.tags, focus_io.bbox_xyxy, obj.area_m2, obj.length_m)
    made = osm_captions.make_captions(
        CAPTION_STYLES,
        focus_t,
        [o.tags for o, _, _ in others],
        table,
        rng,
        gsd_m=out_gsd,
        image_size=(out_px, out_px),
        other_kinds=[kind for _, _, kind in others],
        other_boxes=[io.bbox_xyxy for _, io, _ in others],
    )
    styles = {k: c.text for k, c in made.items() if c is not None and c.text}
    captions = normalise_captions([styles[s] for s in CAPTION_STYLES if styles.get(s)])
    if not captions:
        raise _SkipTile("no caption", "no visible tag could be put into words")
    # Edges densified: a projected tile's outline is curved in lon/lat.
    west, south, east, north = transformer(crs, WGS84).transform_bounds(*bounds, densify_pts=9)
    history = job.history_flags.get(obj.ref)
    extra: dict[str, Any] = {
        "caption_styles": styles,
        "caption_templates": {k: c.template_id for k, c in made.items() if c is not None},
        "main_tag": _main_tag(table, obj.tags, out_gsd),
        "imagery": source.name,
        "osm": {
            "ref": obj.ref,
            "version": obj.version,
            "timestamp": obj.timestamp,
            "tags": dict(sorted(obj.tags.items())),
            "kind": obj.kind,
            "area_m2": round(obj.area_m2, 2),
            "length_m": round(obj.length_m, 2),
        },
        "tile": {"side_px": side, "offset_px": [round(v, 2) for v in offset]},
    }
    if history:
        extra["history"] = history
    if obj.note:
        extra["geometry_note"] = obj.note
    licence = f"imagery: {source.licence or 'unknown'}; labels: {OSM_LICENCE}"
    return Sample(
        key=make_key("osm", obj.ref, source.name),
        image=rgb,
        captions=captions,
        source="osm",
        source_ids=[obj.ref],
        bounds=Bounds(west, south, east, north, crs=_crs_text(crs), native=tuple(bounds)),
        gsd_m=round(out_gsd, 6),
        capture_date=source.capture_date,
        sensor=source.sensor,
        objects=[io for _, io, _ in in_tile],
        licence=licence,
        extra=extra,
    )


def _surely_not_blank(rgb: np.ndarray, min_std: float) -> bool:
    """Whether the pixel std is surely >= ``min_std``, from the top rows (1/16) alone.

    For any subset S of N values, ``N var(all) >= |S| var(S)`` (law of total variance), so
    ``std(S) * sqrt(|S| / N) >= min_std`` proves the tile is not blank at a sixteenth of the
    cost of the full std (imagery has std in the tens, far above 4 * min_std); tiles that fail
    it get the exact test.
    """
    import cv2  # imported here: the CLI loads this module for --help

    rows = max(rgb.shape[0] // 16, 1)
    # OpenCV's std of the rows as one flat channel: the std of all their values, like numpy's,
    # at a twentieth of its cost (numpy converts every value to float64 first).
    _, std = cv2.meanStdDev(np.ascontiguousarray(rgb[:rows]).reshape(-1))
    bound = float(std[0, 0]) * math.sqrt(rows / rgb.shape[0])
    return bound >= min_std * (1 + 1e-6)


@lru_cache(maxsize=64)
def _crs_text_of(key: str) -> str:
    from pyproj import CRS

    return CRS.from_user_input(key).to_string()


def _crs_text(crs: Any) -> str:
    """``crs.to_string()`` (an authority lookup, ~10 us), once per CRS."""
    return _crs_text_of(crs.srs) if crs.srs else crs.to_string()


def _image_objects(
    context: _Context,
    native: np.ndarray,
    hits: np.ndarray,
    to_px: Any,
    out_px: int,
    table: TagTable,
    gsd: float,
    opts: TileOptions,
) -> list[tuple[int, ImageObject, TagRule | None]]:
    """The tile's OSM objects in pixel space (box, clipped outline, tags), in ``hits`` order.

    ``native`` holds every context object's geometry in the tile's CRS. Returns
    ``(object index in context, ImageObject, main visible rule or None)`` triples. Lines and
    polygons are clipped to the image (GEOS rectangle clipping); points outside it are left out.
    Polygons keeping less than ``context_min_fraction`` of their area in the image are left out
    too, unless they cover the whole image. Geometry work runs on all candidates at once and
    the values are checked in bulk here, so the objects are made without ``ImageObject``'s
    per-field checks.
    """
    kinds = context.kinds[hits]
    px = shapely.transform(native[hits], to_px)
    box = shapely.bounds(px)
    if not np.isfinite(box).all():  # never from finite inputs; keep the check
        raise ValueError("object geometry has non-finite pixel coordinates")
    size = float(out_px)
    inside = (box[:, 0] >= 0) & (box[:, 1] >= 0) & (box[:, 2] <= size) & (box[:, 3] <= size)
    keep = inside.copy()
    cut = np.flatnonzero(~inside & (kinds != _POINT))
    clipped = px.copy()
    if len(cut):
        clipped[cut] = shapely.clip_by_rect(px[cut], 0.0, 0.0, size, size)
        keep[cut] = ~shapely.is_empty(clipped[cut])
        box[cut] = shapely.bounds(clipped[cut])
        polys = cut[(kinds[cut] == _POLYGON) & (context.areas[hits[cut]] > 0)]
        if len(polys):
            # Coverage is measured in pixels: the tile's CRS is metric, lon/lat degrees are not.
            kept_area = shapely.area(clipped[polys])
            share = kept_area / shapely.area(px[polys])
            whole_image = kept_area >= size * size * (1 - 1e-9)
            keep[polys[(share < opts.context_min_fraction) & ~whole_image]] = False
    chosen = np.flatnonzero(keep)
    rings = _main_rings(clipped, keep & (kinds == _POLYGON))
    bounds = _round2(box).tolist()
    out: list[tuple[int, ImageObject, TagRule | None]] = []
    make, tags, refs = ImageObject.checked_by_caller, context.tags, context.refs
    for j, i in zip(chosen.tolist(), hits[chosen].tolist(), strict=True):
        label, rule = context.label(i, table, gsd)
        made = make(label, tuple(bounds[j]), dict(tags[i]), rings.get(j), refs[i])
        out.append((i, made, rule))
    return out


def _round2(values: np.ndarray) -> np.ndarray:
    """``round(v, 2)`` for every value, as Python rounds (exact decimal ties), vectorised.

    ``rint(v * 100) / 100`` is the same except where ``v * 100`` lies within rounding error of
    a half (Python decides those from the exact decimal value): those few go through ``round``.
    """
    scaled = values * 100.0
    out = np.rint(scaled) / 100.0
    near_tie = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-6
    if near_tie.any():
        flat_out, flat_in = out.reshape(-1), np.ravel(values)
        for k in np.flatnonzero(near_tie).tolist():
            flat_out[k] = round(float(flat_in[k]), 2)
    return out


def _main_rings(clipped: np.ndarray, polygon: np.ndarray) -> dict[int, tuple | None]:
    """:func:`_main_ring` of ``clipped[j]`` for every ``j`` where ``polygon`` is set.

    Rings run clockwise in pixel coordinates (y down), whatever the OSM way's direction and
    whether the polygon was clipped. Plain polygons (nearly all) are done in one GEOS call for
    all of them; multi-part results take the per-geometry path.
    """
    rings: dict[int, tuple | None] = {}
    index = np.flatnonzero(polygon)
    if not len(index):
        return rings
    oriented = shapely.orient_polygons(clipped[index], exterior_cw=True)
    simple = shapely.get_type_id(oriented) == 3  # Polygon
    for k in np.flatnonzero(~simple).tolist():
        rings[int(index[k])] = _main_ring(oriented[k])
    plain = index[simple]
    if not len(plain):
        return rings
    coords, owner = shapely.get_coordinates(
        shapely.get_exterior_ring(oriented[simple]), return_index=True
    )
    if not np.isfinite(coords).all():
        raise ValueError("object outline has non-finite pixel coordinates")
    rounded = _round2(coords).tolist()
    ends = np.searchsorted(owner, np.arange(1, len(plain) + 1)).tolist()
    start = 0
    for j, end in zip(plain.tolist(), ends, strict=True):
        ring = rounded[start : end - 1]  # the closing point repeats the first
        rings[j] = tuple(map(tuple, ring)) if len(ring) >= 3 else None
        start = end
    return rings


def _main_ring(clipped: BaseGeometry) -> tuple[tuple[float, float], ...] | None:
    """The largest polygon's outer ring, rounded to 0.01 px (None if nothing is left)."""
    parts = [g for g in getattr(clipped, "geoms", [clipped]) if g.geom_type == "Polygon"]
    if not parts:
        return None
    main = max(parts, key=lambda g: g.area)
    coords = shapely.get_coordinates(main.exterior)[:-1].tolist()
    ring = [(round(x, 2), round(y, 2)) for x, y in coords]
    return tuple(ring) if len(ring) >= 3 else None


# --------------------------------------------------------------------------------------------
# Report


def osm_report(out: Path) -> dict[str, Any]:
    """Samples per main tag, imagery source and GSD, skip reasons, and a PNG map of samples."""
    import pyarrow.parquet as pq

    from terrascribe.shards import PARTS_DIR

    parts = sorted((out / PARTS_DIR).glob("shard-*.parquet"))
    tags: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    gsds: Counter[str] = Counter()
    lons: list[float] = []
    lats: list[float] = []
    history: Counter[str] = Counter()
    for part in parts:
        table = pq.read_table(part, columns=["extra", "gsd_m", "west", "south", "east", "north"])
        for row in table.to_pylist():
            extra = json.loads(row["extra"])
            tags[extra.get("main_tag") or "unknown"] += 1
            sources[extra.get("imagery") or "unknown"] += 1
            gsds[f"{row['gsd_m']:.2f}"] += 1
            if extra.get("history"):
                history[extra["history"]] += 1
            lons.append((row["west"] + row["east"]) / 2)
            lats.append((row["south"] + row["north"]) / 2)
    reasons: Counter[str] = Counter()
    for stats in out.glob("shard-*.stats.json"):
        reasons.update(json.loads(stats.read_text())["skip_reasons"])
    map_name = "samples_map.png"
    _plot_map(out / map_name, lons, lats)
    return {
        "samples": len(lons),
        "samples_per_tag": dict(tags.most_common()),
        "samples_per_source": dict(sorted(sources.items())),
        "samples_per_gsd_m": dict(sorted(gsds.items())),
        "history_flags": dict(sorted(history.items())),
        "skip_reasons": dict(sorted(reasons.items())),
        "map": map_name,
    }


def _plot_map(path: Path, lons: Sequence[float], lats: Sequence[float]) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from terrascribe.shards import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.scatter(lons, lats, s=6, c="tab:red", alpha=0.7, linewidths=0)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"{len(lons)} samples")
    ax.set_aspect(1 / max(math.cos(math.radians(float(np.mean(lats)) if lats else 0.0)), 1e-6))
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    # No timestamps in the PNG, so re-runs give the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# Entry point


def build_osm_dataset(
    osm: str | Path,
    imagery: str | Path | Sequence[ImagerySource],
    out: str | Path,
    *,
    tiles: TileOptions | None = None,
    per_tag_quota: int | None = None,
    history_policy: str = "flag",
    seed: int = 0,
    workers: int = 1,
    executor: str = "local",
    table: str | Path | None = None,
    objects_per_shard: int = 1000,
    capture_date: str | None = None,
    sensor: str | None = None,
    licence: str | None = None,
    index: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Build an image-caption dataset from OSM objects and overhead imagery (SkyScript's method).

    Args:
        osm: ``.osm.pbf``/``.osm``/``.osm.bz2``, a GeoJSON of OSM features, or a folder made by
            :func:`~terrascribe.sources.osm.extract_osm`.
        imagery: A raster file, a folder (rasters or XYZ tiles), a STAC catalogue or URL, or
            already opened :class:`~terrascribe.sources.imagery.ImagerySource` s.
        out: Dataset folder (re-running the same command resumes).
        tiles: Tile cutting options (:class:`TileOptions`).
        per_tag_quota: At most this many samples per main tag (``building=yes``...).
        history_policy: ``"flag"`` keeps objects created after the image was captured and marks
            them in ``extra["history"]``; ``"drop"`` skips them.
        seed: Seed for tile placement, quotas and caption wording.
        workers: Parallel workers.
        executor: ``"local"`` or ``"ray"``.
        table: Tag table file (default: the packaged one).
        objects_per_shard: Objects planned per shard (one imagery source per shard).
        capture_date, sensor, licence: Imagery metadata the files do not carry.
        index: pyosmium node-location index (see :func:`~terrascribe.sources.osm.read_osm`).
        progress: Show progress bars.

    Returns:
        The content of ``dataset.json``.

    Raises:
        OsmBuildError: If the imagery does not overlap the OSM data, or options are invalid.
    """
    from terrascribe.shards import write_dataset

    tiles = tiles or TileOptions()
    out = Path(out)
    osm = Path(osm)
    table_path = str(table) if table is not None else None
    sources = (
        list(imagery)
        if isinstance(imagery, Sequence) and not isinstance(imagery, str)
        else open_imagery(imagery, capture_date=capture_date, sensor=sensor, licence=licence)
    )
    if not sources:
        raise OsmBuildError(f"{imagery}: no imagery found")
    if osm.is_dir() and (osm / DONE_FILE).exists():
        features = osm
    else:
        features = out / ".osm-features"
        table_obj = _load_table(table_path)
        extract_osm(
            osm,
            features,
            keep=visible_tag_filter(table_obj),
            keys=visible_feature_keys(table_obj),
            index=index,
            progress=progress,
        )
    plan = plan_osm_jobs(
        features,
        sources,
        tiles=tiles,
        seed=seed,
        table_path=table_path,
        per_tag_quota=per_tag_quota,
        history_policy=history_policy,
        objects_per_shard=objects_per_shard,
    )
    params = {
        "tiles": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(tiles).items()},
        "per_tag_quota": per_tag_quota,
        "history_policy": history_policy,
        "objects_per_shard": objects_per_shard,
        # Shards of a source hold even shares (<= objects_per_shard each); recorded so that a
        # build started by a version that cut full shards plus a remainder is not resumed.
        "shard_split": "even",
        "table": _table_fingerprint(table_path),
        "imagery": [s.describe() for s in sorted(sources, key=lambda s: s.name)],
    }
    return write_dataset(
        out,
        plan.jobs,
        make_osm_items,
        builder=BUILDER,
        params=params,
        seed=seed,
        inputs=[osm] if osm.is_file() else [{"path": str(osm), "kind": "osm extract"}],
        workers=workers,
        executor=executor,
        report=osm_report,
        progress=progress,
    )


def _table_fingerprint(path: str | None) -> dict[str, Any]:
    table = _load_table(path)
    return {
        "origin": getattr(table, "origin", str(path)),
        "version": getattr(table, "version", None),
        "fingerprint": getattr(table, "fingerprint", None),
    }
