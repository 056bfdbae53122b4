"""Overpass API client for small areas: a query builder and a cached, retrying HTTP client.

The query asks for OSM XML with metadata (``out meta``) and the referenced nodes, so the answer is
a regular ``.osm`` file that :func:`terrascribe.sources.osm.read_osm` reads like any extract.
Answers are cached on disk by a hash of (endpoint, query): a re-run never asks twice.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from pathlib import Path

DEFAULT_ENDPOINT = "https://overpass-api.de/api/interpreter"
# Overpass asks clients to back off on these (rate limit, gateway timeouts, server load).
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# A query the server stopped (timeout, memory) still answers HTTP 200 with well-formed XML: the
# objects sent so far and this remark. Such an answer is incomplete and must not be cached.
_RUNTIME_ERROR = re.compile(rb"<remark>\s*(runtime error[^<]*?)\s*</remark>")


class OverpassError(RuntimeError):
    """The Overpass server refused or failed the query after all retries."""


def build_query(
    bbox: tuple[float, float, float, float],
    keys: Iterable[str] | None = None,
    *,
    timeout_s: int = 180,
    max_size_bytes: int | None = None,
) -> str:
    """An Overpass QL query for the tagged OSM objects in a lon/lat box.

    Args:
        bbox: ``(west, south, east, north)`` in degrees.
        keys: Only objects having one of these keys (default: any tagged object).
        timeout_s: Server-side timeout.
        max_size_bytes: Server-side memory limit (``[maxsize:...]``).

    Returns:
        Overpass QL asking for nodes, ways and relations with their nodes and metadata, as XML.

    Raises:
        ValueError: If the box is empty or not lon/lat, or a key contains a double quote.
    """
    west, south, east, north = (float(v) for v in bbox)
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError(f"bbox must be (west, south, east, north) in degrees, got {bbox}")
    settings = f"[out:xml][timeout:{int(timeout_s)}]"
    if max_size_bytes:
        settings += f"[maxsize:{int(max_size_bytes)}]"
    settings += f"[bbox:{south},{west},{north},{east}]"
    selectors: list[str] = []
    for key in sorted(set(keys)) if keys else [None]:
        if key is not None and ('"' in key or "\\" in key):
            raise ValueError(f"OSM key {key!r} cannot be quoted in Overpass QL")
        filt = f'["{key}"]' if key is not None else '[~"."~"."]'
        selectors += [f"node{filt};", f"way{filt};", f"relation{filt};"]
    body = "".join(selectors)
    return f"{settings};\n({body});\n(._;>;);\nout meta;"


def _stopped_by(answer: bytes) -> str | None:
    """Why the server stopped the query midway (its ``<remark>``), or None for a whole answer.

    Overpass still answers HTTP 200 with well-formed XML when a query times out or runs out of
    memory: only this remark tells the answer apart from a complete one.
    """
    found = _RUNTIME_ERROR.search(answer)
    return found.group(1).decode(errors="replace") if found is not None else None


class OverpassClient:
    """Fetch Overpass answers with an on-disk cache and retries with exponential backoff.

    Args:
        endpoint: Interpreter URL.
        cache_dir: Folder for cached answers (``None``: no cache).
        retries: Attempts after the first one on connection errors and 429/5xx answers.
        backoff_s: First wait between attempts (doubles each time).
        timeout_s: HTTP timeout per attempt.
        user_agent: Sent with each request, as the Overpass usage policy asks.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        cache_dir: str | Path | None = None,
        retries: int = 3,
        backoff_s: float = 2.0,
        timeout_s: float = 300.0,
        user_agent: str = "terrascribe (https://github.com/terrascribe/terrascribe)",
    ) -> None:
        self.endpoint = endpoint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.user_agent = user_agent

    def cache_path(self, query: str) -> Path | None:
        """Where the answer to ``query`` is (or would be) cached."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{self.endpoint}\n{query}".encode()).hexdigest()
        return self.cache_dir / f"{digest}.osm"

    def fetch(self, query: str) -> bytes:
        """Return the server's answer to ``query`` (from the cache when present).

        Raises:
            OverpassError: If every attempt failed, the server refused the query, or it stopped
                the query midway (an incomplete answer, never cached); the message names the
                endpoint and cause.
        """
        import httpx

        cached = self.cache_path(query)
        if cached is not None and cached.exists():
            content = cached.read_bytes()
            if _stopped_by(content) is None:  # caches from older versions may hold one
                return content
            cached.unlink()
        last = "no attempt made"
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
                wait *= 2
            try:
                response = httpx.post(
                    self.endpoint,
                    data={"data": query},
                    headers={"User-Agent": self.user_agent},
                    timeout=self.timeout_s,
                )
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise OverpassError(
                    f"{self.endpoint}: HTTP {response.status_code}: {response.text[:300]}"
                )
            content = response.content
            if b"<osm" not in content[:2000]:
                raise OverpassError(f"{self.endpoint}: answer is not OSM XML: {content[:200]!r}")
            stopped = _stopped_by(content)
            if stopped is not None:
                raise OverpassError(
                    f"{self.endpoint}: the answer is incomplete, the server stopped the query "
                    f"({stopped}); ask for a smaller box or fewer keys"
                )
            if cached is not None:
                from terrascribe.shards import atomic_write_bytes

                cached.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(cached, content)
            return content
        raise OverpassError(
            f"{self.endpoint}: query failed after {self.retries + 1} attempts ({last})"
        )

    def download(
        self,
        bbox: tuple[float, float, float, float],
        out: str | Path,
        keys: Iterable[str] | None = None,
    ) -> Path:
        """Fetch the tagged objects of ``bbox`` into an ``.osm`` file and return its path."""
        from terrascribe.shards import atomic_write_bytes

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, self.fetch(build_query(bbox, keys)))
        return out
