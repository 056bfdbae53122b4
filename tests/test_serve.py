"""The search service: API, API key, limits, path traversal, concurrency."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from terrascribe.search.index import SearchIndex, build_index
from terrascribe.search.service import ServiceLimits, _is_loopback, create_app


@pytest.fixture(scope="module")
def index(sample_region, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "idx"
    build_index([sample_region.geotiff], tiny_model, out, tile_px=64, gsd_m=1.0, progress=False)
    return SearchIndex(out)


@pytest.fixture(scope="module")
def client(index, tiny_model):
    return TestClient(create_app(index, model=tiny_model, limits=ServiceLimits(max_k=20)))


def test_health_info_page_and_assets(client):
    assert client.get("/healthz").json() == {"status": "ok", "tiles": 16}
    info = client.get("/api/info").json()
    assert info["tiles"] == 16 and info["index"]["type"] == "flat" and info["max_k"] == 20
    page = client.get("/")
    assert page.status_code == 200 and "/static/leaflet/leaflet.js" in page.text
    assert "unpkg" not in page.text and "cdn" not in page.text.lower()
    js = client.get("/static/leaflet/leaflet.js")
    assert js.status_code == 200 and "Leaflet 1.9.4" in js.text[:200]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/leaflet/LICENSE").status_code == 200


def test_search_and_tiles(client, index):
    r = client.get("/api/search", params={"q": "houses", "k": 5})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["geometry"]["type"] == "Polygon"
    tid = hits[0]["id"]
    img = client.get(f"/api/tile/{tid}.jpg")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content[:2] == b"\xff\xd8"
    meta = client.get(f"/api/tile/{tid}").json()
    assert meta["id"] == tid and meta["source"] == index.row(tid)["source"]
    near = client.get("/api/search", params={"near": "14.281,50.085", "k": 2}).json()
    assert len(near["hits"]) == 2
    bbox = client.get("/api/search", params={"q": "x", "bbox": "0,0,1,1"}).json()
    assert bbox["hits"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/tile/-1.jpg",
        "/api/tile/-1",
        "/api/tile/16.jpg",
        "/api/tile/99999999999999999999999.jpg",
        "/api/tile/1e3.jpg",
        "/api/tile/../../etc/passwd",
        "/api/tile/..%2F..%2Fetc%2Fpasswd",
        "/api/tile/%2e%2e%2f%2e%2e%2fetc%2fpasswd.jpg",
        "/api/tile/0x10.jpg",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fsearch%2findex.py",
    ],
)
def test_no_path_reaches_the_filesystem(client, url):
    r = client.get(url)
    assert r.status_code in (404, 422)
    assert "root:" not in r.text and "import" not in r.text


def test_request_limits(client):
    assert client.get("/api/search", params={"q": "a", "k": 21}).status_code == 422
    assert client.get("/api/search", params={"q": "a", "k": 0}).status_code == 422
    assert client.get("/api/search", params={"q": "a" * 501}).status_code == 422
    assert client.get("/api/search", params={"q": "a", "bbox": "1,2,3"}).status_code == 422
    assert client.get("/api/search", params={"near": "x,y"}).status_code == 422
    assert client.get("/api/search").status_code == 422
    both = client.get("/api/search", params={"q": "a", "near": "14.281,50.085"})
    assert both.status_code == 422 and "exactly one" in both.text
    assert client.get("/api/search?q=" + "a" * 5000).status_code == 414
    r = client.request("GET", "/healthz", content=b"x" * 20000)
    assert r.status_code == 413


def test_query_timeout(index, tiny_model, monkeypatch):
    import time

    from terrascribe.search import service

    app = create_app(index, model=tiny_model, limits=ServiceLimits(query_timeout_s=0.05))

    def slow(*args, **kwargs):
        time.sleep(0.5)

    monkeypatch.setattr(service, "search", slow)
    r = TestClient(app).get("/api/search", params={"q": "a"})
    assert r.status_code == 504


def test_api_key(index, tiny_model, caplog):
    app = create_app(index, model=tiny_model, api_key="s3cret-key")
    c = TestClient(app)
    assert c.get("/healthz").status_code == 200  # liveness stays open
    assert c.get("/api/search", params={"q": "a"}).status_code == 401
    assert c.get("/api/tile/0.jpg", headers={"X-API-Key": "wrong"}).status_code == 401
    ok = c.get("/api/search", params={"q": "a"}, headers={"X-API-Key": "s3cret-key"})
    assert ok.status_code == 200
    assert c.get("/api/info", headers={"X-API-Key": "s3cret-key"}).json()["auth"] is True
    assert "s3cret-key" not in caplog.text


def test_concurrent_queries_share_one_index(index, tiny_model, monkeypatch):
    from terrascribe.search import index as index_module

    loads = []
    monkeypatch.setattr(index_module.vectors, "read", lambda *a: loads.append(a))
    c = TestClient(create_app(index, model=tiny_model))
    expected = c.get("/api/search", params={"q": "q7", "k": 4}).json()["hits"]
    errors: list[str] = []

    def worker(i: int) -> None:
        for j in range(6):
            q = "q7" if j % 2 else f"query {i}-{j}"
            r = c.get("/api/search", params={"q": q, "k": 4})
            if r.status_code != 200:
                errors.append(r.text)
            elif q == "q7" and r.json()["hits"] != expected:
                errors.append("different hits for the same query")
            t = c.get(f"/api/tile/{(i + j) % 16}.jpg")
            if t.status_code != 200:
                errors.append(t.text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert loads == []  # the index was never read again


def test_refuses_a_model_that_is_not_the_index_model(index):
    from terrascribe.models.zoo import load_model
    from terrascribe.search.index import SearchIndexError

    with pytest.raises(SearchIndexError, match="cannot be mixed"):
        create_app(index, model=load_model("ts-tiny", seed=5))


def test_loopback_detection():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5")


def test_serve_warns_off_loopback(index, monkeypatch, caplog):
    import uvicorn

    from terrascribe.search import service

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    with caplog.at_level("WARNING", logger="terrascribe.serve"):
        service.serve(index.path, host="0.0.0.0", api_key="topsecret")
    assert "reachable from other machines" in caplog.text
    assert "topsecret" not in caplog.text
