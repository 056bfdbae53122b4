"""Web inputs for LLM captioning: item lists, and a polite collector for pages and feeds.

An *item* is one image with the text published beside it (GAIA's unit): the image URL or path,
the page text or alt text, credits, and optionally a capture date and a place. Items are read
from JSONL, CSV or Parquet (:func:`read_items`) and validated, with errors naming the file and
the line.

The collector (:func:`collect`) builds such a list from web pages or RSS/Atom feeds. It behaves
as a crawler should: it obeys ``robots.txt`` (``urllib.robotparser``), waits between requests to
the same host, says who it is in its User-Agent, caches responses on disk so a re-run does not
hit the sites again, and limits the size and checks the type of what it downloads.

Scraped text is data: nothing here interprets it; :mod:`terrascribe.text.llm` quotes it.
"""

from __future__ import annotations

import csv
import email.utils
import hashlib
import json
import math
import random
import threading
import time
import urllib.robotparser
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from terrascribe import __version__
from terrascribe.images import ImageError, decode_rgb
from terrascribe.records import Skip, make_key
from terrascribe.shards import atomic_write_bytes, atomic_write_text

DEFAULT_USER_AGENT = (
    f"terrascribe/{__version__} (remote-sensing dataset builder; "
    "set --user-agent to add your contact address)"
)
MAX_PAGE_BYTES = 5 << 20
MAX_IMAGE_BYTES = 20 << 20
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class ItemsError(ValueError):
    """An item list is missing, unreadable, or has invalid rows (the message names them)."""


class FetchError(RuntimeError):
    """A URL could not be fetched (after retries), or its response was refused."""


class RobotsDisallowed(FetchError):
    """``robots.txt`` of the site does not allow this user agent to fetch the URL."""


# --------------------------------------------------------------------------------------------
# Items


def _is_url(ref: str) -> bool:
    return "://" in ref


class WebItem(BaseModel):
    """One image with the text published beside it.

    Attributes:
        image: ``http(s)://`` URL or local path (relative paths are relative to the item list).
        id: Stable identity for the sample key; default: a hash of ``image`` and ``page_url``.
        page_url: The page the image was published on.
        title: Page or article title.
        text: Article text (or a summary of it).
        alt_text: The image's alt text or figure caption.
        credits: Who made the image ("ESA/Copernicus Sentinel-2").
        licence: Licence of the image, if known.
        date: Capture date of the image (``YYYY-MM-DD``), only if the source states it.
        published: Publication date of the page (not the capture date).
        place: Place name(s) the source gives.
        lon, lat: A point in the image, in degrees, if the source gives one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str
    id: str | None = None
    page_url: str | None = None
    title: str | None = None
    text: str | None = None
    alt_text: str | None = None
    credits: str | None = None
    licence: str | None = None
    date: str | None = None
    published: str | None = None
    place: str | None = None
    lon: float | None = None
    lat: float | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_to_none(cls, value: Any) -> Any:
        # CSV gives "" and Parquet/pandas give NaN for missing cells.
        if isinstance(value, str):
            value = value.strip()
            return value or None
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str | None) -> str:
        if not value:
            raise ValueError("image is required (a URL or a path)")
        if _is_url(value) and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"image URL must be http(s), got {value!r}")
        return value

    @field_validator("page_url")
    @classmethod
    def _check_page(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"page_url must be an http(s) URL, got {value!r}")
        return value

    @field_validator("date", "published")
    @classmethod
    def _check_date(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return datetime.fromisoformat(value).date().isoformat()
        except ValueError:
            raise ValueError(f"must be an ISO date YYYY-MM-DD, got {value!r}") from None

    @model_validator(mode="after")
    def _check_point(self) -> WebItem:
        if (self.lon is None) != (self.lat is None):
            raise ValueError("give both lon and lat, or neither")
        if self.lon is not None and not (-180 <= self.lon <= 180 and -90 <= self.lat <= 90):
            raise ValueError(f"lon/lat out of range: {self.lon}, {self.lat}")
        return self

    @property
    def key(self) -> str:
        """Stable sample key: from ``id`` if given, else a hash of the image and page."""
        if self.id:
            return make_key("web", self.id)
        digest = hashlib.sha256(f"{self.image}\0{self.page_url or ''}".encode()).hexdigest()
        return make_key("web", digest[:20])

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form without empty fields (one JSONL line)."""
        return self.model_dump(exclude_none=True)


def format_validation(err: ValidationError, whole: str = "item") -> str:
    """``"field: problem; ..."`` for a pydantic error (``whole`` names a model-level problem)."""
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or whole}: {e['msg']}" for e in err.errors()
    )


def _raw_rows(path: Path) -> Iterable[tuple[str, Any]]:
    """Yield ``(where, row)`` with ``where`` naming the line or row for error messages."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"line {lineno}", json.loads(line)
                except json.JSONDecodeError as err:
                    yield f"line {lineno}", ItemsError(f"invalid JSON ({err.msg})")
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            start = reader.line_num
            for row in reader:
                yield f"line {start + 1}", row
                start = reader.line_num
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"row {i}", row
    else:
        raise ItemsError(
            f"{path}: unknown item list format {suffix!r}; use .jsonl, .csv or .parquet"
        )


def read_items(path: str | Path, *, max_errors: int = 20) -> list[WebItem]:
    """Read and validate an item list (JSONL, CSV or Parquet).

    Args:
        path: The item list. Columns/keys are the fields of :class:`WebItem`.
        max_errors: How many bad rows to list in the error message.

    Returns:
        The items, in file order.

    Raises:
        ItemsError: If the file is missing or unreadable, or any row is invalid; the message names
            the file and every bad line (up to ``max_errors``).
    """
    path = Path(path)
    if not path.is_file():
        raise ItemsError(f"{path}: no such item list")
    items: list[WebItem] = []
    errors: list[str] = []
    try:
        for where, row in _raw_rows(path):
            if isinstance(row, ItemsError):
                errors.append(f"{path} {where}: {row}")
                continue
            if not isinstance(row, Mapping):
                errors.append(f"{path} {where}: expected an object, got {type(row).__name__}")
                continue
            try:
                items.append(WebItem.model_validate(dict(row)))
            except ValidationError as err:
                errors.append(f"{path} {where}: {format_validation(err)}")
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ItemsError(f"{path}: cannot read item list ({err})") from None
    except Exception as err:  # pyarrow raises its own types for broken Parquet files
        if isinstance(err, ItemsError):
            raise
        raise ItemsError(f"{path}: cannot read item list ({type(err).__name__}: {err})") from None
    if errors:
        more = f"\n... and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise ItemsError(
            f"{path}: {len(errors)} invalid item(s):\n" + "\n".join(errors[:max_errors]) + more
        )
    return items


def write_items(path: str | Path, items: Iterable[WebItem]) -> int:
    """Write items as JSONL (atomically). Returns the number written."""
    lines = [json.dumps(it.to_json(), ensure_ascii=False, sort_keys=True) for it in items]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


# --------------------------------------------------------------------------------------------
# Retry policy (shared with the LLM captioner)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential back-off with jitter; a server's ``Retry-After`` wins (capped at ``max_s``).

    Args:
        attempt: 0 for the first retry.
        base_s: Delay of the first retry.
        max_s: Upper bound of any delay.
        retry_after_s: What the server asked for, if anything.
        rng: Source of jitter (seeded by callers, so runs are reproducible).
    """
    if retry_after_s is not None:
        return min(max_s, retry_after_s)
    jitter = (rng or random).uniform(0.5, 1.0)
    return min(max_s, base_s * (2.0**attempt) * jitter)


# --------------------------------------------------------------------------------------------
# Fetching


@dataclass(frozen=True)
class FetchResult:
    """A fetched URL.

    Attributes:
        url: The final URL (after redirects).
        status: HTTP status (200).
        content_type: Media type without parameters, lower case.
        content: The body.
        from_cache: Whether it came from the on-disk cache.
    """

    url: str
    status: int
    content_type: str
    content: bytes
    from_cache: bool = False


def _check_http_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError(f"{url}: only http(s) URLs can be fetched")


def _origin(url: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "", "", ""))


class Fetcher:
    """A polite HTTP client: robots.txt, per-host delay, disk cache, size limits, retries.

    Thread-safe: the per-host schedule is shared, so threads never hit one host faster than
    ``min_delay_s`` (or the site's ``Crawl-delay``, if larger).

    Args:
        cache_dir: Folder for cached responses (only 200s); ``None`` disables the cache.
        user_agent: Sent with every request and matched against ``robots.txt``.
        min_delay_s: Minimum time between two requests to the same host.
        timeout_s: Timeout of one request.
        max_retries: Retries on 429, 5xx, timeouts and connection errors.
        backoff_base_s: First retry delay (doubles each time; ``Retry-After`` wins).
        backoff_max_s: Longest single wait.
        obey_robots: Check ``robots.txt``; only for sites you own or run (tests).
        transport: An ``httpx`` transport (tests use a mock transport).
        seed: Seed of the back-off jitter.
    """

    def __init__(
        self,
        *,
        cache_dir: str | Path | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        min_delay_s: float = 1.0,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        obey_robots: bool = True,
        transport: httpx.BaseTransport | None = None,
        seed: int = 0,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.user_agent = user_agent
        self.min_delay_s = min_delay_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.obey_robots = obey_robots
        self.requests = 0  # network requests made (cache hits excluded)
        self._client = httpx.Client(
            headers={"User-Agent": user_agent},
            timeout=timeout_s,
            follow_redirects=False,  # followed by hand so robots.txt is checked at each hop
            transport=transport,
        )
        self._lock = threading.Lock()
        self._next_slot: dict[str, float] = {}
        self._host_delay: dict[str, float] = {}
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}
        self._rng = random.Random(seed)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- politeness -------------------------------------------------------------------------

    def _wait_for_slot(self, url: str) -> None:
        host = urlsplit(url).netloc
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(host, now))
            delay = max(self.min_delay_s, self._host_delay.get(host, 0.0))
            self._next_slot[host] = slot + delay
        if slot > now:
            time.sleep(slot - now)

    def _robots_for(self, url: str) -> urllib.robotparser.RobotFileParser:
        origin = _origin(url)
        with self._lock:
            parser = self._robots.get(origin)
        if parser is not None:
            return parser
        parser = urllib.robotparser.RobotFileParser(origin + "/robots.txt")
        try:
            response = self._request(origin + "/robots.txt", max_bytes=512 << 10)
        except FetchError:
            # RFC 9309: an unreachable robots.txt (5xx, network) means "assume disallowed".
            parser.disallow_all = True
        else:
            status, _, body = response
            if status in (401, 403):
                parser.disallow_all = True
            elif 400 <= status < 500:
                parser.allow_all = True
            else:
                parser.parse(body.decode("utf-8", errors="replace").splitlines())
                delay = parser.crawl_delay(self.user_agent)
                if delay:
                    self._host_delay[urlsplit(url).netloc] = float(delay)
        with self._lock:
            self._robots.setdefault(origin, parser)
        return parser

    def allowed(self, url: str) -> bool:
        """Whether ``robots.txt`` lets this user agent fetch ``url``."""
        if not self.obey_robots:
            return True
        return self._robots_for(url).can_fetch(self.user_agent, url)

    # -- cache ------------------------------------------------------------------------------

    def _cache_paths(self, url: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(url.encode()).hexdigest()
        folder = self.cache_dir / digest[:2]
        return folder / f"{digest}.body", folder / f"{digest}.json"

    def _from_cache(self, url: str) -> FetchResult | None:
        paths = self._cache_paths(url)
        if paths is None or not paths[1].exists():
            return None
        meta = json.loads(paths[1].read_text())
        return FetchResult(
            url=meta["url"],
            status=meta["status"],
            content_type=meta["content_type"],
            content=paths[0].read_bytes(),
            from_cache=True,
        )

    def _to_cache(self, url: str, result: FetchResult) -> None:
        paths = self._cache_paths(url)
        if paths is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(paths[0], result.content)
        # The metadata file is written last: its presence marks a complete entry.
        meta = {"url": result.url, "status": result.status, "content_type": result.content_type}
        atomic_write_text(paths[1], json.dumps(meta, sort_keys=True))

    # -- requests ---------------------------------------------------------------------------

    def _request(
        self, url: str, *, max_bytes: int, accept: Sequence[str] = ()
    ) -> tuple[int, httpx.Headers, bytes]:
        """One GET with retries on transient failures; returns status, headers and body."""
        for attempt in range(self.max_retries + 1):
            self._wait_for_slot(url)
            retry_after = None
            try:
                self.requests += 1
                with self._client.stream("GET", url) as response:
                    status = response.status_code
                    if status not in RETRY_STATUSES:
                        return (
                            status,
                            response.headers,
                            self._read_body(url, response, max_bytes, accept),
                        )
                    retry_after = parse_retry_after(response.headers)
                    problem = f"HTTP {status}"
            except httpx.TimeoutException:
                problem = "timed out"
            except httpx.TransportError as err:
                problem = f"connection failed ({type(err).__name__})"
            if attempt == self.max_retries:
                break
            time.sleep(
                backoff_delay(
                    attempt,
                    base_s=self.backoff_base_s,
                    max_s=self.backoff_max_s,
                    retry_after_s=retry_after,
                    rng=self._rng,
                )
            )
        raise FetchError(f"{url}: {problem} after {self.max_retries + 1} attempt(s)")

    def _read_body(
        self, url: str, response: httpx.Response, max_bytes: int, accept: Sequence[str]
    ) -> bytes:
        if response.status_code != 200:
            return b""
        _check_type(url, _media_type(response.headers), accept)
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"{url}: {int(declared)} bytes exceeds the limit of {max_bytes}")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"{url}: body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def get(
        self, url: str, *, max_bytes: int = MAX_PAGE_BYTES, accept: Sequence[str] = ()
    ) -> FetchResult:
        """Fetch ``url`` (from the cache when there), obeying robots.txt at every redirect.

        Args:
            url: An ``http(s)`` URL.
            max_bytes: Refuse bodies larger than this.
            accept: Media type prefixes to accept (``("image/",)``); empty accepts any.

        Raises:
            RobotsDisallowed: If robots.txt forbids the URL (or a redirect target).
            FetchError: On a non-200 status, a refused type or size, or after the retries.
        """
        _check_http_url(url)
        cached = self._from_cache(url)
        if cached is not None:
            _check_type(url, cached.content_type, accept)
            return cached
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            if not self.allowed(current):
                raise RobotsDisallowed(f"{current}: robots.txt disallows {self.user_agent!r}")
            status, headers, body = self._request(current, max_bytes=max_bytes, accept=accept)
            if status in (301, 302, 303, 307, 308) and headers.get("location"):
                current = urljoin(current, headers["location"])
                _check_http_url(current)
                continue
            if status != 200:
                raise FetchError(f"{current}: HTTP {status}")
            result = FetchResult(current, status, _media_type(headers), body)
            self._to_cache(url, result)
            return result
        raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _check_type(url: str, ctype: str, accept: Sequence[str]) -> None:
    """Refuse a media type outside the ``accept`` prefixes (empty accepts any)."""
    if accept and not any(ctype.startswith(a) for a in accept):
        raise FetchError(f"{url}: content type {ctype or 'missing'!r} is not {list(accept)}")


def fetch_image(
    fetcher: Fetcher, url: str, *, max_bytes: int = MAX_IMAGE_BYTES, min_side: int = 0
) -> bytes:
    """Download an image: size limit, ``image/*`` content type, and a full decode check.

    Raises:
        FetchError: If the download fails or the body is not a decodable image of at least
            ``min_side`` pixels on its shorter side.
    """
    result = fetcher.get(url, max_bytes=max_bytes, accept=("image/",))
    try:
        image = decode_rgb(result.content, source=url)
    except ImageError as err:
        raise FetchError(str(err)) from None
    if min(image.size) < min_side:
        raise FetchError(f"{url}: image is {image.size[0]}x{image.size[1]}, below {min_side} px")
    return result.content


def save_image(data: bytes, folder: str | Path) -> Path:
    """Save image bytes under a name derived from their hash (no path from the web is used)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif", "GIF": "gif"}.get(
            img.format or "", "img"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()}.{ext}"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


# --------------------------------------------------------------------------------------------
# Pages and feeds


@dataclass(frozen=True)
class PageImage:
    """An image found on a page: absolute URL and the text attached to it."""

    url: str
    alt: str | None = None


@dataclass
class Page:
    """What a page says: title, main text, publication date, credits and its images."""

    url: str
    title: str | None = None
    text: str | None = None
    published: str | None = None
    credits: str | None = None
    images: list[PageImage] = field(default_factory=list)


_SKIP_IMAGE_SUFFIXES = (".svg", ".gif", ".ico")


def _int_attr(value: Any) -> int | None:
    try:
        return int(str(value).strip().removesuffix("px"))
    except (TypeError, ValueError):
        return None


def extract_page(html: str | bytes, url: str, *, min_side: int = 64) -> Page:
    """Extract a page's main text (trafilatura) and its content images (BeautifulSoup).

    Images inside ``<article>``/``<main>`` are preferred; images whose declared width or height is
    below ``min_side`` (icons, tracking pixels), SVGs and ``data:`` URLs are left out. A
    ``<figcaption>`` is used as the image's text when there is no alt text.

    Args:
        html: The page.
        url: Its URL (to resolve relative links).
        min_side: Smallest declared image side to keep.
    """
    import trafilatura
    from bs4 import BeautifulSoup

    doc = trafilatura.bare_extraction(html, url=url, with_metadata=True, include_images=False)
    page = Page(url=url)
    if doc is not None:
        data = doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)
        page.title = data.get("title") or None
        page.text = data.get("text") or None
        page.published = data.get("date") or None
        page.credits = data.get("author") or data.get("sitename") or None
    soup = BeautifulSoup(html, "lxml")
    if page.title is None and soup.title and soup.title.string:
        page.title = soup.title.string.strip() or None
    scope = soup.find("article") or soup.find("main") or soup.body or soup
    seen: set[str] = set()
    for img in scope.find_all("img"):
        src = img.get("src") or img.get("data-src")
        if not src or src.startswith("data:"):
            continue
        absolute = urljoin(url, src.strip())
        if urlsplit(absolute).scheme not in ("http", "https"):
            continue
        if urlsplit(absolute).path.lower().endswith(_SKIP_IMAGE_SUFFIXES):
            continue
        sides = [_int_attr(img.get("width")), _int_attr(img.get("height"))]
        if any(s is not None and s < min_side for s in sides):
            continue
        if absolute in seen:
            continue
        seen.add(absolute)
        alt = (img.get("alt") or "").strip()
        figure = img.find_parent("figure")
        caption = figure.find("figcaption") if figure is not None else None
        if caption is not None:
            cap = caption.get_text(" ", strip=True)
            alt = f"{alt}. {cap}" if alt and cap and cap not in alt else (alt or cap)
        page.images.append(PageImage(absolute, alt or None))
    if not page.images:
        og = soup.find("meta", attrs={"property": "og:image"})
        if og is not None and og.get("content"):
            page.images.append(PageImage(urljoin(url, og["content"].strip())))
    return page


@dataclass
class FeedEntry:
    """One entry of an RSS or Atom feed."""

    link: str
    title: str | None = None
    summary: str | None = None
    published: str | None = None
    images: list[PageImage] = field(default_factory=list)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(el: Any, name: str) -> list[Any]:
    return [c for c in el if _local(c.tag) == name]


def _text_of(el: Any, *names: str) -> str | None:
    for name in names:
        for c in _children(el, name):
            text = "".join(c.itertext()).strip()
            if text:
                return text
    return None


def _feed_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).date().isoformat()  # RSS (RFC 822)
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()  # Atom
    except ValueError:
        return None


def _strip_html(text: str | None) -> str | None:
    if not text:
        return None
    from bs4 import BeautifulSoup

    return BeautifulSoup(text, "lxml").get_text(" ", strip=True) or None


def parse_feed(content: bytes, url: str) -> list[FeedEntry]:
    """Parse an RSS 2.0, RSS 1.0 (RDF) or Atom feed into entries.

    The XML parser resolves no entities and loads nothing from the network.

    Raises:
        FetchError: If the content is not a feed (the message names ``url``).
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(content, parser=parser)
    except etree.XMLSyntaxError as err:
        raise FetchError(f"{url}: not a valid feed ({err})") from None
    kind = _local(root.tag)
    if kind == "rss":
        channel = _children(root, "channel")
        nodes = _children(channel[0], "item") if channel else []
    elif kind == "RDF":
        nodes = _children(root, "item")
    elif kind == "feed":
        nodes = _children(root, "entry")
    else:
        raise FetchError(f"{url}: not an RSS or Atom feed (root element <{kind}>)")
    entries = []
    for node in nodes:
        link = None
        for el in _children(node, "link"):
            href = el.get("href")
            if href and el.get("rel", "alternate") == "alternate":
                link = href
                break
            if not href and (el.text or "").strip():
                link = el.text.strip()
                break
        if not link:
            continue
        images: list[PageImage] = []
        for el in node:
            name = _local(el.tag)
            src = el.get("url") or (el.get("href") if name == "link" else None)
            mtype = (el.get("type") or "").lower()
            is_image = (
                (name == "enclosure" and mtype.startswith("image/"))
                or (name == "link" and el.get("rel") == "enclosure" and mtype.startswith("image/"))
                or (
                    name == "content"
                    and (el.get("medium") == "image" or mtype.startswith("image/"))
                )
                or name == "thumbnail"
            )
            if src and is_image:
                images.append(PageImage(urljoin(url, src), _text_of(node, "title")))
        entries.append(
            FeedEntry(
                link=urljoin(url, link),
                title=_text_of(node, "title"),
                summary=_strip_html(_text_of(node, "description", "summary", "content")),
                published=_feed_date(_text_of(node, "pubDate", "published", "updated", "date")),
                images=images,
            )
        )
    return entries


# --------------------------------------------------------------------------------------------
# Collector


@dataclass
class CollectResult:
    """Items found by :func:`collect`, and what was skipped (page or image) and why."""

    items: list[WebItem]
    skips: list[Skip]


def _skip_for(ref: str, err: Exception) -> Skip:
    if isinstance(err, RobotsDisallowed):
        return Skip(ref, "robots.txt disallows", str(err))
    return Skip(ref, "fetch failed", str(err))


def collect(
    *,
    feeds: Sequence[str] = (),
    pages: Sequence[str] = (),
    fetcher: Fetcher,
    max_pages: int | None = None,
    max_images_per_page: int = 5,
    min_image_side: int = 64,
    download_dir: str | Path | None = None,
    progress: bool = True,
) -> CollectResult:
    """Build an item list from feeds and/or page URLs: one item per content image.

    Every page is fetched through ``fetcher`` (robots.txt, per-host delay, cache). The feed entry's
    summary stands in for the page text when the page has none. Publication dates go into
    ``published``; the capture date stays empty, since a page's date is not the image's.

    Args:
        feeds: RSS/Atom feed URLs; their entries' links are collected.
        pages: Page URLs.
        fetcher: The HTTP client.
        max_pages: Stop after this many pages.
        max_images_per_page: Keep at most this many images per page.
        min_image_side: Drop images smaller than this (declared in HTML, or decoded when
            downloading).
        download_dir: If given, download each image (checked: type, size, decode) into this folder
            under a hash-derived name, and refer to the file instead of the URL.
        progress: Show a progress bar.

    Returns:
        The items and the skipped pages/images.
    """
    from terrascribe.progress import track

    skips: list[Skip] = []
    targets: list[tuple[str, FeedEntry | None]] = []
    for feed in feeds:
        try:
            result = fetcher.get(feed)
            targets.extend((e.link, e) for e in parse_feed(result.content, result.url))
        except FetchError as err:
            skips.append(_skip_for(feed, err))
    targets.extend((p, None) for p in pages)
    unique: dict[str, FeedEntry | None] = {}
    for link, entry in targets:
        unique.setdefault(link, entry)
    links = list(unique.items())[:max_pages] if max_pages is not None else list(unique.items())
    items: list[WebItem] = []
    for link, entry in track(links, "collect pages", enabled=progress):
        try:
            result = fetcher.get(link, accept=("text/html", "application/xhtml"))
        except FetchError as err:
            skips.append(_skip_for(link, err))
            continue
        page = extract_page(result.content, result.url, min_side=min_image_side)
        images = list(entry.images) if entry else []
        images += [im for im in page.images if im.url not in {i.url for i in images}]
        text = page.text or (entry.summary if entry else None)
        for image in images[:max_images_per_page]:
            ref = image.url
            if download_dir is not None:
                try:
                    data = fetch_image(fetcher, image.url, min_side=min_image_side)
                except FetchError as err:
                    skips.append(_skip_for(image.url, err))
                    continue
                ref = str(save_image(data, download_dir))
            items.append(
                WebItem(
                    image=ref,
                    id=hashlib.sha256(f"{image.url}\0{result.url}".encode()).hexdigest()[:20],
                    page_url=result.url,
                    title=page.title or (entry.title if entry else None),
                    text=text,
                    alt_text=image.alt,
                    credits=page.credits,
                    published=page.published or (entry.published if entry else None),
                )
            )
        if not images:
            skips.append(Skip(link, "no images", "no content image found on the page"))
    return CollectResult(items=items, skips=skips)
