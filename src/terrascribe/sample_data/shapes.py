"""Geometry helpers and the drawables of each kind of object (houses, cars, pitches, ...).

Sizes are in metres and converted to pixels through a :class:`Frame`, a local metric frame
(``u`` along the object, ``v`` across it) placed and rotated in pixel space. Builders return
:class:`Parts`; the caller sets the owner of the drawables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from terrascribe.sample_data.render import SUN_ELEVATION_TAN, SUN_XY, Drawable

Colour = tuple[float, float, float]

ROOF_COLOURS: dict[str, Colour] = {
    "red": (168, 84, 62),
    "brown": (122, 80, 60),
    "darkgrey": (74, 76, 82),
    "grey": (150, 150, 148),
    "black": (52, 52, 56),
}
FLAT_ROOF_COLOURS: dict[str, Colour] = {
    "grey": (168, 168, 164),
    "white": (206, 206, 200),
    "darkgrey": (96, 98, 100),
}
CAR_COLOURS: tuple[Colour, ...] = (
    (222, 222, 220),
    (36, 36, 40),
    (160, 162, 168),
    (156, 42, 38),
    (42, 62, 120),
    (84, 84, 88),
    (210, 210, 214),
)
LINE_WHITE: Colour = (226, 226, 220)
TURF: Colour = (86, 140, 70)


@dataclass(frozen=True)
class Frame:
    """A metric frame placed in pixel space: origin, rotation and scale.

    Attributes:
        cx: Origin x in pixels.
        cy: Origin y in pixels.
        angle: Rotation of the ``u`` axis from the pixel x axis, in radians.
        px_per_m: Pixels per metre.
    """

    cx: float
    cy: float
    angle: float
    px_per_m: float

    def pt(self, u: float, v: float) -> tuple[float, float]:
        c, s, k = math.cos(self.angle), math.sin(self.angle), self.px_per_m
        return (self.cx + (u * c - v * s) * k, self.cy + (u * s + v * c) * k)

    def poly(self, pts: Iterable[tuple[float, float]]) -> Polygon:
        return Polygon([self.pt(u, v) for u, v in pts])

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> Polygon:
        return self.poly([(u0, v0), (u1, v0), (u1, v1), (u0, v1)])

    def box(self, length: float, width: float) -> Polygon:
        """Rectangle of ``length`` x ``width`` metres centred on the origin."""
        return self.rect(-length / 2, -width / 2, length / 2, width / 2)

    def line(self, pts: Iterable[tuple[float, float]]) -> LineString:
        return LineString([self.pt(u, v) for u, v in pts])

    def circle(self, u: float, v: float, r: float) -> Polygon:
        return Point(self.pt(u, v)).buffer(r * self.px_per_m, quad_segs=12)

    def moved(self, u: float, v: float, turn: float = 0.0) -> Frame:
        """The frame whose origin is at ``(u, v)`` here, rotated by ``turn`` radians more."""
        x, y = self.pt(u, v)
        return Frame(x, y, self.angle + turn, self.px_per_m)

    @property
    def axis(self) -> tuple[float, float]:
        return (math.cos(self.angle), math.sin(self.angle))


@dataclass
class Parts:
    """Drawables and cast shadows of one object."""

    drawables: list[Drawable] = field(default_factory=list)
    shadows: list[BaseGeometry] = field(default_factory=list)

    def add(self, other: Parts) -> Parts:
        self.drawables += other.drawables
        self.shadows += other.shadows
        return self

    def owned_by(self, owner: int) -> Parts:
        return Parts([replace(d, owner=owner) for d in self.drawables], list(self.shadows))


def blob(
    cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator, n: int = 40
) -> Polygon:
    """An irregular closed outline (lake, forest) around an ellipse, radii in pixels."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    phases = rng.uniform(0, 2 * np.pi, 3)
    wobble = (
        1
        + 0.1 * np.sin(2 * theta + phases[0])
        + 0.06 * np.sin(3 * theta + phases[1])
        + 0.03 * np.sin(5 * theta + phases[2])
    )
    return Polygon(np.c_[cx + rx * wobble * np.cos(theta), cy + ry * wobble * np.sin(theta)])


def stadium(frame: Frame, straight: float, radius: float) -> Polygon:
    """Running-track outline: two straights joined by half circles (metres)."""
    half = straight / 2
    return frame.line([(-half, 0), (half, 0)]).buffer(radius * frame.px_per_m, quad_segs=16)


def cast_shadow(footprint: Polygon, height_m: float, px_per_m: float) -> Polygon:
    """Shadow of a vertical prism standing on ``footprint``, with the sun of ``render``."""
    length = height_m / SUN_ELEVATION_TAN * px_per_m
    moved = affinity.translate(footprint, -SUN_XY[0] * length, -SUN_XY[1] * length)
    return shapely.union(footprint, moved).convex_hull


def roof_params(footprint: Polygon, shape: str) -> tuple[float, ...]:
    """Ridge along the long axis of the footprint's minimum rotated rectangle."""
    corners = np.asarray(footprint.minimum_rotated_rectangle.exterior.coords)[:4]
    edges = np.diff(np.vstack([corners, corners[:1]]), axis=0)
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    long = int(np.argmax(lengths[:2]))
    ux, uy = edges[long] / max(lengths[long], 1e-9)
    centre = corners.mean(axis=0)
    code = {"flat": 0, "gabled": 1, "hipped": 2}[shape]
    return (centre[0], centre[1], ux, uy, lengths[long] / 2, lengths[1 - long] / 2, code)


def building(
    footprint: Polygon, colour: Colour, roof_shape: str, height_m: float, px_per_m: float
) -> Parts:
    """A building seen from above: roof planes plus its shadow."""
    roof = Drawable(
        footprint, "roof", colour, z=40, params=roof_params(footprint, roof_shape), elevated=True
    )
    return Parts([roof], [cast_shadow(Polygon(footprint.exterior), height_m, px_per_m)])


def tree(x: float, y: float, radius_px: float, height_m: float, px_per_m: float) -> Parts:
    """A single tree crown and its shadow."""
    crown = Point(x, y).buffer(radius_px, quad_segs=8)
    # the crown's shadow falls clear of it, joined to the tree by the trunk's thin shadow
    length = height_m / SUN_ELEVATION_TAN * px_per_m
    dx, dy = -SUN_XY[0] * length, -SUN_XY[1] * length
    crown_shadow = affinity.translate(crown, dx * 0.75, dy * 0.75)
    trunk = LineString([(x, y), (x + dx * 0.5, y + dy * 0.5)]).buffer(radius_px * 0.15)
    colour = (58, 84, 46)
    return Parts(
        [Drawable(crown, "crown", colour, z=50, params=(x, y, radius_px), elevated=True)],
        [crown_shadow, trunk],
    )


def dome(
    x: float, y: float, radius_px: float, height_m: float, px_per_m: float, colour: Colour
) -> Parts:
    """A round structure (storage tank, water tower) and its shadow."""
    disc = Point(x, y).buffer(radius_px, quad_segs=16)
    rim = LineString(disc.exterior.coords)
    darker = tuple(c * 0.8 for c in colour)
    return Parts(
        [
            Drawable(disc, "dome", colour, z=40, params=(x, y, radius_px), elevated=True),
            Drawable(rim, "flat", darker, z=41, elevated=True),
        ],
        [cast_shadow(disc, height_m, px_per_m)],
    )


def lattice_tower(x: float, y: float, size_px: float, height_m: float, px_per_m: float) -> Parts:
    """A power pylon: a small dark square with a long thin shadow."""
    base = Point(x, y).buffer(size_px / 2, cap_style="square")
    top = Point(x, y).buffer(size_px / 6, cap_style="square")
    length = height_m / SUN_ELEVATION_TAN * px_per_m
    tip = affinity.translate(top, -SUN_XY[0] * length, -SUN_XY[1] * length)
    return Parts(
        [Drawable(base, "flat", (88, 88, 90), z=55, elevated=True)],
        [shapely.union(base, tip).convex_hull],
    )


def car(frame: Frame, length: float, width: float, colour: Colour) -> Parts:
    """A car: body plus darker windscreen and rear window."""
    glass = (38, 44, 54)
    half = length / 2
    return Parts(
        [
            Drawable(frame.box(length, width), "flat", colour, z=30, elevated=True),
            Drawable(
                frame.rect(half * 0.12, -width * 0.4, half * 0.5, width * 0.4),
                "flat",
                glass,
                z=31,
                elevated=True,
            ),
            Drawable(
                frame.rect(-half * 0.75, -width * 0.38, -half * 0.55, width * 0.38),
                "flat",
                glass,
                z=31,
                elevated=True,
            ),
        ]
    )


def lines(geoms: Iterable[BaseGeometry], colour: Colour = LINE_WHITE, z: float = 25) -> Parts:
    """Painted 1-px markings."""
    return Parts([Drawable(g, "flat", colour, z=z) for g in geoms])


def _rect_outline(frame: Frame, u0: float, v0: float, u1: float, v1: float) -> LineString:
    return LineString(frame.rect(u0, v0, u1, v1).exterior.coords)


def soccer_pitch(frame: Frame, length: float, width: float) -> tuple[Polygon, Parts]:
    """A soccer field with mowing bands and markings; returns (outline with run-off, parts)."""
    outline = frame.box(length + 3, width + 3)
    k = min(1.0, length / 105)  # small-sided pitches get proportionally smaller boxes
    band = 5.5 * k * frame.px_per_m
    turf = Drawable(outline, "turf", TURF, z=20, params=(frame.cx, frame.cy, *frame.axis, band))
    hl, hw = length / 2, width / 2
    box_d, box_w, goal_d, goal_w = 16.5 * k, 40.3 * k / 2, 5.5 * k, 18.3 * k / 2
    marks = [
        _rect_outline(frame, -hl, -hw, hl, hw),
        frame.line([(0, -hw), (0, hw)]),
        LineString(frame.circle(0, 0, 9.15 * k).exterior.coords),
        _rect_outline(frame, -hl, -box_w, -hl + box_d, box_w),
        _rect_outline(frame, hl - box_d, -box_w, hl, box_w),
        _rect_outline(frame, -hl, -goal_w, -hl + goal_d, goal_w),
        _rect_outline(frame, hl - goal_d, -goal_w, hl, goal_w),
    ]
    return outline, Parts([turf]).add(lines(marks, z=21))


def tennis_court(frame: Frame, surface: Colour, runoff: Colour) -> tuple[Polygon, Parts]:
    """A tennis court with run-off (36.6 m x 18.3 m outline) and its markings."""
    outline = frame.box(36.6, 18.3)
    court = frame.box(23.77, 10.97)
    singles, service = 8.23 / 2, 6.4
    marks = [
        LineString(court.exterior.coords),
        frame.line([(-11.885, -singles), (11.885, -singles)]),
        frame.line([(-11.885, singles), (11.885, singles)]),
        frame.line([(-service, -singles), (-service, singles)]),
        frame.line([(service, -singles), (service, singles)]),
        frame.line([(-service, 0), (service, 0)]),
    ]
    net = frame.line([(0, -6.4), (0, 6.4)])
    parts = Parts(
        [
            Drawable(outline, "flat", runoff, z=20),
            Drawable(court, "flat", surface, z=20.5),
        ]
    )
    return outline, parts.add(lines(marks, z=21)).add(lines([net], (40, 40, 40), z=22))


def basketball_court(frame: Frame, surface: Colour) -> tuple[Polygon, Parts]:
    """A basketball court with run-off (32 m x 19 m outline) and its markings."""
    outline = frame.box(32, 19)
    key_marks = []
    for side in (-1, 1):
        baseline = side * 14
        key_marks.append(_rect_outline(frame, baseline - side * 5.8, -2.45, baseline, 2.45))
        arc = frame.circle(baseline - side * 1.6, 0, 6.75).intersection(frame.box(28, 13.2))
        key_marks.append(LineString(arc.exterior.coords))
    marks = [
        _rect_outline(frame, -14, -7.5, 14, 7.5),
        frame.line([(0, -7.5), (0, 7.5)]),
        LineString(frame.circle(0, 0, 1.8).exterior.coords),
        *key_marks,
    ]
    run = tuple(c * 0.85 for c in surface)
    parts = Parts(
        [Drawable(outline, "flat", run, z=20), Drawable(frame.box(28, 15), "flat", surface, z=20.5)]
    )
    return outline, parts.add(lines(marks, z=21))


def running_track(frame: Frame, scale: float = 1.0) -> tuple[Polygon, Polygon, Parts]:
    """A 400 m track (8 lanes) around a grass infield; returns (outline, infield, parts)."""
    straight, inner, lanes, lane_w = 84.39 * scale, 36.5 * scale, 8, 1.22 * scale
    outline = stadium(frame, straight, inner + lanes * lane_w + 1)
    infield = stadium(frame, straight, inner)
    lane_lines = [
        LineString(stadium(frame, straight, inner + i * lane_w).exterior.coords)
        for i in range(lanes + 1)
    ]
    parts = Parts(
        [
            # below z=20, so a soccer pitch placed on the infield is painted over it
            Drawable(outline, "flat", (172, 82, 64), z=19.5),
            Drawable(infield, "grass", (92, 136, 72), z=19.7),
        ]
    ).add(lines(lane_lines, z=21))
    return outline, infield, parts


def road(line: LineString, width_px: float, material: str, colour: Colour, z: float) -> Drawable:
    return Drawable(line.buffer(width_px / 2, cap_style="flat"), material, colour, z=z)


def railway(line: LineString, px_per_m: float) -> Parts:
    """Ballast bed with two rails 1.435 m apart."""
    bed = line.buffer(2.6 * px_per_m, cap_style="flat")
    rails = [line.offset_curve(d * px_per_m) for d in (-0.72, 0.72)]
    return Parts([Drawable(bed, "unpaved", (128, 118, 108), z=12)]).add(
        lines(rails, (72, 70, 68), z=12.5)
    )


@dataclass(frozen=True)
class ParkingLot:
    """A surface parking lot: its outline, paint and the stalls (frames, car along ``u``)."""

    outline: Polygon
    parts: Parts
    stalls: Sequence[Frame]
    aisles: Sequence[LineString]


def parking_lot(frame: Frame, length: float, depth: float) -> ParkingLot:
    """Rows of 2.6 m x 5.2 m stalls facing 6.5 m aisles; ``frame`` is the lot's top-left corner.

    The lot spans ``length`` metres along ``u`` and ``depth`` along ``v``.
    """
    stall_w, stall_d, aisle = 2.6, 5.2, 6.5
    outline = frame.rect(0, 0, length, depth)
    n_across = int((length - 2) // stall_w)
    marks, stalls, aisles = [], [], []
    v = 0.0
    while v + aisle + stall_d <= depth:
        aisles.append(frame.line([(1, v + aisle / 2), (length - 1, v + aisle / 2)]))
        v += aisle
        rows = 2 if v + 2 * stall_d <= depth else 1
        for row in range(rows):
            v0 = v + row * stall_d
            for i in range(n_across + 1):
                marks.append(frame.line([(1 + i * stall_w, v0), (1 + i * stall_w, v0 + stall_d)]))
            for i in range(n_across):
                # the car's u axis points into the stall, away from the aisle it faces
                stalls.append(frame.moved(1 + (i + 0.5) * stall_w, v0 + stall_d / 2, math.pi / 2))
        v += rows * stall_d
    asphalt = Drawable(outline, "asphalt", (122, 120, 117), z=18)
    return ParkingLot(
        outline, Parts([asphalt]).add(lines(marks, (214, 214, 208), z=19)), stalls, aisles
    )
