"""Shared fixtures: generated sample data (any machine) and the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("TERRASCRIBE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real RS data folder (``../shared/data``); the test is skipped when it is absent."""
    path = _shared_data_dir()
    if not (path / "README.md").exists():
        pytest.skip(f"real data not found at {path} (set TERRASCRIBE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_terrascribe_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tools default to the shared ``$TERRASCRIBE_CACHE``: tests use their own, never ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TERRASCRIBE_CACHE", str(tmp_path_factory.mktemp("terrascribe-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def sample_region(tmp_path_factory: pytest.TempPathFactory):
    """A small generated sample region (GeoTIFF, OSM, boxes, masks, scenes), made once."""
    from terrascribe.sample_data import generate

    return generate(tmp_path_factory.mktemp("sample-region"), seed=0, size_px=512)


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny registered CLIP (``ts-tiny``), randomly initialised with a fixed seed."""
    from terrascribe.models.zoo import load_model

    return load_model("ts-tiny", seed=0)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright; skipped when either is missing.

    Module-scoped: Playwright's sync API runs an event loop in this thread while it is open,
    which would break ``asyncio.run`` in tests of other modules.
    """
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium (make browser installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
