"""Captions from OSM tags: SkyScript's two styles, grounded counts, English, determinism."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terrascribe.text import osm_captions
from terrascribe.text.osm_captions import (
    STYLES,
    CaptionTemplateError,
    CaptionTemplates,
    TileObject,
    caption_grounded,
    caption_multi,
    caption_title,
    default_templates,
    describe,
    indefinite_article,
    join_list,
    make_caption,
    make_captions,
    number_word,
    pluralise,
)
from terrascribe.text.osm_tags import TagTable


@pytest.fixture(scope="module")
def table() -> TagTable:
    return TagTable.load()


@pytest.fixture(scope="module")
def first_only() -> CaptionTemplates:
    """The packaged templates cut to their first (SkyScript-worded) entry, for exact strings."""
    data = json.loads(json.dumps(default_templates().__dict__, default=list))
    for style in STYLES:
        data[style] = data[style][:1]
    return CaptionTemplates.from_dict(data)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return (x0, y0, x1, y1)


# --- English -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("singular", "plural"),
    [
        ("building", "buildings"),
        ("bench", "benches"),
        ("factory", "factories"),
        ("driveway", "driveways"),
        ("body of water", "bodies of water"),
        ("road under construction", "roads under construction"),
        ("row of terraced houses", "rows of terraced houses"),
        ("flight of steps", "flights of steps"),
        ("bus platform", "bus platforms"),
        ("greenhouse", "greenhouses"),
    ],
)
def test_pluralise(singular: str, plural: str) -> None:
    assert pluralise(singular) == plural


@pytest.mark.parametrize(
    ("phrase", "article"),
    [
        ("building", "a"),
        ("asphalt surface", "an"),
        ("industrial building", "an"),
        ("university campus", "a"),
        ("hour", "an"),
        ("one-way road", "a"),
        ("european road", "a"),
        ("orchard", "an"),
    ],
)
def test_indefinite_article(phrase: str, article: str) -> None:
    assert indefinite_article(phrase) == article


def test_number_words_and_lists() -> None:
    assert [number_word(n) for n in (0, 1, 3, 10, 11, 25)] == [
        "zero",
        "one",
        "three",
        "ten",
        "11",
        "25",
    ]
    assert number_word(12, words_max=20) == "twelve"
    assert join_list([]) == "" and join_list(["a"]) == "a"
    assert join_list(["a", "b"]) == "a and b"
    assert join_list(["a", "b", "c"]) == "a, b and c"


# --- describe and title --------------------------------------------------------------------------


def test_describe_attributes(table: TagTable) -> None:
    assert describe({"building": "yes", "roof:shape": "hipped"}, table) == (
        "a building with a hipped roof"
    )
    merged = {"building": "yes", "roof:shape": "hipped", "roof:colour": "red"}
    assert describe(merged, table) == "a building with a red hipped roof"
    road = {"highway": "residential", "surface": "asphalt", "lanes": "2", "bridge": "yes"}
    assert describe(road, table) == (
        "a residential road on a bridge with an asphalt surface and two lanes"
    )
    assert describe({"leisure": "pitch", "sport": "tennis"}, table) == "a sports pitch for tennis"
    assert describe({"landuse": "farmland", "crop": "wheat"}, table) == (
        "farmland planted with wheat"
    )
    assert describe({"name": "Only a name"}, table) is None


def test_title_skyscript_wording(table: TagTable, first_only: CaptionTemplates) -> None:
    tags = {"building": "yes", "roof:shape": "hipped", "name": "Talo"}
    text = caption_title(tags, table, rng(), templates=first_only)
    assert text == "a satellite image of a building with a hipped roof"
    # The name is invisible and never leaks into the caption.
    assert "Talo" not in text


def test_title_respects_gsd(table: TagTable, first_only: CaptionTemplates) -> None:
    tags = {"building": "yes", "roof:shape": "hipped"}
    assert caption_title(tags, table, rng(), gsd_m=1.0, templates=first_only) == (
        "a satellite image of a building"
    )
    assert caption_title(tags, table, rng(), gsd_m=10.0, templates=first_only) is None
    assert caption_title({"power": "pole"}, table, rng(), gsd_m=0.6) is None


def test_invisible_focus(table: TagTable) -> None:
    assert caption_title({"addr:street": "x"}, table, rng()) is None
    assert caption_multi({"shop": "bakery"}, [{"building": "yes"}], table, rng()) is None
    with pytest.raises(ValueError, match="no visible tag"):
        caption_grounded(TileObject({"name": "x"}, box(0, 0, 1, 1)), [], table, rng())


# --- multi ---------------------------------------------------------------------------------------


def test_multi_lists_other_kinds(table: TagTable, first_only: CaptionTemplates) -> None:
    others = [
        {"building": "yes"},
        {"building": "yes"},
        {"highway": "residential"},
        {"name": "invisible"},
        {"highway": "footway", "tunnel": "yes"},
    ]
    text = caption_multi({"amenity": "parking"}, others, table, rng(), templates=first_only)
    assert text == (
        "a satellite image of a parking lot, surrounded by buildings and a residential road"
    )


def test_multi_without_visible_others_falls_back_to_title(table: TagTable) -> None:
    cap = make_caption("title_multi_objects", {"building": "yes"}, [{"name": "x"}], table, rng())
    assert cap.text == "a satellite image of a building"
    assert cap.template_id in {t["id"] for t in default_templates().title}


def test_multi_same_kind_as_focus(table: TagTable, first_only: CaptionTemplates) -> None:
    others = [{"building": "yes"}] * 3
    text = caption_multi({"building": "yes"}, others, table, rng(), templates=first_only)
    assert text.endswith("surrounded by other buildings")


# --- grounded ------------------------------------------------------------------------------------


def test_grounded_counts_plurals_and_relations(
    table: TagTable, first_only: CaptionTemplates
) -> None:
    focus = TileObject({"amenity": "parking"}, box(100, 100, 200, 180))
    others = [
        TileObject({"building": "yes"}, box(10, 10, 40, 40)),
        TileObject({"building": "yes"}, box(210, 10, 240, 40)),
        TileObject({"building": "yes"}, box(210, 200, 240, 240)),
        TileObject({"highway": "residential"}, box(0, 190, 256, 200)),
        TileObject({"natural": "tree"}, box(150, 150, 150, 150)),  # a point inside the lot
        TileObject({"landuse": "grass"}, box(0, 60, 20, 80)),
        TileObject({"landuse": "grass"}, box(0, 90, 20, 99)),
        TileObject({"landuse": "residential"}, box(0, 0, 256, 256)),
        TileObject({"name": "invisible"}, box(0, 0, 5, 5)),
    ]
    text = caption_grounded(
        focus, others, table, rng(), image_size=(256, 256), templates=first_only
    )
    assert text == (
        "a satellite image of a parking lot in the centre of the image, in a residential area, "
        "containing a tree, next to three buildings, two areas of grass and a residential road"
    )


def test_grounded_many_objects_use_digits(table: TagTable, first_only: CaptionTemplates) -> None:
    focus = TileObject({"leisure": "park"}, box(0, 0, 100, 100))
    others = [TileObject({"building": "house"}, box(200 + i, 0, 201 + i, 1)) for i in range(12)]
    text = caption_grounded(focus, others, table, rng(), templates=first_only)
    assert text.endswith("next to 12 houses")
    one = caption_grounded(focus, others[:1], table, rng(), templates=first_only)
    assert one.endswith("next to a house")


def test_grounded_without_boxes_or_size(table: TagTable) -> None:
    focus = TileObject({"building": "yes"}, (float("nan"),) * 4)
    text = caption_grounded(
        focus, [TileObject({"highway": "service"}, box(0, 0, 1, 1))], table, rng()
    )
    assert "building" in text and "service road" in text and "image," not in text


def test_grounded_position_words(table: TagTable, first_only: CaptionTemplates) -> None:
    def where(b: tuple[float, float, float, float]) -> str:
        return caption_grounded(
            TileObject({"building": "yes"}, b),
            [],
            table,
            rng(),
            image_size=(300, 300),
            templates=first_only,
        )

    assert where(box(0, 0, 20, 20)).endswith("in the top left of the image")
    assert where(box(280, 280, 299, 299)).endswith("in the bottom right of the image")
    assert where(box(140, 0, 160, 20)).endswith("at the top of the image")
    assert where(box(0, 0, 300, 300)).endswith("covering most of the image")


def test_grounded_focus_is_not_its_own_neighbour(table: TagTable, first_only) -> None:
    focus = TileObject({"building": "yes"}, box(0, 0, 10, 10))
    text = caption_grounded(focus, [focus], table, rng(), templates=first_only)
    assert text == "a satellite image of a building"


# --- templates, ids, determinism -----------------------------------------------------------------


def test_make_caption_reports_style_and_template(table: TagTable) -> None:
    templates = default_templates()
    focus = TileObject({"building": "yes"}, box(0, 0, 10, 10))
    others = [TileObject({"highway": "service"}, box(20, 20, 30, 30))]
    seen: dict[str, set[str]] = {s: set() for s in STYLES}
    for seed in range(40):
        for style in STYLES:
            cap = make_caption(style, focus, others, table, rng(seed))
            assert cap.style == style
            assert cap.template_id in {t["id"] for t in getattr(templates, style)} | {
                t["id"] for t in templates.title
            }
            seen[style].add(cap.template_id)
    assert all(len(ids) > 1 for ids in seen.values()), "seeds should reach several templates"
    with pytest.raises(ValueError, match="unknown caption style"):
        make_caption("poem", focus, [], table, rng())  # type: ignore[arg-type]


def test_same_seed_same_text(table: TagTable) -> None:
    focus = TileObject({"highway": "primary", "surface": "asphalt"}, box(0, 50, 256, 60))
    others = [TileObject({"building": "yes"}, box(i * 20, 0, i * 20 + 10, 10)) for i in range(5)]
    for style in STYLES:
        a = make_caption(style, focus, others, table, rng(7), image_size=(256, 256))
        b = make_caption(style, focus, others, table, rng(7), image_size=(256, 256))
        assert a == b


def test_templates_version_and_packaged_ids() -> None:
    templates = default_templates()
    assert templates.version == "1.0.0"
    assert templates.title[0]["text"] == "a satellite image of {object}"
    assert templates.title_multi_objects[0]["text"] == (
        "a satellite image of {object}, surrounded by {others}"
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("grounded"), "'grounded' must be a non-empty list"),
        (lambda d: d["title"].append({"id": "x"}), "needs string 'id' and 'text'"),
        (lambda d: d["title"].append({"id": "t9", "text": "{nope}"}), "must include 'object'"),
        (
            lambda d: d["title"].append(dict(d["title"][0])),
            "duplicate template id",
        ),
        (lambda d: d.__setitem__("max_others", "many"), "invalid setting"),
    ],
)
def test_bad_templates(tmp_path: Path, mutate, message: str) -> None:
    data = json.loads(
        (
            Path(__file__).resolve().parents[1]
            / "src/terrascribe/text/data/osm_caption_templates.json"
        ).read_text(encoding="utf-8")
    )
    mutate(data)
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CaptionTemplateError, match=message) as info:
        CaptionTemplates.load(path)
    assert str(path) in str(info.value)


def test_unreadable_templates(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("{broken")
    with pytest.raises(CaptionTemplateError, match="invalid JSON"):
        CaptionTemplates.load(path)
    with pytest.raises(CaptionTemplateError, match="cannot read"):
        CaptionTemplates.load(tmp_path / "absent.json")


# --- properties ----------------------------------------------------------------------------------

_TABLE = TagTable.load()
_KNOWN = sorted({(r.key, r.value) for r in _TABLE.rules if not r.is_key_rule})
_known_tag = st.sampled_from(_KNOWN)
_odd_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)
_any_tag = st.one_of(_known_tag, st.tuples(_odd_text, _odd_text))
_tags = st.lists(_any_tag, max_size=6).map(dict)
_coord = st.one_of(
    st.floats(min_value=-50, max_value=600), st.sampled_from([float("nan"), float("inf")])
)
_objects = st.builds(TileObject, tags=_tags, bbox_xyxy=st.tuples(_coord, _coord, _coord, _coord))
_gsd = st.one_of(st.none(), st.sampled_from([0.05, 0.1, 0.3, 0.6, 1.0, 5.0, 10.0, 30.0]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    focus=_objects,
    others=st.lists(_objects, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    gsd=_gsd,
    size=st.one_of(st.none(), st.tuples(st.integers(0, 512), st.integers(0, 512))),
)
def test_captions_never_crash_and_are_deterministic(focus, others, seed, gsd, size) -> None:
    visible = bool(_TABLE.visible_rules(focus.tags, gsd))
    for style in STYLES:
        if style == "grounded" and not visible:
            with pytest.raises(ValueError):
                make_caption(style, focus, others, _TABLE, rng(seed), gsd_m=gsd, image_size=size)
            continue
        cap = make_caption(style, focus, others, _TABLE, rng(seed), gsd_m=gsd, image_size=size)
        again = make_caption(style, focus, others, _TABLE, rng(seed), gsd_m=gsd, image_size=size)
        assert cap == again
        if not visible:
            assert cap is None
            continue
        assert cap is not None and cap.text.strip()
        assert cap.text == cap.text.strip() and "  " not in cap.text
        assert not any(unicodedata.category(c)[0] == "C" for c in cap.text)
        assert "{" not in cap.text and "}" not in cap.text


def test_make_captions_equals_make_caption_per_style(table: TagTable) -> None:
    focus = TileObject({"amenity": "parking", "surface": "asphalt"}, box(40, 40, 120, 120))
    others = [
        focus,
        TileObject({"building": "yes", "roof:shape": "hipped"}, box(0, 0, 20, 20)),
        TileObject({"building": "yes"}, box(50, 50, 60, 60)),
        TileObject({"highway": "residential"}, box(0, 130, 256, 140)),
        TileObject({"landuse": "grass"}, box(0, 0, 256, 256)),
        TileObject({"name": "no visible tag"}, box(5, 5, 6, 6)),
        {"natural": "tree"},
    ]
    for seed in range(30):
        for gsd in (None, 0.3, 5.0):
            r1, r2 = rng(seed), rng(seed)
            kwargs = {"gsd_m": gsd, "image_size": (256, 256)}
            if table.visible_rules(focus.tags, gsd):
                one_by_one = {
                    s: make_caption(s, focus, others, table, r1, **kwargs) for s in STYLES
                }
                assert make_captions(STYLES, focus, others, table, r2, **kwargs) == one_by_one
            else:  # grounded refuses an invisible focus either way, after the same draws
                for style in STYLES:
                    if style != "grounded":
                        assert make_caption(style, focus, others, table, r1, **kwargs) is None
                with pytest.raises(ValueError, match="no visible tag"):
                    make_caption("grounded", focus, others, table, r1, **kwargs)
                with pytest.raises(ValueError, match="no visible tag"):
                    make_captions(STYLES, focus, others, table, r2, **kwargs)
            assert r1.integers(1 << 30) == r2.integers(1 << 30)  # the same draws were made
    with pytest.raises(ValueError, match="unknown caption style"):
        make_captions(("title", "poem"), focus, [], table, rng())  # type: ignore[arg-type]


def test_make_captions_with_known_kinds_equals_looking_them_up(table: TagTable) -> None:
    focus = TileObject({"amenity": "parking"}, box(40, 40, 120, 120))
    others = [
        TileObject({"building": "yes", "roof:shape": "hipped"}, box(0, 0, 20, 20)),
        TileObject({"highway": "residential"}, box(0, 130, 256, 140)),
        TileObject({"name": "no visible tag"}, box(5, 5, 6, 6)),
    ]
    for seed in range(10):
        kinds = [table.main_rule(o.tags, 0.5) for o in others]
        looked_up = make_captions(STYLES, focus, others, table, rng(seed), gsd_m=0.5)
        given = make_captions(STYLES, focus, others, table, rng(seed), gsd_m=0.5, other_kinds=kinds)
        assert given == looked_up
    with pytest.raises(ValueError, match="other_kinds has 1 entries for 3 others"):
        make_captions(STYLES, focus, others, table, rng(), other_kinds=kinds[:1])


# --- fast paths against the reference semantics --------------------------------------------------
# The relations, grouping and clean-up as osm_captions first wrote them: a helper call per box,
# a key function per group, regular expressions. The fast paths must decide, count and write
# exactly the same for every input.


def _ref_valid_box(box):
    try:
        x0, y0, x1, y1 = map(float, box)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _ref_inside(inner, outer, pad=0.5):
    ox0, oy0, ox1, oy1 = outer[0] - pad, outer[1] - pad, outer[2] + pad, outer[3] + pad
    ix0, iy0, ix1, iy1 = inner
    area = (ix1 - ix0) * (iy1 - iy0)
    if area <= 0:
        cx, cy = (ix0 + ix1) / 2, (iy0 + iy1) / 2
        return ox0 <= cx <= ox1 and oy0 <= cy <= oy1
    w = max(0.0, min(ix1, ox1) - max(ix0, ox0))
    h = max(0.0, min(iy1, oy1) - max(iy0, oy0))
    return w * h >= 0.9 * area


def _ref_box_area(box):
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _ref_relation(focus, other):
    if focus is None or other is None:
        return "near"
    focus_area, other_area = _ref_box_area(focus), _ref_box_area(other)
    if other_area < focus_area and _ref_inside(other, focus):
        return "contains"
    if focus_area < other_area and _ref_inside(focus, other):
        return "within"
    return "near"


def _ref_relations(focus, boxes, kinds):
    by_relation = {"within": [], "contains": [], "near": []}
    for box, kind in zip(boxes, kinds, strict=True):
        if kind is not None:
            by_relation[_ref_relation(focus, _ref_valid_box(box))].append(kind)
    return by_relation


def _ref_group_counts(rules, limit):
    counts = {}
    for rule in rules:
        if rule is not None:
            entry = counts.setdefault(rule.phrase, [rule, 0])
            entry[1] += 1
    ordered = sorted(counts.values(), key=lambda e: (-e[1], -e[0].priority, e[0].phrase))
    return [(rule, n) for rule, n in ordered][:limit]


def _ref_attribute_text(rule, templates):
    return re.sub(
        r"^(\d+)\b", lambda m: number_word(int(m.group(1)), templates.number_words_max), rule.phrase
    )


def _ref_finish(text):
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.])", r"\1", text)


def _ref_position(box, image_size):
    if box is None or image_size is None:
        return None
    width, height = float(image_size[0]), float(image_size[1])
    if width <= 0 or height <= 0:
        return None
    if _ref_box_area(box) >= 0.6 * width * height:
        return "most"
    cx = (box[0] + box[2]) / 2 / width
    cy = (box[1] + box[3]) / 2 / height
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    return " ".join(p for p in (row, col) if p) or "centre"


def _by_identity(by_relation):
    """Relation -> the kinds' identities in order: equal dataclasses must not hide a swap."""
    return {relation: [id(k) for k in kinds] for relation, kinds in by_relation.items()}


# Half-pixel steps put edges exactly on the 0.5 px pad and areas on the 90% threshold often.
_GRID = np.arange(-2.0, 14.5, 0.5)
_SPECIAL = [
    float("nan"),
    float("inf"),
    -float("inf"),
    0.0,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    1e-300,
    float(2**53 + 2),
]


def _coordinate(gen: np.random.Generator) -> float:
    draw = gen.random()
    if draw < 0.65:
        return float(gen.choice(_GRID))
    if draw < 0.9:
        return float(gen.uniform(-3, 15))
    return _SPECIAL[int(gen.integers(len(_SPECIAL)))]


def _numeric_box(gen: np.random.Generator) -> tuple[float, float, float, float]:
    x0, y0 = _coordinate(gen), _coordinate(gen)
    shape = gen.random()
    if shape < 0.15:  # a point
        return (x0, y0, x0, y0)
    if shape < 0.25:  # a line: no width
        return (x0, y0, x0, _coordinate(gen))
    if shape < 0.4:  # a small box on the grid, possibly inside another
        return (x0, y0, x0 + float(gen.choice([0.5, 1.0, 2.5])), y0 + float(gen.choice([0.5, 3.0])))
    return (x0, y0, _coordinate(gen), _coordinate(gen))  # any corners, reversed ones included


def _any_box(gen: np.random.Generator):
    """A box in any form a caller may pass as ``bbox_xyxy``, readable or not."""
    box = _numeric_box(gen)
    form = gen.random()
    if form < 0.4:
        return box
    if form < 0.5:
        return list(box)
    if form < 0.6:
        return np.array(box)  # a numpy row: numpy floats
    if form < 0.65:
        with np.errstate(over="ignore"):  # 1e308 is inf as a float32
            return np.array(box, dtype=np.float32)
    if form < 0.72:  # ints, and an int too large for a float (float() raises OverflowError)
        big = 10**400 if gen.random() < 0.1 else 7
        return (int(gen.integers(-2, 14)), 3, big, int(gen.integers(-2, 14)))
    if form < 0.77:
        return tuple(str(v) for v in box)  # float() reads numeric strings
    if form < 0.82:
        return box[:3]  # too short
    if form < 0.87:
        return None
    if form < 0.92:
        return ("a", 1.0, 2.0, 3.0)
    return (float("nan"),) * 4  # an object given by its tags alone


@pytest.fixture(scope="module")
def kind_pool(table: TagTable) -> list:
    """Kinds with repeats, None, and distinct rules that share a phrase but not a priority."""
    rules = [table.main_rule(t) for t in ({"building": "yes"}, {"highway": "residential"})]
    rules += [table.main_rule({"natural": "tree"}), table.main_rule({"landuse": "grass"})]
    building = rules[0]
    rules.append(dataclasses.replace(building, value="house", priority=building.priority + 5))
    rules.append(dataclasses.replace(building, value="shed", plural="-"))  # same phrase, mass
    return [*rules, None]


def _relations_or_error(fn, *args):
    try:
        return _by_identity(fn(*args))
    except Exception as exc:  # both sides must fail alike, OverflowError for huge ints
        return type(exc)


def test_relations_match_the_reference_for_any_boxes(kind_pool) -> None:
    gen = np.random.default_rng(20240611)
    checked = {"within": 0, "contains": 0, "near": 0}
    for _ in range(3000):
        focus = _ref_valid_box(_numeric_box(gen))
        n = int(gen.integers(0, 40))
        boxes = [_any_box(gen) for _ in range(n)]
        kinds = [kind_pool[int(gen.integers(len(kind_pool)))] for _ in range(n)]
        want = _relations_or_error(_ref_relations, focus, boxes, kinds)
        assert _relations_or_error(osm_captions._relations, focus, boxes, kinds) == want
        if isinstance(want, dict):
            for relation, found in want.items():
                checked[relation] += len(found)
    assert min(checked.values()) > 500, checked  # every relation was decided many times


def test_relations_of_a_box_array_match_the_reference(kind_pool) -> None:
    """Boxes given as a float array are decided as the reference decides them, box for box."""
    gen = np.random.default_rng(7)
    for _ in range(1500):
        focus = _ref_valid_box(_numeric_box(gen))
        n = int(gen.integers(0, 40))
        boxes = [_numeric_box(gen) for _ in range(n)]
        kinds = [kind_pool[int(gen.integers(len(kind_pool)))] for _ in range(n)]
        array = np.array(boxes, dtype=np.float64).reshape(n, 4)
        want = _by_identity(_ref_relations(focus, boxes, kinds))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # inf - inf and overflow stay silent, as in Python
            rows = osm_captions._boxes_given(array, n)
            assert _by_identity(osm_captions._relations(focus, rows, kinds)) == want


def test_relations_at_the_thresholds(kind_pool) -> None:
    building = kind_pool[0]

    def relation(focus, box) -> str:
        found = osm_captions._relations(focus, [box], [building])
        assert _by_identity(found) == _by_identity(_ref_relations(focus, [box], [building]))
        return next(name for name, kinds in found.items() if kinds)

    inner = (0.0, 0.0, 10.0, 10.0)  # 90 of its 100 px^2 inside the widened focus: exactly 90%
    assert relation((1.5, -5.0, 20.0, 20.0), inner) == "contains"
    assert relation((1.5000000001, -5.0, 20.0, 20.0), inner) == "near"
    # a point on the widened edge, and just beyond it
    assert relation((0.0, 0.0, 10.0, 10.0), (10.5, 3.0, 10.5, 3.0)) == "contains"
    assert relation((0.0, 0.0, 10.0, 10.0), (10.5000001, 3.0, 10.5000001, 3.0)) == "near"
    # the focus as a point inside a larger box, reversed corners, lists and numpy rows
    assert relation((3.0, 3.0, 3.0, 3.0), [10.0, 10.0, 0.0, 0.0]) == "within"
    assert relation((0.0, 0.0, 10.0, 10.0), np.array([2.0, 2.0, 4.0, 4.0])) == "contains"
    # equal areas are never inside one another; no focus box or a bad box is near
    assert relation((0.0, 0.0, 10.0, 10.0), (0.0, 0.0, 10.0, 10.0)) == "near"
    assert relation(None, (2.0, 2.0, 4.0, 4.0)) == "near"
    assert relation((0.0, 0.0, 10.0, 10.0), (2.0, float("nan"), 4.0, 4.0)) == "near"
    assert relation((0.0, 0.0, 10.0, 10.0), (2.0, 2.0, float("inf"), 4.0)) == "near"


def test_group_counts_match_the_reference(kind_pool) -> None:
    gen = np.random.default_rng(3)
    for _ in range(2000):
        rules = [kind_pool[int(gen.integers(len(kind_pool)))] for _ in range(gen.integers(0, 30))]
        for limit in (-2, -1, 0, 1, 3, 6, 100):
            got = osm_captions._group_counts(rules, limit)
            want = _ref_group_counts(rules, limit)
            assert [(id(r), n) for r, n in got] == [(id(r), n) for r, n in want]


def test_nouns_match_the_rules(table: TagTable, first_only: CaptionTemplates) -> None:
    tree = table.main_rule({"natural": "tree"})
    # the packaged table's plural overrides are what pluralise() says anyway: one that is not
    goose = dataclasses.replace(tree, phrase="goose", plural="geese")
    assert osm_captions._Noun.of(goose).many(2, first_only) == "two geese"
    for rule in [*table.rules, goose]:
        if not rule.phrase or rule.is_key_rule:
            continue
        noun = osm_captions._Noun.of(rule)
        if rule.countable:
            plural = rule.plural or pluralise(rule.phrase)
            assert noun.one() == f"{indefinite_article(rule.phrase)} {rule.phrase}"
            assert noun.many(3, first_only) == f"three {plural}"
        else:
            assert noun.one() == rule.phrase
            assert noun.many(3, first_only) == f"three areas of {rule.phrase}"
        assert noun.many(1, first_only) == noun.one()


def test_finish_matches_the_regular_expressions() -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    # str.split() and the regex \s agree on what whitespace is, which _finish relies on
    assert [c for c in chars if c.isspace()] == [c for c in chars if re.fullmatch(r"\s", c)]
    spaces = [c for c in chars if c.isspace()]
    pieces = ["a", "road", ",", ".", ", .", " ", *spaces, "\u00e9t\u00e9", "x.y", ""]
    gen = np.random.default_rng(11)
    for _ in range(5000):
        text = "".join(pieces[int(i)] for i in gen.integers(len(pieces), size=gen.integers(0, 12)))
        assert osm_captions._finish(text) == _ref_finish(text), repr(text)


def test_attribute_counts_skip_the_regex_only_without_a_leading_digit(table: TagTable) -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    # the regex's \d never matches what isdigit() refuses, so no count is left in digits
    assert not [c for c in chars if re.fullmatch(r"\d", c) and not c.isdigit()]
    lanes = table.visible_rules({"highway": "primary", "lanes": "2"})[1]
    assert osm_captions._attribute_text(lanes, default_templates()) == "two lanes"
    superscript = dataclasses.replace(lanes, phrase="\u00b2 lanes")  # isdigit, not \d: kept
    assert osm_captions._attribute_text(superscript, default_templates()) == "\u00b2 lanes"


def _random_tile(gen: np.random.Generator, known: list, numeric: bool):
    def tags() -> dict[str, str]:
        return dict(known[int(i)] for i in gen.integers(len(known), size=gen.integers(1, 4)))

    focus = TileObject(tags(), _numeric_box(gen))
    maker = _numeric_box if numeric else _any_box
    others: list = [TileObject(tags(), maker(gen)) for _ in range(gen.integers(0, 40))]
    if others and gen.random() < 0.2:
        others.insert(int(gen.integers(len(others))), focus)  # never its own neighbour
    if not numeric and gen.random() < 0.2:
        others.append(tags())  # an object given by its tags alone
    return focus, others


def test_make_captions_match_the_reference_end_to_end(table: TagTable, monkeypatch) -> None:
    """Whole captions, template ids and random draws, against the reference helpers."""
    known = [*_KNOWN[::7], ("lanes", "2"), ("lanes", "4"), ("building:levels", "3")]
    gen = np.random.default_rng(5)
    tiles = []
    for _ in range(400):
        focus, others = _random_tile(gen, known, numeric=False)
        gsd = [None, 0.1, 0.3, 1.0, 5.0][int(gen.integers(5))]
        size = [None, (256, 256), (512, 300), (0, 10)][int(gen.integers(4))]
        tiles.append((focus, others, gsd, size, int(gen.integers(1 << 31))))
    data = json.loads(json.dumps(default_templates().__dict__, default=list))
    variants = [default_templates()]
    for max_others in (-1, 0, 2):  # the budget of listed groups, sliced as before
        variants.append(CaptionTemplates.from_dict({**data, "max_others": max_others}))

    def write_all() -> list:
        out = []
        for k, (focus, others, gsd, size, seed) in enumerate(tiles):
            rng = np.random.default_rng(seed)
            try:
                made = make_captions(
                    STYLES,
                    focus,
                    others,
                    table,
                    rng,
                    gsd_m=gsd,
                    image_size=size,
                    templates=variants[k % len(variants)],
                )
            except Exception as exc:  # an invisible focus (grounded) or an int too large
                made = type(exc)
            out.append((made, rng.bit_generator.state))
        return out

    fast = write_all()
    for name, reference in [
        ("_relations", _ref_relations),
        ("_group_counts", _ref_group_counts),
        ("_finish", _ref_finish),
        ("_position", _ref_position),
        ("_attribute_text", _ref_attribute_text),
    ]:
        monkeypatch.setattr(osm_captions, name, reference)
    assert write_all() == fast
    assert sum(isinstance(m, dict) and m["grounded"] is not None for m, _ in fast) > 100


def test_other_boxes_stand_for_the_objects_boxes(table: TagTable) -> None:
    """Tags plus ``other_boxes`` (a list, or an array) write what the objects do."""
    known = _KNOWN[::5]
    gen = np.random.default_rng(17)

    def write(seed, focus, objects, **extra):
        rng = np.random.default_rng(seed)
        try:
            made = make_captions(
                STYLES, focus, objects, table, rng, gsd_m=0.3, image_size=(16, 16), **extra
            )
        except ValueError as exc:
            made = str(exc)
        return made, rng.bit_generator.state

    for _ in range(300):
        focus, others = _random_tile(gen, known, numeric=True)
        kinds = [table.main_rule(o.tags, 0.3) for o in others]
        seed = int(gen.integers(1 << 31))
        want = write(seed, focus, others)  # kinds looked up, boxes read from the objects
        # the focus itself stays in the list, to be left out as before
        as_tags = [o if o is focus else o.tags for o in others]
        boxes = [o.bbox_xyxy for o in others]
        array = np.array(boxes, dtype=np.float64).reshape(len(others), 4)
        for other_boxes in (boxes, array, array.astype(object)):  # objects: read row by row
            assert write(seed, focus, as_tags, other_kinds=kinds, other_boxes=other_boxes) == want


def test_other_boxes_must_match_the_objects(table: TagTable, first_only) -> None:
    focus = TileObject({"building": "yes"}, box(0, 0, 10, 10))
    others = [{"highway": "service"}, {"natural": "tree"}]
    with pytest.raises(ValueError, match="other_boxes has 1 boxes for 2 others"):
        make_captions(STYLES, focus, others, table, rng(), other_boxes=[box(0, 0, 1, 1)])
    with pytest.raises(ValueError, match=r"shape \(2, 3\) for 2 others; expected \(2, 4\)"):
        make_captions(STYLES, focus, others, table, rng(), other_boxes=np.zeros((2, 3)))
    boxes = [box(2, 2, 4, 4), box(20, 0, 21, 1)]
    made = make_captions(
        ("grounded",), focus, others, table, rng(), other_boxes=boxes, templates=first_only
    )
    assert made["grounded"].text == (
        "a satellite image of a building, containing a service road, next to a tree"
    )
