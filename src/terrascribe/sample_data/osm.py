"""Write the region's features as OpenStreetMap data (``.osm`` XML and ``.osm.pbf``).

Pixel coordinates go to UTM through the raster's affine transform, then to WGS84 lon/lat with
pyproj, rounded to OSM's 7 decimals. Nodes are shared wherever two ways meet at the same
coordinate (road junctions, power towers on their line). Ids are assigned in feature order, so
the same features always give the same files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import osmium
from affine import Affine
from osmium.osm.mutable import Node, Relation, Way
from pyproj import Transformer
from shapely.geometry import Polygon

from terrascribe.sample_data.features import Feature

NODE_ID0, WAY_ID0, RELATION_ID0 = 1_000_001, 100_001, 10_001
USERS = ((101, "lhota_mapper"), (202, "kartograf_cz"), (303, "survey_sam"), (404, "alpenglow"))
GENERATOR = "terrascribe-sample-data"


@dataclass
class _Meta:
    version: int
    timestamp: dt.datetime
    uid: int
    user: str
    changeset: int

    def kwargs(self) -> dict:
        return {
            "version": self.version,
            "timestamp": self.timestamp,
            "uid": self.uid,
            "user": self.user,
            "changeset": self.changeset,
        }


@dataclass
class OsmData:
    """Nodes, ways and relations ready to write, plus each feature's lon/lat geometry."""

    nodes: dict[tuple[int, int], int] = field(default_factory=dict)  # 1e-7 degrees -> id
    node_meta: dict[int, tuple[dict, _Meta]] = field(default_factory=dict)
    ways: list[tuple[int, list[int], dict, _Meta]] = field(default_factory=list)
    relations: list[tuple[int, list[tuple[str, int, str]], dict, _Meta]] = field(
        default_factory=list
    )
    lonlat: dict[int, dict] = field(default_factory=dict)  # feature index -> GeoJSON geometry

    def node(self, lonlat: tuple[int, int], meta: _Meta) -> int:
        if lonlat not in self.nodes:
            node_id = NODE_ID0 + len(self.nodes)
            self.nodes[lonlat] = node_id
            self.node_meta[node_id] = ({}, meta)
        return self.nodes[lonlat]


def pixel_to_lonlat(transform: Affine, crs: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping an (n, 2) array of pixel x/y to (n, 2) integer 1e-7 degrees."""
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def convert(xy: np.ndarray) -> np.ndarray:
        east = transform.c + xy[:, 0] * transform.a
        north = transform.f + xy[:, 1] * transform.e
        lon, lat = to_wgs84.transform(east, north)
        return np.rint(np.c_[lon, lat] * 1e7).astype(np.int64)

    return convert


def build_osm(features: list[Feature], transform: Affine, crs: str, seed: int) -> OsmData:
    """Turn mapped features into OSM objects; records each feature's ``osm_ref``."""
    rng = np.random.default_rng([seed, 7])
    convert = pixel_to_lonlat(transform, crs)
    data = OsmData()
    changesets = {}
    for f in features:
        if f.osm is None:
            continue
        uid, user = USERS[int(rng.integers(len(USERS)))]
        day = f.timestamp.date()
        changesets.setdefault(day, 10_000_000 + len(changesets) * 1_733)
        meta = _Meta(f.version, f.timestamp, uid, user, changesets[day])
        if f.osm == "node":
            _add_node(data, f, convert, meta)
        elif f.osm == "way":
            _add_way(data, f, convert, meta)
        else:
            _add_multipolygon(data, f, convert, meta)
    return data


def _ring_ids(data: OsmData, coords: np.ndarray, meta: _Meta) -> tuple[list[int], list]:
    ids = [data.node((int(lon), int(lat)), meta) for lon, lat in coords]
    return ids, (coords / 1e7).round(7).tolist()


def _add_node(data: OsmData, f: Feature, convert, meta: _Meta) -> None:
    point = convert(np.array(f.geom.coords))[0]
    node_id = data.node((int(point[0]), int(point[1])), meta)
    data.node_meta[node_id] = (dict(f.tags), meta)
    f.osm_ref = f"n{node_id}"
    data.lonlat[f.index] = {"type": "Point", "coordinates": (point / 1e7).round(7).tolist()}


def _add_way(data: OsmData, f: Feature, convert, meta: _Meta) -> None:
    if isinstance(f.geom, Polygon):
        ids, coords = _ring_ids(data, convert(np.array(f.geom.exterior.coords)), meta)
        geometry = {"type": "Polygon", "coordinates": [coords]}
    else:
        ids, coords = _ring_ids(data, convert(np.array(f.geom.coords)), meta)
        geometry = {"type": "LineString", "coordinates": coords}
    way_id = WAY_ID0 + len(data.ways)
    data.ways.append((way_id, ids, dict(f.tags), meta))
    f.osm_ref = f"w{way_id}"
    data.lonlat[f.index] = geometry


def _add_multipolygon(data: OsmData, f: Feature, convert, meta: _Meta) -> None:
    """Untagged member ways for the outer and inner rings, tags on the relation."""
    members, rings = [], []
    for role, ring in [("outer", f.geom.exterior), *(("inner", r) for r in f.geom.interiors)]:
        ids, coords = _ring_ids(data, convert(np.array(ring.coords)), meta)
        way_id = WAY_ID0 + len(data.ways)
        data.ways.append((way_id, ids, {}, meta))
        members.append(("w", way_id, role))
        rings.append(coords)
    relation_id = RELATION_ID0 + len(data.relations)
    data.relations.append((relation_id, members, dict(f.tags), meta))
    f.osm_ref = f"r{relation_id}"
    data.lonlat[f.index] = {"type": "Polygon", "coordinates": rings}


def write_osm(data: OsmData, path: Path, bounds_lonlat: tuple[float, ...]) -> None:
    """Write all objects (nodes, then ways, then relations, each by id) to ``path``.

    The format follows the suffix (``.osm`` or ``.osm.pbf``); an existing file is replaced.
    """
    header = osmium.io.Header()
    header.set("generator", GENERATOR)
    west, south, east, north = bounds_lonlat
    header.add_box(
        osmium.osm.Box(osmium.osm.Location(west, south), osmium.osm.Location(east, north))
    )
    path.unlink(missing_ok=True)
    with osmium.SimpleWriter(str(path), header=header) as writer:
        for (lon, lat), node_id in sorted(data.nodes.items(), key=lambda item: item[1]):
            tags, meta = data.node_meta[node_id]
            writer.add_node(
                Node(id=node_id, location=(lon / 1e7, lat / 1e7), tags=tags, **meta.kwargs())
            )
        for way_id, ids, tags, meta in data.ways:
            writer.add_way(Way(id=way_id, nodes=ids, tags=tags, **meta.kwargs()))
        for relation_id, members, tags, meta in data.relations:
            writer.add_relation(
                Relation(id=relation_id, members=members, tags=tags, **meta.kwargs())
            )
