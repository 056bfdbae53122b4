"""Queries: text/image/near, filters, outputs (table, GeoJSON, contact sheet), CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from terrascribe.search.index import SearchIndex, SearchIndexError, build_index
from terrascribe.search.query import QueryError, parse_bbox, parse_date_range, search


@pytest.fixture(scope="module")
def index(sample_region, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "idx"
    build_index([sample_region.geotiff], tiny_model, out, tile_px=64, gsd_m=1.0, progress=False)
    return SearchIndex(out)


def test_text_search_ranks_by_exact_cosine(index, tiny_model):
    from terrascribe.models.encode import encode_texts

    res = search(index, "houses with gardens", k=5, model=tiny_model)
    assert [h.rank for h in res] == [1, 2, 3, 4, 5]
    scores = [h.score for h in res]
    assert scores == sorted(scores, reverse=True)
    q = encode_texts(tiny_model, ["houses with gardens"], progress=False)[0]
    all_scores = np.stack([index.vector(i) for i in range(len(index))]) @ q
    assert [h.id for h in res] == np.argsort(-all_scores)[:5].tolist()
    assert scores[0] == pytest.approx(float(all_scores.max()), abs=1e-5)


def test_model_loaded_from_manifest_gives_same_hits(index, tiny_model):
    a = search(index, "a road", k=3)
    b = search(index, "a road", k=3, model=tiny_model)
    assert [h.id for h in a] == [h.id for h in b]


def test_image_and_near_queries(index, sample_region):
    from terrascribe.search.tiling import read_tile

    img = read_tile(index.row(5), 64)
    res = search(index, image=img, k=3)
    assert res.hits[0].id == 5 and res.hits[0].score > 0.99
    c = index.row(9)["geometry"].centroid
    res = search(index, near=(c.x, c.y), k=4)
    assert res.hits[0].id == 9 and res.hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_bbox_and_date_filters(index):
    row = index.row(3)
    w, s, e, n = row["geometry"].bounds
    inner = (w + 1e-6, s + 1e-6, e - 1e-6, n - 1e-6)
    res = search(index, "x", k=10, bbox=inner)
    ids = {h.id for h in res}
    assert 3 in ids and len(ids) <= 4  # the tile and at most its touching neighbours
    for h in res:
        hw, hs, he, hn = h.footprint.bounds
        assert he >= inner[0] and hw <= inner[2] and hn >= inner[1] and hs <= inner[3]
    assert len(search(index, "x", k=5, date_range=("2021-06-01", "2021-06-01"))) == 5
    assert len(search(index, "x", k=5, date_range="2022-01-01/..")) == 0
    assert len(search(index, "x", k=5, bbox=(0, 0, 1, 1))) == 0


def test_date_filter_excludes_tiles_of_unknown_date(index):
    from terrascribe.search.query import allowed_ids

    fresh = SearchIndex(index.path)
    fresh.tiles.loc[[0, 2], "date"] = None
    ids = allowed_ids(fresh, None, (None, "2030-01-01"))
    assert ids.tolist() == [i for i in range(len(fresh)) if i not in (0, 2)]
    assert allowed_ids(fresh, None, ("2021-06-01", "2021-06-01")).tolist() == ids.tolist()


def test_bad_queries(index):
    with pytest.raises(QueryError, match="exactly one"):
        search(index)
    with pytest.raises(QueryError, match="exactly one"):
        search(index, "a", near=(0, 0))
    with pytest.raises(QueryError, match="k must"):
        search(index, "a", k=0)
    with pytest.raises(QueryError, match="empty"):
        search(index, "   ")
    with pytest.raises(QueryError, match="bbox"):
        parse_bbox("1,2,3")
    with pytest.raises(QueryError, match="bbox must satisfy"):
        parse_bbox((10, 0, 5, 1))
    with pytest.raises(QueryError, match="YYYY-MM-DD"):
        parse_date_range(("2021-13-01", None))
    with pytest.raises(QueryError, match="starts after"):
        parse_date_range("2022-01-01/2021-01-01")
    with pytest.raises(QueryError, match="lon/lat"):
        search(index, near=(500, 0))


def test_wrong_model_refused(index):
    from terrascribe.models.zoo import load_model

    with pytest.raises(SearchIndexError, match="cannot be mixed"):
        search(index, "a", model=load_model("ts-tiny", seed=3))


def test_outputs(index, tmp_path):
    res = search(index, "trees", k=6)
    gj = res.write_geojson(tmp_path / "hits.geojson")
    data = json.loads(gj.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 6
    f = data["features"][0]
    assert f["geometry"]["type"] == "Polygon" and f["properties"]["rank"] == 1
    lon, lat = f["geometry"]["coordinates"][0][0]
    assert 14 < lon < 15 and 50 < lat < 51  # lon/lat order, the sample region in UTM 33N
    sheet = res.contact_sheet(index, tmp_path / "sheet.png", thumb_px=64, columns=3)
    img = Image.open(sheet)
    assert img.size[0] == 3 * 70 + 6 and img.size[1] > 2 * 64
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 20  # real thumbnails
    from rich.console import Console

    console = Console(record=True, width=150)
    console.print(res.to_table())
    assert "region" in console.export_text()
    assert len(res.to_frame()) == 6


def test_cli_build_search_info(sample_region, tmp_path):
    from terrascribe.cli import app

    runner = CliRunner()
    out = tmp_path / "cli-idx"
    r = runner.invoke(
        app,
        [
            "index",
            "build",
            str(sample_region.geotiff),
            "--out",
            str(out),
            "--tile-px",
            "64",
            "--gsd",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "search",
            str(out),
            "a house",
            "-k",
            "3",
            "--json",
            "--geojson",
            str(tmp_path / "h.geojson"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert [h["rank"] for h in json.loads(r.stdout)] == [1, 2, 3]
    assert (tmp_path / "h.geojson").exists()
    r = runner.invoke(app, ["index", "info", str(out), "--json"])
    assert json.loads(r.stdout)["count"] == 16
    r = runner.invoke(app, ["search", str(out)])
    assert r.exit_code == 1 and "exactly one" in r.output
    r = runner.invoke(
        app, ["index", "build", str(sample_region.geotiff), "--out", str(out), "--seed", "5"]
    )
    assert r.exit_code == 1 and "cannot be mixed" in r.output
