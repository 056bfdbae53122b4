"""The open districts: lake, river and forest; fields, power line and industry; railway."""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import LineString, Point, Polygon, box

from terrascribe.sample_data import shapes
from terrascribe.sample_data.features import (
    EDGE_PX,
    ROAD_WIDTH_M,
    Rect,
    RegionBuilder,
    packed_centres,
    scatter_trees,
)
from terrascribe.sample_data.render import Drawable
from terrascribe.sample_data.shapes import Frame, Parts


def nature(b: RegionBuilder, rect: Rect, y_road: float) -> list[float]:
    """A lake with an island, a river flowing into it and a forest with a clearing."""
    m = b.m
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    lake_r = min(0.19 * w, 0.38 * h, 110 * m)
    lx, ly = x0 + 0.25 * w, y0 + b.uniform(0.45, 0.55) * h
    lake = shapes.blob(lx, ly, lake_r, lake_r * b.uniform(0.75, 0.95), b.rng)
    island = shapes.blob(lx + 0.2 * lake_r, ly - 0.1 * lake_r, 0.2 * lake_r, 0.15 * lake_r, b.rng)
    water = Polygon(lake.exterior, [island.exterior])
    tags = {"type": "multipolygon", "natural": "water", "water": "lake", "name": "Rybník Na Lukách"}
    b.add("lake", tags, water, "multipolygon", Parts([Drawable(water, "water", (40, 62, 72), z=5)]))
    b.add("island", {"place": "islet"}, island, "way")

    river = _river(b, x0, ly, lx - 0.6 * lake_r, lake_r)
    width = b.uniform(8, 12)
    parts = Parts([Drawable(river.buffer(width / 2 * m), "water", (52, 72, 70), z=5)])
    tags = {"waterway": "river", "name": "Lhotka", "width": f"{width:.0f}"}
    b.add("river", tags, river, "way", parts)

    fx, fy = x0 + 0.73 * w, y0 + 0.5 * h
    rx, ry = min(0.2 * w, 0.4 * h / 1.15), 0.4 * h / 1.15
    outer = shapes.blob(fx, fy, rx, ry, b.rng)
    clear_r = 0.28 * min(rx, ry)
    clearing = shapes.blob(fx - 0.15 * rx, fy + 0.1 * ry, clear_r, clear_r * 0.8, b.rng)
    forest = Polygon(outer.exterior, [clearing.exterior])
    tags = {"type": "multipolygon", "landuse": "forest", "leaf_type": "mixed"}
    b.add(
        "forest", tags, forest, "multipolygon", Parts([Drawable(forest, "forest", (50, 72, 42), 2)])
    )

    cx, cy = clearing.centroid.x, clearing.centroid.y
    track = LineString([(cx, y_road), (cx, cy)])
    tags = {"highway": "track", "tracktype": "grade2", "surface": "gravel", "smoothness": "bad"}
    width_px = ROAD_WIDTH_M["track"] * m
    b.add(
        "road",
        tags,
        track,
        "way",
        Parts([shapes.road(track, width_px, "unpaved", (150, 138, 118), 12)]),
    )
    avoid = [water.buffer(2 * m), forest.buffer(1 * m), river.buffer(8 * m), track.buffer(2 * m)]
    area_m2 = w * h / m**2
    scatter_trees(b, rect, avoid, max(3, min(40, int(area_m2 / 4000))))
    return [cx]


def _river(b: RegionBuilder, x_start: float, y_lake: float, x_end: float, lake_r: float):
    n = 12
    xs = np.linspace(x_start, x_end, n)
    phase = b.uniform(0, 2 * np.pi)
    ys = y_lake + 0.35 * lake_r * np.sin(np.linspace(0, 2.5, n) + phase) * np.linspace(1, 0, n)
    return LineString(np.c_[xs, ys])


CROPS: dict[str, shapes.Colour] = {
    "wheat": (176, 164, 102),
    "barley": (188, 176, 120),
    "maize": (86, 124, 58),
    "rapeseed": (146, 158, 70),
    "sugar_beet": (70, 116, 56),
    "": (146, 120, 94),  # ploughed, no crop
}


def farm(b: RegionBuilder, rect: Rect, y_road: float) -> list[float]:
    """Fields split by a farm track, a power line and an industrial corner; returns track xs."""
    m = b.m
    x0, y0, x1, y1 = rect
    w_m = (x1 - x0) / m
    fields_x1 = x1
    if w_m >= 90:
        ind_w = float(np.clip(0.3 * w_m, 45, 130)) * m
        _industrial(b, (x1 - ind_w, y0, x1, y1))
        fields_x1 = x1 - ind_w - 6 * m
    fw, fh = (fields_x1 - x0) / m, (y1 - y0) / m
    cols, rows = max(1, round(fw / 130)), 2 if fh >= 170 else 1
    if cols == 1:  # the farm track then runs along the west side of the only field column
        x0 += 6 * m
    col_w, row_h = (fields_x1 - x0) / cols, (y1 - y0) / rows
    xt = x0 + col_w if cols >= 2 else x0 - 3 * m
    track = LineString([(xt, y_road), (xt, y1)])
    tags = {"highway": "track", "tracktype": "grade4", "surface": "unpaved"}
    width = ROAD_WIDTH_M["track"] * m
    parts = Parts([shapes.road(track, width, "unpaved", (148, 126, 98), 12)])
    b.add("road", tags, track, "way", parts)
    junctions = [xt]
    for r in range(rows):
        for c in range(cols):
            _field(b, (x0 + c * col_w, y0 + r * row_h, x0 + (c + 1) * col_w, y0 + (r + 1) * row_h))
    _power_line(b, (x0, y0, fields_x1, y1))
    return junctions


def _field(b: RegionBuilder, cell: Rect) -> None:
    m = b.m
    x0, y0, x1, y1 = cell
    inset = 4 * m
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    poly = Polygon(
        [
            (x + sx * (inset + b.uniform(0, 2) * m), y + sy * (inset + b.uniform(0, 2) * m))
            for (x, y), (sx, sy) in zip(corners, signs, strict=True)
        ]
    )
    crop = b.choice(list(CROPS))
    angle = b.choice([0.0, math.pi / 2]) + b.uniform(-0.05, 0.05)
    params = (angle, b.uniform(1.5, 3.5) * m, b.uniform(0.05, 0.12))
    tags = {"landuse": "farmland"} | ({"crop": crop} if crop else {})
    parts = Parts([Drawable(poly, "field", b.jitter(CROPS[crop], 0.05), z=1, params=params)])
    b.add("field", tags, poly, "way", parts)


def _power_line(b: RegionBuilder, rect: Rect) -> None:
    """A 110 kV line crossing the fields diagonally, towers every ~110 m."""
    m = b.m
    start = np.array([rect[0] + 12 * m, rect[1] + 10 * m])
    end = np.array([rect[2] - 12 * m, rect[3] - 10 * m])
    n_towers = max(2, int(np.hypot(*(end - start)) / (110 * m)) + 1)
    points = [tuple(start + (end - start) * t) for t in np.linspace(0, 1, n_towers)]
    for i, (x, y) in enumerate(points):
        tags = {"power": "tower", "design": "donau", "ref": str(i + 1)}
        parts = shapes.lattice_tower(x, y, 5 * m, 32, m)
        b.add("power_tower", tags, Point(x, y), "node", parts)
    line = LineString(points)
    tags = {"power": "line", "voltage": "110000", "cables": "6", "operator": "ČEPS"}
    b.add("power_line", tags, line, "way", shapes.lines([line], (92, 92, 94), z=54))


def _industrial(b: RegionBuilder, rect: Rect) -> None:
    """Concrete yard with a warehouse, storage tanks and a water tower."""
    m = b.m
    warehouse = (b.uniform(30, 44), b.uniform(16, 22))
    tanks = [b.uniform(12, 20) for _ in range(int(b.rng.integers(3, 8)))]
    sizes = [warehouse, *[(d, d) for d in tanks], (12.0, 12.0)]
    centres = packed_centres(b, rect, sizes, gap_m=6)
    # the yard ends below its lowest object; the rest is one more field
    bottom = max(c[1] + h * m / 2 for c, (_, h) in zip(centres, sizes, strict=True) if c)
    yard = (rect[0], rect[1], rect[2], min(rect[3], bottom + 8 * m))
    b.add(
        "landuse",
        {"landuse": "industrial"},
        box(*yard),
        "way",
        Parts([Drawable(box(*yard), "concrete", (150, 148, 140), z=0.5)]),
    )
    if rect[3] - yard[3] >= 40 * m:
        _field(b, (yard[0], yard[3] + 2 * m, yard[2], rect[3]))
    if centres[0]:
        footprint = Frame(*centres[0], 0.0, m).box(*warehouse)
        tags = {"building": "industrial", "building:levels": "1", "roof:shape": "flat"}
        colour = b.jitter(b.choice([(150, 164, 174), (196, 198, 196)]), 0.04)
        parts = shapes.building(footprint, colour, "flat", 8, m)
        b.add("warehouse", tags, footprint, "way", parts, coco="building")
    content = b.choice(["oil", "water", "fuel"])
    for diameter, centre in zip(tanks, centres[1:-1], strict=True):
        if centre:
            height = b.uniform(8, 14)
            parts = shapes.dome(
                *centre, diameter / 2 * m, height, m, b.jitter((212, 212, 206), 0.03)
            )
            tags = {
                "man_made": "storage_tank",
                "content": content,
                "diameter": f"{diameter:.0f}",
                "height": f"{height:.0f}",
            }
            outline = Point(centre).buffer(diameter / 2 * m, quad_segs=16)
            b.add("storage_tank", tags, outline, "way", parts, coco="storage tank")
    if centres[-1]:
        parts = shapes.dome(*centres[-1], 5 * m, 32, m, (186, 186, 180))
        tags = {"man_made": "water_tower", "height": "32"}
        b.add("water_tower", tags, Point(centres[-1]), "node", parts)


def railway(b: RegionBuilder, y: float) -> None:
    line = LineString([(EDGE_PX, y), (b.size - EDGE_PX, y)])
    tags = {
        "railway": "rail",
        "gauge": "1435",
        "usage": "main",
        "electrified": "contact_line",
        "voltage": "3000",
        "frequency": "0",
        "name": "Trať 221",
    }
    b.add("railway", tags, line, "way", shapes.railway(line, b.m))
