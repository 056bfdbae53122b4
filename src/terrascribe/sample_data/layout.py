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

import numpy as np
from shapely.geometry import LineString

from terrascribe.sample_data import shapes
from terrascribe.sample_data.features import (
    CAPTURE_DATE,
    EDGE_PX,
    ROAD_WIDTH_M,
    Feature,
    RegionBuilder,
)
from terrascribe.sample_data.rural import farm, nature, railway
from terrascribe.sample_data.shapes import Parts
from terrascribe.sample_data.urban import (
    STREET_NAMES,
    commerce,
    footway,
    residential,
    sports,
    verge_trees,
)


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

    houses = (EDGE_PX, EDGE_PX, x_street - hw_s - 2 * m, y_road - hw_p - 3 * m)
    junctions_street += residential(b, houses, x_street)
    verge_trees(b, houses[0], x_street - 10 * m, y_road - hw_p - 2 * m)

    east = (x_street + hw_s + 4 * m, 4 * m, s - 4 * m, y_road - hw_p - 4 * m)
    y_footway = east[1] + 0.58 * (east[3] - east[1])
    sports(b, (east[0], east[1], east[2], y_footway - 4 * m))
    footway(b, x_street, y_footway)
    junctions_street.append(y_footway)
    junctions_primary += commerce(b, (east[0], y_footway + 4 * m, east[2], east[3]), y_road)

    south_y0 = y_road + hw_p + 5 * m
    south_y1 = y_rail - 6 * m if has_rail else s - 4 * m
    junctions_primary += nature(b, (4 * m, south_y0, x_street - 2 * m, south_y1), y_road)
    junctions_primary += farm(b, (x_street + 6 * m, south_y0, s - 4 * m, south_y1), y_road)
    if has_rail:
        railway(b, y_rail)
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
