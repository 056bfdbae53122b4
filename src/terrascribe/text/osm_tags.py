"""Which OpenStreetMap tags an overhead image can show, at what resolution, and in which words.

SkyScript decided per tag whether it can be seen from above at all and, if so, the coarsest
ground sampling distance (GSD) at which it still can; its labelled tags were never published.
terrascribe ships its own reviewed table (``data/osm_tags.csv`` + ``data/osm_tags.meta.json``):
one row per ``key=value`` with ``visible``, ``max_gsd_m`` (one of :data:`GSD_LEVELS`), the English
phrase for captions, and a ``role``:

- ``feature``: what the object is (``building=house``, ``highway=residential``);
- ``attribute``: describes a feature (``roof:shape=hipped``, ``surface=asphalt``, ``sport=soccer``);
- ``hide``: the object cannot be seen from above at all (``tunnel=yes``, ``location=underground``).

Rows whose value is ``*`` are key-level rules, used when no exact row exists (``name=*``,
``building=*``); keys with a ``*`` are glob patterns (``addr:*``, ``*:wikidata``). Phrases of
key-level rules may read the value: ``lanes=*`` -> ``"{n} lane{s}"``, ``roof:colour=*`` ->
``"{colour} roof"``.

This module knows nothing of files beyond its own packaged data and paths it is handed.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

GSD_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.6, 1.0, 10.0)
"""SkyScript's GSD classes in metres: a tag's ``max_gsd_m`` is one of these."""

ROLES = ("feature", "attribute", "hide")
COLUMNS = (
    "key",
    "value",
    "visible",
    "max_gsd_m",
    "phrase",
    "category",
    "role",
    "priority",
    "plural",
    "applies_to",
)
REQUIRED_COLUMNS = ("key", "value", "visible", "max_gsd_m", "phrase", "category")

T = TypeVar("T")

_DATA_PACKAGE = "terrascribe.text.data"
_TABLE_FILE = "osm_tags.csv"
_META_FILE = "osm_tags.meta.json"

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_KNOWN_PLACEHOLDERS = {"n", "s", "colour"}
_MAX_COUNT_IN_VALUE = 20


def table_meta_path(path: str | Path) -> Path:
    """The ``<stem>.meta.json`` beside a tag table CSV, holding its ``version`` (and provenance)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".csv") + ".meta.json")


class TagTableError(ValueError):
    """A tag table file is malformed; the message names the file, the line and the problem."""


# --- text normalisation --------------------------------------------------------------------------


def clean_text(text: object) -> str:
    """NFKC-normalise ``text``, drop control/format characters and collapse whitespace.

    OSM tags are free text typed by millions of people: they carry zero-width spaces, bidi marks,
    non-breaking spaces and the odd control character. Everything that reaches a caption or a
    table lookup goes through here first.
    """
    text = str(text)
    if text.isascii() and text.isprintable():
        # Printable ASCII is NFKC-stable and holds no control characters: only spaces can need
        # collapsing. This is nearly every OSM tag, and the slow path costs ~8 us per call.
        if "  " in text or text[:1] == " " or text[-1:] == " ":
            return " ".join(text.split())
        return text
    return _clean_unicode(text)


@lru_cache(maxsize=65536)
def _clean_unicode(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Zs", "Zl", "Zp"):
            kept.append(" ")
        elif cat[0] != "C":  # Cc control, Cf format (zero-width, bidi), Cs, Co, Cn
            kept.append(ch)
    return " ".join("".join(kept).split())


def normalise_tag(key: object, value: object) -> tuple[str, str]:
    """Return ``(key, value)`` cleaned with :func:`clean_text`."""
    return clean_text(key), clean_text(value)


# --- colours for {colour} phrases ----------------------------------------------------------------

_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "white": (255, 255, 255),
    "red": (200, 30, 30),
    "dark red": (120, 20, 20),
    "brown": (120, 75, 40),
    "orange": (230, 130, 30),
    "yellow": (230, 210, 40),
    "green": (40, 140, 50),
    "dark green": (20, 80, 30),
    "blue": (40, 80, 200),
    "light blue": (150, 190, 230),
    "purple": (120, 50, 140),
    "pink": (230, 140, 170),
    "beige": (220, 200, 160),
    "silver": (192, 192, 192),
}
_COLOUR_ALIASES = {
    "gray": "grey",
    "darkred": "dark red",
    "maroon": "dark red",
    "darkgreen": "dark green",
    "lightblue": "light blue",
    "darkgrey": "grey",
    "darkgray": "grey",
    "dark grey": "grey",
    "dark gray": "grey",
    "lightgrey": "silver",
    "lightgray": "silver",
    "light grey": "silver",
    "light gray": "silver",
    "terracotta": "orange",
    "tan": "beige",
    "cream": "beige",
    "violet": "purple",
    "navy": "blue",
    "teal": "green",
    "olive": "green",
    "gold": "yellow",
}
_HEX_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def colour_name(value: str) -> str | None:
    """Map an OSM colour value (a name or ``#rrggbb``) to a plain English colour, else None."""
    text = value.strip().lower().replace("_", " ")
    if text in _COLOURS:
        return text
    if text in _COLOUR_ALIASES:
        return _COLOUR_ALIASES[text]
    match = _HEX_COLOUR.match(text)
    if not match:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    rgb = tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return min(
        _COLOURS,
        key=lambda name: sum((a - b) ** 2 for a, b in zip(_COLOURS[name], rgb, strict=True)),
    )


def _count_in_value(value: str) -> int | None:
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if 1 <= n <= _MAX_COUNT_IN_VALUE else None


# --- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagRule:
    """What the table says about one tag (or, for ``value == "*"``, about a whole key).

    Attributes:
        key: OSM key, or a glob pattern such as ``addr:*`` for key-level rules.
        value: OSM value, or ``"*"`` for a key-level rule.
        visible: Whether the tag can be seen from above at some GSD.
        max_gsd_m: Coarsest GSD (m) at which it is still visible; None when not visible.
        phrase: English noun phrase, singular ("hipped roof", "residential road").
        category: Coarse group (building, road, water...).
        role: ``feature``, ``attribute`` or ``hide`` (see the module docstring).
        priority: Higher wins when an object has several visible features.
        plural: Plural override; ``""`` lets English rules decide, ``"-"`` marks a mass or
            plural-only noun (no article, counted as "areas of ...").
        applies_to: Keys or ``key=value`` tags the object must also carry for the rule to apply.
        source: ``table`` for reviewed rows, ``classifier`` for predicted ones.
    """

    key: str
    value: str
    visible: bool
    max_gsd_m: float | None
    phrase: str
    category: str = ""
    role: str = "feature"
    priority: int = 0
    plural: str = ""
    applies_to: tuple[str, ...] = ()
    source: str = "table"

    @property
    def is_key_rule(self) -> bool:
        """True for key-level rules (``value == "*"``)."""
        return self.value == "*"

    @property
    def tag(self) -> str:
        """``key=value`` as OSM writes it."""
        return f"{self.key}={self.value}"

    @property
    def countable(self) -> bool:
        """False for mass or plural-only phrases ("grass", "allotment gardens")."""
        return self.plural != "-"

    def visible_at(self, gsd_m: float | None) -> bool:
        """Whether the tag can be seen in imagery of ``gsd_m`` metres (None: at any GSD)."""
        if not self.visible or self.max_gsd_m is None:
            return False
        return gsd_m is None or gsd_m <= self.max_gsd_m + 1e-9

    def applies(self, tags: Mapping[str, str]) -> bool:
        """Whether the object's ``tags`` satisfy :attr:`applies_to` (always true when empty)."""
        if not self.applies_to:
            return True
        for cond in self.applies_to:
            key, sep, value = cond.partition("=")
            if key in tags and (not sep or tags[key] == value):
                return True
        return False

    def bind(self, value: str) -> TagRule:
        """A key-level rule made concrete for ``value``: its placeholders filled.

        The rule keeps ``value == "*"`` so a caller can still tell a key-level match. A value the
        phrase cannot read (``lanes=yes``, ``roof:colour=weathered``) gives an invisible rule: the
        key is known but this value cannot be put into words.
        """
        names = set(_PLACEHOLDER.findall(self.phrase))
        phrase = self.phrase
        if names:
            fill: dict[str, str] = {}
            if "n" in names or "s" in names:
                n = _count_in_value(value)
                if n is None:
                    return replace(self, visible=False, max_gsd_m=None, phrase="")
                fill["n"] = str(n)
                fill["s"] = "" if n == 1 else "s"
            if "colour" in names:
                colour = colour_name(value)
                if colour is None:
                    return replace(self, visible=False, max_gsd_m=None, phrase="")
                fill["colour"] = colour
            phrase = self.phrase.format(**fill)
        return replace(self, phrase=phrase)


def _parse_bool(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.strip().lower())


def _rule_from_row(row: Mapping[str, str | None], where: str) -> TagRule:
    def field(name: str) -> str:
        return clean_text(row.get(name) or "")

    key, value = field("key"), field("value")
    if not key or not value:
        raise TagTableError(f"{where}: empty key or value")
    visible = _parse_bool(field("visible"))
    if visible is None:
        raise TagTableError(f"{where}: visible must be true or false, got {field('visible')!r}")
    role = field("role") or "feature"
    if role not in ROLES:
        raise TagTableError(f"{where}: role must be one of {ROLES}, got {role!r}")
    gsd_text = field("max_gsd_m")
    max_gsd: float | None = None
    if gsd_text:
        try:
            max_gsd = float(gsd_text)
        except ValueError:
            raise TagTableError(f"{where}: max_gsd_m is not a number: {gsd_text!r}") from None
        if not any(abs(max_gsd - level) < 1e-9 for level in GSD_LEVELS):
            raise TagTableError(f"{where}: max_gsd_m {max_gsd} is not one of {GSD_LEVELS}")
    phrase = field("phrase")
    if visible and (max_gsd is None or not phrase):
        raise TagTableError(f"{where}: a visible tag needs max_gsd_m and a phrase")
    if not visible and (max_gsd is not None or phrase):
        raise TagTableError(f"{where}: an invisible tag has no max_gsd_m and no phrase")
    if visible and role == "hide":
        raise TagTableError(f"{where}: a hide rule is not itself visible (visible=false)")
    unknown = set(_PLACEHOLDER.findall(phrase)) - _KNOWN_PLACEHOLDERS
    if unknown:
        raise TagTableError(f"{where}: unknown placeholder(s) {sorted(unknown)} in phrase")
    if _PLACEHOLDER.search(phrase) and value != "*":
        raise TagTableError(f"{where}: placeholders are only allowed in key-level rules")
    try:
        priority = int(field("priority") or 0)
    except ValueError:
        raise TagTableError(f"{where}: priority must be an integer") from None
    applies = tuple(c for c in (p.strip() for p in field("applies_to").split("|")) if c)
    return TagRule(
        key=key,
        value=value,
        visible=visible,
        max_gsd_m=max_gsd,
        phrase=phrase,
        category=field("category"),
        role=role,
        priority=priority,
        plural=field("plural"),
        applies_to=applies,
        source=field("source") or "table",
    )


# --- the table -----------------------------------------------------------------------------------


class TagTable:
    """The tag visibility table: lookups, visible tags of an object, and its coarsest GSD.

    Build one with :meth:`load` (the packaged table by default) or :meth:`from_rules`.
    """

    def __init__(self, rules: Iterable[TagRule], *, version: str = "unversioned", origin: str = ""):
        self._rules: tuple[TagRule, ...] = tuple(rules)
        self.version = version
        self.origin = origin
        self._exact: dict[tuple[str, str], TagRule] = {}
        self._keys: dict[str, TagRule] = {}
        patterns: list[TagRule] = []
        for rule in self._rules:
            if rule.is_key_rule and "*" in rule.key:
                patterns.append(rule)
            elif rule.is_key_rule:
                self._keys[rule.key] = rule
            else:
                self._exact[(rule.key, rule.value)] = rule
        # The most specific pattern wins: more literal characters first ("addr:street:*" before
        # "addr:*"), then alphabetical so the order never depends on the file's row order.
        self._patterns = sorted(patterns, key=lambda r: (-len(r.key.replace("*", "")), r.key))
        digest = hashlib.sha256(self.to_csv().encode("utf-8")).hexdigest()
        self.fingerprint = digest[:16]
        # Answers per tag and per tag set: a table never changes after construction, and the
        # builders ask about the same few thousand tag sets millions of times.
        self._lookup_cache: dict[tuple[str, str], TagRule | None] = {}
        self._visible_cache: dict[tuple[object, ...], tuple[TagRule, ...]] = {}
        self._max_gsd_cache: dict[tuple[object, ...], float | None] = {}

    # construction ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> TagTable:
        """Read a tag table CSV (default: the packaged, reviewed table).

        The version is read from a sibling ``<stem>.meta.json`` (``{"version": ...}``) when there
        is one.

        Args:
            path: A CSV with at least the columns :data:`REQUIRED_COLUMNS`; None for the packaged
                table.

        Returns:
            The table.

        Raises:
            TagTableError: The file is missing, not UTF-8, lacks columns, or a row is malformed
                (the message names the file and line).
        """
        if path is None:
            data = resources.files(_DATA_PACKAGE)
            text = data.joinpath(_TABLE_FILE).read_text(encoding="utf-8")
            meta = json.loads(data.joinpath(_META_FILE).read_text(encoding="utf-8"))
            return cls.from_csv(text, origin=f"terrascribe:{_TABLE_FILE}", version=meta["version"])
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TagTableError(f"{path}: tag table not found") from None
        except UnicodeDecodeError as exc:
            raise TagTableError(f"{path}: not UTF-8 text ({exc.reason})") from None
        version = "unversioned"
        meta_path = table_meta_path(path)
        if meta_path.exists():
            try:
                version = str(json.loads(meta_path.read_text(encoding="utf-8"))["version"])
            except (ValueError, KeyError, TypeError) as exc:
                raise TagTableError(f"{meta_path}: invalid metadata ({exc})") from None
        return cls.from_csv(text, origin=str(path), version=version)

    @classmethod
    def from_csv(
        cls, text: str, *, origin: str = "<csv>", version: str = "unversioned"
    ) -> TagTable:
        """Parse CSV text (see :meth:`load`); ``origin`` names the source in error messages."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise TagTableError(f"{origin}: missing column(s) {missing}; need {REQUIRED_COLUMNS}")
        rules: list[TagRule] = []
        seen: dict[tuple[str, str], int] = {}
        try:
            for row in reader:
                where = f"{origin}:{reader.line_num}"
                if None in row:
                    raise TagTableError(f"{where}: more fields than columns")
                rule = _rule_from_row(row, where)
                ident = (rule.key, rule.value)
                if ident in seen:
                    raise TagTableError(
                        f"{where}: duplicate row {rule.tag} (first on line {seen[ident]})"
                    )
                seen[ident] = reader.line_num
                rules.append(rule)
        except csv.Error as exc:
            raise TagTableError(f"{origin}:{reader.line_num}: CSV error: {exc}") from None
        return cls(rules, version=version, origin=origin)

    @classmethod
    def from_rules(cls, rules: Iterable[TagRule], *, version: str = "unversioned") -> TagTable:
        """A table from rules (later rules replace earlier ones with the same key and value)."""
        merged: dict[tuple[str, str], TagRule] = {}
        for rule in rules:
            merged[(rule.key, rule.value)] = rule
        return cls(merged.values(), version=version, origin="<rules>")

    def to_csv(self) -> str:
        """The table as CSV text (the packaged format plus a ``source`` column)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow((*COLUMNS, "source"))
        for r in self._rules:
            gsd = "" if r.max_gsd_m is None else f"{r.max_gsd_m:g}"
            writer.writerow(
                (
                    r.key,
                    r.value,
                    "true" if r.visible else "false",
                    gsd,
                    r.phrase,
                    r.category,
                    r.role,
                    r.priority,
                    r.plural,
                    "|".join(r.applies_to),
                    r.source,
                )
            )
        return out.getvalue()

    # queries -----------------------------------------------------------------------------------

    @property
    def rules(self) -> tuple[TagRule, ...]:
        """All rules in file order."""
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[TagRule]:
        return iter(self._rules)

    def __repr__(self) -> str:
        return f"TagTable({len(self)} rules, version={self.version!r}, origin={self.origin!r})"

    def lookup(self, key: str, value: str) -> TagRule | None:
        """The rule for one tag: the exact ``key=value`` row first, then key-level rules.

        Keys and values are cleaned (:func:`clean_text`); a value not found as written is also
        tried in lower case and, for ``a;b`` lists, as its first item. Key-level rules with
        placeholders come back bound to the value (:meth:`TagRule.bind`).

        Returns:
            The rule, or None when the table knows neither the tag nor its key.
        """
        cache_key = (key, value)
        try:
            rule = self._lookup_cache.get(cache_key, _MISSING)
        except TypeError:  # an unhashable value: look it up uncached
            return self._lookup(key, value)
        if rule is _MISSING:
            rule = _remember(self._lookup_cache, cache_key, self._lookup(key, value))
        return rule  # type: ignore[return-value]

    def _lookup(self, key: str, value: str) -> TagRule | None:
        key, value = normalise_tag(key, value)
        if not key:
            return None
        candidates = [value]
        lowered = value.lower()
        if lowered != value:
            candidates.append(lowered)
        if ";" in value:
            first = value.split(";", 1)[0].strip()
            candidates += [first, first.lower()]
        for candidate in candidates:
            rule = self._exact.get((key, candidate))
            if rule is not None:
                return rule
        key_rule = self.key_rule(key)
        if key_rule is None:
            return None
        return key_rule.bind(candidates[-1] if ";" in value else value)

    def key_rule(self, key: str) -> TagRule | None:
        """The key-level rule for ``key`` (exact key first, then the most specific pattern)."""
        rule = self._keys.get(key)
        if rule is not None:
            return rule
        for pattern in self._patterns:
            if fnmatch.fnmatchcase(key, pattern.key):
                return pattern
        return None

    def _rules_of(self, tags: Mapping[str, str]) -> tuple[dict[str, str], list[TagRule]]:
        clean: dict[str, str] = {}
        for k, v in tags.items():
            ck, cv = normalise_tag(k, v)
            if ck and cv:
                clean[ck] = cv
        rules = [r for r in (self.lookup(k, v) for k, v in clean.items()) if r is not None]
        return clean, rules

    def visible_rules(self, tags: Mapping[str, str], gsd_m: float | None = None) -> list[TagRule]:
        """The object's tags that imagery of ``gsd_m`` metres shows: main feature first.

        Order: the main feature (highest priority, then key, then value), its applicable
        attributes (by priority), then the other visible features. An object carrying a
        ``hide`` tag (``tunnel=yes``...) or no visible feature gives ``[]``: attributes alone
        describe nothing. Features and attributes whose phrase repeats an earlier one are dropped.

        Args:
            tags: The object's OSM tags.
            gsd_m: Ground sampling distance of the imagery; None ignores resolution.
        """
        cache_key = _tags_key(tags, gsd_m)
        if cache_key is None:
            return list(self._visible_rules(tags, gsd_m))
        rules = self._visible_cache.get(cache_key)
        if rules is None:
            rules = _remember(self._visible_cache, cache_key, self._visible_rules(tags, gsd_m))
        return list(rules)

    def _visible_rules(self, tags: Mapping[str, str], gsd_m: float | None) -> tuple[TagRule, ...]:
        clean, rules = self._rules_of(tags)
        if any(r.role == "hide" and r.applies(clean) for r in rules):
            return ()
        shown = [r for r in rules if r.visible_at(gsd_m) and r.applies(clean)]
        features = sorted(
            (r for r in shown if r.role == "feature"), key=lambda r: (-r.priority, r.key, r.value)
        )
        if not features:
            return ()
        attributes = sorted(
            (r for r in shown if r.role == "attribute"), key=lambda r: (-r.priority, r.key, r.value)
        )
        ordered: list[TagRule] = []
        phrases: set[str] = set()
        for rule in [features[0], *attributes, *features[1:]]:
            if rule.phrase not in phrases:
                phrases.add(rule.phrase)
                ordered.append(rule)
        return tuple(ordered)

    def main_rule(self, tags: Mapping[str, str], gsd_m: float | None = None) -> TagRule | None:
        """The object's main visible feature at ``gsd_m`` (None when nothing is visible)."""
        cache_key = _tags_key(tags, gsd_m)
        rules = None if cache_key is None else self._visible_cache.get(cache_key)
        if rules is None:  # the cached tuple is read without visible_rules' defensive copy
            rules = self.visible_rules(tags, gsd_m)
        return rules[0] if rules else None

    def max_gsd(self, tags: Mapping[str, str]) -> float | None:
        """Coarsest GSD (m) at which the object still shows a feature; None if it never does."""
        cache_key = _tags_key(tags, None)
        if cache_key is None:
            return self._max_gsd(tags)
        if cache_key in self._max_gsd_cache:
            return self._max_gsd_cache[cache_key]
        return _remember(self._max_gsd_cache, cache_key, self._max_gsd(tags))

    def _max_gsd(self, tags: Mapping[str, str]) -> float | None:
        clean, rules = self._rules_of(tags)
        if any(r.role == "hide" and r.applies(clean) for r in rules):
            return None
        levels = [
            r.max_gsd_m
            for r in rules
            if r.role == "feature" and r.visible_at(None) and r.applies(clean)
        ]
        return max(levels) if levels else None

    def unknown_tags(self, tags: Mapping[str, str]) -> list[tuple[str, str]]:
        """The object's tags the table has no rule for (candidates for the classifier)."""
        clean, _ = self._rules_of(tags)
        return [(k, v) for k, v in clean.items() if self.lookup(k, v) is None]


_CACHE_LIMIT = 100_000
_MISSING = object()


def _remember(cache: dict, key: object, value: T) -> T:
    if len(cache) >= _CACHE_LIMIT:  # bounded: planet-scale runs see millions of distinct names
        cache.clear()
    cache[key] = value
    return value


def _tags_key(tags: Mapping[str, str], gsd_m: float | None) -> tuple[object, ...] | None:
    """A cache key for a tag set (order kept: cleaning can merge keys, the later one wins)."""
    key = (gsd_m, *tags.items())
    try:
        hash(key)
    except TypeError:
        return None
    return key
