"""Querying an index: by text, by example image, or by place; with top-k, bbox and date filters.

Filters are applied inside the vector search (exactly over the allowed tiles when they are few,
through a faiss ID selector otherwise), so an approximate index still returns the best ``k``
tiles among those that pass, not whatever survived a post-filter.

Results come as :class:`SearchResults`: a rich table, GeoJSON (EPSG:4326, opens in QGIS), a
contact sheet PNG of thumbnails re-read from the sources, or a DataFrame.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from terrascribe.search import vectors
from terrascribe.search.index import SearchIndex
from terrascribe.search.tiling import read_tile

MAX_K = 1000


class QueryError(ValueError):
    """A query is malformed: no or several query kinds, a bad bbox, k or date range."""


@dataclass
class SearchHit:
    """One result.

    Attributes:
        rank: 1-based rank. score: Cosine similarity with the query.
        id: Tile id in the index. tile_key: Tile identity.
        footprint: Lon/lat polygon. source: File/folder the tile comes from.
        source_kind: ``raster``, ``xyz`` or ``dataset``. item: XYZ cell or sample key.
        window: ``(col_off, row_off, width, height)`` in source pixels, or None.
        date: Capture date. gsd_m: Tile GSD. crs, bounds: Tile bounds in its CRS.
    """

    rank: int
    score: float
    id: int
    tile_key: str
    footprint: Any
    source: str
    source_kind: str
    item: str
    window: tuple[int, int, int, int] | None
    date: str | None
    gsd_m: float
    crs: str
    bounds: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (footprint as ``[west, south, east, north]`` plus GeoJSON geometry)."""
        return {
            "rank": self.rank,
            "score": round(float(self.score), 6),
            "id": self.id,
            "tile_key": self.tile_key,
            "bbox": [round(v, 7) for v in self.footprint.bounds],
            "geometry": shapely.geometry.mapping(self.footprint),
            "source": self.source,
            "source_kind": self.source_kind,
            "item": self.item,
            "window": list(self.window) if self.window else None,
            "date": self.date,
            "gsd_m": self.gsd_m,
            "crs": self.crs,
            "bounds": list(self.bounds),
        }


@dataclass
class SearchResults:
    """Ranked hits plus what was asked."""

    hits: list[SearchHit]
    query: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self):
        return iter(self.hits)

    def to_geojson(self) -> dict[str, Any]:
        """A GeoJSON FeatureCollection (lon/lat) of the hit footprints."""
        features = []
        for h in self.hits:
            props = h.to_dict()
            geometry = props.pop("geometry")
            props["window"] = json.dumps(props["window"]) if props["window"] else None
            props["bounds"] = json.dumps(props["bounds"])
            props.pop("bbox")
            features.append(
                {"type": "Feature", "id": h.id, "geometry": geometry, "properties": props}
            )
        return {"type": "FeatureCollection", "features": features, "query": self.query}

    def write_geojson(self, path: str | Path) -> Path:
        """Write :meth:`to_geojson` atomically."""
        from terrascribe.shards import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_geojson(), indent=1) + "\n")
        return path

    def to_table(self, title: str | None = None):
        """A rich table of the hits."""
        from rich.table import Table

        table = Table(title=title or _describe(self.query))
        for col in ("rank", "score", "id", "date", "lon, lat", "source", "window"):
            table.add_column(col, justify="right" if col in ("rank", "score", "id") else "left")
        for h in self.hits:
            c = h.footprint.centroid
            table.add_row(
                str(h.rank),
                f"{h.score:.4f}",
                str(h.id),
                h.date or "",
                f"{c.x:.5f}, {c.y:.5f}",
                Path(h.source).name + (f" [{h.item}]" if h.item else ""),
                ",".join(map(str, h.window)) if h.window else "",
            )
        return table

    def to_frame(self):
        """The hits as a pandas DataFrame (footprint as WKT)."""
        import pandas as pd

        rows = []
        for h in self.hits:
            d = h.to_dict()
            d["footprint"] = h.footprint.wkt
            d.pop("geometry")
            rows.append(d)
        return pd.DataFrame(rows)

    def contact_sheet(
        self, index: SearchIndex, path: str | Path, *, thumb_px: int = 192, columns: int = 5
    ) -> Path:
        """Write a PNG grid of hit thumbnails captioned with rank, score and id.

        Thumbnails are read again from the sources; a source that cannot be read shows a grey
        box with the reason.
        """
        from PIL import Image, ImageDraw

        from terrascribe.shards import atomic_write_bytes

        n = max(len(self.hits), 1)
        cols = max(1, min(columns, n))
        rows = math.ceil(n / cols)
        cap = 30
        pad = 6
        title_h = 28
        width = cols * (thumb_px + pad) + pad
        height = title_h + rows * (thumb_px + cap + pad) + pad
        sheet = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        draw.text((pad, 8), _describe(self.query)[:120], fill=(0, 0, 0))
        cache: dict = {}
        for i, h in enumerate(self.hits):
            x = pad + (i % cols) * (thumb_px + pad)
            y = title_h + (i // cols) * (thumb_px + cap + pad)
            try:
                thumb = read_tile(index.row(h.id), thumb_px, _cache=cache).convert("RGB")
                thumb = thumb.resize((thumb_px, thumb_px))
            except Exception as err:  # a vanished source must not sink the whole sheet
                thumb = Image.new("RGB", (thumb_px, thumb_px), (200, 200, 200))
                ImageDraw.Draw(thumb).text((4, 4), f"unreadable:\n{str(err)[:60]}", fill=(0, 0, 0))
            sheet.paste(thumb, (x, y))
            draw.text((x, y + thumb_px + 2), f"#{h.rank}  {h.score:.3f}  id {h.id}", fill=(0, 0, 0))
            draw.text((x, y + thumb_px + 15), (h.date or "")[:10], fill=(90, 90, 90))
        import io

        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path


def _describe(query: dict[str, Any]) -> str:
    parts = []
    for key in ("text", "image", "near"):
        if query.get(key) is not None:
            parts.append(f"{key}={query[key]!r}")
    for key in ("bbox", "date_range"):
        if query.get(key):
            parts.append(f"{key}={query[key]}")
    parts.append(f"k={query.get('k')}")
    return "search " + " ".join(parts)


# --------------------------------------------------------------------------------------------
# Filters


def parse_bbox(value: str | tuple | list | None) -> tuple[float, float, float, float] | None:
    """``west,south,east,north`` (string or sequence) validated as lon/lat, or None."""
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        west, south, east, north = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise QueryError(f"bbox must be 'west,south,east,north' numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise QueryError(f"bbox values must be finite, got {value!r}")
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise QueryError(f"bbox must satisfy -180<=west<=east<=180, -90<=south<=north<=90: {value}")
    return (west, south, east, north)


def parse_date_range(value: Any) -> tuple[str | None, str | None] | None:
    """``(from, to)`` inclusive ``YYYY-MM-DD`` (either may be None), or None for no filter."""
    import datetime as dt

    if value is None:
        return None
    lo, hi = value if isinstance(value, (tuple, list)) else str(value).split("/", 1)
    out = []
    for v in (lo, hi):
        if v in (None, "", ".."):
            out.append(None)
            continue
        try:
            out.append(dt.date.fromisoformat(str(v)[:10]).isoformat())
        except ValueError:
            raise QueryError(f"dates must be YYYY-MM-DD, got {v!r}") from None
    if out[0] and out[1] and out[0] > out[1]:
        raise QueryError(f"date range starts after it ends: {out[0]} > {out[1]}")
    return (out[0], out[1]) if any(out) else None


def allowed_ids(
    index: SearchIndex,
    bbox: tuple[float, float, float, float] | None,
    date_range: tuple[str | None, str | None] | None,
) -> np.ndarray | None:
    """Ids of tiles passing the filters (footprint box intersects ``bbox``; date inside)."""
    if bbox is None and date_range is None:
        return None
    t = index.tiles
    keep = np.ones(len(t), bool)
    if bbox is not None:
        west, south, east, north = bbox
        keep &= (
            (t["east"].to_numpy() >= west)
            & (t["west"].to_numpy() <= east)
            & (t["north"].to_numpy() >= south)
            & (t["south"].to_numpy() <= north)
        )
    if date_range is not None:
        known, d = index.dates
        keep &= known  # a tile of unknown date cannot be said to fall in a range
        lo, hi = date_range
        if lo:
            keep &= d >= lo
        if hi:
            keep &= d <= hi
    return np.flatnonzero(keep).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Queries


_TEXT_CACHE_LOCK = threading.Lock()
_TEXT_CACHE: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()


def embed_text(index: SearchIndex, text: str, model: Any = None) -> np.ndarray:
    """Embedding of a text query with the index's model (small LRU cache of recent queries)."""
    import torch

    from terrascribe.models.encode import encode_texts

    bundle = index.model(model)
    key = (bundle.fingerprint, text)
    with _TEXT_CACHE_LOCK:
        if key in _TEXT_CACHE:
            _TEXT_CACHE.move_to_end(key)
            return _TEXT_CACHE[key]
    with index._model_lock, torch.inference_mode():
        vec = encode_texts(bundle, [text], progress=False)[0]
    with _TEXT_CACHE_LOCK:
        _TEXT_CACHE[key] = vec
        while len(_TEXT_CACHE) > 1024:
            _TEXT_CACHE.popitem(last=False)
    return vec


def embed_image(index: SearchIndex, image: Any, model: Any = None) -> np.ndarray:
    """Embedding of a query image (path, bytes, PIL image or array) with the index's model."""
    from terrascribe.models.encode import encode_images

    bundle = index.model(model)
    with index._model_lock:
        return encode_images(bundle, [image], progress=False)[0]


def tile_at(index: SearchIndex, lon: float, lat: float) -> int:
    """Id of the tile containing ``(lon, lat)`` with the nearest centre (or the nearest tile)."""
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise QueryError(f"near must be a lon/lat point, got ({lon}, {lat})")
    t = index.tiles
    if len(t) == 0:
        raise QueryError("the index is empty")
    cx = (t["west"].to_numpy() + t["east"].to_numpy()) / 2
    cy = (t["south"].to_numpy() + t["north"].to_numpy()) / 2
    d2 = ((cx - lon) * math.cos(math.radians(lat))) ** 2 + (cy - lat) ** 2
    return int(np.argmin(d2))


def search(
    index: SearchIndex | str | Path,
    text: str | None = None,
    *,
    image: Any = None,
    near: tuple[float, float] | None = None,
    k: int = 10,
    bbox: Any = None,
    date_range: Any = None,
    model: Any = None,
    template: str | None = None,
) -> SearchResults:
    """Find the tiles most similar to a text, an example image or the tile at a place.

    Args:
        index: A :class:`SearchIndex` or an index folder.
        text: Text query (e.g. ``"a solar farm"``).
        image: Example image (path, bytes, PIL image or (H, W, 3) uint8 array).
        near: ``(lon, lat)``: use the indexed tile there as the example ("more like this place").
        k: Number of hits (1..1000).
        bbox: ``(west, south, east, north)`` in lon/lat, or ``"w,s,e,n"``: only tiles whose
            footprint box intersects it.
        date_range: ``(from, to)`` or ``"from/to"`` (``YYYY-MM-DD``, inclusive, either open):
            only tiles captured then (tiles of unknown date are excluded).
        model: The loaded model, if already in memory (checked against the index's fingerprint).
        template: Format string for text queries, e.g. ``"a satellite image of {}."``.

    Returns:
        :class:`SearchResults`, best first (fewer than ``k`` when fewer tiles pass the filters).

    Raises:
        QueryError: If not exactly one of text/image/near is given, or a filter is malformed.
        SearchIndexError: If ``model`` is not the index's model.
    """
    if not isinstance(index, SearchIndex):
        index = SearchIndex(index)
    given = [x is not None for x in (text, image, near)]
    if sum(given) != 1:
        raise QueryError("give exactly one of text, image or near")
    if not (isinstance(k, int) and 1 <= k <= MAX_K):
        raise QueryError(f"k must be an integer in [1, {MAX_K}], got {k!r}")
    box_ = parse_bbox(bbox)
    dates = parse_date_range(date_range)
    if text is not None:
        if not text.strip():
            raise QueryError("empty text query")
        q = embed_text(index, template.format(text) if template else text, model)
    elif image is not None:
        q = embed_image(index, image, model)
    else:
        lon, lat = (float(v) for v in near)  # type: ignore[union-attr]
        q = index.vector(tile_at(index, lon, lat))
    allowed = allowed_ids(index, box_, dates)
    scores, ids = vectors.search_vectors(index.index, index.spec, q[None, :], k, allowed)
    hits: list[SearchHit] = []
    for score, tid in zip(scores[0], ids[0], strict=True):
        if tid < 0:
            continue
        row = index.tiles.iloc[int(tid)]
        window = (
            None
            if int(row["col_off"]) < 0
            else tuple(int(row[c]) for c in ("col_off", "row_off", "width", "height"))
        )
        hits.append(
            SearchHit(
                rank=len(hits) + 1,
                score=float(score),
                id=int(tid),
                tile_key=str(row["tile_key"]),
                footprint=shapely.from_wkb(row["geometry"]),
                source=str(row["source"]),
                source_kind=str(row["source_kind"]),
                item=str(row["item"] or ""),
                window=window,  # type: ignore[arg-type]
                date=row["date"] if isinstance(row["date"], str) else None,
                gsd_m=float(row["gsd_m"]),
                crs=str(row["crs"]),
                bounds=(
                    float(row["minx"]),
                    float(row["miny"]),
                    float(row["maxx"]),
                    float(row["maxy"]),
                ),
            )
        )
    query = {
        "text": text,
        "image": str(image)
        if isinstance(image, (str, Path))
        else (None if image is None else "<image>"),
        "near": list(near) if near is not None else None,
        "k": k,
        "bbox": list(box_) if box_ else None,
        "date_range": list(dates) if dates else None,
    }
    return SearchResults(hits, query)


__all__ = [
    "MAX_K",
    "QueryError",
    "SearchHit",
    "SearchResults",
    "allowed_ids",
    "embed_text",
    "parse_bbox",
    "parse_date_range",
    "search",
    "tile_at",
]
