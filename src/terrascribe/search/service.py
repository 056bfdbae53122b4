"""``terrascribe serve INDEX``: a JSON API and a small map page over one search index.

Endpoints (all GET):

* ``/`` the web page (query box, Leaflet map of hits, thumbnails, tile details);
* ``/api/search?q=TEXT&k=10&bbox=W,S,E,N&date_from=&date_to=`` or ``near=LON,LAT`` instead of
  ``q``: ranked hits as JSON;
* ``/api/tile/{id}`` a tile's metadata; ``/api/tile/{id}.jpg`` its thumbnail, re-read from the
  source named in the index (``id`` is an integer checked against the index: no path from a
  request ever reaches the filesystem);
* ``/api/info`` the index summary; ``/healthz`` liveness (no key needed).

Safety: binds to 127.0.0.1 unless told otherwise (with a warning); an optional API key is read
from an environment variable, compared in constant time, sent in the ``X-API-Key`` header and
never logged; query length, ``k``, URL length and request bodies are bounded; every search
and thumbnail runs in a worker thread under a timeout. The index is loaded once and shared:
faiss searches run concurrently (parameters are passed per call), the model and rasterio
handles are used under locks.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terrascribe.images import encode_jpeg
from terrascribe.search.index import SearchIndex
from terrascribe.search.query import QueryError, search
from terrascribe.search.tiling import TilingError, read_tile

STATIC_DIR = Path(__file__).with_name("static")
API_KEY_HEADER = "X-API-Key"
log = logging.getLogger("terrascribe.serve")


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on what one request may ask.

    Attributes:
        max_k: Largest ``k``. max_query_chars: Longest text query.
        max_url_bytes: Longest request target. max_body_bytes: Largest request body.
        query_timeout_s: Time allowed for one search or thumbnail.
        thumb_px: Thumbnail size. thumb_cache: Thumbnails kept in memory.
    """

    max_k: int = 100
    max_query_chars: int = 500
    max_url_bytes: int = 4096
    max_body_bytes: int = 16384
    query_timeout_s: float = 10.0
    thumb_px: int = 256
    thumb_cache: int = 512


class _Thumbnails:
    """JPEG thumbnails rendered from the sources, cached; reads serialised (GDAL handles)."""

    def __init__(self, index: SearchIndex, size: int, capacity: int) -> None:
        self.index = index
        self.size = size
        self.capacity = capacity
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._sources: dict = {}
        self._lock = threading.Lock()

    def get(self, tile_id: int) -> bytes:
        with self._lock:
            if tile_id in self._cache:
                self._cache.move_to_end(tile_id)
                return self._cache[tile_id]
            img = read_tile(self.index.row(tile_id), self.size, _cache=self._sources)
            data = encode_jpeg(img, quality=85)
            self._cache[tile_id] = data
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
            return data


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    index: SearchIndex | str | Path,
    *,
    api_key: str | None = None,
    limits: ServiceLimits | None = None,
    model: Any = None,
):
    """Build the FastAPI app for an index.

    Args:
        index: A loaded :class:`SearchIndex` or an index folder (loaded once, here).
        api_key: When set, every ``/api/`` request must carry it in ``X-API-Key``.
        limits: Request bounds (defaults: :class:`ServiceLimits`).
        model: An already loaded model for text queries (checked against the index).

    Returns:
        A ``fastapi.FastAPI`` application.
    """
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi import Path as PathParam
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    if not isinstance(index, SearchIndex):
        index = SearchIndex(index)
    limits = limits or ServiceLimits()
    if model is not None:
        index.use_model(model)
    thumbs = _Thumbnails(index, limits.thumb_px, limits.thumb_cache)
    n_tiles = len(index)
    app = FastAPI(title="terrascribe search", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.index = index

    @app.middleware("http")
    async def guard(request: Request, call_next):
        target = request.url.path + ("?" + request.url.query if request.url.query else "")
        if len(target.encode()) > limits.max_url_bytes:
            return JSONResponse({"detail": "request URL too long"}, status_code=414)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return JSONResponse({"detail": "request body too large"}, status_code=413)
        if api_key and request.url.path.startswith("/api/"):
            given = request.headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return JSONResponse({"detail": "missing or wrong API key"}, status_code=401)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def _timed(fn, *args, **kwargs):
        try:
            return await asyncio.wait_for(
                run_in_threadpool(fn, *args, **kwargs), timeout=limits.query_timeout_s
            )
        except TimeoutError:
            raise HTTPException(504, "query timed out") from None

    def _tile_id(tile_id: int) -> int:
        if not 0 <= tile_id < n_tiles:
            raise HTTPException(404, f"no tile {tile_id} (index has ids 0..{n_tiles - 1})")
        return tile_id

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "tiles": n_tiles}

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        m = index.manifest
        t = index.tiles
        return {
            "tiles": n_tiles,
            "index": m["index"],
            "model": {k: m["model"][k] for k in ("name", "pretrained", "embed_dim")},
            "bbox": [
                float(t["west"].min()),
                float(t["south"].min()),
                float(t["east"].max()),
                float(t["north"].max()),
            ]
            if n_tiles
            else None,
            "max_k": limits.max_k,
            "auth": bool(api_key),
        }

    @app.get("/api/search")
    async def api_search(
        q: str | None = Query(None, max_length=limits.max_query_chars),
        near: str | None = Query(None, max_length=64),
        k: int = Query(10, ge=1, le=limits.max_k),
        bbox: str | None = Query(None, max_length=128),
        date_from: str | None = Query(None, max_length=10),
        date_to: str | None = Query(None, max_length=10),
    ) -> dict[str, Any]:
        point = None
        if near:
            try:
                lon, lat = (float(v) for v in near.split(","))
            except ValueError:
                raise HTTPException(422, "near must be 'lon,lat'") from None
            point = (lon, lat)
        dates = (date_from, date_to) if (date_from or date_to) else None
        try:
            results = await _timed(
                search,
                index,
                q,
                near=point,
                k=k,
                bbox=bbox,
                date_range=dates,
            )
        except QueryError as err:
            raise HTTPException(422, str(err)) from None
        return {"query": results.query, "hits": [h.to_dict() for h in results.hits]}

    @app.get("/api/tile/{tile_id}.jpg")
    async def tile_jpeg(tile_id: int = PathParam(..., ge=0, le=2**53)) -> Response:
        tid = _tile_id(tile_id)
        try:
            data = await _timed(thumbs.get, tid)
        except TilingError as err:
            log.warning("thumbnail %d: %s", tid, err)
            raise HTTPException(502, "tile source unreadable") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/tile/{tile_id}")
    async def tile_meta(tile_id: int = PathParam(..., ge=0, le=2**53)) -> dict[str, Any]:
        import shapely

        row = index.row(_tile_id(tile_id))
        row["geometry"] = shapely.geometry.mapping(row["geometry"])
        return row

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(
    index_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    limits: ServiceLimits | None = None,
    device: str = "cpu",
) -> None:
    """Load an index and serve it with uvicorn until interrupted.

    A host that is not a loopback address is served with a warning: anyone who can reach it
    can query the index (set an API key).
    """
    import uvicorn

    if not _is_loopback(host):
        log.warning(
            "serving on %s: reachable from other machines%s",
            host,
            "" if api_key else " and WITHOUT an API key",
        )
    index = SearchIndex(index_dir, device=device)
    index.model()  # load the model now, not on the first query
    app = create_app(index, api_key=api_key, limits=limits)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=5)


__all__ = ["API_KEY_HEADER", "STATIC_DIR", "ServiceLimits", "create_app", "serve"]
