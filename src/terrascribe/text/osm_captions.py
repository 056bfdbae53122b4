"""Captions written from the OSM objects in an image tile.

Three styles:

- ``title`` (SkyScript's ``title``): the focus object and its attributes,
  "a satellite image of a building with a hipped roof";
- ``title_multi_objects`` (SkyScript's): plus the other kinds of objects in the tile,
  "a satellite image of a sports pitch for soccer, surrounded by buildings and a parking lot";
- ``grounded`` (terrascribe's): counts with correct plurals and number words, and simple spatial
  relations read from the objects' boxes, "a satellite image of a parking lot in the centre of the
  image, next to three buildings and a residential road".

Only tags the table marks visible at the image's GSD are put into words; objects with no visible
feature are not mentioned. Wording comes from a versioned template file
(``data/osm_caption_templates.json``); :func:`make_caption` returns the template id with the text,
so a builder can record it per caption. The same inputs and the same ``rng`` state give the same
text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from terrascribe.text.osm_tags import TagRule, TagTable, clean_text

Style = Literal["title", "title_multi_objects", "grounded"]
STYLES: tuple[str, ...] = ("title", "title_multi_objects", "grounded")

_DATA_PACKAGE = "terrascribe.text.data"
_TEMPLATES_FILE = "osm_caption_templates.json"


class CaptionTemplateError(ValueError):
    """A caption template file is malformed; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Caption:
    """A caption with the style and template that produced it (record both per caption)."""

    text: str
    style: str
    template_id: str


@dataclass(frozen=True, slots=True)
class TileObject:
    """An OSM object as it appears in a tile.

    Attributes:
        tags: The object's OSM tags.
        bbox_xyxy: Its box in pixels, ``(x0, y0, x1, y1)``, clipped to the tile.
        area_m2: Area on the ground for polygons, if known.
        length_m: Length on the ground for lines, if known.
    """

    tags: Mapping[str, str]
    bbox_xyxy: tuple[float, float, float, float]
    area_m2: float | None = None
    length_m: float | None = None


# --- templates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionTemplates:
    """The caption wording: templates per style, number words and list limits."""

    version: str
    title: tuple[dict[str, str], ...]
    title_multi_objects: tuple[dict[str, str], ...]
    grounded: tuple[dict[str, str], ...]
    positions: Mapping[str, str] = field(default_factory=dict)
    number_words_max: int = 10
    max_attributes: int = 3
    max_others: int = 6

    @classmethod
    def load(cls, path: str | Path | None = None) -> CaptionTemplates:
        """Read a template JSON file (default: the packaged one).

        Raises:
            CaptionTemplateError: Invalid JSON, a missing style, or a template without ``id``
                and ``text`` or with unknown slots.
        """
        if path is None:
            origin = f"terrascribe:{_TEMPLATES_FILE}"
            text = resources.files(_DATA_PACKAGE).joinpath(_TEMPLATES_FILE).read_text("utf-8")
        else:
            origin = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CaptionTemplateError(f"{origin}: cannot read templates ({exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CaptionTemplateError(f"{origin}: invalid JSON ({exc})") from None
        return cls.from_dict(data, origin=origin)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "<dict>") -> CaptionTemplates:
        """Validate and build templates from parsed JSON (see :meth:`load`)."""
        if not isinstance(data, Mapping):
            raise CaptionTemplateError(f"{origin}: the top level must be an object")
        slots = {
            "title": {"object"},
            "title_multi_objects": {"object", "others"},
            "grounded": {"object", "position", "within", "contains", "near"},
        }
        styles: dict[str, tuple[dict[str, str], ...]] = {}
        ids: set[str] = set()
        for style, allowed in slots.items():
            entries = data.get(style)
            if not isinstance(entries, list) or not entries:
                raise CaptionTemplateError(f"{origin}: '{style}' must be a non-empty list")
            parsed = []
            for i, entry in enumerate(entries):
                where = f"{origin}: {style}[{i}]"
                if not isinstance(entry, Mapping) or not all(
                    isinstance(entry.get(k), str) and entry.get(k) for k in ("id", "text")
                ):
                    raise CaptionTemplateError(f"{where}: needs string 'id' and 'text'")
                if entry["id"] in ids:
                    raise CaptionTemplateError(f"{where}: duplicate template id {entry['id']!r}")
                ids.add(entry["id"])
                used = set(re.findall(r"\{(\w+)\}", entry["text"]))
                if not used <= allowed or "object" not in used:
                    raise CaptionTemplateError(
                        f"{where}: slots {sorted(used)} must include 'object' and be within "
                        f"{sorted(allowed)}"
                    )
                parsed.append({str(k): str(v) for k, v in entry.items()})
            styles[style] = tuple(parsed)
        try:
            return cls(
                version=str(data.get("version", "unversioned")),
                positions=dict(data.get("positions", {})),
                number_words_max=int(data.get("number_words_max", 10)),
                max_attributes=int(data.get("max_attributes", 3)),
                max_others=int(data.get("max_others", 6)),
                **styles,
            )
        except (TypeError, ValueError) as exc:
            raise CaptionTemplateError(f"{origin}: invalid setting ({exc})") from None

    def pick(self, style: str, rng: np.random.Generator) -> dict[str, str]:
        """Draw one template of ``style`` with ``rng`` (one draw, always)."""
        choices = getattr(self, style)
        return choices[int(rng.integers(len(choices)))]


_DEFAULT_TEMPLATES: CaptionTemplates | None = None


def default_templates() -> CaptionTemplates:
    """The packaged templates, loaded once."""
    global _DEFAULT_TEMPLATES
    if _DEFAULT_TEMPLATES is None:
        _DEFAULT_TEMPLATES = CaptionTemplates.load()
    return _DEFAULT_TEMPLATES


# --- English -------------------------------------------------------------------------------------

_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_IRREGULAR_PLURALS = {
    "aircraft": "aircraft",
    "child": "children",
    "deer": "deer",
    "fish": "fish",
    "leaf": "leaves",
    "man": "men",
    "person": "people",
    "sheep": "sheep",
    "shelf": "shelves",
    "species": "species",
    "woman": "women",
}
# The head noun of "body of water" or "road under construction" is the word before these.
_POSTMODIFIERS = (
    " of ",
    " under ",
    " for ",
    " on ",
    " in ",
    " with ",
    " without ",
    " planted ",
    " along ",
)
# Attribute phrases starting with these attach without "with": "a pitch for soccer".
_DIRECT_ATTRIBUTE_WORDS = ("on ", "in ", "for ", "under ", "planted ", "along ", "covered ")
_AN_EXCEPTIONS = ("uni", "use", "usu", "uti", "ure", "uro", "one", "once", "eu", "ewe", "ubi")
_AN_SILENT_H = ("hour", "honest", "honour", "heir")


def number_word(n: int, words_max: int = 10) -> str:
    """``3`` -> ``"three"`` up to ``words_max`` (at most twenty), digits beyond."""
    return _NUMBER_WORDS[n] if 0 <= n <= min(words_max, 20) else str(n)


def indefinite_article(phrase: str) -> str:
    """``"a"`` or ``"an"`` for the phrase's first word ("an asphalt...", "a university...")."""
    word = phrase.strip().lower()
    if not word:
        return "a"
    if word.startswith(_AN_SILENT_H):
        return "an"
    if word[0] in "aeiou" and not word.startswith(_AN_EXCEPTIONS):
        return "an"
    return "a"


def _plural_word(word: str) -> str:
    lower = word.lower()
    if lower in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[lower]
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@lru_cache(maxsize=4096)
def pluralise(phrase: str) -> str:
    """English plural of a noun phrase: the head noun changes ("bodies of water")."""
    cut = min((i for i in (phrase.find(m) for m in _POSTMODIFIERS) if i > 0), default=-1)
    head, tail = (phrase[:cut], phrase[cut:]) if cut > 0 else (phrase, "")
    words = head.split(" ")
    words[-1] = _plural_word(words[-1])
    return " ".join(words) + tail


def join_list(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True, slots=True)
class _Noun:
    """How to write one kind of object: singular, plural, and whether it takes an article."""

    singular: str
    plural: str
    countable: bool
    with_article: str  # one of them: "a building", or a mass noun as it is ("grass")

    @staticmethod
    def of(rule: TagRule) -> _Noun:
        return _noun(rule.phrase, rule.plural, rule.countable)

    def one(self) -> str:
        return self.with_article

    def many(self, n: int, templates: CaptionTemplates) -> str:
        """``n`` of them: "a building", "three buildings", "two areas of grass"."""
        if n <= 1:
            return self.with_article
        number = number_word(n, templates.number_words_max)
        if not self.countable:
            return f"{number} areas of {self.singular}"
        return f"{number} {self.plural}"


# Keyed by the rule fields a noun reads: hashing a whole TagRule (eleven fields, in Python) cost
# more than the lookup saved, and captions ask for nouns a dozen times a tile.
@lru_cache(maxsize=4096)
def _noun(phrase: str, plural: str, countable: bool) -> _Noun:
    if not countable:
        return _Noun(phrase, phrase, False, phrase)
    article = indefinite_article(phrase)
    return _Noun(phrase, plural or pluralise(phrase), True, f"{article} {phrase}")


def _attribute_text(rule: TagRule, templates: CaptionTemplates) -> str:
    """The attribute's phrase with a leading count in words: "2 lanes" -> "two lanes"."""
    phrase = rule.phrase
    # Most phrases start with a letter: no regex call then. isdigit() accepts every digit \d
    # matches (and a few more, which the regex then turns down).
    if not phrase[:1].isdigit():
        return phrase
    return re.sub(
        r"^(\d+)\b", lambda m: number_word(int(m.group(1)), templates.number_words_max), phrase
    )


def describe(
    tags: Mapping[str, str],
    table: TagTable,
    *,
    gsd_m: float | None = None,
    templates: CaptionTemplates | None = None,
) -> str | None:
    """The object as a noun phrase with its article and attributes, or None if nothing is visible.

    ``{"building": "yes", "roof:shape": "hipped", "roof:colour": "red"}`` ->
    ``"a building with a red hipped roof"``. Attributes sharing a head noun are merged; phrases
    that start with a preposition attach directly ("a sports pitch for soccer").
    """
    templates = templates or default_templates()
    rules = table.visible_rules(tags, gsd_m)
    if not rules:
        return None
    main = rules[0]
    attributes = [r for r in rules[1:] if r.role == "attribute"][: templates.max_attributes]
    direct: list[str] = []
    # Each "with" part: [countable, modifiers, head, mergeable]. "hipped roof" and "red roof"
    # share the head "roof" and become one "red hipped roof" (colour has the higher priority).
    parts: list[list[Any]] = []
    for rule in attributes:
        text = _attribute_text(rule, templates)
        if text.startswith(_DIRECT_ATTRIBUTE_WORDS):
            direct.append(text)
            continue
        words = text.split(" ")
        mergeable = rule.countable and len(words) > 1 and not any(m in text for m in _POSTMODIFIERS)
        target = next((p for p in parts if mergeable and p[3] and p[2] == words[-1]), None)
        if target is not None:
            target[1].extend(w for w in words[:-1] if w not in target[1])
        elif mergeable:
            parts.append([True, list(words[:-1]), words[-1], True])
        else:
            parts.append([rule.countable, [], text, False])
    with_texts = []
    for countable, modifiers, head, _ in parts:
        noun = " ".join([*modifiers, head])
        with_texts.append(f"{indefinite_article(noun)} {noun}" if countable else noun)
    text = _Noun.of(main).one()
    if direct:
        text += " " + " ".join(direct)
    if with_texts:
        text += " with " + join_list(with_texts)
    return text


# --- grouping and geometry -----------------------------------------------------------------------


def _kind(tags: Mapping[str, str], table: TagTable, gsd_m: float | None) -> TagRule | None:
    return table.main_rule(tags, gsd_m)


def _group_counts(rules: Sequence[TagRule | None], limit: int) -> list[tuple[TagRule, int]]:
    """Objects counted per phrase: ``(first rule seen with the phrase, count)``, best ``[:limit]``.

    Most frequent first, then higher priority, then by phrase; ``limit`` slices as Python does.
    None entries (objects with nothing visible) are skipped.
    """
    if limit == 0 or len(rules) == 0:
        return []
    # Each group is its own sort key, [-count, -priority, phrase, rule]: lists compare in C, and
    # the phrase is unique per group, so the rule after it is never compared.
    groups: dict[str, list[Any]] = {}
    for rule in rules:
        if rule is None:
            continue
        group = groups.get(rule.phrase)
        if group is None:
            groups[rule.phrase] = [-1, -rule.priority, rule.phrase, rule]
        else:
            group[0] -= 1
    ordered = sorted(groups.values())[:limit]
    return [(rule, -n) for n, _, _, rule in ordered]


def _valid_box(box: Sequence[float]) -> tuple[float, float, float, float] | None:
    try:
        x0, y0, x1, y1 = map(float, box)
    except (TypeError, ValueError):
        return None
    isfinite = math.isfinite
    if not (isfinite(x0) and isfinite(y0) and isfinite(x1) and isfinite(y1)):
        return None
    # min()/max() semantics (the first of equals), without four calls per box
    return (
        x0 if x0 <= x1 else x1,
        y0 if y0 <= y1 else y1,
        x0 if x0 >= x1 else x1,
        y0 if y0 >= y1 else y1,
    )


def _box_area(box: tuple[float, ...]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


_PAD = 0.5  # px: the outer box is widened by this much, so a box on its edge is still inside
_INSIDE_SHARE = 0.9  # of the inner box's area


def _relations(
    focus: tuple[float, float, float, float] | None,
    boxes: Sequence[Sequence[float]],
    kinds: Sequence[TagRule | None],
) -> dict[str, list[TagRule]]:
    """The other objects' kinds by how their boxes lie against the focus box, in object order.

    ``contains``: the other box is smaller (in area) than the focus box and lies inside it;
    ``within``: the focus box is smaller and lies inside the other's; ``near`` otherwise, and
    when a box is missing or not finite. Inside means at least 90% of the inner box's area, or
    its centre if it has no area, falls in the outer box widened by half a pixel. Objects without
    a kind are left out and their boxes are not read.

    Args:
        focus: The focus box, sorted and finite (from :func:`_valid_box`), or None.
        boxes: One box per object, in any form :func:`_valid_box` reads (tuples, lists, numpy
            rows, unsorted corners, NaN).
        kinds: One kind per object (None: not visible).

    Returns:
        ``{"within": [...], "contains": [...], "near": [...]}``.
    """
    near: list[TagRule] = []
    contains: list[TagRule] = []
    within: list[TagRule] = []
    by_relation = {"within": within, "contains": contains, "near": near}
    if focus is None:
        for box, kind in zip(boxes, kinds, strict=True):
            if kind is not None:
                _valid_box(box)  # still read: an int too large for a float raises, as it did
                near.append(kind)
        return by_relation

    # The rule is written out inline: a tile has tens of boxes, and helper calls per box cost
    # more than their arithmetic. min(a, b) is written ``a if a <= b else b`` and max(a, b)
    # ``b if b > a else a``, the builtins' own choices, so every area, overlap and centre is the
    # double min() and max() give.
    fx0, fy0, fx1, fy1 = focus
    focus_area = _box_area(focus)
    # "contains": the other inside the widened focus box
    ox0, oy0, ox1, oy1 = fx0 - _PAD, fy0 - _PAD, fx1 + _PAD, fy1 + _PAD
    # "within": the focus (its area, or its centre) inside the widened other box
    inner_area = (fx1 - fx0) * (fy1 - fy0)
    inner_needs = _INSIDE_SHARE * inner_area
    fcx, fcy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    isfinite, pad, share = math.isfinite, _PAD, _INSIDE_SHARE
    for box, kind in zip(boxes, kinds, strict=True):
        if kind is None:
            continue
        try:
            x0, y0, x1, y1 = map(float, box)
        except (TypeError, ValueError):
            near.append(kind)
            continue
        if not (isfinite(x0) and isfinite(y0) and isfinite(x1) and isfinite(y1)):
            near.append(kind)
            continue
        lx, hx = x0 if x0 <= x1 else x1, x0 if x0 >= x1 else x1  # as _valid_box sorts
        ly, hy = y0 if y0 <= y1 else y1, y0 if y0 >= y1 else y1
        area = (hx - lx) * (hy - ly)  # _box_area's max(0, .) is a no-op on sorted corners
        if area < focus_area:
            if hx < ox0 or lx > ox1 or hy < oy0 or ly > oy1:
                # Wholly outside the widened focus box, hence not inside it (the full test's
                # answer, sooner): one overlap side is a - b with finite a < b, negative, so
                # the overlap is 0 (or NaN) and never 90% of a positive area; a centre
                # (lx + hx) / 2 lies in [lx, hx] unless it overflows, and ox0..oy1 are finite.
                near.append(kind)
                continue
            if area <= 0:
                cx, cy = (lx + hx) / 2, (ly + hy) / 2
                inside = ox0 <= cx <= ox1 and oy0 <= cy <= oy1
            else:
                w = (hx if hx <= ox1 else ox1) - (ox0 if ox0 > lx else lx)
                h = (hy if hy <= oy1 else oy1) - (oy0 if oy0 > ly else ly)
                inside = (w if w > 0.0 else 0.0) * (h if h > 0.0 else 0.0) >= share * area
            (contains if inside else near).append(kind)
        elif focus_area < area:
            px0, py0, px1, py1 = lx - pad, ly - pad, hx + pad, hy + pad
            if inner_area <= 0:
                inside = px0 <= fcx <= px1 and py0 <= fcy <= py1
            else:
                w = (fx1 if fx1 <= px1 else px1) - (px0 if px0 > fx0 else fx0)
                h = (fy1 if fy1 <= py1 else py1) - (py0 if py0 > fy0 else fy0)
                inside = (w if w > 0.0 else 0.0) * (h if h > 0.0 else 0.0) >= inner_needs
            (within if inside else near).append(kind)
        else:
            near.append(kind)
    return by_relation


def _position(box: tuple[float, ...] | None, image_size: tuple[int, int] | None) -> str | None:
    """Where the box lies in the image: a 3x3 grid name, or ``most`` when it fills it."""
    if box is None or image_size is None:
        return None
    width, height = float(image_size[0]), float(image_size[1])
    if width <= 0 or height <= 0:
        return None
    if _box_area(box) >= 0.6 * width * height:
        return "most"
    cx = (box[0] + box[2]) / 2 / width
    cy = (box[1] + box[3]) / 2 / height
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    if row and col:
        return f"{row} {col}"
    return row or col or "centre"


def _finish(text: str) -> str:
    """Runs of whitespace made one space, ends trimmed, no space before ``,`` or ``.``.

    Without regular expressions (three captions a tile): ``str.split()`` and the regex ``\\s``
    share one definition of whitespace, and once runs are single spaces, a space before a comma
    or full stop is exactly ``" ,"`` or ``" ."``.
    """
    return " ".join(text.split()).replace(" ,", ",").replace(" .", ".")


# --- the three styles ----------------------------------------------------------------------------


def _caption_title(described, rng, templates) -> Caption | None:
    template = templates.pick("title", rng)
    if described is None:
        return None
    text = template["text"].format(object=described)
    return Caption(_finish(text), "title", template["id"])


def _caption_multi(described, focus_kind, kinds, rng, templates) -> Caption | None:
    template = templates.pick("title_multi_objects", rng)
    if described is None:
        return None
    groups = _group_counts(kinds, templates.max_others)
    if not groups:
        # Nothing else visible: SkyScript's multi-object caption degrades to the title.
        fallback = templates.title[0]
        text = fallback["text"].format(object=described)
        return Caption(_finish(text), "title_multi_objects", fallback["id"])
    parts = []
    for rule, n in groups:
        noun = _Noun.of(rule)
        if n <= 1:
            parts.append(noun.with_article)
        elif focus_kind is not None and rule.phrase == focus_kind.phrase:
            parts.append("other " + noun.plural)  # uncounted: "surrounded by other buildings"
        else:
            parts.append(noun.plural)
    text = template["text"].format(object=described, others=join_list(parts))
    return Caption(_finish(text), "title_multi_objects", template["id"])


def _caption_grounded(described, focus, kinds, boxes, rng, gsd_m, image_size, templates):
    template = templates.pick("grounded", rng)
    if described is None:
        raise ValueError(
            f"the focus object shows no visible tag at gsd_m={gsd_m}: {dict(focus.tags)!r}"
        )
    focus_box = _valid_box(focus.bbox_xyxy)
    by_relation = _relations(focus_box, boxes, kinds)

    budget = templates.max_others
    slots: dict[str, str] = {"position": "", "within": "", "contains": "", "near": ""}
    for relation in ("within", "contains", "near"):
        groups = _group_counts(by_relation[relation], max(budget, 0))
        budget -= len(groups)
        if relation == "within":
            # The focus lies in one enclosing thing at a time: name the kinds, never count them.
            phrases = [_Noun.of(rule).one() for rule, _ in groups]
        else:
            phrases = [_Noun.of(rule).many(n, templates) for rule, n in groups]
        if phrases and relation in template:
            slots[relation] = template[relation].format(list=join_list(phrases))
    where = _position(focus_box, image_size)
    if where and "position" in template and where in templates.positions:
        slots["position"] = template["position"].format(where=templates.positions[where])
    text = template["text"].format(object=described, **slots)
    return Caption(_finish(text), "grounded", template["id"])


_NO_BOX = (float("nan"),) * 4  # an object given by its tags alone has no box


def _as_tile_object(obj: TileObject | Mapping[str, str]) -> TileObject:
    if isinstance(obj, TileObject):
        return obj
    return TileObject(tags=obj, bbox_xyxy=_NO_BOX)


def make_caption(
    style: Style,
    focus: TileObject | Mapping[str, str],
    others: Sequence[TileObject | Mapping[str, str]],
    table: TagTable,
    rng: np.random.Generator,
    *,
    gsd_m: float | None = None,
    image_size: tuple[int, int] | None = None,
    templates: CaptionTemplates | None = None,
) -> Caption | None:
    """Write one caption of ``style`` and say which template wrote it.

    Args:
        style: ``title``, ``title_multi_objects`` or ``grounded``.
        focus: The object the tile was made for (a :class:`TileObject` or its tags).
        others: The other objects in the tile (``grounded`` uses their boxes for relations).
        table: The tag table deciding what is visible and how it reads.
        rng: Random generator; exactly one draw picks the template.
        gsd_m: The image's ground sampling distance; tags not visible at it are left out.
            None ignores resolution.
        image_size: ``(width, height)`` in pixels; lets ``grounded`` say where the focus is.
        templates: Caption wording (default: the packaged templates).

    Returns:
        The caption, or None when the focus shows no visible tag (``title`` styles).

    Raises:
        ValueError: Unknown style, or a ``grounded`` focus with no visible tag.
    """
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; expected one of {STYLES}")
    return make_captions(
        (style,),
        focus,
        others,
        table,
        rng,
        gsd_m=gsd_m,
        image_size=image_size,
        templates=templates,
    )[style]


def make_captions(
    styles: Sequence[Style],
    focus: TileObject | Mapping[str, str],
    others: Sequence[TileObject | Mapping[str, str]],
    table: TagTable,
    rng: np.random.Generator,
    *,
    gsd_m: float | None = None,
    image_size: tuple[int, int] | None = None,
    templates: CaptionTemplates | None = None,
    other_kinds: Sequence[TagRule | None] | None = None,
    other_boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
) -> dict[str, Caption | None]:
    """Write one caption per style, in order: the same as calling :func:`make_caption` per style.

    The focus description and the other objects' kinds are worked out once for all styles
    (a tile has tens of objects, and every style looks at all of them).

    Args:
        styles, focus, others, table, rng, gsd_m, image_size, templates: As for
            :func:`make_caption`.
        other_kinds: ``table.main_rule(o.tags, gsd_m)`` for each of ``others``, when the caller
            already knows them (builders keep them per object across the tiles it appears in).
        other_boxes: The box of each of ``others``, standing for its ``bbox_xyxy``: a sequence
            of boxes, or one ``(len(others), 4)`` numeric array. With it (and ``other_kinds``)
            ``others`` can be the objects' tag mappings, so a builder need not make a
            :class:`TileObject` per object and tile. The captions are those of ``others``
            carrying these boxes.

    Raises:
        ValueError: Unknown style, a ``grounded`` focus with no visible tag, or ``other_kinds``
            or ``other_boxes`` not one per object of ``others``.
    """
    for style in styles:
        if style not in STYLES:
            raise ValueError(f"unknown caption style {style!r}; expected one of {STYLES}")
    templates = templates or default_templates()
    focus_obj = _as_tile_object(focus)
    described = describe(focus_obj.tags, table, gsd_m=gsd_m, templates=templates)
    n_others = len(others)
    if other_kinds is not None and len(other_kinds) != n_others:
        raise ValueError(f"other_kinds has {len(other_kinds)} entries for {n_others} others")
    boxes = None if other_boxes is None else _boxes_given(other_boxes, n_others)
    kept = [i for i, o in enumerate(others) if o is not focus]
    if len(kept) < n_others:  # the focus listed among the others is not its own neighbour
        others = [others[i] for i in kept]
        other_kinds = None if other_kinds is None else [other_kinds[i] for i in kept]
        if boxes is not None:
            boxes = [boxes[i] for i in kept]
    kinds = other_kinds
    made: dict[str, Caption | None] = {}
    for style in styles:
        if style == "title":
            made[style] = _caption_title(described, rng, templates)
            continue
        if kinds is None:
            kinds = [
                _kind(o.tags if isinstance(o, TileObject) else o, table, gsd_m) for o in others
            ]
        if style == "title_multi_objects":
            focus_kind = _kind(focus_obj.tags, table, gsd_m) if described is not None else None
            made[style] = _caption_multi(described, focus_kind, kinds, rng, templates)
        else:
            if boxes is None:  # read in place: wrapping tens of others in TileObjects costs more
                boxes = [o.bbox_xyxy if isinstance(o, TileObject) else _NO_BOX for o in others]
            made[style] = _caption_grounded(
                described, focus_obj, kinds, boxes, rng, gsd_m, image_size, templates
            )
    return made


def _boxes_given(
    boxes: Sequence[Sequence[float]] | np.ndarray, n_others: int
) -> Sequence[Sequence[float]]:
    """``other_boxes`` checked against the number of others; an array as lists of its rows.

    ``tolist`` gives the Python numbers (or objects) ``float()`` reads from each element, so the
    rows stand for the array exactly.
    """
    if not isinstance(boxes, np.ndarray):
        if len(boxes) != n_others:
            raise ValueError(f"other_boxes has {len(boxes)} boxes for {n_others} others")
        return boxes
    if boxes.shape != (n_others, 4):
        raise ValueError(
            f"other_boxes has shape {boxes.shape} for {n_others} others; expected ({n_others}, 4)"
        )
    return boxes.tolist()


def caption_title(
    tags: Mapping[str, str],
    table: TagTable,
    rng: np.random.Generator,
    *,
    gsd_m: float | None = None,
    templates: CaptionTemplates | None = None,
) -> str | None:
    """SkyScript's ``title`` caption: "a satellite image of a building with a hipped roof".

    Returns None when the object shows no visible tag. See :func:`make_caption` for the template id.
    """
    caption = make_caption("title", tags, (), table, rng, gsd_m=gsd_m, templates=templates)
    return caption.text if caption else None


def caption_multi(
    tags: Mapping[str, str],
    others: Sequence[Mapping[str, str]],
    table: TagTable,
    rng: np.random.Generator,
    *,
    gsd_m: float | None = None,
    templates: CaptionTemplates | None = None,
) -> str | None:
    """SkyScript's ``title_multi_objects``: the focus "surrounded by" the other kinds in the tile.

    Returns None when the focus shows no visible tag.
    """
    caption = make_caption(
        "title_multi_objects", tags, others, table, rng, gsd_m=gsd_m, templates=templates
    )
    return caption.text if caption else None


def caption_grounded(
    focus: TileObject,
    others: Sequence[TileObject],
    table: TagTable,
    rng: np.random.Generator,
    *,
    image_size: tuple[int, int] | None = None,
    gsd_m: float | None = None,
    templates: CaptionTemplates | None = None,
) -> str:
    """Grounded caption with counts and relations, e.g. "... a parking lot next to three buildings".

    Raises:
        ValueError: The focus shows no visible tag (a builder only picks visible focus objects).
    """
    caption = make_caption(
        "grounded",
        focus,
        others,
        table,
        rng,
        gsd_m=gsd_m,
        image_size=image_size,
        templates=templates,
    )
    assert caption is not None  # grounded raises rather than returning None
    return caption.text


__all__ = [
    "STYLES",
    "Caption",
    "CaptionTemplateError",
    "CaptionTemplates",
    "TileObject",
    "caption_grounded",
    "caption_multi",
    "caption_title",
    "clean_text",
    "default_templates",
    "describe",
    "indefinite_article",
    "join_list",
    "make_caption",
    "make_captions",
    "number_word",
    "pluralise",
]
