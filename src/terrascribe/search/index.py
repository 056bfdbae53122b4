"""Search indexes over imagery archives: tiles, their embeddings (faiss) and their metadata.

An index is a folder:

* ``index.json``: the manifest: model (name, weights, seed, fingerprint, embedding size), faiss
  index type and parameters, tile count, and one entry per build/add (inputs, tiling, counts);
* ``vectors.faiss``: the faiss index (row ``i`` is tile ``i``);
* ``tiles.parquet``: GeoParquet, one row per tile (see :class:`~terrascribe.search.tiling.TileRef`
  for the columns; ``geometry`` is the lon/lat footprint as WKB).

Adding imagery appends to all three (ids continue, the faiss index is not rebuilt) and skips
tiles whose identity is already indexed. An index only ever holds one model's embeddings: adding
with another model is refused. Files are written to temporary names and renamed, the manifest
last, so an interrupted add leaves the previous index readable; embeddings are cached by
:func:`terrascribe.models.encode.encode_images`, so re-running it costs tile reads only.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from terrascribe.search import vectors
from terrascribe.search.tiling import TileRef, TilingParams, iter_tiles, resolve_inputs
from terrascribe.shards import atomic_write_text, dumps, write_geoparquet

FORMAT_NAME = "terrascribe-search-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"
VECTORS = "vectors.faiss"
TILES = "tiles.parquet"

TILE_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("tile_key", pa.string()),
        ("source_kind", pa.string()),
        ("source", pa.string()),
        ("item", pa.string()),
        ("crs", pa.string()),
        ("minx", pa.float64()),
        ("miny", pa.float64()),
        ("maxx", pa.float64()),
        ("maxy", pa.float64()),
        ("col_off", pa.int64()),
        ("row_off", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("tile_px", pa.int32()),
        ("gsd_m", pa.float64()),
        ("date", pa.string()),
        ("sensor", pa.string()),
        ("licence", pa.string()),
        ("west", pa.float64()),
        ("south", pa.float64()),
        ("east", pa.float64()),
        ("north", pa.float64()),
        ("valid_fraction", pa.float64()),
        ("geometry", pa.binary()),
    ]
)


class SearchIndexError(ValueError):
    """An index folder is missing, damaged, or used with the wrong model."""


@dataclass
class AddReport:
    """What one build/add did."""

    added: int
    already_indexed: int
    skipped: dict[str, int]
    total: int
    index_type: str
    rebuilt: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return dict(self.__dict__)


def model_record(bundle: Any, seed: int) -> dict[str, Any]:
    """What the manifest records about a model (enough to load it again and check it)."""
    size = bundle.image_size
    return {
        "name": bundle.name,
        "pretrained": None if bundle.pretrained is None else str(bundle.pretrained),
        "seed": seed,
        "fingerprint": bundle.fingerprint,
        "embed_dim": int(bundle.embed_dim),
        "image_size": list(size) if isinstance(size, tuple) else int(size),
        "precision": bundle.precision,
    }


# --------------------------------------------------------------------------------------------
# Reading


class SearchIndex:
    """An index opened for searching: manifest, faiss index and tile table, loaded once.

    Safe to share between threads: searches pass their parameters per call, and the model
    used for text/image queries is loaded once under a lock.

    Args:
        path: Index folder.
        device: Where to load the model for text/image queries.

    Raises:
        SearchIndexError: If the folder is not a complete index, or its parts disagree.
    """

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = Path(path)
        self.device = device
        self.manifest = read_manifest(self.path)
        self.index = _read_part(self.path / VECTORS, vectors.read)
        self.tiles = _read_part(self.path / TILES, lambda p: pq.read_table(p).to_pandas())
        n = self.manifest["count"]
        if not (self.index.ntotal == len(self.tiles) == n):
            raise SearchIndexError(
                f"{self.path}: index parts disagree (manifest {n} tiles, faiss "
                f"{self.index.ntotal}, table {len(self.tiles)}); re-run the last add"
            )
        self.spec = vectors.IndexSpec(**self.manifest["index"])
        self._bundle: Any = None
        self._model_lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"SearchIndex({str(self.path)!r}, tiles={len(self)}, type={self.spec.type})"

    @property
    def model_info(self) -> dict[str, Any]:
        """The manifest's model record."""
        return self.manifest["model"]

    def model(self, bundle: Any = None) -> Any:
        """The model the index was built with (loaded once), or ``bundle`` after checking it.

        Raises:
            SearchIndexError: If the model's fingerprint is not the index's.
        """
        if bundle is not None:
            check_model(self.path, self.manifest, bundle)
            return bundle
        with self._model_lock:
            if self._bundle is None:
                from terrascribe.models.zoo import load_model

                info = self.model_info
                loaded = load_model(
                    info["name"], info["pretrained"], device=self.device, seed=info["seed"]
                )
                check_model(self.path, self.manifest, loaded)
                self._bundle = loaded
            return self._bundle

    def use_model(self, bundle: Any) -> None:
        """Answer text/image queries with ``bundle``, already in memory, instead of loading one.

        Raises:
            SearchIndexError: If the model's fingerprint is not the index's.
        """
        check_model(self.path, self.manifest, bundle)
        with self._model_lock:
            self._bundle = bundle

    @functools.cached_property
    def dates(self) -> tuple[np.ndarray, np.ndarray]:
        """``(known, dates)``: which tiles have a capture date, and the dates as a fixed-width
        string array (``""`` where unknown); made once, as date filters compare them per query.
        """
        column = self.tiles["date"]
        return column.notna().to_numpy(), column.fillna("").to_numpy().astype(str)

    def row(self, tile_id: int) -> dict[str, Any]:
        """The metadata of one tile as a plain dict (footprint as a shapely polygon)."""
        if not 0 <= tile_id < len(self.tiles):
            raise IndexError(f"tile id {tile_id} out of range [0, {len(self.tiles)})")
        rec = self.tiles.iloc[tile_id].to_dict()
        rec["geometry"] = shapely.from_wkb(rec["geometry"])
        return _plain(rec)

    def vector(self, tile_id: int) -> np.ndarray:
        """The stored embedding of one tile."""
        return vectors.vectors_at(self.index, np.array([tile_id]))[0]


def _read_part(path: Path, read: Any) -> Any:
    # faiss raises a bare RuntimeError (C++ text) and pyarrow its own errors on damaged files:
    # either way, say which file of the index is broken.
    try:
        return read(path)
    except (OSError, RuntimeError, pa.ArrowException) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SearchIndexError(f"{path}: unreadable index file ({reason})") from None


def _plain(rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and np.isnan(v):
            v = None
        out[k] = v
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an index folder.

    Raises:
        SearchIndexError: If it is missing, not JSON, or not a terrascribe index.
    """
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise SearchIndexError(f"{path}: not a search index (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SearchIndexError(f"{file}: unreadable index manifest ({err})") from None
    if manifest.get("format") != FORMAT_NAME:
        raise SearchIndexError(f"{file}: not a terrascribe search index manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise SearchIndexError(f"{file}: made by a newer terrascribe; upgrade to read it")
    for name in (VECTORS, TILES):
        if not (path / name).is_file():
            raise SearchIndexError(f"{path}: index file {name} is missing")
    return manifest


def check_model(path: Path, manifest: dict[str, Any], bundle: Any) -> None:
    """Refuse a model whose fingerprint differs from the index's."""
    want = manifest["model"]
    if bundle.fingerprint != want["fingerprint"]:
        raise SearchIndexError(
            f"{path}: index was built with model {want['name']} "
            f"(pretrained={want['pretrained']}, fingerprint {want['fingerprint'][:12]}), not "
            f"{bundle.name} (pretrained={bundle.pretrained}, fingerprint "
            f"{bundle.fingerprint[:12]}); embeddings of different models cannot be mixed: "
            "build a new index"
        )


def index_info(path: str | Path) -> dict[str, Any]:
    """Summary of an index: manifest plus per-source tile counts and date range."""
    manifest = read_manifest(path)
    table = pq.read_table(Path(path) / TILES, columns=["source", "source_kind", "date"])
    df = table.to_pandas()
    dates = df["date"].dropna()
    return {
        **manifest,
        "sources": df.groupby(["source_kind", "source"])
        .size()
        .rename("tiles")
        .reset_index()
        .to_dict(orient="records"),
        "date_range": [dates.min(), dates.max()] if len(dates) else None,
    }


# --------------------------------------------------------------------------------------------
# Writing


def _rows_table(refs: Sequence[TileRef], start_id: int) -> pa.Table:
    rows = []
    for i, ref in enumerate(refs):
        row = ref.to_row()
        row["id"] = start_id + i
        row["geometry"] = shapely.to_wkb(ref.footprint())
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=TILE_SCHEMA)


def build_index(
    sources: Sequence[str | Path],
    model: Any,
    out: str | Path,
    *,
    tile_px: int = 256,
    gsd_m: float | None = None,
    overlap: float = 0.0,
    min_valid: float = 0.5,
    index_type: str = "auto",
    seed: int = 0,
    batch_size: int = 64,
    chunk_tiles: int = 1024,
    cache_dir: str | Path | None = None,
    capture_date: str | None = None,
    xyz_layout: str | None = None,
    xyz_zoom: int | None = None,
    progress: bool = True,
) -> AddReport:
    """Tile imagery, embed the tiles and write (or append to) a search index.

    A folder that already holds an index is appended to (same as :func:`add_to_index`): ids
    continue, tiles already indexed are skipped, and the model must be the index's.

    Args:
        sources: GeoTIFF/COG/VRT files, folders of them, XYZ tile folders, STAC catalogues or
            terrascribe dataset folders.
        model: A :class:`~terrascribe.models.zoo.LoadedModel`.
        out: Index folder (created if needed).
        tile_px: Tile side in pixels.
        gsd_m: Tile ground sampling distance in metres (None: native GSD of each source).
        overlap: Fraction of overlap between neighbouring tiles.
        min_valid: Minimum share of valid pixels for a tile to be indexed.
        index_type: ``auto`` (by size), ``flat``, ``hnsw`` or ``ivfpq``.
        seed: Seed of IVF-PQ training and of a randomly initialised model (recorded).
        batch_size: Images per forward pass.
        chunk_tiles: Tiles read and embedded together (bounds memory; one cache chunk each).
        cache_dir: Embedding cache folder (None: the shared
            :func:`~terrascribe.models.encode.default_cache_dir`).
        capture_date: Date for sources that do not carry one (``YYYY-MM-DD``).
        xyz_layout, xyz_zoom: For XYZ folders whose layout or zoom cannot be guessed.
        progress: Show progress bars.

    Returns:
        An :class:`AddReport`.

    Raises:
        SearchIndexError: If ``out`` holds an index of another model or a damaged one.
        TilingError: If an input cannot be read or tiling parameters are unusable.
    """
    from terrascribe.models.encode import default_cache_dir, encode_images
    from terrascribe.progress import progress_bar

    out = Path(out)
    params = TilingParams(tile_px=tile_px, gsd_m=gsd_m, overlap=overlap, min_valid=min_valid)
    if index_type not in vectors.INDEX_TYPES:
        raise vectors.VectorIndexError(
            f"unknown index type {index_type!r}; use one of {vectors.INDEX_TYPES}"
        )
    out.mkdir(parents=True, exist_ok=True)
    existing = (out / MANIFEST).exists()
    if existing:
        manifest = read_manifest(out)
        check_model(out, manifest, model)
        index = _read_part(out / VECTORS, vectors.read)
        old = _read_part(out / TILES, pq.read_table)
        if index.ntotal != old.num_rows or old.num_rows != manifest["count"]:
            raise SearchIndexError(f"{out}: index parts disagree; rebuild it")
        spec = vectors.IndexSpec(**manifest["index"])
        known = set(old.column("tile_key").to_pylist())
    else:
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": model_record(model, seed),
            "count": 0,
            "additions": [],
        }
        index, spec, old, known = None, None, None, set()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    inputs = resolve_inputs(
        sources, xyz_layout=xyz_layout, xyz_zoom=xyz_zoom, capture_date=capture_date
    )

    skipped: dict[str, int] = {}
    refs: list[TileRef] = []
    embeddings: list[np.ndarray] = []
    seen = 0
    pending_refs: list[TileRef] = []
    pending_rgb: list[np.ndarray] = []

    def flush() -> None:
        if pending_refs:
            emb = encode_images(
                model, list(pending_rgb), batch_size=batch_size, cache_dir=cache, progress=False
            )
            embeddings.append(emb)
            refs.extend(pending_refs)
            pending_refs.clear()
            pending_rgb.clear()

    with progress_bar(None, "index tiles", enabled=progress) as advance:
        for ref, rgb in iter_tiles(inputs, params, skipped):
            advance(1)
            if ref.tile_key in known:
                seen += 1
                continue
            known.add(ref.tile_key)
            pending_refs.append(ref)
            pending_rgb.append(rgb)
            if len(pending_refs) >= chunk_tiles:
                flush()
        flush()

    new = (
        np.concatenate(embeddings)
        if embeddings
        else np.zeros((0, int(model.embed_dim)), np.float32)
    )
    rebuilt = False
    if index is None:
        spec = vectors.choose_spec(len(new), new.shape[1], index_type)
        index = vectors.make_index(spec, new.shape[1], train=new, seed=seed)
        if len(new):
            index.add(new)
    else:
        index, spec, rebuilt = vectors.grow(index, spec, new, index_type, seed=seed)
    start = 0 if old is None else old.num_rows
    table = _rows_table(refs, start)
    if old is not None:
        table = pa.concat_tables([old.select(TILE_SCHEMA.names).cast(TILE_SCHEMA), table])
    vectors.write(index, out / VECTORS)
    write_geoparquet(out / TILES, table)
    report = AddReport(
        added=len(refs),
        already_indexed=seen,
        skipped=skipped,
        total=int(index.ntotal),
        index_type=spec.type,
        rebuilt=rebuilt,
    )
    manifest["index"] = spec.to_dict()
    manifest["count"] = int(index.ntotal)
    manifest["additions"].append(
        {
            "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "inputs": [str(s) for s in sources],
            "tiling": params.__dict__,
            "report": report.to_dict(),
        }
    )
    atomic_write_text(out / MANIFEST, dumps(manifest))
    return report


def add_to_index(
    index_dir: str | Path,
    sources: Sequence[str | Path],
    model: Any = None,
    *,
    device: str = "cpu",
    **kwargs: Any,
) -> AddReport:
    """Append imagery to an existing index (see :func:`build_index` for the arguments).

    Without ``model``, the index's own model is loaded from its manifest onto ``device``.

    Raises:
        SearchIndexError: If there is no index at ``index_dir`` or the model differs.
    """
    manifest = read_manifest(index_dir)
    if model is None:
        from terrascribe.models.zoo import load_model

        info = manifest["model"]
        model = load_model(info["name"], info["pretrained"], device=device, seed=info["seed"])
    kwargs.setdefault("seed", manifest["model"]["seed"])
    return build_index(sources, model, index_dir, **kwargs)


def tiles_frame(path: str | Path) -> pd.DataFrame:
    """The tile table of an index as a DataFrame (GeoPandas reads ``tiles.parquet`` directly)."""
    return pq.read_table(Path(path) / TILES).to_pandas()


__all__ = [
    "AddReport",
    "SearchIndex",
    "SearchIndexError",
    "add_to_index",
    "build_index",
    "index_info",
    "read_manifest",
    "tiles_frame",
]
