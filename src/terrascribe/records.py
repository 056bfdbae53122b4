"""The one sample schema every stage speaks.

A :class:`Sample` is one RGB image with one or more captions and the metadata needed to trace it
back to its source: where it is on Earth, how fine its pixels are, when and by what it was
captured, which objects it shows (in pixel space) and under which licence it may be used.

This module knows nothing of torch or of files: builders create samples, :mod:`terrascribe.shards`
writes and reads them. Everything here serialises to plain JSON types, deterministically.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

# WebDataset splits a tar member name at its first dot into key and extension, and keys end up in
# file names, so keys are restricted to a safe alphabet: no dots, no slashes, no spaces.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")

SOURCE_KINDS = ("osm", "boxes", "masks", "captions", "llm", "scenes", "other")


class RecordError(ValueError):
    """A sample or one of its parts breaks the schema."""


_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-]+")


def make_key(*parts: object) -> str:
    """Build a stable, schema-valid key from parts, e.g. ``make_key("osm", "w123", "naip", 2021)``.

    Characters outside ``[A-Za-z0-9_-]`` are replaced by ``_``; parts are joined with ``-``.

    Args:
        *parts: Pieces of identity (source kind, ids, imagery name...), converted with ``str``.

    Returns:
        A key that satisfies :data:`KEY_PATTERN`.

    Raises:
        RecordError: If no usable character is left.
    """
    cleaned = [_KEY_BAD_CHARS.sub("_", str(p)).strip("_") for p in parts]
    key = "-".join(p for p in cleaned if p)
    if not key:
        raise RecordError(f"cannot make a key from {parts!r}: no usable characters")
    if not key[0].isalnum():
        key = "k" + key
    return key[:200]


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid sample key, else raise :class:`RecordError`."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise RecordError(
            f"invalid sample key {key!r}: keys are 1-200 characters of letters, digits, '_' "
            "and '-', starting with a letter or digit (no dots: WebDataset splits names at the "
            "first dot)"
        )
    return key


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise RecordError(f"{name} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Bounds:
    """Where a sample lies on Earth.

    Attributes:
        west, south, east, north: Longitude/latitude bounds in degrees (WGS84).
        crs: The imagery's native CRS as an authority string (``"EPSG:32633"``) or WKT, if known.
        native: The same bounds in the native CRS ``(left, bottom, right, top)``, if known.
    """

    west: float
    south: float
    east: float
    north: float
    crs: str | None = None
    native: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("west", "south", "east", "north"):
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        if not (-180.0 <= self.west <= 180.0 and -180.0 <= self.east <= 180.0):
            raise RecordError(f"longitudes must lie in [-180, 180], got {self.west}, {self.east}")
        if not (-90.0 <= self.south <= self.north <= 90.0):
            raise RecordError(
                "latitudes must satisfy -90 <= south <= north <= 90, "
                f"got {self.south}, {self.north}"
            )
        if self.native is not None:
            if len(self.native) != 4:
                raise RecordError(f"native bounds need 4 numbers, got {self.native!r}")
            object.__setattr__(
                self, "native", tuple(_finite("native bound", v) for v in self.native)
            )

    @property
    def centre(self) -> tuple[float, float]:
        """Centre as ``(lon, lat)``."""
        return ((self.west + self.east) / 2.0, (self.south + self.north) / 2.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "west": self.west,
            "south": self.south,
            "east": self.east,
            "north": self.north,
            "crs": self.crs,
            "native": list(self.native) if self.native is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bounds:
        """Inverse of :meth:`to_dict`."""
        native = data.get("native")
        return cls(
            west=data["west"],
            south=data["south"],
            east=data["east"],
            north=data["north"],
            crs=data.get("crs"),
            native=tuple(native) if native is not None else None,
        )


@dataclass(frozen=True, slots=True)
class ImageObject:
    """One object shown in a sample's image, in pixel coordinates of that image.

    Attributes:
        label: Class name or short description ("building", "small vehicle").
        bbox_xyxy: Horizontal box ``(xmin, ymin, xmax, ymax)`` in pixels, origin top-left.
        tags: Free key/value attributes (OSM tags, ``difficult``, scores...), as strings.
        polygon: Optional outline as ``[(x, y), ...]`` in pixels (clipped to the image).
        source_id: Identity in the source (``"w123456"``, COCO annotation id...).
    """

    label: str
    bbox_xyxy: tuple[float, float, float, float]
    tags: Mapping[str, str] = field(default_factory=dict)
    polygon: tuple[tuple[float, float], ...] | None = None
    source_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise RecordError(f"object label must be a non-empty string, got {self.label!r}")
        if len(self.bbox_xyxy) != 4:
            raise RecordError(f"bbox_xyxy needs 4 numbers, got {self.bbox_xyxy!r}")
        box = tuple(_finite("bbox coordinate", v) for v in self.bbox_xyxy)
        if box[2] < box[0] or box[3] < box[1]:
            raise RecordError(f"bbox_xyxy must have xmax >= xmin and ymax >= ymin, got {box}")
        object.__setattr__(self, "bbox_xyxy", box)
        object.__setattr__(self, "tags", {str(k): str(v) for k, v in dict(self.tags).items()})
        if self.polygon is not None:
            poly = tuple(
                (_finite("polygon x", x), _finite("polygon y", y)) for x, y in self.polygon
            )
            if len(poly) < 3:
                raise RecordError(f"polygon needs at least 3 points, got {len(poly)}")
            object.__setattr__(self, "polygon", poly)

    @classmethod
    def checked_by_caller(
        cls,
        label: str,
        bbox_xyxy: tuple[float, float, float, float],
        tags: dict[str, str],
        polygon: tuple[tuple[float, float], ...] | None,
        source_id: str | None,
    ) -> ImageObject:
        """Build an object from values the caller has already validated, without re-checking.

        For builders that make tens of objects per tile from data they checked in bulk (finite
        coordinates, ``xmin <= xmax``, ``str`` tags, polygons of 3+ points, a non-empty label):
        the per-field checks of the normal constructor would cost more than making the object.
        The result equals ``ImageObject(label, bbox_xyxy, tags, polygon, source_id)`` for such
        values; anything else must go through the normal constructor.
        """
        obj = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(obj, "label", label)
        setattr_(obj, "bbox_xyxy", bbox_xyxy)
        setattr_(obj, "tags", tags)
        setattr_(obj, "polygon", polygon)
        setattr_(obj, "source_id", source_id)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        out: dict[str, Any] = {"label": self.label, "bbox_xyxy": list(self.bbox_xyxy)}
        if self.tags:
            out["tags"] = dict(sorted(self.tags.items()))
        if self.polygon is not None:
            out["polygon"] = [list(p) for p in self.polygon]
        if self.source_id is not None:
            out["source_id"] = self.source_id
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageObject:
        """Inverse of :meth:`to_dict`."""
        poly = data.get("polygon")
        return cls(
            label=data["label"],
            bbox_xyxy=tuple(data["bbox_xyxy"]),
            tags=data.get("tags") or {},
            polygon=tuple(tuple(p) for p in poly) if poly is not None else None,
            source_id=data.get("source_id"),
        )


ImageData = bytes | np.ndarray


@dataclass(slots=True)
class Sample:
    """One image with its captions and metadata.

    Attributes:
        key: Stable, unique identity derived from the source (see :func:`make_key`).
        image: Encoded image bytes (JPEG/PNG/TIFF) or an ``(H, W, 3)`` uint8 RGB array.
        captions: One or more captions; the first is the primary one.
        source: Source kind, one of :data:`SOURCE_KINDS`.
        source_ids: Identities in the source (OSM ids, file names, annotation ids).
        bounds: Geographic bounds, if the image is georeferenced.
        gsd_m: Ground sampling distance in metres per pixel, if known.
        capture_date: ISO 8601 date (``YYYY-MM-DD``) of capture, if known.
        sensor: Sensor or imagery product name, if known.
        objects: Objects in the image, in pixel space.
        licence: Licence of the image/annotations (SPDX id or short text).
        extra: Further JSON-serialisable metadata (caption styles, template ids, label, split...).
    """

    key: str
    image: ImageData | None
    captions: list[str]
    source: str
    source_ids: list[str] = field(default_factory=list)
    bounds: Bounds | None = None
    gsd_m: float | None = None
    capture_date: str | None = None
    sensor: str | None = None
    objects: list[ImageObject] = field(default_factory=list)
    licence: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`RecordError` naming the sample and the problem."""
        try:
            validate_key(self.key)
            if isinstance(self.captions, str):
                raise RecordError("captions must be a list of strings, not one string")
            captions = [c for c in self.captions]
            if not captions:
                raise RecordError("at least one caption is required")
            for i, c in enumerate(captions):
                if not isinstance(c, str) or not c.strip():
                    raise RecordError(f"caption {i} is empty or not a string: {c!r}")
            self.captions = captions
            if self.source not in SOURCE_KINDS:
                raise RecordError(f"source must be one of {SOURCE_KINDS}, got {self.source!r}")
            self.source_ids = [str(s) for s in self.source_ids]
            if self.gsd_m is not None:
                self.gsd_m = _finite("gsd_m", self.gsd_m)
                if self.gsd_m <= 0:
                    raise RecordError(f"gsd_m must be positive, got {self.gsd_m}")
            if self.capture_date is not None and not _ISO_DATE.match(self.capture_date):
                raise RecordError(
                    f"capture_date must be an ISO date YYYY-MM-DD[...], got {self.capture_date!r}"
                )
            if self.image is not None:
                _check_image(self.image)
            for obj in self.objects:
                if not isinstance(obj, ImageObject):
                    raise RecordError(f"objects must be ImageObject instances, got {type(obj)}")
        except RecordError as err:
            raise RecordError(f"sample {self.key!r}: {err}") from None

    @property
    def caption(self) -> str:
        """The primary (first) caption."""
        return self.captions[0]

    def metadata(self) -> dict[str, Any]:
        """Everything but the image, as plain JSON types (what goes into ``KEY.json``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "key": self.key,
            "captions": list(self.captions),
            "source": self.source,
            "source_ids": list(self.source_ids),
            "bounds": self.bounds.to_dict() if self.bounds is not None else None,
            "gsd_m": self.gsd_m,
            "capture_date": self.capture_date,
            "sensor": self.sensor,
            "objects": [o.to_dict() for o in self.objects],
            "licence": self.licence,
            "extra": self.extra,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], image: ImageData | None = None) -> Sample:
        """Rebuild a sample from :meth:`metadata` output (and optionally its image)."""
        version = meta.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise RecordError(
                f"sample {meta.get('key')!r} has schema version {version}; this terrascribe reads "
                f"up to {SCHEMA_VERSION}: upgrade terrascribe"
            )
        bounds = meta.get("bounds")
        return cls(
            key=meta["key"],
            image=image,
            captions=list(meta["captions"]),
            source=meta["source"],
            source_ids=list(meta.get("source_ids") or []),
            bounds=Bounds.from_dict(bounds) if bounds else None,
            gsd_m=meta.get("gsd_m"),
            capture_date=meta.get("capture_date"),
            sensor=meta.get("sensor"),
            objects=[ImageObject.from_dict(o) for o in meta.get("objects") or []],
            licence=meta.get("licence"),
            extra=dict(meta.get("extra") or {}),
        )


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.+\-Z]*)?$")


def _check_image(image: ImageData) -> None:
    if isinstance(image, bytes | bytearray | memoryview):
        if len(image) == 0:
            raise RecordError("image bytes are empty")
        return
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise RecordError(f"image array must be (H, W, 3) RGB, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise RecordError(f"image array must be uint8, got {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise RecordError(f"image array is empty: shape {image.shape}")
        return
    raise RecordError(f"image must be encoded bytes or a uint8 array, got {type(image).__name__}")


@dataclass(frozen=True, slots=True)
class Skip:
    """An input item a builder could not turn into a sample, and why (recorded in shard stats).

    Attributes:
        item: What was skipped (file path, OSM id, URL...).
        reason: A short, stable category ("corrupt image", "tile mostly nodata") that reports count.
        detail: Free text with the specifics (the decoder's message, the measured fraction...).
    """

    item: str
    reason: str
    detail: str = ""


def normalise_captions(captions: Sequence[str]) -> list[str]:
    """Strip whitespace, collapse inner runs of spaces, and drop empty and repeated captions.

    Order is kept (first occurrence wins), so the primary caption stays first.
    """
    seen: set[str] = set()
    out: list[str] = []
    for c in captions:
        text = " ".join(str(c).split())
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out
