"""Reading OSM objects (pyosmium, GeoJSON, Overpass) and the partitioned GeoParquet extract."""

from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from terrascribe.sources.osm import (
    OsmError,
    ReadStats,
    cell_name,
    extract_osm,
    is_area,
    read_features,
    read_osm,
    read_osm_geojson,
    read_parquet_features,
    restore_keys,
    visible_feature_keys,
    visible_tag_filter,
)
from terrascribe.sources.overpass import OverpassClient, OverpassError, build_query

# A tiny region near (10.0, 50.0): 1e-4 degrees is about 11 m north-south, 7 m east-west.
ODD_NAME = "Café ☕ «Ωμέγα» מַיִם \u200d🏠"
TINY_OSM = f"""<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6" generator="test">
  <node id="1" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0000" lon="10.0000"/>
  <node id="2" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0000" lon="10.0010"/>
  <node id="3" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0010" lon="10.0010"/>
  <node id="4" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0010" lon="10.0000"/>
  <node id="5" version="3" timestamp="2021-06-01T12:00:00Z" lat="50.0005" lon="10.0005">
    <tag k="natural" v="tree"/>
  </node>
  <node id="6" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0020" lon="10.0000"/>
  <node id="7" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0020" lon="10.0030"/>
  <node id="8" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0030" lon="10.0000"/>
  <node id="9" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0030" lon="10.0010"/>
  <node id="10" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0040" lon="10.0000"/>
  <node id="11" version="1" timestamp="2015-01-01T00:00:00Z" lat="50.0040" lon="10.0010"/>
  <node id="20" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9900" lon="9.9900"/>
  <node id="21" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9900" lon="9.9950"/>
  <node id="22" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9950" lon="9.9950"/>
  <node id="23" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9950" lon="9.9900"/>
  <node id="24" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9920" lon="9.9920"/>
  <node id="25" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9920" lon="9.9930"/>
  <node id="26" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9930" lon="9.9930"/>
  <node id="27" version="1" timestamp="2015-01-01T00:00:00Z" lat="49.9930" lon="9.9920"/>
  <way id="100" version="2" timestamp="2018-03-04T05:06:07Z">
    <nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/>
    <tag k="building" v="yes"/><tag k="roof:shape" v="hipped"/><tag k="name" v="{ODD_NAME}"/>
  </way>
  <way id="101" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="6"/><nd ref="7"/>
    <tag k="highway" v="residential"/>
  </way>
  <way id="102" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="8"/><nd ref="11"/><nd ref="9"/><nd ref="10"/><nd ref="8"/>
    <tag k="building" v="garage"/>
  </way>
  <way id="103" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="6"/><nd ref="7"/><nd ref="999"/><nd ref="998"/>
    <tag k="highway" v="track"/>
  </way>
  <way id="104" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="1"/><nd ref="999"/><nd ref="3"/><nd ref="1"/>
    <tag k="landuse" v="grass"/>
  </way>
  <way id="105" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/>
    <tag k="highway" v="residential"/><tag k="junction" v="roundabout"/>
  </way>
  <way id="106" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="20"/><nd ref="21"/><nd ref="22"/><nd ref="23"/><nd ref="20"/>
  </way>
  <way id="107" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="24"/><nd ref="25"/><nd ref="26"/><nd ref="27"/><nd ref="24"/>
  </way>
  <way id="108" version="1" timestamp="2015-01-01T00:00:00Z">
    <nd ref="6"/><nd ref="7"/>
  </way>
  <relation id="500" version="4" timestamp="2019-09-09T09:09:09Z">
    <member type="way" ref="106" role="outer"/>
    <member type="way" ref="107" role="inner"/>
    <tag k="type" v="multipolygon"/><tag k="landuse" v="forest"/>
  </relation>
</osm>
"""


@pytest.fixture()
def tiny_osm(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.osm"
    path.write_text(TINY_OSM, encoding="utf-8")
    return path


def _to_pbf(src: Path, dst: Path) -> Path:
    import osmium

    with osmium.SimpleWriter(str(dst)) as writer:
        for obj in osmium.FileProcessor(str(src)):
            writer.add(obj)
    return dst


def test_reads_points_lines_polygons_and_relation_areas(tiny_osm: Path):
    stats = ReadStats()
    objs = {o.ref: o for o in read_osm(tiny_osm, stats=stats)}
    assert set(objs) == {"n5", "w100", "w101", "w102", "w103", "w105", "r500"}
    assert objs["n5"].kind == "point" and objs["n5"].timestamp == "2021-06-01T12:00:00Z"
    assert objs["n5"].version == 3
    building = objs["w100"]
    assert building.kind == "polygon" and building.tags["roof:shape"] == "hipped"
    assert building.area_m2 == pytest.approx(71.6 * 111.2, rel=0.03)  # ~72 m x 111 m
    assert building.tags["name"] == ODD_NAME  # odd Unicode survives the round trip
    assert objs["w101"].kind == "line" and objs["w101"].length_m == pytest.approx(214.6, rel=0.02)
    assert objs["w105"].kind == "line", "a closed roundabout is a road, not an area"
    forest = objs["r500"]
    assert forest.osm_type == "relation" and forest.kind == "polygon"
    assert forest.geometry.geom_type == "Polygon" and len(forest.geometry.interiors) == 1
    # Clipped extract: the track keeps its known nodes, the polygon with a hole is dropped.
    assert objs["w103"].note and "partial" in objs["w103"].note
    assert len(objs["w103"].geometry.coords) == 2
    assert stats.dropped["polygon with missing nodes"] == 1
    assert stats.kept["way"] == 5


def test_self_intersecting_polygon_is_repaired_and_noted(tiny_osm: Path):
    garage = next(o for o in read_osm(tiny_osm) if o.ref == "w102")
    assert garage.geometry.is_valid
    assert garage.note is not None and "Self-intersection" in garage.note
    assert garage.area_m2 > 0


def test_keep_predicate_and_key_prefilter(tiny_osm: Path):
    only_buildings = [o.ref for o in read_osm(tiny_osm, keep=lambda t: "building" in t)]
    assert only_buildings == ["w100", "w102"]
    highways = sorted(o.ref for o in read_osm(tiny_osm, keys=["highway"]))
    assert highways == ["w101", "w103", "w105"]


def test_visible_filter_brings_its_key_prefilter(tiny_osm: Path):
    from terrascribe.text.osm_tags import TagTable

    table = TagTable.load()
    keep = visible_tag_filter(table)
    assert keep.prefilter_keys == visible_feature_keys(table)
    implicit = [(o.ref, o.geometry.wkb, o.area_m2) for o in read_osm(tiny_osm, keep=keep)]
    explicit = read_osm(tiny_osm, keep=keep, keys=visible_feature_keys(table))
    assert implicit == [(o.ref, o.geometry.wkb, o.area_m2) for o in explicit]


def test_batches_give_the_same_objects_at_any_size(tiny_osm: Path):
    from terrascribe.sources.osm import _read_osm_columns

    def seen(batch_size: int) -> list[tuple]:
        stats = ReadStats()
        out = [
            (o.ref, o.timestamp, o.geometry.wkb, o.area_m2, o.length_m, o.note, o.tags)
            for batch in _read_osm_columns(tiny_osm, stats=stats, batch_size=batch_size)
            for o in batch.objects()
        ]
        return [*out, stats.to_dict()]

    assert seen(1) == seen(2) == seen(4096)


def test_pbf_and_bz2_read_the_same(tiny_osm: Path, tmp_path: Path):
    pbf = _to_pbf(tiny_osm, tmp_path / "tiny.osm.pbf")
    bz = tmp_path / "tiny.osm.bz2"
    bz.write_bytes(bz2.compress(tiny_osm.read_bytes()))
    want = sorted((o.ref, o.geometry.wkt) for o in read_osm(tiny_osm))
    assert sorted((o.ref, o.geometry.wkt) for o in read_osm(pbf)) == want
    assert sorted((o.ref, o.geometry.wkt) for o in read_osm(bz)) == want
    # The on-disk node index gives the same objects as the in-memory one.
    idx = f"sparse_file_array,{tmp_path / 'nodes.idx'}"
    assert sorted((o.ref, o.geometry.wkt) for o in read_osm(pbf, index=idx)) == want


def test_truncated_pbf_names_the_file(tiny_osm: Path, tmp_path: Path):
    pbf = _to_pbf(tiny_osm, tmp_path / "tiny.osm.pbf")
    data = pbf.read_bytes()
    broken = tmp_path / "broken.osm.pbf"
    broken.write_bytes(data[: len(data) - 40])
    with pytest.raises(OsmError, match=r"broken\.osm\.pbf.*truncated or corrupt"):
        list(read_osm(broken))
    with pytest.raises(OsmError, match="no such OSM file"):
        list(read_osm(tmp_path / "missing.osm.pbf"))
    with pytest.raises(OsmError, match="unknown OSM input"):
        (tmp_path / "tiny.txt").write_text("x")
        read_features(tmp_path / "tiny.txt")


def test_area_rule_for_closed_ways():
    assert is_area({"building": "yes"})
    assert is_area({"landuse": "grass"})
    assert not is_area({"highway": "residential"})
    assert is_area({"highway": "pedestrian", "area": "yes"})
    assert not is_area({"natural": "coastline"})
    assert not is_area({"building": "yes", "area": "no"})
    assert is_area({"railway": "platform", "name": "Pasila"})
    assert not is_area({"man_made": "pier", "building": "yes"})


def test_area_rule_with_conflicting_linear_keys_does_not_depend_on_the_hash_seed():
    # highway comes before railway in the rule's fixed order, whatever PYTHONHASHSEED is.
    code = "from terrascribe.sources.osm import is_area; "
    code += "print(is_area({'railway': 'platform', 'highway': 'footway'}))"
    answers = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in range(4)
    }
    assert answers == {"False"}


def test_geojson_features_merge_pieces_and_restore_truncated_keys(tmp_path: Path):
    piece = {"@id": 7, "@type": "way", "@version": 2, "@timestamp": 1452767879}
    features = [
        {
            "type": "Feature",
            "properties": {**piece, "natural": "beach", "admin_leve": None, "protect_cl": "97"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [0.001, 0], [0.001, 0.001], [0, 0]]],
            },
        },
        {
            "type": "Feature",
            "properties": {**piece, "natural": "beach"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0.001, 0], [0.002, 0], [0.002, 0.001], [0.001, 0]]],
            },
        },
        {
            "type": "Feature",
            "properties": {"@id": 8, "@type": "node", "@timestamp": 0, "created_by": "JOSM"},
            "geometry": {"type": "Point", "coordinates": [0.0005, 0.0005]},
        },
    ]
    path = tmp_path / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    objs = {o.ref: o for o in read_osm_geojson(path)}
    beach = objs["w7"]
    assert beach.tags == {"natural": "beach", "protect_class": "97"}
    assert beach.timestamp == "2016-01-14T10:37:59Z" and beach.version == 2
    assert beach.area_m2 == pytest.approx(2 * 0.5 * 111.3**2, rel=0.02)
    assert objs["n8"].timestamp is None
    assert restore_keys({"name_en": "x", "name:en": "y"}) == {"name:en": "y"}
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(OsmError, match=r"bad\.geojson: cannot read GeoJSON"):
        list(read_osm_geojson(bad))
    # Features without a usable geometry are counted and skipped, never fatal.
    broken = [
        {"properties": {"@id": 1, "@type": "node", "natural": "tree"}, "geometry": None},
        {
            "properties": {"@id": 2, "@type": "way", "building": "yes"},
            "geometry": {"type": "Polygon", "coordinates": "nonsense"},
        },
        features[2],
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": broken}))
    stats = ReadStats()
    assert [o.ref for o in read_osm_geojson(path, stats=stats)] == ["n8"]
    assert stats.dropped == {"bad geometry": 2} and stats.kept == {"node": 1}
    no_id = tmp_path / "noid.geojson"
    no_id.write_text(json.dumps({"type": "FeatureCollection", "features": [{"properties": {}}]}))
    with pytest.raises(OsmError, match="feature 0 has no '@type'"):
        list(read_osm_geojson(no_id))


def test_extract_writes_partitioned_geoparquet_and_resumes(tiny_osm: Path, tmp_path: Path):
    out = tmp_path / "features"
    result = extract_osm(tiny_osm, out, cell_deg=0.005, rows_in_memory=2, progress=False)
    assert result.objects == 7
    parts = sorted(out.glob("cell=*/part-*.parquet"))
    assert len(parts) == result.parts >= 3  # bounded buffer: flushed in small parts
    assert {p.parent.name for p in parts} >= {"cell=E010p000N50p000", "cell=E009p990N49p990"}
    meta = json.loads(pq.read_schema(parts[0]).metadata[b"geo"])
    assert meta["primary_column"] == "geometry" and meta["columns"]["geometry"]["encoding"] == "WKB"
    back = {o.ref: o for o in read_parquet_features(out)}
    assert set(back) == {"n5", "w100", "w101", "w102", "w103", "w105", "r500"}
    assert back["w100"].tags["name"] == ODD_NAME
    near_forest = {o.ref for o in read_parquet_features(out, bbox=(9.989, 49.989, 9.996, 49.996))}
    assert near_forest == {"r500"}
    # Re-running is a no-op; another source into the same folder is refused.
    again = extract_osm(tiny_osm, out, cell_deg=0.005, progress=False)
    assert again.objects == 7
    other = tmp_path / "other.osm"
    other.write_text(TINY_OSM.replace("garage", "shed"))
    with pytest.raises(OsmError, match="another source"):
        extract_osm(other, out, cell_deg=0.005, progress=False)


def test_extract_progress_bar_on_stderr_and_rich_only_when_shown(tiny_osm: Path, tmp_path: Path):
    code = (
        "import sys; from terrascribe.sources.osm import extract_osm; "
        "extract_osm(sys.argv[1], sys.argv[2], cell_deg=0.005, progress=sys.argv[3] == 'on'); "
        "print('rich.progress' in sys.modules)"
    )

    def run(flag: str) -> subprocess.CompletedProcess:
        out = str(tmp_path / f"features-{flag}")
        args = [sys.executable, "-c", code, str(tiny_osm), out, flag]
        return subprocess.run(args, capture_output=True, text=True, check=True)

    quiet, shown = run("off"), run("on")
    assert quiet.stdout.strip() == "False" and "extract OSM" not in quiet.stderr
    assert shown.stdout.strip() == "True" and "extract OSM" in shown.stderr


def test_cell_names():
    assert cell_name(24.94, 60.17, 1.0) == "E024N60"
    assert cell_name(-9.45, 38.85, 1.0) == "W010N38"
    assert cell_name(151.2, -33.9, 1.0) == "E151S34"


def test_overpass_query_builder():
    q = build_query((10.0, 50.0, 10.1, 50.1), keys=["building", "highway"])
    assert "[bbox:50.0,10.0,50.1,10.1]" in q and 'way["building"];' in q and "out meta;" in q
    assert '[~"."~"."]' in build_query((10.0, 50.0, 10.1, 50.1))
    with pytest.raises(ValueError, match="bbox"):
        build_query((10.1, 50.0, 10.0, 50.1))
    with pytest.raises(ValueError, match="cannot be quoted"):
        build_query((10.0, 50.0, 10.1, 50.1), keys=['bad"key'])


def test_overpass_client_retries_caches_and_reports(httpserver, tmp_path: Path):
    url = httpserver.url_for("/api/interpreter")
    httpserver.expect_ordered_request("/api/interpreter", method="POST").respond_with_data(
        "busy", status=503
    )
    httpserver.expect_ordered_request("/api/interpreter", method="POST").respond_with_data(
        TINY_OSM, content_type="application/osm3s+xml"
    )
    client = OverpassClient(url, cache_dir=tmp_path / "cache", retries=2, backoff_s=0.01)
    path = client.download((9.98, 49.98, 10.01, 50.01), tmp_path / "area.osm")
    assert {o.ref for o in read_osm(path)} >= {"w100", "r500"}
    assert len(httpserver.log) == 2
    client.download((9.98, 49.98, 10.01, 50.01), tmp_path / "again.osm")
    assert len(httpserver.log) == 2, "the second identical query must come from the cache"

    httpserver.clear()
    httpserver.expect_request("/api/interpreter").respond_with_data("bad query", status=400)
    with pytest.raises(OverpassError, match="HTTP 400: bad query"):
        OverpassClient(url, retries=0).fetch("nonsense")
    httpserver.clear()
    httpserver.expect_request("/api/interpreter").respond_with_data("x", status=429)
    with pytest.raises(OverpassError, match=r"after 2 attempts \(HTTP 429\)"):
        OverpassClient(url, retries=1, backoff_s=0.01).fetch("q")


def test_overpass_client_refuses_answers_that_are_not_whole_osm(httpserver, tmp_path: Path):
    url = httpserver.url_for("/api/interpreter")
    client = OverpassClient(url, cache_dir=tmp_path / "cache", retries=0)
    # A busy server can answer 200 with an HTML error page.
    busy = "<html><body><p>Error: runtime error: the server is probably too busy</p></body></html>"
    httpserver.expect_request("/api/interpreter").respond_with_data(busy)
    with pytest.raises(OverpassError, match="answer is not OSM XML"):
        client.fetch("q")
    # A query stopped midway still answers 200 with well-formed XML: what came, and a remark.
    httpserver.clear()
    timed_out = TINY_OSM.replace(
        "</osm>",
        '<remark> runtime error: Query timed out in "query" at line 3 after 181 seconds. '
        "</remark>\n</osm>",
    )
    httpserver.expect_request("/api/interpreter").respond_with_data(timed_out)
    with pytest.raises(OverpassError, match=r"incomplete.*Query timed out in \"query\" at line 3"):
        client.download((9.98, 49.98, 10.01, 50.01), tmp_path / "area.osm")
    assert not (tmp_path / "area.osm").exists()
    assert not list((tmp_path / "cache").glob("*")), "a failed answer is never cached"
    # An incomplete answer cached by an older version is fetched again, not served.
    query = build_query((9.98, 49.98, 10.01, 50.01), None)
    stale = client.cache_path(query)
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text(timed_out)
    httpserver.clear()
    httpserver.expect_request("/api/interpreter").respond_with_data(TINY_OSM)
    assert client.fetch(query) == TINY_OSM.encode()
    assert len(httpserver.log) == 1 and stale.read_text() == TINY_OSM


def test_overpass_client_retries_connection_errors(tmp_path: Path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OverpassClient(f"http://127.0.0.1:{port}/api/interpreter", retries=1, backoff_s=0.01)
    with pytest.raises(OverpassError, match=r"after 2 attempts \(ConnectError"):
        client.fetch("q")


@pytest.mark.real_data
def test_real_pbfs_match_the_data_card(shared_data: Path):
    # Tagged ways per key (data card): Monaco is referentially complete, so counts match exactly.
    # Helsinki and Kotka are clipped: lines keep their known nodes, but polygons cut by the
    # extract edge are dropped (e.g. Kotka keeps 35 of 54 landuse areas, most are large).
    card = {
        "monaco-latest": {"highway": 1951, "building": 1144, "landuse": 13, "natural": 222},
        "Helsinki": {"highway": 2650, "building": 433, "landuse": 245, "natural": 99},
        "kotka": {"highway": 343, "building": 2219, "landuse": 54, "natural": 14},
    }
    for name, want in card.items():
        counts: Counter[str] = Counter()
        for obj in read_osm(shared_data / "osm" / f"{name}.osm.pbf"):
            if obj.osm_type == "way":
                counts.update(k for k in want if k in obj.tags)
        for key, n in want.items():
            if name == "monaco-latest":
                assert counts[key] == n, (name, key)
            else:
                assert 0.6 * n <= counts[key] <= n, (name, key, counts[key])
