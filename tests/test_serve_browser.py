"""The search page in headless Chromium: type a query, see hits on the map and thumbnails."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(sample_region, tiny_model, tmp_path_factory):
    import uvicorn

    from terrascribe.search.index import SearchIndex, build_index
    from terrascribe.search.service import create_app

    out = tmp_path_factory.mktemp("browser") / "idx"
    build_index([sample_region.geotiff], tiny_model, out, tile_px=64, gsd_m=1.0, progress=False)
    app = create_app(SearchIndex(out), model=tiny_model)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.browser
@pytest.mark.slow
def test_page_query_shows_hits(server, browser, tmp_path):
    errors: list[str] = []
    outside: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    try:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: (
                outside.append(r.url) if not r.url.startswith((server, "blob:", "data:")) else None
            ),
        )
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('status').textContent.includes('16 tiles')")
        page.fill("#q", "red roofs")
        page.fill("#k", "6")
        page.click("button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#hits li').length === 6")
        page.wait_for_function(
            "[...document.querySelectorAll('#hits img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert page.locator(".leaflet-image-layer").count() == 6
        assert page.locator("path.leaflet-interactive").count() >= 6  # footprints
        assert "6 hits" in page.text_content("#status")
        page.locator("#hits li").first.click()
        page.wait_for_selector("#detail:not([hidden])")
        page.wait_for_function("document.getElementById('detail-meta').rows.length > 5")
        assert "region.tif" in page.text_content("#detail-meta")
        page.screenshot(path=str(tmp_path / "page.png"))
    finally:
        page.close()
    assert errors == []
    assert outside == []  # nothing fetched from outside the service (no CDN, no base map)
