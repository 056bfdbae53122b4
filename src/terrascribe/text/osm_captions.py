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


@dataclass(frozen=True)
class _Noun:
    """How to write one kind of object: singular, plural, and whether it takes an article."""

    singular: str
    plural: str
    countable: bool

    @classmethod
    @lru_cache(maxsize=4096)  # a table has a few thousand rules; captions ask for them constantly
    def of(cls, rule: TagRule) -> _Noun:
        if not rule.countable:
            return cls(rule.phrase, rule.phrase, False)
        return cls(rule.phrase, rule.plural or pluralise(rule.phrase), True)

    def one(self) -> str:
        if not self.countable:
            return self.singular
        return f"{indefinite_article(self.singular)} {self.singular}"

    def many(self, n: int, templates: CaptionTemplates, *, counted: bool = True) -> str:
        """``n`` of them: "a building", "three buildings", "buildings", "two areas of grass"."""
        if n <= 1:
            return self.one()
        if not counted:
            return self.plural
        number = number_word(n, templates.number_words_max)
        if not self.countable:
            return f"{number} areas of {self.singular}"
        return f"{number} {self.plural}"


def _attribute_text(rule: TagRule, templates: CaptionTemplates) -> str:
    phrase = re.sub(
        r"^(\d+)\b", lambda m: number_word(int(m.group(1)), templates.number_words_max), rule.phrase
    )
    return phrase


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


def _group_counts(rules: Sequence[TagRule]) -> list[tuple[TagRule, int]]:
    """Count objects per phrase; most frequent first, then higher priority, then by phrase."""
    counts: dict[str, list[Any]] = {}
    for rule in rules:
        entry = counts.setdefault(rule.phrase, [rule, 0])
        entry[1] += 1
    ordered = sorted(counts.values(), key=lambda e: (-e[1], -e[0].priority, e[0].phrase))
    return [(rule, n) for rule, n in ordered]


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


def _inside(inner: tuple[float, ...], outer: tuple[float, ...], pad: float = 0.5) -> bool:
    """Whether ``inner`` lies (90% of its area, or its point) inside ``outer``."""
    ox0, oy0, ox1, oy1 = outer[0] - pad, outer[1] - pad, outer[2] + pad, outer[3] + pad
    ix0, iy0, ix1, iy1 = inner
    area = (ix1 - ix0) * (iy1 - iy0)
    if area <= 0:
        cx, cy = (ix0 + ix1) / 2, (iy0 + iy1) / 2
        return ox0 <= cx <= ox1 and oy0 <= cy <= oy1
    w = max(0.0, min(ix1, ox1) - max(ix0, ox0))
    h = max(0.0, min(iy1, oy1) - max(iy0, oy0))
    return w * h >= 0.9 * area


def _box_area(box: tuple[float, ...]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _relation(focus: tuple[float, ...] | None, other: tuple[float, ...] | None) -> str:
    """``contains`` (other inside focus), ``within`` (focus inside other) or ``near``."""
    if focus is None or other is None:
        return "near"
    focus_area, other_area = _box_area(focus), _box_area(other)
    if other_area < focus_area and _inside(other, focus):
        return "contains"
    if focus_area < other_area and _inside(focus, other):
        return "within"
    return "near"


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
    return " ".join(p for p in (row, col) if p) or "centre"


def _finish(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.])", r"\1", text)
    return text


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
    groups = _group_counts([k for k in kinds if k is not None])[: templates.max_others]
    if not groups:
        # Nothing else visible: SkyScript's multi-object caption degrades to the title.
        fallback = templates.title[0]
        text = fallback["text"].format(object=described)
        return Caption(_finish(text), "title_multi_objects", fallback["id"])
    parts = []
    for rule, n in groups:
        noun = _Noun.of(rule)
        same_as_focus = focus_kind is not None and rule.phrase == focus_kind.phrase
        text = noun.many(n, templates, counted=False)
        parts.append(("other " + text) if same_as_focus and n > 1 else text)
    text = template["text"].format(object=described, others=join_list(parts))
    return Caption(_finish(text), "title_multi_objects", template["id"])


def _caption_grounded(described, focus, others, kinds, rng, gsd_m, image_size, templates):
    template = templates.pick("grounded", rng)
    if described is None:
        raise ValueError(
            f"the focus object shows no visible tag at gsd_m={gsd_m}: {dict(focus.tags)!r}"
        )
    focus_box = _valid_box(focus.bbox_xyxy)
    by_relation: dict[str, list[TagRule]] = {"within": [], "contains": [], "near": []}
    for other, kind in zip(others, kinds, strict=True):
        if kind is None:
            continue
        by_relation[_relation(focus_box, _valid_box(other.bbox_xyxy))].append(kind)

    budget = templates.max_others
    slots: dict[str, str] = {"position": "", "within": "", "contains": "", "near": ""}
    for relation in ("within", "contains", "near"):
        groups = _group_counts(by_relation[relation])[: max(budget, 0)]
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


def _as_tile_object(obj: TileObject | Mapping[str, str]) -> TileObject:
    if isinstance(obj, TileObject):
        return obj
    return TileObject(tags=obj, bbox_xyxy=(float("nan"),) * 4)


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
) -> dict[str, Caption | None]:
    """Write one caption per style, in order: the same as calling :func:`make_caption` per style.

    The focus description and the other objects' kinds are worked out once for all styles
    (a tile has tens of objects, and every style looks at all of them).

    Args:
        styles, focus, others, table, rng, gsd_m, image_size, templates: As for
            :func:`make_caption`.
        other_kinds: ``table.main_rule(o.tags, gsd_m)`` for each of ``others``, when the caller
            already knows them (builders keep them per object across the tiles it appears in).

    Raises:
        ValueError: Unknown style, or a ``grounded`` focus with no visible tag.
    """
    for style in styles:
        if style not in STYLES:
            raise ValueError(f"unknown caption style {style!r}; expected one of {STYLES}")
    templates = templates or default_templates()
    focus_obj = _as_tile_object(focus)
    described = describe(focus_obj.tags, table, gsd_m=gsd_m, templates=templates)
    kept = [(i, _as_tile_object(o)) for i, o in enumerate(others) if o is not focus]
    other_objs = [o for _, o in kept]
    kinds: list[TagRule | None] | None = None
    if other_kinds is not None:
        if len(other_kinds) != len(others):
            raise ValueError(f"other_kinds has {len(other_kinds)} entries for {len(others)} others")
        kinds = [other_kinds[i] for i, _ in kept]
    made: dict[str, Caption | None] = {}
    for style in styles:
        if style == "title":
            made[style] = _caption_title(described, rng, templates)
            continue
        if kinds is None:
            kinds = [_kind(o.tags, table, gsd_m) for o in other_objs]
        if style == "title_multi_objects":
            focus_kind = _kind(focus_obj.tags, table, gsd_m) if described is not None else None
            made[style] = _caption_multi(described, focus_kind, kinds, rng, templates)
        else:
            made[style] = _caption_grounded(
                described, focus_obj, other_objs, kinds, rng, gsd_m, image_size, templates
            )
    return made


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
