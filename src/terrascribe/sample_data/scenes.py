"""A small scene-classification set: ``scenes/<class>/<class>_NNN.jpg``.

Each image is drawn on its own with the same renderer and object builders as the big region,
at a random scale (about 0.6 to 1.8 px per metre) and rotation, so the classes differ in what
they show (canopy, water, roofs, crop rows, cars, pitch markings) while varying within a class.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from shapely.geometry import box

from terrascribe.sample_data import shapes
from terrascribe.sample_data.render import Drawable, render
from terrascribe.sample_data.rural import CROPS
from terrascribe.sample_data.shapes import Frame, Parts

SCENE_CLASSES = ("farmland", "forest", "parking", "residential", "sports_field", "water")
MEADOW = (118, 130, 82)


class _Canvas:
    """A scene being drawn: a rotated metric frame over a square image plus collected parts."""

    def __init__(self, size: int, rng: np.random.Generator, px_per_m: tuple[float, float]):
        self.size = size
        self.rng = rng
        self.k = float(rng.uniform(*px_per_m))
        self.frame = Frame(size / 2, size / 2, float(rng.uniform(0, 2 * math.pi)), self.k)
        self.half = size / 2 / self.k * 1.5  # metres from the centre that cover the corners
        self.parts = Parts()
        self.background = MEADOW

    def rescale(self, low: float, high: float) -> None:
        """Pick a new scale (px per metre), keeping the rotation."""
        self.k = float(self.rng.uniform(low, high))
        self.frame = Frame(self.size / 2, self.size / 2, self.frame.angle, self.k)
        self.half = self.size / 2 / self.k * 1.5

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def jitter(self, colour: shapes.Colour, amount: float = 0.1) -> shapes.Colour:
        gain = self.uniform(1 - amount, 1 + amount)
        return tuple(float(np.clip(c * gain + self.uniform(-5, 5), 0, 255)) for c in colour)

    def fill(self, material: str, colour: shapes.Colour, z: float = 0, params=()) -> None:
        """Cover the whole image."""
        whole = box(-self.size, -self.size, 2 * self.size, 2 * self.size)
        self.parts.drawables.append(Drawable(whole, material, colour, z=z, params=params))

    def draw(self) -> np.ndarray:
        rgb, _ = render(
            self.parts.drawables,
            self.parts.shadows,
            self.size,
            self.size,
            rng=self.rng,
            px_per_m=self.k,
            background=self.background,
        )
        return rgb


def _forest(c: _Canvas) -> None:
    c.fill("forest", c.jitter((50, 72, 42), 0.15))
    if c.rng.random() < 0.35:
        track = c.frame.line([(-c.half, c.uniform(-20, 20)), (c.half, c.uniform(-20, 20))])
        c.parts.drawables.append(shapes.road(track, 3 * c.k, "unpaved", (150, 138, 118), 12))
    if c.rng.random() < 0.25:
        clearing = c.frame.circle(c.uniform(-30, 30), c.uniform(-30, 30), c.uniform(8, 18))
        c.parts.drawables.append(Drawable(clearing, "meadow", c.jitter(MEADOW), z=1))


def _water(c: _Canvas) -> None:
    colour = c.pick([(40, 62, 72), (46, 70, 66), (36, 52, 70), (58, 76, 74)])
    c.fill("water", c.jitter(colour, 0.12))
    if c.rng.random() < 0.6:
        shore_u = c.half / 1.5 * c.uniform(0.45, 0.9)
        shore = c.frame.rect(shore_u, -2 * c.half, 2 * c.half, 2 * c.half)
        material, colour = c.pick(
            [("meadow", MEADOW), ("forest", (50, 72, 42)), ("unpaved", (176, 160, 128))]
        )
        c.parts.drawables.append(Drawable(shore, material, c.jitter(colour), z=1))


def _residential(c: _Canvas) -> None:
    c.background = c.jitter((110, 132, 80))
    for v_street in (c.uniform(-15, 15), c.uniform(-15, 15) + c.pick([-66, 66])):
        street = c.frame.line([(-c.half, v_street), (c.half, v_street)])
        c.parts.drawables.append(shapes.road(street, 6 * c.k, "asphalt", (112, 110, 108), 13))
        for side in (-1, 1):
            u = -c.half + c.uniform(0, 10)
            while u < c.half:
                lot = c.uniform(17, 24)
                _house(c, u + lot / 2, v_street + side * (3 + c.uniform(4, 7)), side)
                u += lot


def _house(c: _Canvas, u: float, v_front: float, side: int) -> None:
    w, d = c.uniform(8, 12.5), c.uniform(8, 11)
    frame = c.frame.moved(u + c.uniform(-2, 2), v_front + side * d / 2, c.uniform(-0.1, 0.1))
    roof = c.pick(["gabled", "gabled", "hipped", "hipped", "flat"])
    palette = shapes.FLAT_ROOF_COLOURS if roof == "flat" else shapes.ROOF_COLOURS
    colour = c.jitter(palette[c.pick(list(palette))])
    c.parts.add(shapes.building(frame.box(w, d), colour, roof, c.uniform(4, 9), c.k))
    if c.rng.random() < 0.5:
        x, y = c.frame.pt(u + c.uniform(-6, 6), v_front + side * (d + c.uniform(5, 9)))
        c.parts.add(shapes.tree(x, y, c.uniform(2, 3.6) * c.k, c.uniform(6, 14), c.k))


def _farmland(c: _Canvas) -> None:
    c.background = c.jitter((112, 128, 80))
    cuts = sorted(c.uniform(-c.half, c.half) for _ in range(int(c.rng.integers(0, 3))))
    edges = [-2 * c.half, *cuts, 2 * c.half]
    for u0, u1 in itertools.pairwise(edges):
        field = c.frame.rect(u0 + 2, -2 * c.half, u1 - 2, 2 * c.half)
        crop = c.pick(list(CROPS))
        angle = c.frame.angle + c.pick([0.0, math.pi / 2]) + c.uniform(-0.05, 0.05)
        params = (angle, c.uniform(1.5, 3.5) * c.k, c.uniform(0.06, 0.14))
        c.parts.drawables.append(
            Drawable(field, "field", c.jitter(CROPS[crop], 0.06), 1, -1, params)
        )


def _parking(c: _Canvas) -> None:
    c.fill("asphalt", c.jitter((122, 120, 117), 0.08))
    corner = c.frame.moved(-c.half, -c.half + c.uniform(0, 8))
    lot = shapes.parking_lot(corner, 2 * c.half, 2 * c.half)
    c.parts.add(lot.parts)
    occupancy = c.uniform(0.4, 0.95)
    margin = 4 * c.k
    for stall in lot.stalls:
        if not (-margin < stall.cx < c.size + margin and -margin < stall.cy < c.size + margin):
            continue  # off the image
        if c.rng.random() < occupancy:
            flip = math.pi * float(c.rng.integers(0, 2))
            colour = c.jitter(c.pick(shapes.CAR_COLOURS), 0.05)
            frame = stall.moved(c.uniform(-0.2, 0.2), 0, flip)
            c.parts.add(shapes.car(frame, c.uniform(3.9, 4.6), c.uniform(1.7, 1.9), colour))


def _sports_field(c: _Canvas) -> None:
    c.background = c.jitter((98, 136, 74))
    kind = c.pick(["soccer", "tennis", "track", "basketball"])
    centre = c.frame.moved(c.uniform(-15, 15), c.uniform(-15, 15))
    if kind == "soccer":
        length = c.uniform(60, 105)
        c.parts.add(shapes.soccer_pitch(centre, length, length * 0.65)[1])
    elif kind == "track":
        c.parts.add(shapes.running_track(centre)[2])
        c.parts.add(shapes.soccer_pitch(centre, 100, 64)[1])
    else:
        c.rescale(1.2, 2.2)  # courts are small: come closer
        centre = c.frame.moved(c.uniform(-5, 5), c.uniform(-5, 5))
        court = c.pick([(186, 104, 70), (62, 104, 150), (112, 114, 118), (168, 96, 62)])
        for i in range(int(c.rng.integers(1, 4))):
            frame = centre.moved(0, (i - 1) * 22.0)
            if kind == "tennis":
                c.parts.add(shapes.tennis_court(frame, court, (72, 124, 86))[1])
            else:
                c.parts.add(shapes.basketball_court(frame, court)[1])


SCENE_DRAWERS: dict[str, tuple[Callable[[_Canvas], None], tuple[float, float]]] = {
    "farmland": (_farmland, (0.6, 1.4)),
    "forest": (_forest, (0.6, 1.6)),
    "parking": (_parking, (1.0, 1.8)),
    "residential": (_residential, (0.7, 1.4)),
    "sports_field": (_sports_field, (0.6, 1.2)),
    "water": (_water, (0.6, 1.6)),
}


def write_scenes(
    out_dir: Path, per_class: int, seed: int, size_px: int = 96
) -> dict[str, list[str]]:
    """Draw ``per_class`` JPEGs for every class; returns class -> relative file paths."""
    written = {}
    for class_index, name in enumerate(SCENE_CLASSES):
        drawer, scale = SCENE_DRAWERS[name]
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for i in range(per_class):
            # one stream per image, so the n-th image of a class does not depend on the count
            canvas = _Canvas(size_px, np.random.default_rng([seed, 4, class_index, i]), scale)
            drawer(canvas)
            path = folder / f"{name}_{i:03d}.jpg"
            Image.fromarray(canvas.draw()).save(path, quality=90)
            written[name].append(f"{out_dir.name}/{name}/{path.name}")
    return written
