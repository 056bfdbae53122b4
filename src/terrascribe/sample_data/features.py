"""Building blocks of the region layout: the feature record, the builder, packing helpers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from terrascribe.sample_data import shapes
from terrascribe.sample_data.shapes import Parts

CAPTURE_DATE = dt.date(2021, 6, 1)
EDGE_PX = 0.25  # keeps every OSM node strictly inside the raster
ROAD_WIDTH_M = {"primary": 9.0, "residential": 6.0, "service": 5.0, "track": 3.0, "footway": 2.2}
Rect = tuple[float, float, float, float]


@dataclass
class Feature:
    """One object of the region (mapped in OSM, drawn in the image, or both).

    Attributes:
        index: Position in the feature list; drawables of this object carry it as owner.
        kind: Short name of what it is (``house``, ``car``, ``lake``, ...).
        tags: OSM tags (empty for things OSM does not map, such as cars).
        geom: Geometry in pixel coordinates of the big image.
        osm: How it is mapped: ``node``, ``way``, ``multipolygon``, or None (not mapped).
        coco: Chip annotation category, or None.
        drawn: Whether it is visible in the image (False: mapped after the capture date).
        parts: Its drawables and shadows.
        version: OSM version.
        timestamp: OSM timestamp.
        osm_ref: OSM reference (``n12``, ``w34``, ``r5``) once written.
    """

    index: int
    kind: str
    tags: dict[str, str]
    geom: BaseGeometry
    osm: str | None
    coco: str | None = None
    drawn: bool = True
    parts: Parts = field(default_factory=Parts)
    version: int = 1
    timestamp: dt.datetime | None = None
    osm_ref: str | None = None


class RegionBuilder:
    """Collects features while the districts are laid out."""

    def __init__(self, size_px: int, gsd_m: float, rng: np.random.Generator):
        self.size = size_px
        self.m = 1.0 / gsd_m  # pixels per metre
        self.rng = rng
        self.features: list[Feature] = []

    def add(
        self,
        kind: str,
        tags: dict[str, str],
        geom: BaseGeometry,
        osm: str | None,
        parts: Parts | None = None,
        coco: str | None = None,
        drawn: bool = True,
    ) -> Feature:
        index = len(self.features)
        owned = (parts or Parts()).owned_by(index)
        feature = Feature(index, kind, tags, geom, osm, coco, drawn, owned)
        self.features.append(feature)
        return feature

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def choice(self, options: Sequence, p: Sequence[float] | None = None):
        return options[int(self.rng.choice(len(options), p=p))]

    def jitter(self, colour: shapes.Colour, amount: float = 0.08) -> shapes.Colour:
        gain = self.uniform(1 - amount, 1 + amount)
        return tuple(float(np.clip(c * gain + self.uniform(-4, 4), 0, 255)) for c in colour)

    def tree(self, x: float, y: float, extra_tags: dict[str, str] | None = None) -> Feature:
        radius_m = self.uniform(2.0, 3.6)
        height = self.uniform(6, 15)
        tags = {"natural": "tree", **(extra_tags or {})}
        if self.rng.random() < 0.5:
            tags["leaf_type"] = self.choice(["broadleaved", "needleleaved"], p=[0.75, 0.25])
        parts = shapes.tree(x, y, radius_m * self.m, height, self.m)
        return self.add("tree", tags, Point(x, y), "node", parts)


def shelf_pack(rect: Rect, sizes: Sequence[tuple[float, float]], gap: float) -> list:
    """Place rectangles (w, h) in rows inside ``rect``; returns top-left corners or None."""
    x0, y0, x1, y1 = rect
    x, y, row_h, placed = x0, y0, 0.0, []
    for w, h in sizes:
        if x + w > x1 and x > x0:
            x, y, row_h = x0, y + row_h + gap, 0.0
        if x + w > x1 or y + h > y1:
            placed.append(None)
            continue
        placed.append((x, y))
        x, row_h = x + w + gap, max(row_h, h)
    return placed


def packed_centres(b: RegionBuilder, rect: Rect, sizes: list, gap_m: float) -> list:
    """Shelf-pack (w, h) metre sizes inside ``rect`` (4 m margin); centres in px or None."""
    m = b.m
    inner = (rect[0] + 4 * m, rect[1] + 4 * m, rect[2] - 4 * m, rect[3] - 4 * m)
    spots = shelf_pack(inner, [(w * m, h * m) for w, h in sizes], gap_m * m)
    return [
        None if spot is None else (spot[0] + w * m / 2, spot[1] + h * m / 2)
        for spot, (w, h) in zip(spots, sizes, strict=True)
    ]


def fill_with_trees(b: RegionBuilder, rect: Rect, first: int, m2_per_tree: float = 3000) -> None:
    """Scatter trees over the free ground of ``rect``, clear of features from ``first`` on."""
    avoid = [f.geom.buffer(3 * b.m) for f in b.features[first:]]
    area_m2 = (rect[2] - rect[0]) * (rect[3] - rect[1]) / b.m**2
    scatter_trees(b, rect, avoid, min(40, int(area_m2 / m2_per_tree)))


def scatter_trees(b: RegionBuilder, rect: Rect, avoid: list[BaseGeometry], n: int) -> None:
    """Up to ``n`` trees at random spots of ``rect`` whose crowns stay clear of ``avoid``."""
    margin = 4.5 * b.m
    for _ in range(n * 4):
        x = b.uniform(rect[0] + margin, rect[2] - margin)
        y = b.uniform(rect[1] + margin, rect[3] - margin)
        if all(g.distance(Point(x, y)) > margin for g in avoid):
            b.tree(x, y)
            avoid.append(Point(x, y).buffer(margin))
            n -= 1
            if n == 0:
                return
