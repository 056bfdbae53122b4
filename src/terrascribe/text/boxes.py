"""Box-to-Caption (B2C), the RemoteCLIP method, plus what its critics asked for.

RemoteCLIP turned detection boxes into five captions per image:

1. the objects whose box centre lies in the central region of the image;
2. the objects outside it;
3-5. captions built from randomly chosen categories present in the image.

A category with more than ten instances is "many" rather than a number. Class names are
normalised (``small-vehicle`` -> ``small vehicle``), nouns agree with their numbers, and templates
are versioned data (``text/data/b2c_templates.json``); the id of the template used is recorded
with every caption. Everything random comes from one seed, so the same boxes and seed give the
same captions.

Options beyond the paper (:class:`B2COptions`): describe every category in captions 3-5, relative
positions (top left ... bottom right, "next to"), and object sizes in metres when the ground
sampling distance is known. :func:`tile_windows` and :func:`clip_to_window` cut large scenes into
overlapping tiles whose boxes are clipped, dropping slivers, so each tile gets its own captions.

This module is pure: no torch, no files except the packaged templates.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from terrascribe.records import ImageObject

N_CAPTIONS = 5
TEMPLATE_KINDS = (
    "centre",
    "centre_empty",
    "edge",
    "edge_empty",
    "category",
    "category_at",
    "next_to",
    "all",
    "empty",
)
_PLACEHOLDERS = {"objects", "Objects", "be", "where", "other"}

XYXY = tuple[float, float, float, float]
BoxLike = ImageObject | tuple[str, Sequence[float]]


class TemplateError(ValueError):
    """A B2C template file is malformed."""


@dataclass(frozen=True)
class Templates:
    """A parsed template set (see ``text/data/b2c_templates.json``)."""

    name: str
    version: str
    number_words: tuple[str, ...]
    many_threshold: int
    many_word: str
    templates: Mapping[str, tuple[tuple[str, str], ...]]
    positions: Mapping[str, str]
    class_aliases: Mapping[str, str]
    plural_irregular: Mapping[str, str]

    @property
    def tag(self) -> str:
        """``name@version``, recorded with every dataset built from these templates."""
        return f"{self.name}@{self.version}"


def parse_templates(data: Mapping[str, Any], source: str = "<templates>") -> Templates:
    """Validate and parse a template set given as a JSON object.

    Raises:
        TemplateError: Missing kinds, duplicate ids, unknown placeholders, bad number words.
    """
    try:
        kinds = data["templates"]
        parsed: dict[str, tuple[tuple[str, str], ...]] = {}
        seen: set[str] = set()
        for kind in TEMPLATE_KINDS:
            entries = kinds.get(kind)
            if not entries:
                raise TemplateError(f"{source}: no templates of kind {kind!r}")
            items = []
            for entry in entries:
                tid, text = str(entry["id"]), str(entry["text"])
                if tid in seen:
                    raise TemplateError(f"{source}: duplicate template id {tid!r}")
                seen.add(tid)
                used = set(re.findall(r"{(\w+)}", text))
                if used - _PLACEHOLDERS:
                    raise TemplateError(
                        f"{source}: template {tid!r} uses unknown placeholder(s) "
                        f"{sorted(used - _PLACEHOLDERS)}"
                    )
                items.append((tid, text))
            parsed[kind] = tuple(items)
        words = tuple(str(w) for w in data["number_words"])
        threshold = int(data.get("many_threshold", 10))
        if len(words) <= threshold:
            raise TemplateError(
                f"{source}: number_words must cover 0..{threshold}, got {len(words)} words"
            )
        missing_pos = {"top left", "top", "top right", "left", "centre", "right"} - set(
            data["positions"]
        )
        if missing_pos:
            raise TemplateError(f"{source}: positions lack {sorted(missing_pos)}")
        return Templates(
            name=str(data.get("name", "b2c")),
            version=str(data["version"]),
            number_words=words,
            many_threshold=threshold,
            many_word=str(data.get("many_word", "many")),
            templates=parsed,
            positions=dict(data["positions"]),
            class_aliases={
                str(k).lower(): str(v) for k, v in data.get("class_aliases", {}).items()
            },
            plural_irregular=dict(data.get("plural_irregular", {})),
        )
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, TemplateError):
            raise
        raise TemplateError(f"{source}: malformed template set ({err!r})") from None


@lru_cache(maxsize=1)
def _default_templates() -> Templates:
    text = (
        resources.files("terrascribe.text").joinpath("data/b2c_templates.json").read_text("utf-8")
    )
    return parse_templates(json.loads(text), "b2c_templates.json")


def load_templates(path: str | Path | None = None) -> Templates:
    """The packaged templates, or a JSON file in the same layout (to override per run)."""
    if path is None:
        return _default_templates()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TemplateError(f"{path}: cannot read template file ({err})") from None
    return parse_templates(data, str(path))


# --------------------------------------------------------------------------------------------
# Words


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def normalise_class(name: str, templates: Templates | None = None) -> str:
    """Readable class name: ``"small-vehicle"`` -> ``"small vehicle"``, ``"storagetank"`` ->
    ``"storage tank"``, ``"Ground_Track_Field"`` -> ``"ground track field"``."""
    t = templates or _default_templates()
    raw = str(name).strip()
    if raw.lower() in t.class_aliases:
        return t.class_aliases[raw.lower()]
    text = _CAMEL.sub(" ", raw).replace("_", " ").replace("-", " ").lower()
    text = " ".join(text.split())
    return t.class_aliases.get(text, text)


def pluralise(noun: str, templates: Templates | None = None) -> str:
    """English plural of a (possibly multi-word) noun; only the last word changes."""
    t = templates or _default_templates()
    if noun in t.plural_irregular:
        return t.plural_irregular[noun]
    head, _, last = noun.rpartition(" ")
    if last in t.plural_irregular:
        plural = t.plural_irregular[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        plural = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def count_phrase(count: int, noun: str, templates: Templates | None = None) -> str:
    """``"one ship"``, ``"three ships"``, ``"many small vehicles"`` (above the threshold)."""
    t = templates or _default_templates()
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if count > t.many_threshold:
        return f"{t.many_word} {pluralise(noun, t)}"
    word = t.number_words[count]
    return f"{word} {noun if count == 1 else pluralise(noun, t)}"


def join_phrases(phrases: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _metres(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{round(value):d}"


def size_phrase(lengths_m: Sequence[float]) -> str:
    """``"about 12 m long"`` or ``"4.5-6 m long"`` from the objects' longer sides in metres."""
    lo, hi = _metres(min(lengths_m)), _metres(max(lengths_m))
    return f"about {lo} m long" if lo == hi else f"{lo}-{hi} m long"


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True, slots=True)
class _Obj:
    noun: str
    xyxy: XYXY

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.xyxy[0] + self.xyxy[2]) / 2, (self.xyxy[1] + self.xyxy[3]) / 2)

    @property
    def long_side(self) -> float:
        return max(self.xyxy[2] - self.xyxy[0], self.xyxy[3] - self.xyxy[1])


def _as_obj(item: BoxLike, templates: Templates) -> _Obj:
    if isinstance(item, ImageObject):
        label, xyxy = item.label, item.bbox_xyxy
    else:
        label, xyxy = item
    if len(xyxy) != 4:
        raise ValueError(f"box of {label!r} needs 4 numbers, got {xyxy!r}")
    return _Obj(normalise_class(label, templates), tuple(float(v) for v in xyxy))  # type: ignore[arg-type]


def in_centre(xyxy: Sequence[float], width: float, height: float, fraction: float = 0.5) -> bool:
    """Whether the box centre lies in the central region (the middle ``fraction`` of each axis)."""
    cx, cy = (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2
    lo_x, hi_x = width * (1 - fraction) / 2, width * (1 + fraction) / 2
    lo_y, hi_y = height * (1 - fraction) / 2, height * (1 + fraction) / 2
    return lo_x <= cx <= hi_x and lo_y <= cy <= hi_y


def position_name(x: float, y: float, width: float, height: float) -> str:
    """Which ninth of the image a point lies in: ``"top left"``, ``"top"``, ..., ``"centre"``."""
    col = min(int(3 * x / width), 2) if width > 0 else 1
    row = min(int(3 * y / height), 2) if height > 0 else 1
    vertical = ("top", "", "bottom")[max(row, 0)]
    horizontal = ("left", "", "right")[max(col, 0)]
    return " ".join(p for p in (vertical, horizontal) if p) or "centre"


def _gap(a: XYXY, b: XYXY) -> float:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return max(dx, dy)


def tile_windows(width: int, height: int, size: int, overlap: int = 0) -> list[tuple[int, ...]]:
    """Overlapping square windows ``(x0, y0, x1, y1)`` covering a ``width`` x ``height`` scene.

    Each axis gets the fewest windows that overlap by at least ``overlap`` pixels, spread evenly
    from border to border, so every window is full size (a scene smaller than ``size`` gives one
    window of its size) and no window is a near-copy of its neighbour.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got {size}, {overlap}")

    def starts(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        n = math.ceil((extent - overlap) / (size - overlap))
        return [round(i * (extent - size) / (n - 1)) for i in range(n)]

    return [
        (x0, y0, min(x0 + size, width), min(y0 + size, height))
        for y0 in starts(height)
        for x0 in starts(width)
    ]


def clip_to_window(
    boxes: Sequence[Sequence[float]], window: Sequence[int], min_visibility: float = 0.5
) -> list[tuple[int, XYXY, float]]:
    """Boxes seen through ``window``, in window coordinates, keeping those visible enough.

    Args:
        boxes: ``(xmin, ymin, xmax, ymax)`` in scene pixels.
        window: ``(x0, y0, x1, y1)`` in scene pixels.
        min_visibility: Smallest kept fraction of a box's area inside the window (slivers of
            objects cut by the tile border are dropped).

    Returns:
        ``(index into boxes, clipped box in window coordinates, visible fraction)``.
    """
    x0, y0, x1, y1 = window
    out = []
    for i, (bx0, by0, bx1, by1) in enumerate(boxes):
        cx0, cy0, cx1, cy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        area = (bx1 - bx0) * (by1 - by0)
        visible = (cx1 - cx0) * (cy1 - cy0) / area if area > 0 else 1.0
        if visible + 1e-9 < min_visibility:
            continue
        out.append((i, (cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0), min(visible, 1.0)))
    return out


# --------------------------------------------------------------------------------------------
# Captions


@dataclass(frozen=True)
class B2COptions:
    """How captions are made.

    Attributes:
        n_captions: Captions per image (the paper: 5; the first two are centre/edge).
        centre_fraction: Share of each axis that counts as the central region.
        describe_all: Captions 3+ describe every category (in random order), not one.
        positions: Captions 3+ say where a category lies, or what it is next to.
        sizes: Add object sizes in metres (needs ``gsd_m``).
        next_to_gap: Boxes whose gap is at most this fraction of the larger box's long side
            are "next to" each other.
    """

    n_captions: int = N_CAPTIONS
    centre_fraction: float = 0.5
    describe_all: bool = False
    positions: bool = False
    sizes: bool = False
    next_to_gap: float = 0.5

    def __post_init__(self) -> None:
        if self.n_captions < 1:
            raise ValueError(f"n_captions must be >= 1, got {self.n_captions}")
        if not 0 < self.centre_fraction <= 1:
            raise ValueError(f"centre_fraction must be in (0, 1], got {self.centre_fraction}")


@dataclass(frozen=True, slots=True)
class Caption:
    """One generated caption and how it was made."""

    text: str
    template_id: str
    kind: str


@dataclass
class _Context:
    templates: Templates
    rng: random.Random
    gsd_m: float | None
    options: B2COptions
    lengths: dict[str, list[float]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)


def derive_seed(seed: int, *parts: object) -> int:
    """A per-item seed from a run seed and the item's identity (independent of processing order)."""
    payload = json.dumps([seed, *[str(p) for p in parts]])
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")


def _phrase(ctx: _Context, noun: str, count: int, sized: bool) -> str:
    text = count_phrase(count, noun, ctx.templates)
    if sized and ctx.options.sizes and ctx.gsd_m and noun in ctx.lengths:
        text += " " + size_phrase([px * ctx.gsd_m for px in ctx.lengths[noun]])
    return text


def _noun_list(
    ctx: _Context, counts: Counter[str], order: Sequence[str], *, sized: bool = False
) -> tuple[str, str]:
    """``(objects phrase, verb)``; sizes are added only where ``sized`` (captions 3+)."""
    phrases = [_phrase(ctx, noun, counts[noun], sized) for noun in order]
    # a compound subject ("one ship and two harbors") is plural in every template position
    be = "is" if len(order) == 1 and counts[order[0]] == 1 else "are"
    return join_phrases(phrases), be


def _fill(ctx: _Context, kind: str, **slots: str) -> Caption:
    # avoid repeating a template within one image while unused ones of the kind remain
    options = ctx.templates.templates[kind]
    fresh = [t for t in options if t[0] not in ctx.used] or list(options)
    tid, text = ctx.rng.choice(fresh)
    ctx.used.add(tid)
    objects = slots.get("objects", "")
    values = {
        "objects": objects,
        "Objects": objects[:1].upper() + objects[1:],
        "be": slots.get("be", "are"),
        "where": slots.get("where", ""),
        "other": slots.get("other", ""),
    }
    out = text.format(**values)
    return Caption(out[:1].upper() + out[1:], tid, kind)


def _ordered(counts: Counter[str]) -> list[str]:
    # most frequent first, then by name: stable and reads naturally
    return sorted(counts, key=lambda n: (-counts[n], n))


def _region_caption(ctx: _Context, objs: Sequence[_Obj], kind: str) -> Caption:
    counts = Counter(o.noun for o in objs)
    if not counts:
        return _fill(ctx, f"{kind}_empty")
    objects, be = _noun_list(ctx, counts, _ordered(counts))
    return _fill(ctx, kind, objects=objects, be=be)


def _category_caption(
    ctx: _Context, objs: Sequence[_Obj], noun: str, width: float, height: float
) -> Caption:
    mine = [o for o in objs if o.noun == noun]
    counts = Counter({noun: len(mine)})
    objects, be = _noun_list(ctx, counts, [noun], sized=True)
    if not ctx.options.positions:
        return _fill(ctx, "category", objects=objects, be=be)
    neighbours = Counter()
    for other in objs:
        if other.noun == noun:
            continue
        for o in mine:
            limit = ctx.options.next_to_gap * max(o.long_side, other.long_side)
            if _gap(o.xyxy, other.xyxy) <= limit:
                neighbours[other.noun] += 1
                break
    if neighbours and ctx.rng.random() < 0.5:
        near = _ordered(neighbours)[:2]
        other, _ = _noun_list(ctx, Counter({n: neighbours[n] for n in near}), near)
        return _fill(ctx, "next_to", objects=objects, be=be, other=other)
    # where most of them are; objects scattered over the image are "all over" it, not "centre"
    cells = Counter(position_name(*o.centre, width, height) for o in mine)
    cell, n = max(sorted(cells.items()), key=lambda kv: kv[1])
    place = cell if n >= 0.6 * len(mine) else "spread"
    where = ctx.templates.positions.get(place, "in the image")
    return _fill(ctx, "category_at", objects=objects, be=be, where=where)


def box_captions(
    objects: Sequence[BoxLike],
    width: float,
    height: float,
    *,
    seed: int = 0,
    gsd_m: float | None = None,
    options: B2COptions | None = None,
    templates: Templates | None = None,
) -> list[Caption]:
    """Make Box-to-Caption captions for one image.

    Args:
        objects: :class:`~terrascribe.records.ImageObject`\\ s or ``(label, (xmin, ymin, xmax,
            ymax))`` pairs, in pixels of this image.
        width, height: Image size in pixels.
        seed: Seed for template and category choice (use :func:`derive_seed` per image).
        gsd_m: Metres per pixel, for object sizes.
        options: Caption options (default: the paper's recipe).
        templates: Template set (default: the packaged one).

    Returns:
        ``options.n_captions`` captions: centre, edges, then per-category ones. An image without
        objects gets one caption of kind ``empty``.
    """
    opts = options or B2COptions()
    t = templates or _default_templates()
    ctx = _Context(templates=t, rng=random.Random(seed), gsd_m=gsd_m, options=opts)
    objs = [_as_obj(o, t) for o in objects]
    if not objs:
        return [_fill(ctx, "empty")]
    for o in objs:
        ctx.lengths.setdefault(o.noun, []).append(o.long_side)
    centre = [o for o in objs if in_centre(o.xyxy, width, height, opts.centre_fraction)]
    edge = [o for o in objs if not in_centre(o.xyxy, width, height, opts.centre_fraction)]
    captions = [_region_caption(ctx, centre, "centre"), _region_caption(ctx, edge, "edge")]
    counts = Counter(o.noun for o in objs)
    categories = sorted(counts)
    picks: list[str] = []  # categories drawn without replacement until all were used once
    while len(captions) < opts.n_captions:
        if opts.describe_all:
            order = list(categories)
            ctx.rng.shuffle(order)
            objects_text, be = _noun_list(ctx, counts, order, sized=True)
            captions.append(_fill(ctx, "all", objects=objects_text, be=be))
        else:
            if not picks:
                picks = ctx.rng.sample(categories, len(categories))
            noun = picks.pop()
            captions.append(_category_caption(ctx, objs, noun, width, height))
    return captions[: opts.n_captions]
