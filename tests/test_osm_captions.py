"""Captions from OSM tags: SkyScript's two styles, grounded counts, English, determinism."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
