"""Paint vector drawables into an RGB array, vectorised over whole materials.

Every drawable is a shapely geometry in pixel coordinates (x right, y down, pixel centres at
``+0.5``) with a material, a base colour and a few material parameters. All drawables are burnt
into one instance raster in paint order, so the topmost one owns each pixel; textures are then
computed per material on all its pixels at once. The owner raster is returned as well, so label
masks are exactly the pixels each object shows in the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

# Direction from the ground towards the sun in image coordinates (sun in the south-south-east,
# y grows southwards); shadows fall the opposite way, and slopes facing it are brighter.
SUN_XY = np.array([0.34, 0.94], dtype=np.float32)
SUN_ELEVATION_TAN = 1.43  # tan(55°): shadow length = height / tan(elevation)
SHADOW_TINT = np.array([0.46, 0.49, 0.58], dtype=np.float32)
N_PARAMS = 8


@dataclass(frozen=True)
class Drawable:
    """One painted shape.

    Attributes:
        geom: Polygon, MultiPolygon or LineString in pixel coordinates (lines burn 1 px wide).
        material: Key of ``MATERIALS`` choosing the texture.
        colour: Base RGB colour.
        z: Paint order; higher is painted later (on top). Ties keep creation order.
        owner: Index of the object this shape belongs to (-1 for none).
        params: Material parameters (see the texture functions).
        elevated: Whether it stands above the ground (receives no cast shadow).
    """

    geom: BaseGeometry
    material: str
    colour: tuple[float, float, float]
    z: float
    owner: int = -1
    params: tuple[float, ...] = ()
    elevated: bool = False


class _NoiseMaps:
    """Smooth noise fields shared by all materials, computed on first use."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], px_per_m: float):
        self._rng = rng
        self._shape = shape
        self._cells = {
            "coarse": max(4, round(40 * px_per_m)),
            "mid": max(2, round(5 * px_per_m)),
            "crown": max(2, round(2.2 * px_per_m)),
        }
        self._maps: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray:
        if name not in self._maps:
            self._maps[name] = smooth_noise(self._rng, *self._shape, self._cells[name])
        return self._maps[name]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise in about [0, 1]: uniform random values every ``cell`` px, bicubic between."""
    low = rng.random((height // cell + 3, width // cell + 3), dtype=np.float32)
    big = Image.fromarray(low).resize((low.shape[1] * cell, low.shape[0] * cell), Image.BICUBIC)
    return np.asarray(big)[cell : cell + height, cell : cell + width]


@dataclass
class _Pixels:
    """The pixels of one material: coordinates, per-pixel parameters and the noise fields."""

    rows: np.ndarray
    cols: np.ndarray
    params: np.ndarray
    noise: _NoiseMaps

    @property
    def x(self) -> np.ndarray:
        return self.cols.astype(np.float32) + 0.5

    @property
    def y(self) -> np.ndarray:
        return self.rows.astype(np.float32) + 0.5

    def field(self, name: str) -> np.ndarray:
        return self.noise.get(name)[self.rows, self.cols] - 0.5


def _meadow(p: _Pixels) -> np.ndarray:
    return 1 + 0.16 * p.field("coarse") + 0.12 * p.field("mid")


def _grass(p: _Pixels) -> np.ndarray:
    return 1 + 0.08 * p.field("coarse") + 0.06 * p.field("mid")


def _forest(p: _Pixels) -> np.ndarray:
    crowns = p.field("crown") + 0.5
    shade = (0.55 + 0.8 * crowns) * (1 + 0.15 * p.field("coarse"))
    # dark gaps between crowns are what makes a canopy read as trees
    return np.where(crowns < 0.25, shade * 0.6, shade)


def _crown(p: _Pixels) -> np.ndarray:
    """Single tree crown. params: centre x, centre y, radius (px)."""
    cx, cy, r = p.params[:, 0], p.params[:, 1], np.maximum(p.params[:, 2], 1)
    d = np.hypot(p.x - cx, p.y - cy) / r
    lit = ((p.x - cx) * SUN_XY[0] + (p.y - cy) * SUN_XY[1]) / r
    return (1.05 - 0.35 * d + 0.18 * lit) * (0.8 + 0.45 * (p.field("crown") + 0.5))


def _field(p: _Pixels) -> np.ndarray:
    """Farmland rows. params: angle (rad), period (px), contrast."""
    theta, period, contrast = p.params[:, 0], np.maximum(p.params[:, 1], 1), p.params[:, 2]
    t = (p.x * np.cos(theta) + p.y * np.sin(theta)) / period
    stripes = contrast * np.sin(2 * np.pi * t)
    return 1 + stripes + 0.08 * p.field("mid") + 0.08 * p.field("coarse")


def _water(p: _Pixels) -> np.ndarray:
    return 1 + 0.06 * p.field("coarse") + 0.02 * p.field("mid")


def _asphalt(p: _Pixels) -> np.ndarray:
    return 1 + 0.05 * p.field("mid") + 0.03 * p.field("coarse")


def _unpaved(p: _Pixels) -> np.ndarray:
    return 1 + 0.14 * p.field("mid") + 0.08 * p.field("crown")


def _roof(p: _Pixels) -> np.ndarray:
    """Roof planes. params: centre x, centre y, ridge unit x, y, half length, half width, shape.

    Shape 0 is flat, 1 gabled (two planes along the ridge), 2 hipped (plus two end planes).
    """
    cx, cy, ux, uy, half_len, half_wid, shape = (p.params[:, i] for i in range(7))
    dx, dy = p.x - cx, p.y - cy
    along = dx * ux + dy * uy
    across = -dx * uy + dy * ux
    sunny_side = across * (-uy * SUN_XY[0] + ux * SUN_XY[1]) > 0
    planes = np.where(sunny_side, 1.12, 0.8)
    is_end = np.abs(along) - (half_len - half_wid) > np.abs(across)
    sunny_end = along * (ux * SUN_XY[0] + uy * SUN_XY[1]) > 0
    planes = np.where((shape == 2) & is_end, np.where(sunny_end, 1.02, 0.88), planes)
    flat = 1 + 0.04 * p.field("mid")
    return np.where(shape == 0, flat, planes)


def _turf(p: _Pixels) -> np.ndarray:
    """Mown grass in bands. params: centre x, centre y, unit x, y along the bands' normal, band."""
    cx, cy, ux, uy, band = (p.params[:, i] for i in range(5))
    t = ((p.x - cx) * ux + (p.y - cy) * uy) / np.maximum(band, 1)
    return np.where(np.floor(t) % 2 == 0, 1.07, 0.94) + 0.03 * p.field("mid")


def _dome(p: _Pixels) -> np.ndarray:
    """Round roof lit from the sun side. params: centre x, centre y, radius (px)."""
    cx, cy, r = p.params[:, 0], p.params[:, 1], np.maximum(p.params[:, 2], 1)
    lit = ((p.x - cx) * SUN_XY[0] + (p.y - cy) * SUN_XY[1]) / r
    return 1.0 + 0.1 * lit - 0.12 * (np.hypot(p.x - cx, p.y - cy) / r) ** 2


def _flat(p: _Pixels) -> np.ndarray:
    return 1 + 0.02 * p.field("mid")


MATERIALS: dict[str, Callable[[_Pixels], np.ndarray]] = {
    "meadow": _meadow,
    "grass": _grass,
    "forest": _forest,
    "crown": _crown,
    "field": _field,
    "water": _water,
    "asphalt": _asphalt,
    "unpaved": _unpaved,
    "concrete": _asphalt,
    "roof": _roof,
    "turf": _turf,
    "dome": _dome,
    "flat": _flat,
}
_MATERIAL_IDS = {name: i for i, name in enumerate(MATERIALS)}
_TEXTURES = tuple(MATERIALS.values())


def render(
    drawables: Sequence[Drawable],
    shadows: Sequence[BaseGeometry],
    height: int,
    width: int,
    *,
    rng: np.random.Generator,
    px_per_m: float,
    background: tuple[float, float, float] = (118, 130, 82),
    noise_sigma: float = 2.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint drawables and cast shadows into an image.

    Args:
        drawables: Shapes to paint (any order; ``z`` decides).
        shadows: Shadow polygons in pixel coordinates; they darken non-elevated pixels.
        height: Image height in pixels.
        width: Image width in pixels.
        rng: Random generator for textures and sensor noise.
        px_per_m: Pixels per metre, to size textures in ground units.
        background: Colour of bare ground (meadow texture) where nothing is drawn.
        noise_sigma: Standard deviation of per-pixel sensor noise (digital numbers).

    Returns:
        ``(rgb, owner)``: a ``(height, width, 3)`` uint8 image and a ``(height, width)`` int32
        raster with the owner of the topmost drawable at each pixel (-1 where none).
    """
    order = sorted(
        (d for d in drawables if not d.geom.is_empty), key=lambda d: d.z
    )  # sorted() is stable, so equal z keeps creation order
    inst = _burn(order, height, width)
    colours = np.array([background, *(d.colour for d in order)], dtype=np.float32)
    materials = np.array(
        [_MATERIAL_IDS["meadow"], *(_MATERIAL_IDS[d.material] for d in order)], dtype=np.uint8
    )
    params = np.zeros((len(order) + 1, N_PARAMS), dtype=np.float32)
    for i, d in enumerate(order, start=1):
        params[i, : len(d.params)] = d.params
    owners = np.array([-1, *(d.owner for d in order)], dtype=np.int32)
    elevated = np.array([False, *(d.elevated for d in order)])

    shade = _shade(inst, materials, params, _NoiseMaps(rng, (height, width), px_per_m))
    rgb = colours[inst]
    rgb *= shade[..., None]
    if shadows:
        in_shadow = rasterize(
            ((g, 1) for g in shadows if not g.is_empty), out_shape=(height, width), dtype="uint8"
        ).astype(bool)
        in_shadow &= ~elevated[inst]
        rgb[in_shadow] *= SHADOW_TINT
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * noise_sigma
    np.clip(rgb, 0, 255, out=rgb)
    return np.rint(rgb).astype(np.uint8), owners[inst]


def _burn(order: Sequence[Drawable], height: int, width: int) -> np.ndarray:
    """Instance raster: 1 + index of the topmost drawable per pixel, 0 where none."""
    if not order:
        return np.zeros((height, width), dtype=np.int32)
    shapes = ((d.geom, i) for i, d in enumerate(order, start=1))
    return rasterize(shapes, out_shape=(height, width), fill=0, dtype="int32")


def _shade(
    inst: np.ndarray, materials: np.ndarray, params: np.ndarray, noise: _NoiseMaps
) -> np.ndarray:
    """Per-pixel brightness factor from each material's texture."""
    shade = np.ones(inst.shape, dtype=np.float32)
    material_map = materials[inst]
    for material_id in np.unique(material_map):
        rows, cols = np.nonzero(material_map == material_id)
        pixels = _Pixels(rows, cols, params[inst[rows, cols]], noise)
        texture = _TEXTURES[material_id]
        shade[rows, cols] = texture(pixels)
    return shade
