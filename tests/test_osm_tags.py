"""The OSM tag table: the reviewer's checks on the packaged data, lookups, visibility, errors."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from terrascribe.text.osm_tags import (
    COLUMNS,
    GSD_LEVELS,
    ROLES,
    TagRule,
    TagTable,
    TagTableError,
    clean_text,
    colour_name,
)

DATA = Path(__file__).resolve().parents[1] / "src" / "terrascribe" / "text" / "data"


@pytest.fixture(scope="module")
def table() -> TagTable:
    return TagTable.load()


@pytest.fixture(scope="module")
def raw_rows() -> list[dict[str, str]]:
    with open(DATA / "osm_tags.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- the reviewer's check on the packaged table --------------------------------------------------


def test_packaged_table_is_versioned_and_large(table: TagTable) -> None:
    meta = json.loads((DATA / "osm_tags.meta.json").read_text(encoding="utf-8"))
    assert table.version == meta["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", table.version)
    exact = [r for r in table.rules if not r.is_key_rule]
    assert len(exact) >= 400, "the table promises at least 400 key=value rows"
    assert len(table) > len(exact), "key-level rules are present"
    assert len(table.fingerprint) == 16


def test_every_row_is_well_formed(raw_rows: list[dict[str, str]]) -> None:
    assert list(raw_rows[0].keys()) == list(COLUMNS)
    seen: set[tuple[str, str]] = set()
    for line, row in enumerate(raw_rows, start=2):
        where = f"osm_tags.csv:{line} {row['key']}={row['value']}"
        assert None not in row.values() and None not in row, where
        ident = (row["key"], row["value"])
        assert ident not in seen, f"duplicate {where}"
        seen.add(ident)
        assert row["key"] == row["key"].strip() and row["key"], where
        assert row["visible"] in ("true", "false"), where
        assert row["role"] in ROLES, where
        assert row["category"], where
        assert 0 <= int(row["priority"]) <= 100, where
        if row["visible"] == "true":
            assert float(row["max_gsd_m"]) in GSD_LEVELS, where
            assert row["phrase"].strip(), where
            # phrases are lower case English (proper nouns never come from tags)
            assert row["phrase"] == row["phrase"].strip(), where
            assert not re.search(r"[A-Z_;]", row["phrase"]), where
            assert row["role"] != "hide", where
        else:
            assert row["max_gsd_m"] == "" and row["phrase"] == "", where
        assert row["plural"] in ("", "-") or row["plural"].strip() == row["plural"], where


def test_applies_to_names_keys_the_table_knows(table: TagTable) -> None:
    keys = {r.key for r in table.rules}
    for rule in table.rules:
        for cond in rule.applies_to:
            assert cond.partition("=")[0] in keys, f"{rule.tag}: applies_to {cond!r}"


def test_invisible_rules_have_no_priority(table: TagTable) -> None:
    # Hide rows and invisible rows never compete for "main feature".
    for rule in table.rules:
        if not rule.visible:
            assert rule.priority == 0, rule.tag


@pytest.mark.parametrize(
    ("key", "value", "gsd"),
    [
        ("building", "yes", 1.0),
        ("natural", "water", 10.0),
        ("highway", "footway", 0.6),
        ("roof:shape", "hipped", 0.6),
        ("power", "pole", 0.2),
        ("natural", "tree", 0.6),
        ("tourism", "camp_site", 1.0),
        ("tourism", "caravan_site", 1.0),
        ("historic", "ruins", 1.0),
        ("aeroway", "runway", 10.0),
        ("amenity", "parking", 1.0),
    ],
)
def test_anchor_tags(table: TagTable, key: str, value: str, gsd: float) -> None:
    rule = table.lookup(key, value)
    assert rule is not None and rule.visible and rule.max_gsd_m == gsd


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "Kauppatori"),
        ("name:fi", "Kauppatori"),
        ("addr:street", "Main St"),
        ("addr:housenumber", "12"),
        ("source", "survey"),
        ("source:geometry", "bing"),
        ("ref", "A1"),
        ("opening_hours", "Mo-Fr 09:00-17:00"),
        ("phone", "+358"),
        ("website", "https://example.org"),
        ("wikidata", "Q1"),
        ("brand:wikidata", "Q2"),
        ("note", "x"),
        ("fixme", "x"),
        ("created_by", "JOSM"),
        ("operator", "HSL"),
        ("brand", "Shell"),
        ("oneway", "yes"),
        ("shop", "supermarket"),
        ("shop", "never_seen_value"),
        ("tourism", "museum"),
        ("boundary", "administrative"),
        ("place", "city"),
    ],
)
def test_invisible_tags(table: TagTable, key: str, value: str) -> None:
    rule = table.lookup(key, value)
    assert rule is not None, f"{key}={value} should be covered by a rule"
    assert not rule.visible


# --- lookups -------------------------------------------------------------------------------------


def test_exact_row_beats_key_rule(table: TagTable) -> None:
    assert table.lookup("building", "house").phrase == "house"
    fallback = table.lookup("building", "some_new_kind")
    assert fallback.is_key_rule and fallback.visible and fallback.phrase == "building"
    assert table.lookup("no_such_key_xyz", "1") is None
    assert table.lookup("", "yes") is None


def test_patterns_most_specific_first(table: TagTable) -> None:
    assert table.lookup("addr:city", "Kotka").key == "addr:*"
    assert table.lookup("name:sv", "Helsingfors").key == "name:*"
    assert table.lookup("subject:wikidata", "Q1").key in ("subject:*", "*:wikidata")
    assert table.key_rule("disused:amenity").key == "disused:*"


def test_value_variants(table: TagTable) -> None:
    assert table.lookup("building", "Yes").phrase == "building"
    assert table.lookup("surface", "asphalt;concrete").phrase == "asphalt surface"
    assert table.lookup("lanes", "2;3").phrase == "2 lanes"


def test_odd_unicode_is_normalised(table: TagTable) -> None:
    assert clean_text("a\u200bb\x00c\u00a0d\u202e") == "abc d"
    assert clean_text("ｂｕｉｌｄｉｎｇ") == "building"  # fullwidth -> NFKC
    assert table.lookup("buil\u200bding", " yes\x07 ").phrase == "building"
    assert table.visible_rules({"\ufeffhighway": "residential\u200e"})[0].phrase == (
        "residential road"
    )


def test_placeholders_bind_to_values(table: TagTable) -> None:
    assert table.lookup("lanes", "1").phrase == "1 lane"
    assert table.lookup("lanes", "4").phrase == "4 lanes"
    for bad in ("yes", "0", "-2", "99", "two"):
        rule = table.lookup("lanes", bad)
        assert rule is not None and not rule.visible and rule.phrase == ""
    assert table.lookup("roof:colour", "#ff1010").phrase == "red roof"
    assert table.lookup("roof:colour", "Gray").phrase == "grey roof"
    assert not table.lookup("roof:colour", "weathered").visible
    assert colour_name("#fff") == "white"
    assert colour_name("not a colour") is None


# --- visibility of objects -----------------------------------------------------------------------


def test_visible_rules_main_feature_then_attributes(table: TagTable) -> None:
    tags = {"building": "yes", "roof:shape": "hipped", "name": "X", "addr:street": "Y"}
    assert [r.tag for r in table.visible_rules(tags, 0.5)] == ["building=yes", "roof:shape=hipped"]
    # The roof shape needs 0.6 m: at 1 m only the building remains.
    assert [r.tag for r in table.visible_rules(tags, 1.0)] == ["building=yes"]
    assert table.visible_rules(tags, 10.0) == []
    assert table.max_gsd(tags) == 1.0


def test_priority_picks_the_main_feature(table: TagTable) -> None:
    rules = table.visible_rules({"building": "yes", "amenity": "school", "roof:shape": "flat"})
    assert [r.phrase for r in rules] == ["school", "flat roof", "building"]
    lake = table.visible_rules({"natural": "water", "water": "lake"})
    assert lake[0].phrase == "lake"
    church = table.visible_rules({"building": "church", "amenity": "place_of_worship"})
    assert church[0].phrase == "church"


def test_hide_tags_make_objects_invisible(table: TagTable) -> None:
    assert table.visible_rules({"highway": "residential", "tunnel": "yes"}) == []
    assert table.max_gsd({"highway": "residential", "tunnel": "yes"}) is None
    assert table.visible_rules({"highway": "residential", "tunnel": "no"})[0].phrase == (
        "residential road"
    )
    assert table.visible_rules({"amenity": "parking", "parking": "underground"}) == []
    # "crossing=unmarked" only hides crossings, never the road it is misplaced on
    assert table.visible_rules({"highway": "crossing", "crossing": "unmarked"}) == []


def test_applies_to_limits_attributes(table: TagTable) -> None:
    assert [r.phrase for r in table.visible_rules({"leisure": "pitch", "sport": "soccer"})] == [
        "sports pitch",
        "for soccer",
    ]
    # A roof shape on a road, or a sport on a shop, describes nothing visible.
    road = table.visible_rules({"highway": "service", "roof:shape": "flat"})
    assert [r.phrase for r in road] == ["service road"]
    assert table.visible_rules({"sport": "soccer"}) == []
    assert table.visible_rules({"surface": "asphalt"}) == []


def test_max_gsd_is_the_coarsest_feature(table: TagTable) -> None:
    assert table.max_gsd({"power": "pole"}) == 0.2
    assert table.max_gsd({"natural": "water", "name": "Lake"}) == 10.0
    assert table.max_gsd({"name": "Nothing to see"}) is None
    assert table.max_gsd({}) is None
    assert table.main_rule({"power": "pole"}, gsd_m=0.6) is None


def test_unknown_tags(table: TagTable) -> None:
    assert table.unknown_tags({"building": "yes", "zz_unknown": "1"}) == [("zz_unknown", "1")]


# --- round trips and errors ----------------------------------------------------------------------


def test_csv_round_trip(table: TagTable) -> None:
    again = TagTable.from_csv(table.to_csv(), version=table.version)
    assert again.rules == table.rules
    assert again.fingerprint == table.fingerprint


def test_from_rules_later_rules_win() -> None:
    a = TagRule("k", "v", True, 1.0, "thing")
    b = TagRule("k", "v", False, None, "")
    assert TagTable.from_rules([a, b]).lookup("k", "v") == b


def test_custom_table_with_sibling_meta(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("key,value,visible,max_gsd_m,phrase,category\nfoo,bar,true,1,foo bar,x\n")
    (tmp_path / "mine.meta.json").write_text(json.dumps({"version": "9.9"}))
    table = TagTable.load(path)
    assert table.version == "9.9" and table.lookup("foo", "bar").phrase == "foo bar"
    assert table.lookup("foo", "bar").role == "feature"


HEADER = "key,value,visible,max_gsd_m,phrase,category\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,b,maybe,1,x,c\n", "visible must be true or false"),
        ("a,b,true,0.5,x,c\n", "not one of"),
        ("a,b,true,abc,x,c\n", "not a number"),
        ("a,b,true,1,,c\n", "needs max_gsd_m and a phrase"),
        ("a,b,false,1,,c\n", "invisible tag has no max_gsd_m"),
        ("a,b,true,1,x,c\na,b,true,1,y,c\n", "duplicate row a=b"),
        (",b,true,1,x,c\n", "empty key or value"),
        ("a,b,true,1,x,c,extra\n", "more fields than columns"),
        ("a,b,true,1,{what} thing,c\n", "unknown placeholder"),
        ("a,b,true,1,{n} things,c\n", "only allowed in key-level rules"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + body)
    with pytest.raises(TagTableError, match=re.escape(message)) as info:
        TagTable.load(path)
    assert str(path) in str(info.value)
    assert re.search(r"bad\.csv:\d+", str(info.value))


def test_bad_role_and_priority(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER.strip() + ",role\n" + "a,b,true,1,x,c,boss\n")
    with pytest.raises(TagTableError, match="role must be one of"):
        TagTable.load(path)
    path.write_text(HEADER.strip() + ",role,priority\n" + "a,b,false,,,c,hide,high\n")
    with pytest.raises(TagTableError, match="priority must be an integer"):
        TagTable.load(path)
    path.write_text(HEADER.strip() + ",role\n" + "a,b,true,1,x,c,hide\n")
    with pytest.raises(TagTableError, match="hide rule is not itself visible"):
        TagTable.load(path)


def test_missing_columns_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("key,value\na,b\n")
    with pytest.raises(TagTableError, match=r"missing column\(s\)"):
        TagTable.load(path)
    with pytest.raises(TagTableError, match="not found"):
        TagTable.load(tmp_path / "absent.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "a,b,true,1,caf\xe9,c\n".encode("latin-1"))
    with pytest.raises(TagTableError, match="not UTF-8"):
        TagTable.load(latin)
    meta_bad = tmp_path / "m.csv"
    meta_bad.write_text(HEADER + "a,b,true,1,x,c\n")
    (tmp_path / "m.meta.json").write_text("{not json")
    with pytest.raises(TagTableError, match="invalid metadata"):
        TagTable.load(meta_bad)


def test_to_csv_is_parseable_csv(table: TagTable) -> None:
    rows = list(csv.reader(io.StringIO(table.to_csv())))
    assert rows[0][-1] == "source" and len(rows) == len(table) + 1


# --- caches and the fast path must not change answers ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "building",
        "  two  spaces  ",
        "yes ",
        " x",
        "a\tb",
        "Zürich",
        "x\u200by",
        "\u00a0nbsp",
        "",
        "~!",
    ],
)
def test_clean_text_fast_path_matches_the_unicode_path(text: str) -> None:
    from terrascribe.text.osm_tags import _clean_unicode

    assert clean_text(text) == _clean_unicode(text)


def test_cached_answers_equal_fresh_ones_and_cannot_be_mutated(table: TagTable) -> None:
    tags = {"building": "yes", "roof:shape": "hipped", "name": "Caf\u00e9"}
    fresh = TagTable.from_rules(table.rules)
    first = table.visible_rules(tags, 0.5)
    first.append(first[0])  # a caller mutating the returned list must not touch the cache
    assert table.visible_rules(tags, 0.5) == fresh.visible_rules(tags, 0.5)
    assert table.max_gsd(tags) == fresh.max_gsd(tags)
    assert table.lookup("lanes", "2") == fresh.lookup("lanes", "2")
    # unhashable values are answered, uncached
    assert table.visible_rules({"building": ["yes"]}) == fresh.visible_rules({"building": ["yes"]})
