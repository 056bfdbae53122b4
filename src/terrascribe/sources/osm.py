"""OpenStreetMap objects: read them from OSM files or GeoJSON, keep the visible ones, store them.

:func:`read_osm` streams ``.osm.pbf`` / ``.osm`` / ``.osm.bz2`` files with pyosmium: tagged nodes
become points, ways become lines or (closed, area-like) polygons, multipolygon and boundary
relations become (multi)polygons through osmium's area assembler. Node locations are cached in
memory for small files and in an on-disk index for large ones, so memory stays bounded on any
file size. Clipped extracts reference nodes they do not contain: lines keep their longest run of
known nodes, polygons with missing nodes are counted and skipped.

:func:`extract_osm` writes the objects as spatially partitioned GeoParquet
(``cell=E024N60/part-000000.parquet``), the form the builder and DuckDB/GeoPandas read.
:func:`read_osm_geojson` reads GeoJSON exports of OSM features (``@id``/``@type``/``@timestamp``
properties, as written by osmium, Overpass turbo or label-maker). :func:`read_features` reads any of
these by looking at the path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import shapely
from shapely.geometry import LineString, shape
from shapely.geometry.base import BaseGeometry

from terrascribe.geo import GeoError, metric_size, metric_sizes, repair
from terrascribe.progress import progress_bar

if TYPE_CHECKING:
    from terrascribe.text.osm_tags import TagTable

OSM_SUFFIXES = (".osm.pbf", ".pbf", ".osm", ".osm.bz2", ".osm.gz", ".o5m")
TYPE_LETTER = {"node": "n", "way": "w", "relation": "r"}
LETTER_TYPE = {v: k for k, v in TYPE_LETTER.items()}

# Closed ways with these tags are lines, not areas (a roundabout is a road, not a disc). A tuple:
# the first of these keys a way has decides, in this order whatever the process's hash seed.
_LINEAR_KEYS = (
    "highway",
    "barrier",
    "railway",
    "waterway",
    "power",
    "aerialway",
    "route",
    "aeroway",
)
_AREA_VALUES = {
    "railway": {"platform", "station"},
    "waterway": {"riverbank", "dock", "boatyard", "dam"},
    "power": {"substation", "plant", "generator"},
    "aeroway": {"apron", "aerodrome", "helipad", "terminal", "hangar"},
    "highway": {"pedestrian", "rest_area", "services"},
}
_LINEAR_VALUES = {
    "natural": {"coastline", "cliff", "tree_row", "ridge", "arete", "valley"},
    "man_made": {"embankment", "pipeline", "cutline", "groyne", "breakwater", "pier"},
}
_AREA_RULE_KEYS = frozenset({"area", *_LINEAR_KEYS, *_LINEAR_VALUES})

# Keys shortened to 10 characters by shapefile round trips (seen in label-maker fixtures).
SHAPEFILE_KEYS = {
    "admin_leve": "admin_level",
    "border_typ": "border_type",
    "opening_ho": "opening_hours",
    "protect_cl": "protect_class",
    "protection": "protection_title",
    "protecti_1": "protection_code",
    "ref_source": "ref:source",
    "related_la": "related_law",
    "name_en": "name:en",
    "addr_stree": "addr:street",
    "addr_house": "addr:housenumber",
    "addr_postc": "addr:postcode",
    "addr_city": "addr:city",
    "constructi": "construction",
    "building_l": "building:levels",
    "roof_shape": "roof:shape",
}


class OsmError(ValueError):
    """An OSM input is missing, unreadable, truncated or malformed."""


@dataclass(slots=True)
class OsmObject:
    """One OSM object with its lon/lat geometry and metric sizes.

    Attributes:
        osm_type: ``"node"``, ``"way"`` or ``"relation"``.
        osm_id: The OSM id.
        version: Object version (1 = never edited since creation), 0 if unknown.
        timestamp: Last edit as ISO 8601 UTC (``2019-04-21T10:00:00Z``), if known.
        tags: OSM tags.
        geometry: Point, LineString, Polygon or MultiPolygon in WGS84 lon/lat.
        area_m2: Area in square metres (0 for points and lines).
        length_m: Length of a line, perimeter of a polygon, 0 for a point.
        width_m: East-west side of the bounding box in metres (local UTM zone).
        height_m: North-south side of the bounding box in metres.
        note: Why the geometry is partial or was repaired, if it was.
    """

    osm_type: str
    osm_id: int
    version: int
    timestamp: str | None
    tags: dict[str, str]
    geometry: BaseGeometry
    area_m2: float = 0.0
    length_m: float = 0.0
    width_m: float = 0.0
    height_m: float = 0.0
    note: str | None = None

    @property
    def ref(self) -> str:
        """Short OSM reference: ``n123``, ``w123``, ``r123``."""
        return f"{TYPE_LETTER[self.osm_type]}{self.osm_id}"

    @property
    def kind(self) -> str:
        """``"point"``, ``"line"`` or ``"polygon"``."""
        t = self.geometry.geom_type
        return "point" if "Point" in t else "line" if "Line" in t else "polygon"

    @classmethod
    def build(
        cls,
        osm_type: str,
        osm_id: int,
        version: int,
        timestamp: str | None,
        tags: Mapping[str, str],
        geometry: BaseGeometry,
        note: str | None = None,
    ) -> OsmObject:
        """Make an object, repairing an invalid geometry and measuring it in metres.

        Raises:
            GeoError: If the geometry is empty or cannot be repaired into a non-empty one.
        """
        fixed, reason = repair(geometry)
        if reason is not None:
            note = f"repaired invalid geometry ({reason})"
            fixed = _keep_main_dimension(fixed, geometry)
        if fixed.is_empty:
            raise GeoError(f"{TYPE_LETTER[osm_type]}{osm_id}: empty geometry")
        size = metric_size(fixed)
        return cls(
            osm_type=osm_type,
            osm_id=int(osm_id),
            version=int(version),
            timestamp=timestamp,
            tags=dict(tags),
            geometry=fixed,
            area_m2=size.area_m2,
            length_m=0.0 if fixed.geom_type == "Point" else size.length_m,
            width_m=size.width_m,
            height_m=size.height_m,
            note=note,
        )


def _keep_main_dimension(fixed: BaseGeometry, original: BaseGeometry) -> BaseGeometry:
    # make_valid can return a GeometryCollection of polygons and stray lines: keep the polygons.
    if fixed.geom_type == "GeometryCollection":
        dim = shapely.get_dimensions(original)
        parts = [g for g in fixed.geoms if shapely.get_dimensions(g) == dim]
        return shapely.union_all(parts) if parts else fixed
    return fixed


def is_area(tags: Mapping[str, str]) -> bool:
    """Whether a *closed* way with these tags is an area (building) rather than a line (road)."""
    if _AREA_RULE_KEYS.isdisjoint(tags):  # most buildings and land uses: no rule applies
        return True
    area = tags.get("area")
    if area == "yes":
        return True
    if area == "no":
        return False
    for key, values in _LINEAR_VALUES.items():
        if tags.get(key) in values:
            return False
    for key in _LINEAR_KEYS:
        if key in tags:
            return tags[key] in _AREA_VALUES.get(key, ())
    return True


def _iso_utc(times: list[dt.datetime]) -> list[str | None]:
    """:func:`_iso` for many datetimes at once (numpy formats them in bulk)."""
    if not times:
        return []
    utc = dt.UTC
    secs = np.array(
        [(t if t.tzinfo is not None else t.replace(tzinfo=utc)).timestamp() for t in times]
    )
    text = np.datetime_as_string(np.floor(secs).astype("int64").astype("datetime64[s]"))
    return [f"{s}Z" if v > 0 else None for s, v in zip(text.tolist(), secs.tolist(), strict=True)]


def _iso(timestamp: Any) -> str | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, int | float):
        if timestamp <= 0:
            return None
        timestamp = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    if isinstance(timestamp, dt.datetime):
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=dt.UTC)
        if timestamp.timestamp() <= 0:  # osmium reports "no timestamp" as the epoch
            return None
        return timestamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = str(timestamp).strip()
    return text or None


# --------------------------------------------------------------------------------------------
# Which objects to keep


TagPredicate = Callable[[Mapping[str, str]], bool]


def visible_tag_filter(table: TagTable | None = None) -> TagPredicate:
    """A predicate keeping objects with at least one tag the table knows as potentially visible.

    Only the keys that can change the answer (feature keys, hiding keys, keys named in rule
    conditions) are passed to the table, and answers are cached on them: most objects share a
    handful of such tag sets (``building=yes``...), so planet-scale filtering stays cheap.

    The predicate carries ``prefilter_keys`` (:func:`visible_feature_keys`): :func:`read_osm`
    and :func:`extract_osm` hand them to osmium's C++ key filter, so objects without any visible
    feature key never reach Python (objects whose keys only match after Unicode cleaning, such
    as ``building\u200b``, are dropped by that filter).

    Args:
        table: Tag table (default: the packaged one).
    """
    if table is None:
        from terrascribe.text.osm_tags import TagTable

        table = TagTable.load()
    relevant = _relevant_keys(table)

    @lru_cache(maxsize=65536)
    def visible(items: tuple[tuple[str, str], ...]) -> bool:
        return table.max_gsd(dict(items)) is not None

    def keep(tags: Mapping[str, str]) -> bool:
        if relevant is None:
            return table.max_gsd(tags) is not None
        keys = relevant.intersection(tags)
        if len(keys) == 1:  # the usual case: no sorting needed
            (key,) = keys
            return visible(((key, tags[key]),))
        return visible(tuple(sorted([(k, tags[k]) for k in keys])))

    # Objects without any visible feature key can never pass: readers hand these keys to
    # osmium's C++ key filter so such objects never reach Python.
    keep.prefilter_keys = visible_feature_keys(table)  # type: ignore[attr-defined]
    return keep


def _relevant_keys(table: TagTable) -> frozenset[str] | None:
    keys: set[str] = set()
    for rule in table:
        role = getattr(rule, "role", "feature")
        if role in ("feature", "hide"):
            if "*" in rule.key:
                return None  # a key pattern: cannot reduce tags to a key set
            keys.add(rule.key)
        for cond in getattr(rule, "applies_to", ()):
            keys.add(cond.partition("=")[0])
    return frozenset(keys)


def visible_feature_keys(table: TagTable) -> set[str] | None:
    """OSM keys of the table's visible feature rules, for osmium's fast C++ key pre-filter.

    ``None`` when a visible feature rule is a key pattern (``roof:*``): a key list cannot express
    it, so the Python predicate alone decides.
    """
    keys: set[str] = set()
    for rule in table:
        if rule.visible and getattr(rule, "role", "feature") == "feature":
            if "*" in rule.key:
                return None
            keys.add(rule.key)
    return keys


def _location_index(index: str, path: Path, tmpdir: Path) -> str:
    """Pick an osmium node-location index: memory for small files, a file for large ones."""
    if index != "auto":
        return index
    size = path.stat().st_size
    if size < 256 * 2**20:  # extracts up to ~256 MB: flex_mem copes (a few GB at most)
        return "flex_mem"
    # dense on disk for country/planet files (node ids are dense there), sparse otherwise.
    kind = "dense_file_array" if size > 8 * 2**30 else "sparse_file_array"
    return f"{kind},{tmpdir / 'node-locations.idx'}"


@dataclass
class ReadStats:
    """Counts of what :func:`read_osm` saw, kept and dropped (and why)."""

    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "kept": dict(sorted(self.kept.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }


def read_osm(
    path: str | Path,
    *,
    keep: TagPredicate | None = None,
    keys: Iterable[str] | None = None,
    index: str = "auto",
    stats: ReadStats | None = None,
) -> Iterator[OsmObject]:
    """Stream the tagged objects of an OSM file as :class:`OsmObject` s.

    Args:
        path: ``.osm.pbf``, ``.osm``, ``.osm.bz2`` or ``.osm.gz`` file.
        keep: Predicate on tags; objects failing it are dropped (e.g. :func:`visible_tag_filter`).
            ``None`` keeps every tagged object.
        keys: Optional OSM keys for a fast C++ pre-filter (objects without any of them are
            dropped before reaching Python). By default the ``prefilter_keys`` of ``keep``
            (set by :func:`visible_tag_filter`), if it has them.
        index: Node-location index for osmium (``"flex_mem"``, ``"sparse_file_array,FILE"``,
            ``"dense_file_array,FILE"``...); ``"auto"`` picks memory or disk by file size.
        stats: Collects kept/dropped counts by reason.

    Yields:
        Objects in file order: nodes, then ways, then relation areas as they are assembled.

    Raises:
        OsmError: If the file is missing, not an OSM file, or truncated/corrupt.
    """
    for batch in _read_osm_columns(path, keep=keep, keys=keys, index=index, stats=stats):
        yield from batch.objects()


# Where a raw object's geometry comes from; geometries are made for a whole batch at once.
_POINT, _LINE, _RING, _MULTI, _READY = range(5)


@dataclass
class _Columns:
    """A batch of finished objects, column by column (what extraction writes)."""

    types: list[str]
    ids: list[int]
    versions: list[int]
    timestamps: list[str | None]
    tags: list[dict[str, str]]
    geoms: np.ndarray
    area_m2: list[float]
    length_m: list[float]
    width_m: list[float]
    height_m: list[float]
    notes: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)

    def objects(self) -> list[OsmObject]:
        """The batch as :class:`OsmObject` s."""
        return list(
            map(
                OsmObject,
                self.types,
                self.ids,
                self.versions,
                self.timestamps,
                self.tags,
                self.geoms.tolist(),
                self.area_m2,
                self.length_m,
                self.width_m,
                self.height_m,
                self.notes,
            )
        )

    @classmethod
    def of(cls, objects: list[OsmObject]) -> _Columns:
        """Columns of already made objects (GeoJSON and Parquet inputs)."""
        geoms = np.empty(len(objects), dtype=object)
        geoms[:] = [o.geometry for o in objects]
        return cls(
            [o.osm_type for o in objects],
            [o.osm_id for o in objects],
            [o.version for o in objects],
            [o.timestamp for o in objects],
            [o.tags for o in objects],
            geoms,
            [o.area_m2 for o in objects],
            [o.length_m for o in objects],
            [o.width_m for o in objects],
            [o.height_m for o in objects],
            [o.note for o in objects],
        )


def _read_osm_columns(
    path: str | Path,
    *,
    keep: TagPredicate | None = None,
    keys: Iterable[str] | None = None,
    index: str = "auto",
    stats: ReadStats | None = None,
    batch_size: int = 4096,
) -> Iterator[_Columns]:
    """:func:`read_osm` in column batches of up to ``batch_size`` objects (same order).

    Python only sees objects that pass osmium's C++ filters (tags, keys, entity types) and does
    the least it can per object (tags, the keep decision, osmium's WKB); geometries, repairs,
    metric sizes and timestamps are then made for the whole batch with array functions.
    """
    import osmium

    path = Path(path)
    if not path.is_file():
        raise OsmError(f"{path}: no such OSM file")
    stats = stats if stats is not None else ReadStats()
    if keys is None:
        keys = getattr(keep, "prefilter_keys", None)
    key_list = sorted(set(keys)) if keys is not None else None
    if key_list is not None and not key_list:
        return  # no key can pass
    wkb = osmium.geom.WKBFactory()
    node_cls, way_cls, area_cls = osmium.osm.Node, osmium.osm.Way, osmium.osm.Area
    dropped = stats.dropped
    with tempfile.TemporaryDirectory(prefix="terrascribe-osm-") as tmp:
        processor = _file_processor(path, key_list, _location_index(index, path, Path(tmp)))
        rows: list[tuple[Any, ...]] = []
        add = rows.append  # one tuple per object: cheaper than eight list appends
        try:
            for obj in processor:
                cls = type(obj)
                if cls is area_cls and obj.from_way():
                    continue  # closed ways are handled as ways (our area rule)
                tags = _tags(obj)
                if keep is not None and not keep(tags):
                    dropped["no visible tag"] += 1
                    continue
                data = obj._pyosmium_data
                note = None
                if cls is node_cls:
                    loc = data.location()
                    if not loc.valid():
                        dropped["invalid location"] += 1
                        continue
                    osm_type, osm_id, kind, payload = "node", data.id(), _POINT, (loc.lon, loc.lat)
                elif cls is way_cls:
                    made = _way_geometry(obj, data, wkb, tags, dropped)
                    if made is None:
                        continue
                    osm_type, osm_id, (kind, payload, note) = "way", data.id(), made
                else:
                    try:
                        payload = wkb.create_multipolygon(obj)
                    except RuntimeError:
                        dropped["relation area not assembled"] += 1
                        continue
                    osm_type, kind, osm_id = "relation", _MULTI, obj.orig_id()
                add((osm_type, osm_id, data.version(), data.timestamp(), tags, kind, payload, note))
                if len(rows) >= batch_size:
                    yield _finish(_RawBatch(rows), stats)
                    rows = []
                    add = rows.append
        except RuntimeError as err:
            raise OsmError(
                f"{path}: cannot read OSM data ({err}); the file may be truncated or corrupt"
            ) from None
        if rows:
            yield _finish(_RawBatch(rows), stats)


def _file_processor(path: Path, key_list: list[str] | None, index: str) -> Any:
    """An ``osmium.FileProcessor`` yielding the tagged nodes, ways and areas worth reading.

    Node locations are kept (ways need them) and multipolygon relations come back as areas.
    Osmium's C++ filters drop untagged objects and, given ``key_list``, objects with none of
    those keys, before Python sees them.
    """
    import osmium

    processor = osmium.FileProcessor(str(path)).with_locations(index)
    # Only relations that can pass the key filter are worth assembling into areas.
    processor = (
        processor.with_areas(osmium.filter.KeyFilter(*key_list))
        if key_list
        else processor.with_areas()
    )
    processor = processor.with_filter(osmium.filter.EmptyTagFilter()).with_filter(
        # Relations come back as areas; the relation objects themselves are not needed.
        osmium.filter.EntityFilter(osmium.osm.NODE | osmium.osm.WAY | osmium.osm.AREA)
    )
    if key_list is not None:
        processor = processor.with_filter(osmium.filter.KeyFilter(*key_list))
    return processor


def _tags(obj: Any) -> dict[str, str]:
    # pyosmium's public TagList steps through a Python-level iterator; calling its C++ iterator
    # directly halves the cost of what dominates extraction (one call per tag). Falls back to
    # the public API should pyosmium's internals change.
    data = getattr(obj, "_pyosmium_data", None)
    try:
        return dict(map(data.tags_next, itertools.repeat(data.tags_begin(), data.tags_size())))
    except AttributeError:
        return dict(obj.tags)


class _RawBatch:
    """Objects read from osmium, waiting for their geometries to be made in bulk."""

    __slots__ = ("ids", "kinds", "notes", "payload", "tags", "times", "types", "versions")

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        """Columns of ``(type, id, version, time, tags, kind, payload, note)`` rows."""
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(8)]
        self.types: list[str] = columns[0]
        self.ids: list[int] = columns[1]
        self.versions: list[int] = columns[2]
        self.times: list[dt.datetime] = columns[3]
        self.tags: list[dict[str, str]] = columns[4]
        self.kinds: list[int] = columns[5]
        self.payload: list[Any] = columns[6]
        self.notes: list[str | None] = columns[7]


def _way_geometry(
    way: Any, data: Any, wkb: Any, tags: dict[str, str], dropped: Counter[str]
) -> tuple[int, Any, str | None] | None:
    """``(kind, payload, note)`` of a way's geometry, or None (counted in ``dropped``)."""
    closed = data.nodes().size(data) >= 4 and data.is_closed()
    try:
        line = wkb.create_linestring(way)
    except Exception:  # InvalidLocationError (clipped extract) or too few points
        if closed and is_area(tags):
            dropped["polygon with missing nodes"] += 1
            return None
        run = _longest_valid_run(way.nodes)
        if len(run) < 2:
            dropped["line with missing nodes"] += 1
            return None
        return _READY, LineString(run), "partial line: nodes outside the extract"
    return (_RING if closed and is_area(tags) else _LINE), line, None


def _finish(raw: _RawBatch, stats: ReadStats) -> _Columns:
    """Geometries, repairs, metric sizes and timestamps for a batch, in bulk."""
    n = len(raw.ids)
    kinds = np.asarray(raw.kinds, dtype=np.int8)
    payload = raw.payload
    geoms = np.empty(n, dtype=object)
    points = np.flatnonzero(kinds == _POINT)
    if len(points):
        geoms[points] = shapely.points(np.array([payload[i] for i in points.tolist()]))
    encoded = np.flatnonzero((kinds == _LINE) | (kinds == _RING) | (kinds == _MULTI))
    if len(encoded):
        # osmium writes hex WKB; GEOS parses hex ~15x slower than the same bytes.
        geoms[encoded] = shapely.from_wkb([bytes.fromhex(payload[i]) for i in encoded.tolist()])
    for i in np.flatnonzero(kinds == _READY).tolist():
        geoms[i] = payload[i]
    keep = np.ones(n, dtype=bool)
    rings = np.flatnonzero(kinds == _RING)
    if len(rings):
        degenerate = shapely.get_num_coordinates(geoms[rings]) < 4
        if degenerate.any():
            stats.dropped["degenerate polygon"] += int(degenerate.sum())
            keep[rings[degenerate]] = False
            rings = rings[~degenerate]
        coords, owner = shapely.get_coordinates(geoms[rings], return_index=True)
        geoms[rings] = shapely.polygons(shapely.linearrings(coords, indices=owner))
    multis = np.flatnonzero(kinds == _MULTI)
    if len(multis):
        single = multis[shapely.get_num_geometries(geoms[multis]) == 1]
        geoms[single] = shapely.get_geometry(geoms[single], 0)
    notes = raw.notes
    for i in np.flatnonzero(~shapely.is_valid(geoms) & keep).tolist():
        fixed, reason = repair(geoms[i])
        notes[i] = f"repaired invalid geometry ({reason})"
        geoms[i] = _keep_main_dimension(fixed, geoms[i])
    empty = shapely.is_empty(geoms) & keep
    if empty.any():
        stats.dropped["empty geometry"] += int(empty.sum())
        keep &= ~empty
    sel = np.flatnonzero(keep)
    geoms = geoms[sel]
    # Points measure 0 in every way: only lines and polygons go through pyproj.
    sized = np.flatnonzero(kinds[sel] != _POINT)
    area, length, width, height = (np.zeros(len(sel)) for _ in range(4))
    area[sized], length[sized], width[sized], height[sized] = metric_sizes(geoms[sized])
    chosen = sel.tolist()
    if len(chosen) < n:
        types = [raw.types[i] for i in chosen]
        ids = [raw.ids[i] for i in chosen]
        versions = [raw.versions[i] for i in chosen]
        times = [raw.times[i] for i in chosen]
        tags = [raw.tags[i] for i in chosen]
        notes = [notes[i] for i in chosen]
    else:
        types, ids, versions, times, tags = raw.types, raw.ids, raw.versions, raw.times, raw.tags
    stats.kept.update(types)
    return _Columns(
        types,
        ids,
        versions,
        _iso_utc(times),
        tags,
        geoms,
        area.tolist(),
        length.tolist(),
        width.tolist(),
        height.tolist(),
        notes,
    )


def _longest_valid_run(refs: Any) -> list[tuple[float, float]]:
    best: list[tuple[float, float]] = []
    run: list[tuple[float, float]] = []
    for n in refs:
        if n.location.valid():
            run.append((n.location.lon, n.location.lat))
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    return best


# --------------------------------------------------------------------------------------------
# GeoJSON exports of OSM features


def restore_keys(properties: Mapping[str, Any]) -> dict[str, str]:
    """OSM tags from GeoJSON feature properties: drop ``@`` metadata and nulls, and undo
    shapefile-truncated key names (``admin_leve`` -> ``admin_level``) when the full key is absent.
    """
    tags: dict[str, str] = {}
    for key, value in properties.items():
        if key.startswith("@") or value is None or value == "":
            continue
        tags[str(key)] = str(value)
    for short, full in SHAPEFILE_KEYS.items():
        if short in tags and short != full:
            value = tags.pop(short)
            tags.setdefault(full, value)
    return tags


def read_osm_geojson(
    path: str | Path, *, keep: TagPredicate | None = None, stats: ReadStats | None = None
) -> Iterator[OsmObject]:
    """Read a GeoJSON FeatureCollection of OSM features as :class:`OsmObject` s.

    Features of the same OSM object (``@type`` + ``@id``, e.g. pieces of a clipped way) are
    merged into one geometry. ``@timestamp`` may be Unix seconds or ISO 8601.

    Raises:
        OsmError: If the file is not valid GeoJSON or a feature lacks ``@id``/``@type``.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OsmError(f"{path}: cannot read GeoJSON ({err})") from None
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list):
        raise OsmError(f"{path}: not a GeoJSON FeatureCollection (no 'features' list)")
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for i, feature in enumerate(features):
        props = feature.get("properties") or {}
        osm_type, osm_id = _feature_identity(props)
        if osm_type is None:
            raise OsmError(f"{path}: feature {i} has no '@type'/'@id' (or 'id') properties")
        grouped.setdefault((osm_type, osm_id), []).append(feature)
    for (osm_type, osm_id), parts in grouped.items():
        props = parts[0].get("properties") or {}
        tags = restore_keys(props)
        if not tags or (keep is not None and not keep(tags)):
            stats.dropped["no visible tag"] += 1
            continue
        try:
            geoms = [shape(p["geometry"]) for p in parts if p.get("geometry")]
            geoms = [repair(g)[0] for g in geoms]
            geom = shapely.union_all(geoms) if len(geoms) > 1 else geoms[0]
            obj = OsmObject.build(
                osm_type,
                osm_id,
                int(props.get("@version") or 0),
                _iso(props.get("@timestamp")),
                tags,
                geom,
            )
        except (GeoError, IndexError, KeyError, ValueError, TypeError):
            stats.dropped["bad geometry"] += 1
            continue
        stats.kept[osm_type] += 1
        yield obj


def _feature_identity(props: Mapping[str, Any]) -> tuple[str | None, int]:
    if "@type" in props and "@id" in props:
        return str(props["@type"]), int(props["@id"])
    ident = str(props.get("id") or props.get("@id") or "")
    if "/" in ident:  # Overpass turbo style "way/123"
        kind, _, num = ident.partition("/")
        return kind, int(num)
    return None, 0


# --------------------------------------------------------------------------------------------
# Partitioned GeoParquet


FEATURE_SCHEMA = pa.schema(
    [
        ("ref", pa.string()),
        ("osm_type", pa.string()),
        ("osm_id", pa.int64()),
        ("version", pa.int32()),
        ("timestamp", pa.string()),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("kind", pa.string()),
        ("area_m2", pa.float64()),
        ("length_m", pa.float64()),
        ("width_m", pa.float64()),
        ("height_m", pa.float64()),
        ("minx", pa.float64()),
        ("miny", pa.float64()),
        ("maxx", pa.float64()),
        ("maxy", pa.float64()),
        ("note", pa.string()),
        ("geometry", pa.binary()),
    ]
)
_FEATURE_GEO = {
    "version": "1.1.0",
    "primary_column": "geometry",
    "columns": {
        "geometry": {
            "encoding": "WKB",
            "geometry_types": [],
            "covering": {
                "bbox": {
                    "xmin": ["minx"],
                    "ymin": ["miny"],
                    "xmax": ["maxx"],
                    "ymax": ["maxy"],
                }
            },
        }
    },
}
DONE_FILE = "_extract.json"


def cell_name(lon: float, lat: float, cell_deg: float) -> str:
    """Partition name of the grid cell whose south-west corner is below ``(lon, lat)``.

    ``E024N60`` for 1° cells; fractional cells keep 3 decimals with ``p`` for the point
    (``E024p500N060p250``).
    """
    x = math.floor(lon / cell_deg) * cell_deg
    y = math.floor(lat / cell_deg) * cell_deg

    def fmt(v: float, width: int) -> str:
        if float(cell_deg).is_integer():
            return f"{abs(round(v)):0{width}d}"
        return f"{abs(v):0{width + 4}.3f}".replace(".", "p")

    return f"{'E' if x >= 0 else 'W'}{fmt(x, 3)}{'N' if y >= 0 else 'S'}{fmt(y, 2)}"


_KIND_OF_TYPE_ID = {0: "point", 4: "point", 1: "line", 2: "line", 5: "line"}  # else polygon


def _feature_columns(batch: _Columns) -> tuple[list[list[Any]], np.ndarray]:
    """The :data:`FEATURE_SCHEMA` columns of a batch (bulk WKB and bounds) and its bounds."""
    geoms = batch.geoms
    bounds = shapely.bounds(geoms)
    minx, miny, maxx, maxy = bounds.T.tolist()
    kinds = [_KIND_OF_TYPE_ID.get(t, "polygon") for t in shapely.get_type_id(geoms).tolist()]
    refs = [f"{TYPE_LETTER[t]}{i}" for t, i in zip(batch.types, batch.ids, strict=True)]
    columns = [
        refs,
        batch.types,
        batch.ids,
        batch.versions,
        batch.timestamps,
        batch.tags,
        kinds,
        batch.area_m2,
        batch.length_m,
        batch.width_m,
        batch.height_m,
        minx,
        miny,
        maxx,
        maxy,
        batch.notes,
        shapely.to_wkb(geoms, output_dimension=2).tolist(),
    ]
    return columns, bounds


def _write_part(path: Path, columns: list[list[Any]]) -> None:
    from terrascribe.shards import write_geoparquet

    # Column by column: Table.from_pylist would import pandas (half a second) and go row-wise.
    arrays = [
        _tags_array(col) if f.name == "tags" else pa.array(col, type=f.type)
        for col, f in zip(columns, FEATURE_SCHEMA, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_geoparquet(path, pa.Table.from_arrays(arrays, schema=FEATURE_SCHEMA), geo=_FEATURE_GEO)


def _tags_array(tags: list[dict[str, str]]) -> pa.MapArray:
    """The ``tags`` map column, keys sorted: built from flat key and value arrays, twice as
    fast as converting nested lists of pairs (the same array)."""
    keys: list[str] = []
    values: list[str] = []
    for t in tags:
        ordered = sorted(t)
        keys.extend(ordered)
        values.extend(map(t.__getitem__, ordered))
    offsets = np.zeros(len(tags) + 1, dtype=np.int32)
    np.cumsum([len(t) for t in tags], out=offsets[1:])
    strings = pa.string()
    return pa.MapArray.from_arrays(offsets, pa.array(keys, strings), pa.array(values, strings))


@dataclass
class ExtractResult:
    """What :func:`extract_osm` wrote."""

    out_dir: Path
    objects: int
    parts: int
    stats: dict[str, Any]
    tag_counts: dict[str, int]


def extract_osm(
    source: str | Path,
    out_dir: str | Path,
    *,
    keep: TagPredicate | None = None,
    keys: Iterable[str] | None = None,
    cell_deg: float = 1.0,
    rows_in_memory: int = 200_000,
    index: str = "auto",
    progress: bool = True,
) -> ExtractResult:
    """Extract OSM objects into spatially partitioned GeoParquet, in bounded memory.

    Objects go to ``out_dir/cell=<cell>/part-NNNNNN.parquet`` by the cell of their bounding-box
    centre; at most ``rows_in_memory`` rows are buffered before the largest cell is flushed. A
    ``_extract.json`` marks a finished extract: running again with the same source is a no-op.

    Args:
        source: OSM file (pbf/xml/bz2) or GeoJSON of OSM features.
        out_dir: Output folder.
        keep: Tag predicate (see :func:`visible_tag_filter`); ``None`` keeps every tagged object.
        keys: Optional fast key pre-filter (see :func:`read_osm`).
        cell_deg: Partition cell size in degrees.
        rows_in_memory: Buffered rows before flushing (bounds memory).
        index: Node-location index (see :func:`read_osm`).
        progress: Show a spinner with the running count.

    Returns:
        Counts and paths.
    """
    from terrascribe.shards import atomic_write_text, dumps, hash_path

    source, out = Path(source), Path(out_dir)
    provenance = hash_path(source)
    done = out / DONE_FILE
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("source") == provenance and info.get("cell_deg") == cell_deg:
            return ExtractResult(
                out, info["objects"], info["parts"], info["stats"], info["tag_counts"]
            )
        raise OsmError(f"{out}: holds an extract of another source; choose another folder")
    for stale in out.glob("cell=*/part-*.parquet"):  # unfinished earlier run: start over
        stale.unlink()
    stats = ReadStats()
    buffers: dict[str, list[list[Any]]] = {}  # cell -> FEATURE_SCHEMA columns
    part_counts: Counter[str] = Counter()
    tag_counts: Counter[str] = Counter()
    cells: dict[tuple[int, int], str] = {}
    buffered = objects = parts = 0

    def flush(cell: str) -> None:
        nonlocal buffered, parts
        columns = buffers.pop(cell)
        _write_part(out / f"cell={cell}" / f"part-{part_counts[cell]:06d}.parquet", columns)
        part_counts[cell] += 1
        parts += 1
        buffered -= len(columns[0])

    def cell_of(x: float, y: float) -> str:
        grid = (math.floor(x / cell_deg), math.floor(y / cell_deg))
        name = cells.get(grid)
        if name is None:  # the name depends only on the grid cell
            name = cells[grid] = cell_name(x, y, cell_deg)
        return name

    with progress_bar(None, "extract OSM", enabled=progress) as advance, _gc_paused():
        for batch in _feature_batches(source, keep=keep, keys=keys, index=index, stats=stats):
            columns, bounds = _feature_columns(batch)
            cx = ((bounds[:, 0] + bounds[:, 2]) / 2).tolist()
            cy = ((bounds[:, 1] + bounds[:, 3]) / 2).tolist()
            batch_cells = [cell_of(x, y) for x, y in zip(cx, cy, strict=True)]
            n = len(batch)
            if buffered + n < rows_in_memory:  # nothing gets flushed: move whole columns
                rows_of: dict[str, list[int]] = {}
                for i, cell in enumerate(batch_cells):
                    rows_of.setdefault(cell, []).append(i)
                for cell, rows in rows_of.items():
                    target = buffers.setdefault(cell, [[] for _ in FEATURE_SCHEMA])
                    whole = len(rows) == n
                    for dst, src in zip(target, columns, strict=True):
                        dst.extend(src if whole else [src[i] for i in rows])
                buffered += n
            else:  # row by row, flushing the largest cell whenever the buffer is full
                for i, cell in enumerate(batch_cells):
                    target = buffers.setdefault(cell, [[] for _ in FEATURE_SCHEMA])
                    for dst, src in zip(target, columns, strict=True):
                        dst.append(src[i])
                    buffered += 1
                    if buffered >= rows_in_memory:
                        flush(max(buffers, key=lambda c: len(buffers[c][0])))
            tag_counts.update(itertools.chain.from_iterable(batch.tags))
            objects += n
            advance(n)
        # Still paused: a collection now would walk every buffered row once more.
        for cell in sorted(buffers):
            flush(cell)
    info = {
        "source": provenance,
        "cell_deg": cell_deg,
        "objects": objects,
        "parts": parts,
        "stats": stats.to_dict(),
        "tag_counts": dict(sorted(tag_counts.items())),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, dumps(info))
    return ExtractResult(out, objects, parts, info["stats"], info["tag_counts"])


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of acyclic objects are made.

    Buffered rows and batches stay alive, so every collection would walk all of them again:
    on a 100k-object extract that costs a fifth of the run. Nothing made here forms cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _feature_batches(source: Path, *, batch_size: int = 4096, **options: Any) -> Iterator[_Columns]:
    """:func:`read_features` in column batches (OSM files are read in bulk)."""
    name = source.name.lower()
    if source.is_file() and name.endswith(OSM_SUFFIXES):
        yield from _read_osm_columns(source, batch_size=batch_size, **options)
        return
    batch: list[OsmObject] = []
    for obj in read_features(source, **options):
        batch.append(obj)
        if len(batch) >= batch_size:
            yield _Columns.of(batch)
            batch = []
    if batch:
        yield _Columns.of(batch)


def read_parquet_features(
    path: str | Path,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    keep: TagPredicate | None = None,
) -> Iterator[OsmObject]:
    """Read objects written by :func:`extract_osm`, optionally only those intersecting ``bbox``.

    The bbox test runs on the ``minx/miny/maxx/maxy`` columns (pushed down into Parquet).
    """
    import pyarrow.dataset as ds

    path = Path(path)
    files = sorted(path.rglob("part-*.parquet")) if path.is_dir() else [path]
    if not files:
        raise OsmError(f"{path}: no extracted OSM parts (part-*.parquet) found")
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    expr = None
    if bbox is not None:
        west, south, east, north = bbox
        f = ds.field
        expr = (
            (f("maxx") >= west) & (f("minx") <= east) & (f("maxy") >= south) & (f("miny") <= north)
        )
    for batch in dataset.to_batches(filter=expr):
        # WKB parsed for the whole batch: one call per object cost as much as the rest.
        geoms = shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False))
        rows = batch.drop_columns(["geometry"]).to_pylist()
        for row, geom in zip(rows, geoms.tolist(), strict=True):
            tags = dict(row["tags"] or [])
            if keep is not None and not keep(tags):
                continue
            yield OsmObject(
                osm_type=row["osm_type"],
                osm_id=row["osm_id"],
                version=row["version"],
                timestamp=row["timestamp"],
                tags=tags,
                geometry=geom,
                area_m2=row["area_m2"],
                length_m=row["length_m"],
                width_m=row["width_m"],
                height_m=row["height_m"],
                note=row["note"],
            )


def read_features(
    path: str | Path,
    *,
    keep: TagPredicate | None = None,
    keys: Iterable[str] | None = None,
    index: str = "auto",
    stats: ReadStats | None = None,
) -> Iterator[OsmObject]:
    """Read OSM objects from any supported input, chosen by the path.

    ``.osm.pbf``/``.osm``/``.osm.bz2``/``.osm.gz`` go through pyosmium, ``.geojson``/``.json``
    through :func:`read_osm_geojson`, a ``.parquet`` file or an extract folder through
    :func:`read_parquet_features`.

    Raises:
        OsmError: If the path is missing or of an unknown kind.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return read_parquet_features(path, keep=keep)
    if not path.exists():
        raise OsmError(f"{path}: no such file or folder")
    if name.endswith((".geojson", ".json")):
        return read_osm_geojson(path, keep=keep, stats=stats)
    if name.endswith(".parquet"):
        return read_parquet_features(path, keep=keep)
    if name.endswith(OSM_SUFFIXES):
        return read_osm(path, keep=keep, keys=keys, index=index, stats=stats)
    raise OsmError(
        f"{path}: unknown OSM input; expected one of {', '.join(OSM_SUFFIXES)}, .geojson, "
        ".parquet or an extract folder"
    )
