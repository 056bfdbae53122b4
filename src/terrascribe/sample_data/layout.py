"""The synthetic region: where every object goes, what OSM tags it carries and how it looks.

The region is laid out in pixel coordinates of the big image as five districts around a primary
road (west-east) and a residential street (north-south): houses in the north-west, a sports
ground and a shopping area in the north-east, a lake with a river and a forest in the south-west,
fields with an industrial corner in the south-east, and a railway along the southern edge.
Object sizes are real-world metres; districts scale with the image, so a smaller image holds
fewer houses, courts and cars, and drops what no longer fits.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from terrascribe.sample_data import shapes
from terrascribe.sample_data.render import Drawable
from terrascribe.sample_data.shapes import Frame, Parts

CAPTURE_DATE = dt.date(2021, 6, 1)
EDGE_PX = 0.25  # keeps every OSM node strictly inside the raster
ROAD_WIDTH_M = {"primary": 9.0, "residential": 6.0, "service": 5.0, "track": 3.0, "footway": 2.2}
STREET_NAMES = (
    "Lipová",
    "Polní",
    "Za Školou",
    "Krátká",
    "Luční",
    "Zahradní",
    "Na Výsluní",
    "Javorová",
    "Březová",
    "Na Stráni",
    "Jabloňová",
    "Slunečná",
)
CITY = "Dolní Lhota"
POSTCODE = "252 41"

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


def build_region(size_px: int, gsd_m: float, rng: np.random.Generator) -> list[Feature]:
    """Lay out the whole region; returns its features in a fixed, seed-determined order."""
    b = RegionBuilder(size_px, gsd_m, rng)
    s, m = float(size_px), b.m
    y_road = s * b.uniform(0.5, 0.54)
    x_street = s * b.uniform(0.43, 0.47)
    hw_p, hw_s = ROAD_WIDTH_M["primary"] / 2 * m, ROAD_WIDTH_M["residential"] / 2 * m
    has_rail = size_px / m >= 150
    y_rail = s - 7.5 * m if has_rail else s
    junctions_primary = [x_street]
    junctions_street = [y_road]

    residential = (EDGE_PX, EDGE_PX, x_street - hw_s - 2 * m, y_road - hw_p - 3 * m)
    junctions_street += _residential(b, residential, x_street)
    _verge_trees(b, residential[0], x_street - 10 * m, y_road - hw_p - 2 * m)

    east = (x_street + hw_s + 4 * m, 4 * m, s - 4 * m, y_road - hw_p - 4 * m)
    y_footway = east[1] + 0.58 * (east[3] - east[1])
    _sports(b, (east[0], east[1], east[2], y_footway - 4 * m))
    _footway(b, x_street, y_footway)
    junctions_street.append(y_footway)
    junctions_primary += _commerce(b, (east[0], y_footway + 4 * m, east[2], east[3]), y_road)

    south_y0 = y_road + hw_p + 5 * m
    south_y1 = y_rail - 6 * m if has_rail else s - 4 * m
    junctions_primary += _nature(b, (4 * m, south_y0, x_street - 2 * m, south_y1), y_road)
    junctions_primary += _farm(b, (x_street + 6 * m, south_y0, s - 4 * m, south_y1), y_road)
    if has_rail:
        _railway(b, y_rail)
    _main_roads(b, y_road, x_street, sorted(junctions_primary), sorted(junctions_street))
    _assign_history(b)
    return b.features


def _main_roads(b: RegionBuilder, y_road: float, x_street: float, xs: list, ys: list) -> None:
    """The primary road and the residential street, with a node at every junction."""
    s, m = float(b.size), b.m
    primary = LineString([(EDGE_PX, y_road), *((x, y_road) for x in xs), (s - EDGE_PX, y_road)])
    b.add(
        "road",
        {
            "highway": "primary",
            "surface": "asphalt",
            "smoothness": "good",
            "lanes": "2",
            "maxspeed": "70",
            "ref": "101",
            "name": "Pražská",
        },
        primary,
        "way",
        Parts([shapes.road(primary, ROAD_WIDTH_M["primary"] * m, "asphalt", (96, 96, 99), 14)]),
    )
    street = LineString([(x_street, EDGE_PX), *((x_street, y) for y in ys)])
    b.add(
        "road",
        {"highway": "residential", "surface": "asphalt", "name": STREET_NAMES[-1]},
        street,
        "way",
        Parts(
            [shapes.road(street, ROAD_WIDTH_M["residential"] * m, "asphalt", (112, 110, 108), 13)]
        ),
    )


def _house_tags(b: RegionBuilder, street: str, number: int, levels: int, roof: str) -> dict:
    tags = {
        "building": "house",
        "building:levels": str(levels),
        "roof:shape": roof,
        "addr:street": street,
        "addr:housenumber": str(number),
    }
    if b.rng.random() < 0.5:
        tags |= {"addr:city": CITY, "addr:postcode": POSTCODE}
    if b.rng.random() < 0.03:
        tags["name"] = b.choice(["Vila Marie", "Vila Jana", "Hájovna"])
    return tags


def _residential(b: RegionBuilder, rect: Rect, x_street: float) -> list[float]:
    """Apartment blocks along the primary road, then streets of house lots; returns street ys."""
    x0, y0, x1, y1 = rect
    m = b.m
    b.add(
        "landuse",
        {"landuse": "residential"},
        box(*rect),
        "way",
        Parts([Drawable(box(*rect), "meadow", (110, 132, 80), z=0)]),
    )
    lot_d, street_w = 30 * m, ROAD_WIDTH_M["residential"] * m
    bottom = y1
    if y1 - y0 >= 80 * m:
        _apartments(b, (x0, y1 - 34 * m, x1, y1 - 6 * m))
        bottom = y1 - 36 * m
    lots, street_ys = [], []
    for name in STREET_NAMES[:-1]:
        y_street = bottom - lot_d - street_w / 2
        if y_street - street_w / 2 < y0:
            break
        line = LineString([(x0, y_street), (x_street, y_street)])
        b.add(
            "road",
            {"highway": "residential", "surface": "asphalt", "name": name}
            | ({"smoothness": "intermediate"} if b.rng.random() < 0.5 else {}),
            line,
            "way",
            Parts([shapes.road(line, street_w, "asphalt", (112, 110, 108), 13)]),
        )
        street_ys.append(y_street)
        band_south = (y_street + street_w / 2, y_street + street_w / 2 + lot_d)
        # house numbers: odd on the south side of a street, even on the north side
        lots += [
            (lot, "north", name, 2 * i + 1) for i, lot in enumerate(_lots(b, x0, x1, *band_south))
        ]
        top = y_street - street_w / 2 - lot_d
        if top < y0:
            break
        band_north = (top, y_street - street_w / 2)
        lots += [
            (lot, "south", name, 2 * i + 2) for i, lot in enumerate(_lots(b, x0, x1, *band_north))
        ]
        bottom = top
    n_new = min(2, len(lots) // 4)
    new_lots = set(b.rng.choice(len(lots), size=n_new, replace=False).tolist()) if n_new else set()
    for i, (lot, front, name, number) in enumerate(lots):
        _lot(b, lot, front, name, number, new=i in new_lots)
    return street_ys


def _lots(b: RegionBuilder, x0: float, x1: float, y0: float, y1: float) -> list[Rect]:
    m, lots, x = b.m, [], x0 + 1 * b.m
    while True:
        width = b.uniform(17, 24) * m
        if x + width > x1 - 1 * m:
            return lots
        lots.append((x, y0, x + width, y1))
        x += width


def _lot(b: RegionBuilder, lot: Rect, front: str, street: str, number: int, new: bool) -> None:
    """One house lot: a house (or nothing), maybe a shed and a garden tree."""
    m = b.m
    lx0, ly0, lx1, ly1 = lot
    if not new and b.rng.random() < 0.06:
        return  # an empty lot
    lot_w = (lx1 - lx0) / m
    w, d, setback = min(b.uniform(8, 12.5), lot_w - 5.5), b.uniform(8, 11), b.uniform(4, 7)
    cx = lx0 + b.uniform(2.5 + w / 2, lot_w - 2.5 - w / 2) * m
    cy = ly0 + (setback + d / 2) * m if front == "north" else ly1 - (setback + d / 2) * m
    angle = 0.0 if b.rng.random() < 0.7 else math.radians(b.uniform(-6, 6))
    footprint = Frame(cx, cy, angle, m).box(w, d)
    roof = b.choice(["gabled", "hipped", "flat"], p=[0.5, 0.4, 0.1])
    levels = int(b.choice([1, 2], p=[0.45, 0.55]))
    tags = _house_tags(b, street, number, levels, roof)
    if new:
        tags["start_date"] = str(b.rng.integers(2022, 2025))
        b.add("house", tags, footprint, "way", coco="building", drawn=False)
        return
    palette = shapes.FLAT_ROOF_COLOURS if roof == "flat" else shapes.ROOF_COLOURS
    colour_name = b.choice(list(palette))
    if b.rng.random() < 0.4:
        tags["roof:colour"] = colour_name
    height = levels * 3 + (0.5 if roof == "flat" else 2.5)
    parts = shapes.building(footprint, b.jitter(palette[colour_name]), roof, height, m)
    b.add("house", tags, footprint, "way", parts, coco="building")

    _, hy0, _, hy1 = footprint.bounds
    yard = (hy1 + 2.5 * m, ly1 - 1.5 * m) if front == "north" else (ly0 + 1.5 * m, hy0 - 2.5 * m)
    occupied = [footprint]
    if b.rng.random() < 0.35 and yard[1] - yard[0] > 4 * m:
        sw, sd = b.uniform(2.5, 4.5), b.uniform(2.5, 3.5)
        sx = b.uniform(lx0 + (1.5 + sw / 2) * m, lx1 - (1.5 + sw / 2) * m)
        sy = b.uniform(yard[0] + sd / 2 * m, yard[1] - sd / 2 * m)
        shed = Frame(sx, sy, 0.0, m).box(sw, sd)
        shed_roof = b.choice(["flat", "gabled"])
        colour = b.jitter(b.choice([(96, 98, 100), (122, 80, 60), (150, 150, 148)]))
        b.add(
            "shed",
            {"building": "yes", "roof:shape": shed_roof, "building:levels": "1"},
            shed,
            "way",
            shapes.building(shed, colour, shed_roof, 2.5, m),
            coco="building",
        )
        occupied.append(shed)
    if b.rng.random() < 0.5:
        _garden_tree(b, lot, occupied)


def _garden_tree(b: RegionBuilder, lot: Rect, occupied: list[Polygon]) -> None:
    """A tree somewhere in the lot, clear of the buildings (so it hides none of them)."""
    m = b.m
    lx0, ly0, lx1, ly1 = lot
    margin = 4.2 * m  # largest crown radius plus half a metre
    for _ in range(6):
        x, y = b.uniform(lx0 + margin, lx1 - margin), b.uniform(ly0 + margin, ly1 - margin)
        if all(Point(x, y).distance(p) > margin + 1 * m for p in occupied):
            b.tree(x, y)
            return


def _apartments(b: RegionBuilder, strip: Rect) -> None:
    m = b.m
    x0, y0, x1, y1 = strip
    x, number = x0 + 5 * m, 1
    while True:
        length, depth = b.uniform(30, 48), b.uniform(12, 15)
        if x + length * m > x1 - 5 * m:
            return
        footprint = Frame(x + length / 2 * m, (y0 + y1) / 2, 0.0, m).box(length, depth)
        levels = int(b.rng.integers(3, 7))
        colour_name = b.choice(list(shapes.FLAT_ROOF_COLOURS))
        tags = {
            "building": "residential",
            "building:levels": str(levels),
            "roof:shape": "flat",
            "addr:street": "Pražská",
            "addr:housenumber": str(number),
        }
        if b.rng.random() < 0.5:
            tags["roof:colour"] = colour_name
        colour = b.jitter(shapes.FLAT_ROOF_COLOURS[colour_name])
        parts = shapes.building(footprint, colour, "flat", levels * 3 + 1, m)
        b.add("apartments", tags, footprint, "way", parts, coco="building")
        x += (length + b.uniform(10, 18)) * m
        number += 1


def _verge_trees(b: RegionBuilder, x0: float, x1: float, y: float) -> None:
    """An avenue of trees along the primary road."""
    x = x0 + b.uniform(3, 8) * b.m
    while x < x1:
        b.tree(x, y, {"denotation": "avenue"})
        x += b.uniform(12, 18) * b.m


def _sports(b: RegionBuilder, rect: Rect) -> None:
    """Sports ground: running track around a soccer pitch (or a smaller pitch), courts."""
    m = b.m
    b.add(
        "landuse",
        {"landuse": "grass"},
        box(*rect),
        "way",
        Parts([Drawable(box(*rect), "grass", (98, 136, 74), z=0)]),
    )
    w_m, h_m = (rect[2] - rect[0]) / m, (rect[3] - rect[1]) / m
    has_track = w_m >= 190 and h_m >= 104
    if has_track:
        big = (180.0, 95.0)
    else:
        length = float(np.clip(min(0.62 * w_m, (h_m - 12) * 1.5), 30, 105))
        big = (length + 3, length * 0.65 + 3)
    first = len(b.features)
    n_tennis, n_basketball = int(b.rng.integers(3, 7)), int(b.rng.integers(1, 3))
    training = b.uniform(60, 90)
    sizes = [
        big,
        *[(18.3, 36.6)] * n_tennis,
        *[(32.0, 19.0)] * n_basketball,
        (16.0, 10.0),
        (training + 3, training * 0.65 + 3),
    ]
    centres = _packed_centres(b, rect, sizes, gap_m=5)
    if centres[0]:
        frame = Frame(*centres[0], 0.0, m)
        if has_track:
            _track_and_pitch(b, frame)
        else:
            _pitch(b, frame, big[0] - 3, big[1] - 3)
    surface = b.choice(["clay", "hard"])
    for centre in centres[1 : 1 + n_tennis]:
        if centre:
            _tennis(b, Frame(*centre, math.pi / 2, m), surface)
    for centre in centres[1 + n_tennis : 1 + n_tennis + n_basketball]:
        if centre:
            _basketball(b, Frame(*centre, 0.0, m))
    if centres[-2]:
        footprint = Frame(*centres[-2], 0.0, m).box(16, 10)
        tags = {"building": "yes", "roof:shape": "flat", "building:levels": "1", "name": "TJ Sokol"}
        parts = shapes.building(footprint, b.jitter((168, 168, 164)), "flat", 4, m)
        b.add("clubhouse", tags, footprint, "way", parts, coco="building")
    if centres[-1]:
        _pitch(b, Frame(*centres[-1], 0.0, m), training, training * 0.65)
    _fill_with_trees(b, rect, first)


def _packed_centres(b: RegionBuilder, rect: Rect, sizes: list, gap_m: float) -> list:
    """Shelf-pack (w, h) metre sizes inside ``rect`` (4 m margin); centres in px or None."""
    m = b.m
    inner = (rect[0] + 4 * m, rect[1] + 4 * m, rect[2] - 4 * m, rect[3] - 4 * m)
    spots = shelf_pack(inner, [(w * m, h * m) for w, h in sizes], gap_m * m)
    return [
        None if spot is None else (spot[0] + w * m / 2, spot[1] + h * m / 2)
        for spot, (w, h) in zip(spots, sizes, strict=True)
    ]


def _fill_with_trees(b: RegionBuilder, rect: Rect, first: int, m2_per_tree: float = 3000) -> None:
    """Scatter trees over the free ground of ``rect``, clear of features from ``first`` on."""
    avoid = [f.geom.buffer(3 * b.m) for f in b.features[first:]]
    area_m2 = (rect[2] - rect[0]) * (rect[3] - rect[1]) / b.m**2
    _scatter_trees(b, rect, avoid, min(40, int(area_m2 / m2_per_tree)))


def _track_and_pitch(b: RegionBuilder, frame: Frame) -> None:
    outline, _, parts = shapes.running_track(frame)
    tags = {"leisure": "track", "sport": "athletics", "area": "yes", "surface": "tartan"}
    b.add("track", tags, outline, "way", parts, coco="ground track field")
    _pitch(b, frame, 100, 64)


def _pitch(b: RegionBuilder, frame: Frame, length: float, width: float) -> None:
    outline, parts = shapes.soccer_pitch(frame, length, width)
    tags = {"leisure": "pitch", "sport": "soccer", "surface": "grass"}
    if b.rng.random() < 0.5:
        tags["lit"] = "yes"
    b.add("soccer_pitch", tags, outline, "way", parts, coco="soccer field")


def _tennis(b: RegionBuilder, frame: Frame, surface: str) -> None:
    colours = {"clay": ((186, 104, 70), (174, 98, 66)), "hard": ((62, 104, 150), (72, 124, 86))}
    court, runoff = colours[surface]
    outline, parts = shapes.tennis_court(frame, b.jitter(court, 0.04), b.jitter(runoff, 0.04))
    tags = {"leisure": "pitch", "sport": "tennis", "surface": surface}
    b.add("tennis_court", tags, outline, "way", parts, coco="tennis court")


def _basketball(b: RegionBuilder, frame: Frame) -> None:
    surface, colour = b.choice([("asphalt", (112, 114, 118)), ("tartan", (168, 96, 62))])
    outline, parts = shapes.basketball_court(frame, b.jitter(colour, 0.04))
    tags = {"leisure": "pitch", "sport": "basketball", "surface": surface}
    b.add("basketball_court", tags, outline, "way", parts, coco="basketball court")


def _footway(b: RegionBuilder, x_street: float, y: float) -> None:
    line = LineString([(x_street, y), (b.size - EDGE_PX, y)])
    width = ROAD_WIDTH_M["footway"] * b.m
    b.add(
        "path",
        {"highway": "footway", "surface": "gravel"},
        line,
        "way",
        Parts([shapes.road(line, width, "unpaved", (176, 166, 146), 12)]),
    )


def _commerce(b: RegionBuilder, rect: Rect, y_road: float) -> list[float]:
    """Parking lot with cars, a supermarket and an office block; returns road junction xs."""
    m = b.m
    w_m, h_m = (rect[2] - rect[0]) / m, (rect[3] - rect[1]) / m
    first = len(b.features)
    lot_size = (float(np.clip(0.4 * w_m, 30, 140)), float(np.clip(h_m - 10, 18, 90)))
    market = (b.uniform(44, 56), b.uniform(30, 36))
    office = (b.uniform(36, 44), b.uniform(28, 34))
    units = [(b.uniform(20, 40), b.uniform(14, 24)) for _ in range(int(b.rng.integers(2, 5)))]
    inner = (rect[0] + 5 * m, rect[1] + 5 * m, rect[2] - 5 * m, rect[3] - 5 * m)
    sizes = [lot_size, market, office, *units]
    spots = shelf_pack(inner, [(w * m, h * m) for w, h in sizes], 8 * m)
    for (w, h), spot in zip(units, spots[3:], strict=True):
        if spot:
            _commercial_unit(b, Frame(spot[0] + w / 2 * m, spot[1] + h / 2 * m, 0.0, m), w, h)
    junctions = []
    if spots[0]:
        junctions.append(_parking(b, Frame(*spots[0], 0.0, m), *lot_size, y_road))
    if spots[1]:
        frame = Frame(spots[1][0] + market[0] / 2 * m, spots[1][1] + market[1] / 2 * m, 0.0, m)
        footprint = frame.box(*market)
        tags = {
            "building": "retail",
            "shop": "supermarket",
            "name": "Potraviny U Lípy",
            "opening_hours": "Mo-Sa 07:00-20:00; Su 08:00-18:00",
            "building:levels": "1",
            "roof:shape": "flat",
            "roof:colour": "white",
        }
        parts = shapes.building(footprint, b.jitter((206, 206, 200), 0.03), "flat", 7, m)
        b.add("supermarket", tags, footprint, "way", parts, coco="building")
    if spots[2]:
        frame = Frame(spots[2][0] + office[0] / 2 * m, spots[2][1] + office[1] / 2 * m, 0.0, m)
        outer = frame.box(*office)
        court = frame.box(office[0] - 20, office[1] - 18)
        footprint = Polygon(outer.exterior, [court.exterior])
        tags = {
            "type": "multipolygon",
            "building": "commercial",
            "office": "company",
            "name": "Lhota Business Center",
            "building:levels": "3",
            "roof:shape": "flat",
            "opening_hours": "Mo-Fr 08:00-17:00",
            "addr:street": "Pražská",
            "addr:housenumber": "120",
        }
        parts = shapes.building(footprint, b.jitter((96, 98, 100), 0.05), "flat", 10, m)
        b.add("office", tags, footprint, "multipolygon", parts, coco="building")
    _fill_with_trees(b, rect, first)
    return junctions


def _commercial_unit(b: RegionBuilder, frame: Frame, length: float, depth: float) -> None:
    footprint = frame.box(length, depth)
    kind = b.choice(["commercial", "retail", "yes"])
    tags = {"building": kind, "building:levels": str(b.rng.integers(1, 3)), "roof:shape": "flat"}
    if kind == "retail":
        tags |= {
            "shop": b.choice(["hardware", "furniture", "garden_centre"]),
            "name": "Lhota Market",
        }
        tags["opening_hours"] = "Mo-Fr 09:00-18:00; Sa 09:00-12:00"
    colour = b.jitter(b.choice(list(shapes.FLAT_ROOF_COLOURS.values())), 0.05)
    parts = shapes.building(footprint, colour, "flat", 6, b.m)
    b.add("commercial_unit", tags, footprint, "way", parts, coco="building")


def _parking(b: RegionBuilder, corner: Frame, length: float, depth: float, y_road: float):
    """The parking lot, its aisles, its cars and the service road to the primary road."""
    m = b.m
    lot = shapes.parking_lot(corner, length, depth)
    tags = {
        "amenity": "parking",
        "parking": "surface",
        "surface": "asphalt",
        "capacity": str(len(lot.stalls)),
        "access": "customers",
        "fee": "no",
    }
    b.add("parking", tags, lot.outline, "way", lot.parts)
    for aisle in lot.aisles:
        b.add("path", {"highway": "service", "service": "parking_aisle"}, aisle, "way")
    occupancy = b.uniform(0.55, 0.85)
    for stall in lot.stalls:
        if b.rng.random() > occupancy:
            continue
        length, width = b.uniform(3.9, 4.6), b.uniform(1.7, 1.9)
        du = b.uniform(-1, 1) * max(0.0, (5.2 - length) / 2 - 0.3)
        dv = b.uniform(-1, 1) * max(0.0, (2.6 - width) / 2 - 0.25)
        frame = stall.moved(du, dv, math.pi * float(b.rng.integers(0, 2)))
        colour = b.jitter(b.choice(shapes.CAR_COLOURS), 0.05)
        parts = shapes.car(frame, length, width, colour)
        b.add("car", {}, frame.box(length, width), None, parts, coco="small vehicle")
    x = lot.outline.centroid.x
    road = LineString([(x, y_road), (x, lot.outline.bounds[3])])
    b.add(
        "road",
        {"highway": "service", "surface": "asphalt"},
        road,
        "way",
        Parts([shapes.road(road, ROAD_WIDTH_M["service"] * m, "asphalt", (118, 116, 113), 12.5)]),
    )
    return x


def _nature(b: RegionBuilder, rect: Rect, y_road: float) -> list[float]:
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
    _scatter_trees(b, rect, avoid, max(3, min(40, int(area_m2 / 4000))))
    return [cx]


def _river(b: RegionBuilder, x_start: float, y_lake: float, x_end: float, lake_r: float):
    n = 12
    xs = np.linspace(x_start, x_end, n)
    phase = b.uniform(0, 2 * np.pi)
    ys = y_lake + 0.35 * lake_r * np.sin(np.linspace(0, 2.5, n) + phase) * np.linspace(1, 0, n)
    return LineString(np.c_[xs, ys])


def _scatter_trees(b: RegionBuilder, rect: Rect, avoid: list[BaseGeometry], n: int) -> None:
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


CROPS: dict[str, shapes.Colour] = {
    "wheat": (176, 164, 102),
    "barley": (188, 176, 120),
    "maize": (86, 124, 58),
    "rapeseed": (146, 158, 70),
    "sugar_beet": (70, 116, 56),
    "": (146, 120, 94),  # ploughed, no crop
}


def _farm(b: RegionBuilder, rect: Rect, y_road: float) -> list[float]:
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
    col_w, row_h = (fields_x1 - x0) / cols, (y1 - y0) / rows
    junctions = []
    if cols >= 2:
        xt = x0 + col_w
        track = LineString([(xt, y_road), (xt, y1)])
        tags = {"highway": "track", "tracktype": "grade4", "surface": "unpaved"}
        width = ROAD_WIDTH_M["track"] * m
        b.add(
            "road",
            tags,
            track,
            "way",
            Parts([shapes.road(track, width, "unpaved", (148, 126, 98), 12)]),
        )
        junctions.append(xt)
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
    centres = _packed_centres(b, rect, sizes, gap_m=6)
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


def _railway(b: RegionBuilder, y: float) -> None:
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


def _assign_history(b: RegionBuilder) -> None:
    """OSM versions and timestamps: most edits before the capture date, some after.

    Objects not drawn were mapped after the capture (built later), with version 1.
    """
    start = dt.datetime(2009, 1, 1, tzinfo=dt.UTC)
    capture = dt.datetime.combine(CAPTURE_DATE, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime(2024, 12, 31, tzinfo=dt.UTC)
    for f in b.features:
        after = not f.drawn or b.rng.random() < 0.25
        low, high = (capture + dt.timedelta(days=1), end) if after else (start, capture)
        seconds = b.rng.integers(0, int((high - low).total_seconds()))
        f.timestamp = low + dt.timedelta(seconds=int(seconds))
        f.version = 1 if not f.drawn else int(b.rng.integers(1, 7))
