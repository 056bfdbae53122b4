"""The built-up districts: houses along streets, the sports ground, the shopping area."""

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
    fill_with_trees,
    packed_centres,
    shelf_pack,
)
from terrascribe.sample_data.render import Drawable
from terrascribe.sample_data.shapes import Frame, Parts

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


def residential(b: RegionBuilder, rect: Rect, x_street: float) -> list[float]:
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


def verge_trees(b: RegionBuilder, x0: float, x1: float, y: float) -> None:
    """An avenue of trees along the primary road."""
    x = x0 + b.uniform(3, 8) * b.m
    while x < x1:
        b.tree(x, y, {"denotation": "avenue"})
        x += b.uniform(12, 18) * b.m


def sports(b: RegionBuilder, rect: Rect) -> None:
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
    centres = packed_centres(b, rect, sizes, gap_m=5)
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
    fill_with_trees(b, rect, first)


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


def footway(b: RegionBuilder, x_street: float, y: float) -> None:
    line = LineString([(x_street, y), (b.size - EDGE_PX, y)])
    width = ROAD_WIDTH_M["footway"] * b.m
    b.add(
        "path",
        {"highway": "footway", "surface": "gravel"},
        line,
        "way",
        Parts([shapes.road(line, width, "unpaved", (176, 166, 146), 12)]),
    )


def commerce(b: RegionBuilder, rect: Rect, y_road: float) -> list[float]:
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
    fill_with_trees(b, rect, first)
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


def _parking(b: RegionBuilder, corner: Frame, length: float, depth: float, y_road: float) -> float:
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
