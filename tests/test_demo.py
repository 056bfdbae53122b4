"""The demo end to end on a small region, and its report page in a real browser."""

from __future__ import annotations

import json

import pytest

from terrascribe.demo import run_demo


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, seed=0, size_px=512, train_steps=15)


@pytest.mark.slow
def test_demo_runs_every_step_and_reuses_them(demo_report):
    out = demo_report.parent
    steps = sorted(p.stem for p in (out / ".steps").glob("*.json"))
    assert {"build-osm", "build-annotations", "build-llm", "curate", "train", "evaluate"} <= set(
        steps
    )
    evaluate = json.loads((out / ".steps" / "evaluate.json").read_text())
    assert evaluate["results"] >= 8  # 4 tasks x (untrained, trained)
    curate = json.loads((out / ".steps" / "curate.json").read_text())
    assert curate["dedup"]["removed"] > 0  # boxes and masks share their chips
    assert curate["split"]["cells_on_several_splits"] == 0
    search = json.loads((out / ".steps" / "search.json").read_text())
    assert search["added"]["added"] == search["tiles"] > 0
    assert [q["hits"] for q in search["queries"]] == [10, 10]
    mtime = demo_report.stat().st_mtime_ns
    marker = (out / ".steps" / "train.json").stat().st_mtime_ns
    run_demo(out, seed=0, size_px=512, train_steps=15)
    assert (out / ".steps" / "train.json").stat().st_mtime_ns == marker  # reused, not re-run
    assert demo_report.stat().st_mtime_ns >= mtime


@pytest.mark.slow
@pytest.mark.browser
def test_report_renders_with_images_and_no_console_errors(demo_report, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo_report.as_uri())
    page.wait_for_load_state("load")
    assert page.title() == "terrascribe demo report"
    for heading in ("Datasets", "Curation", "Training", "Evaluation"):
        assert page.get_by_role("heading", name=heading).count() == 1
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])"
    )
    assert len(images) >= 10
    assert [src for src, ok in images if not ok] == []
    assert errors == []
    page.close()
