"""Open-vocabulary maps of GeoTIFFs: sliding-window zero-shot classification with a CLIP model.

The raster is scanned with square windows that, resampled to the model's input size, have the
target GSD: ``window = image_size * gsd_m / native_gsd`` source pixels, moved by ``stride``
(default half a window). Each window is scored against the class prompts (CLIP zero-shot: the
mean of each class's template embeddings, softmax over ``logit_scale * cosine``) and its
probabilities are given to the ``stride x stride`` cell at its centre.

Outputs (``out`` = ``MAP.tif``):

* ``MAP.tif``: one uint8 band, the most probable class index (255 = no data), with a colour
  table and the class names in its tags (``class_0=water``...);
* ``MAP.probs.tif``: one band per class (float32 0-1, or uint8 0-255 scaled), band
  descriptions = class names;
* ``MAP.png``: a coloured preview with a legend.

Grid: with ``grid="input"`` (default) both GeoTIFFs have the input's exact CRS, transform and
size (each cell's value repeated over its ``stride x stride`` input pixels, nearest
neighbour); with ``grid="coarse"`` they have one pixel per cell: same CRS, transform = the
input's scaled by ``stride`` (same origin, so the grids stay aligned), much smaller files.

A raster without a CRS is refused (the error names the file), unless ``allow_no_crs``: then it
is mapped in pixel space (the outputs have no CRS either and the GSD is taken as given, 1 by
default).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_TEMPLATES = (
    "a satellite image of {}.",
    "an aerial photograph of {}.",
    "a remote sensing image of {}.",
)
NODATA_CLASS = 255


class MapError(ValueError):
    """The raster or the mapping parameters are unusable (the message names the file)."""


@dataclass
class MapResult:
    """What :func:`map_geotiff` wrote.

    Attributes:
        classes: Class names, in band/index order. class_map: Class GeoTIFF path.
        probabilities: Probability GeoTIFF path (None if not written). preview: PNG path.
        window_px, stride_px: Window and stride in source pixels. gsd_m: Window GSD.
        grid: ``input`` or ``coarse``. shape: ``(rows, cols)`` of the cell grid.
        class_fractions: Share of mapped cells per class.
    """

    classes: list[str]
    class_map: Path
    probabilities: Path | None
    preview: Path | None
    window_px: int
    stride_px: int
    gsd_m: float
    grid: str
    shape: tuple[int, int]
    class_fractions: dict[str, float] = field(default_factory=dict)


def parse_classes(classes: str | Sequence[str]) -> list[str]:
    """Class names from ``"water,forest,..."`` or a list (trimmed, unique, non-empty)."""
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    names = [c.strip() for c in items if c and c.strip()]
    if len(names) < 2:
        raise MapError(f"give at least two classes, got {names}")
    if len(set(names)) != len(names):
        raise MapError(f"class names repeat: {names}")
    if len(names) > 254:
        raise MapError("at most 254 classes (uint8 class map with 255 as no data)")
    return names


def class_text_embeddings(
    bundle: Any, classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> np.ndarray:
    """(C, D) zero-shot classifier: mean template embedding per class, L2-normalised."""
    from terrascribe.evaluate.metrics import ensemble_class_embeddings
    from terrascribe.models.encode import encode_texts

    templates = list(templates) or ["{}"]
    for t in templates:
        if "{}" not in t:
            raise MapError(f"prompt template {t!r} has no '{{}}' for the class name")
    texts = [t.format(c) for c in classes for t in templates]
    emb = encode_texts(bundle, texts, progress=False).reshape(len(classes), len(templates), -1)
    return ensemble_class_embeddings(emb)


def _logit_scale(bundle: Any) -> float:
    scale = getattr(bundle.model, "logit_scale", None)
    return float(scale.exp().item()) if scale is not None else 100.0


def _input_size(bundle: Any) -> int:
    size = bundle.image_size
    return int(size if isinstance(size, int) else max(size))


@dataclass
class _Plan:
    width: int
    height: int
    window: int
    stride: int
    rows: int
    cols: int
    gsd_m: float

    def cells(self) -> Iterator[tuple[int, int, int, int]]:
        """``(r, c, col_off, row_off)`` of each window, centred on its cell, clamped inside."""
        for r in range(self.rows):
            cy = r * self.stride + self.stride / 2
            for c in range(self.cols):
                cx = c * self.stride + self.stride / 2
                col = round(cx - self.window / 2)
                row = round(cy - self.window / 2)
                col = min(max(col, 0), max(self.width - self.window, 0))
                row = min(max(row, 0), max(self.height - self.window, 0))
                yield r, c, col, row


def plan_windows(
    width: int,
    height: int,
    native_gsd: float,
    input_px: int,
    gsd_m: float | None = None,
    stride_px: int | None = None,
) -> _Plan:
    """Window and stride (source pixels) for a raster and a model input size.

    Raises:
        MapError: If the window would be under 1 pixel or larger than allowed.
    """
    gsd = gsd_m or native_gsd
    window = round(input_px * gsd / native_gsd)
    if window < 1:
        raise MapError(f"target GSD {gsd} m is finer than the raster's {native_gsd:.3g} m allows")
    stride = int(stride_px) if stride_px else max(1, window // 2)
    if stride < 1 or stride > window:
        raise MapError(f"stride must lie in [1, window={window}] source pixels, got {stride}")
    return _Plan(
        width=width,
        height=height,
        window=window,
        stride=stride,
        rows=math.ceil(height / stride),
        cols=math.ceil(width / stride),
        gsd_m=gsd,
    )


def _stretch(ds: Any, bands: list[int]) -> tuple[float, float] | None:
    if ds.dtypes[0] == "uint8":
        return None
    scale = max(1, max(ds.width, ds.height) // 512)
    sample = ds.read(
        bands, out_shape=(len(bands), ds.height // scale or 1, ds.width // scale or 1), masked=True
    )
    values = sample.compressed()
    if values.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(values, [2, 98])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def map_geotiff(
    path: str | Path,
    classes: str | Sequence[str],
    bundle: Any,
    out: str | Path,
    *,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    gsd_m: float | None = None,
    stride_px: int | None = None,
    grid: str = "input",
    probabilities: str = "uint8",
    preview: bool = True,
    batch_size: int = 64,
    min_valid: float = 0.5,
    allow_no_crs: bool = False,
    progress: bool = True,
) -> MapResult:
    """Zero-shot classify a GeoTIFF with a sliding window and write the maps.

    Args:
        path: Input raster (GeoTIFF/COG/VRT; first three bands are RGB, one band is grey).
        classes: Class names (``"water,forest,buildings"`` or a list).
        bundle: A :class:`~terrascribe.models.zoo.LoadedModel`.
        out: Class GeoTIFF path (``MAP.tif``); siblings ``MAP.probs.tif`` and ``MAP.png``.
        templates: Prompt templates with ``{}`` for the class name.
        gsd_m: Ground sampling distance the model sees (default: the raster's own).
        stride_px: Step between windows in source pixels (default: half a window).
        grid: ``"input"`` (the input's grid) or ``"coarse"`` (one pixel per stride).
        probabilities: ``"uint8"`` (0-255), ``"float32"`` or ``"none"``.
        preview: Write the coloured PNG preview with a legend.
        batch_size: Windows per forward pass.
        min_valid: Windows with less valid data are no data.
        allow_no_crs: Map a raster without CRS in pixel space instead of refusing it.
        progress: Show a progress bar.

    Returns:
        A :class:`MapResult`.

    Raises:
        MapError: Unreadable raster, missing CRS, bad classes/templates/parameters.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    from terrascribe.models.encode import encode_images
    from terrascribe.progress import progress_bar

    path, out = Path(path), Path(out)
    names = parse_classes(classes)
    if grid not in ("input", "coarse"):
        raise MapError(f"grid must be 'input' or 'coarse', got {grid!r}")
    if probabilities not in ("uint8", "float32", "none"):
        raise MapError(f"probabilities must be uint8, float32 or none, got {probabilities!r}")
    if not path.exists():
        raise MapError(f"{path}: no such raster")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as err:
        raise MapError(f"{path}: cannot open raster ({err})") from None
    with ds:
        if ds.crs is None and not allow_no_crs:
            raise MapError(
                f"{path}: raster has no CRS, so its map could not be placed on Earth; add one "
                "(gdal_edit.py -a_srs EPSG:XXXX) or pass --allow-no-crs to map in pixel space"
            )
        if ds.crs is not None:
            from terrascribe.geo import raster_gsd_m

            native = raster_gsd_m(ds.crs, tuple(ds.transform)[:6], ds.width, ds.height)
        else:
            native = 1.0
        bands = [1, 2, 3] if ds.count >= 3 else [1]
        stretch = _stretch(ds, bands)
        has_mask = any(f.name != "all_valid" for f in ds.mask_flag_enums[0])
        size = _input_size(bundle)
        plan = plan_windows(ds.width, ds.height, native, size, gsd_m, stride_px)
        classifier = class_text_embeddings(bundle, names, templates)
        scale = _logit_scale(bundle)
        probs = np.zeros((plan.rows, plan.cols, len(names)), np.float32)
        valid = np.zeros((plan.rows, plan.cols), bool)

        def read(col: int, row: int) -> tuple[np.ndarray, float]:
            win = Window(col, row, min(plan.window, ds.width), min(plan.window, ds.height))
            data = ds.read(
                bands,
                window=win,
                out_shape=(len(bands), size, size),
                resampling=Resampling.bilinear,
            )
            frac = (
                float((ds.dataset_mask(window=win, out_shape=(size, size)) > 0).mean())
                if has_mask
                else 1.0
            )
            if len(bands) == 1:
                data = np.repeat(data, 3, axis=0)
            if stretch is not None:
                lo, hi = stretch
                data = np.clip((data.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
            return np.ascontiguousarray(np.moveaxis(data.astype(np.uint8), 0, -1)), frac

        batch: list[tuple[int, int, np.ndarray]] = []

        def flush() -> None:
            if not batch:
                return
            emb = encode_images(
                bundle, [b[2] for b in batch], batch_size=batch_size, progress=False
            )
            logits = scale * emb @ classifier.T
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            for (r, c, _), pr in zip(batch, p, strict=True):
                probs[r, c] = pr
                valid[r, c] = True
            batch.clear()

        total = plan.rows * plan.cols
        with progress_bar(total, f"map {path.name}", enabled=progress) as advance:
            for r, c, col, row in plan.cells():
                rgb, frac = read(col, row)
                if frac >= min_valid:
                    batch.append((r, c, rgb))
                if len(batch) >= batch_size:
                    flush()
                advance(1)
            flush()
        profile = {
            "crs": ds.crs,
            "transform": ds.transform,
            "width": ds.width,
            "height": ds.height,
        }
    labels = np.where(valid, probs.argmax(axis=2), NODATA_CLASS).astype(np.uint8)
    result = MapResult(
        classes=names,
        class_map=out,
        probabilities=None,
        preview=None,
        window_px=plan.window,
        stride_px=plan.stride,
        gsd_m=plan.gsd_m,
        grid=grid,
        shape=(plan.rows, plan.cols),
        class_fractions={
            n: round(float((labels[valid] == i).mean()), 4) if valid.any() else 0.0
            for i, n in enumerate(names)
        },
    )
    _write_maps(result, labels, probs, valid, profile, plan, probabilities, path)
    if preview:
        result.preview = write_preview(out.with_suffix(".png"), labels, names, title=path.name)
    return result


# Conventional land-cover colours (close to ESA WorldCover's legend), matched by a word in the
# class name, so water is blue and forest green whatever order the classes come in.
LAND_COVER_COLOURS = (
    # The first matching entry wins: "parking" is not a park, "sports field" is not a field.
    (("road", "highway", "street", "parking", "runway", "railway"), (110, 110, 110)),
    (("sport", "pitch", "stadium", "court", "track"), (160, 70, 200)),
    (("water", "river", "lake", "sea", "ocean", "pond", "harbor", "harbour"), (0, 100, 200)),
    (("forest", "tree", "wood"), (0, 100, 0)),
    (("grass", "meadow", "park", "pasture"), (150, 210, 90)),
    (("farm", "field", "crop", "agricultur", "cultivat"), (240, 200, 80)),
    (("building", "residential", "urban", "house", "industr", "commercial"), (200, 30, 30)),
    (("bare", "sand", "beach", "desert", "idle"), (210, 190, 160)),
    (("snow", "ice", "glacier"), (240, 240, 240)),
    (("wetland", "marsh", "swamp"), (0, 150, 160)),
)


def _colours(classes: Sequence[str]) -> list[tuple[int, int, int]]:
    """A colour per class: conventional for known land-cover words, distinct otherwise."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if len(classes) > 10 else "tab10"]
    colours, used = [], set()
    for i, name in enumerate(classes):
        lowered = name.lower()
        known = next(
            (c for words, c in LAND_COVER_COLOURS if any(w in lowered for w in words)), None
        )
        if known is None or known in used:
            known = tuple(int(255 * v) for v in cmap(i % cmap.N)[:3])
        used.add(known)
        colours.append(known)
    return colours


def _expand(cells: np.ndarray, plan: _Plan, r0: int, r1: int) -> np.ndarray:
    """Input-grid rows ``r0:r1`` of a per-cell array (nearest: cell = pixel // stride)."""
    rows = np.minimum(np.arange(r0, r1) // plan.stride, plan.rows - 1)
    cols = np.minimum(np.arange(plan.width) // plan.stride, plan.cols - 1)
    return cells[rows][:, cols]


def _write_maps(
    result: MapResult,
    labels: np.ndarray,
    probs: np.ndarray,
    valid: np.ndarray,
    profile: dict[str, Any],
    plan: _Plan,
    probabilities: str,
    source: Path,
) -> None:
    import os

    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import Affine

    out = result.class_map
    out.parent.mkdir(parents=True, exist_ok=True)
    if result.grid == "coarse":
        transform = profile["transform"] @ Affine.scale(plan.stride)
        width, height = plan.cols, plan.rows
    else:
        transform, width, height = profile["transform"], profile["width"], profile["height"]
    base = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "crs": profile["crs"],
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    block = 256

    def rows_of(arr: np.ndarray, r0: int, r1: int) -> np.ndarray:
        return arr[r0:r1] if result.grid == "coarse" else _expand(arr, plan, r0, r1)

    tags = {f"class_{i}": n for i, n in enumerate(result.classes)}
    tags.update(
        source=source.name,
        window_px=str(plan.window),
        stride_px=str(plan.stride),
        gsd_m=f"{plan.gsd_m:.6g}",
        grid=result.grid,
    )
    tmp = out.with_name(out.name + ".tmp")
    with rasterio.open(tmp, "w", count=1, dtype="uint8", nodata=NODATA_CLASS, **base) as dst:
        for r0 in range(0, height, block):
            r1 = min(height, r0 + block)
            dst.write(rows_of(labels, r0, r1), 1, window=((r0, r1), (0, width)))
        cmap = {i: (*c, 255) for i, c in enumerate(_colours(result.classes))}
        cmap[NODATA_CLASS] = (0, 0, 0, 0)
        dst.write_colormap(1, cmap)
        dst.colorinterp = [ColorInterp.palette]
        dst.set_band_description(1, "class")
        dst.update_tags(**tags)
    os.replace(tmp, out)

    if probabilities != "none":
        path = out.with_name(out.name[: -len(out.suffix)] + ".probs" + out.suffix)
        dtype = "uint8" if probabilities == "uint8" else "float32"
        stored = probs if dtype == "float32" else np.rint(probs * 255).astype(np.uint8)
        if dtype == "float32":
            stored = np.where(valid[..., None], stored, np.nan).astype(np.float32)
        tmp = path.with_name(path.name + ".tmp")
        nodata = float("nan") if dtype == "float32" else None
        with rasterio.open(
            tmp, "w", count=len(result.classes), dtype=dtype, nodata=nodata, **base
        ) as dst:
            for r0 in range(0, height, block):
                r1 = min(height, r0 + block)
                chunk = rows_of(stored, r0, r1)
                dst.write(np.moveaxis(chunk, -1, 0), window=((r0, r1), (0, width)))
            for i, name in enumerate(result.classes):
                dst.set_band_description(i + 1, name)
            dst.update_tags(
                **tags, scale="probability * 255" if dtype == "uint8" else "probability 0-1"
            )
        os.replace(tmp, path)
        result.probabilities = path


def write_preview(
    path: str | Path, labels: np.ndarray, classes: Sequence[str], *, title: str = ""
) -> Path:
    """A PNG of the class map in the class colours with a legend (no data transparent/white)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from terrascribe.shards import atomic_write_bytes

    palette = _colours(classes)
    colours = np.array([*palette, (255, 255, 255)], np.uint8)
    index = np.where(labels == NODATA_CLASS, len(classes), labels)
    rgb = colours[index]
    h, w = labels.shape
    fig_w = 7.0
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * h / max(w, 1) + 0.6), dpi=110)
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    handles = [
        Patch(facecolor=np.array(c) / 255, edgecolor="k", label=n)
        for n, c in zip(classes, palette, strict=True)
    ]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


__all__ = [
    "DEFAULT_TEMPLATES",
    "NODATA_CLASS",
    "MapError",
    "MapResult",
    "class_text_embeddings",
    "map_geotiff",
    "parse_classes",
    "plan_windows",
    "write_preview",
]
