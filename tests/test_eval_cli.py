"""``terrascribe eval`` end to end: real scenes (every task), counting, report, resume, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from terrascribe.cli import app

runner = CliRunner()


def _eval(*args: str) -> str:
    result = runner.invoke(app, ["eval", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
@pytest.mark.real_data
def test_every_task_on_real_scenes_and_report(shared_data, tmp_path):
    """SIRI-WHU and RSSCN7, every task; kept fast by a subsample (12 images per class and
    split), few shots and a 3-value probe grid: probe fits were most of this test's time."""
    out, cache = tmp_path / "results", tmp_path / "cache"
    common = ["--model", "ts-tiny", "--task", "all", "--out", str(out), "--cache-dir", str(cache),
              "--data-root", str(shared_data / "scenes"), "--max-per-class", "12",
              "--shots", "1,4", "--few-shot-seeds", "0,1", "--probe-c-grid", "0.1,10,1000",
              "--quiet"]  # fmt: skip
    _eval("--benchmark", "siri-whu", "--benchmark", "rsscn7", *common)
    files = sorted(p.name for p in out.glob("*.json"))
    assert len(files) == 8  # 2 benchmarks x (zeroshot, linear-probe, knn, few-shot)
    for path in out.glob("*.json"):
        result = json.loads(path.read_text())
        assert result["model"]["fingerprint"] and result["split_hash"]
        assert result["versions"]["numpy"] and result["time"]["seconds"] >= 0
        for key, value in result["metrics"].items():
            if value is not None and "std" not in key and key != "C":
                assert 0 <= value <= 1, (path.name, key, value)
        if result["task"] in ("linear-probe", "few-shot"):
            assert result["protocol"]["c_grid"] == [0.1, 10, 1000]
        if result["task"] == "linear-probe":
            assert result["metrics"]["C"] in (0.1, 10, 1000)
        if result["task"] == "few-shot":
            assert set(result["details"]["shots"]) == {"1", "4"}
            assert len(result["details"]["shots"]["4"]["acc1_runs"]) == 2
        if result["task"] == "zeroshot":
            n = len(result["classnames"])
            assert n in (7, 12) and len(result["details"]["confusion_matrix"]) == n
            assert result["n_test"] == 12 * n
    # resume: nothing is recomputed, files untouched
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    _eval("--benchmark", "siri-whu", *common, "--skip-existing")
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps

    text = _eval("report", str(out))
    assert "8 results" in text
    md = (out / "report" / "leaderboard.md").read_text()
    for section in ("## zeroshot", "## knn", "## linear-probe", "## few-shot"):
        assert section in md
    assert "siri-whu" in md and "rsscn7" in md
    rows = list(csv.DictReader((out / "report" / "leaderboard.csv").open()))
    assert {r["task"] for r in rows} == {"zeroshot", "knn", "linear-probe", "few-shot"}
    plots = {p.name for p in (out / "report" / "plots").glob("*.png")}
    assert any(p.endswith(".confusion.png") for p in plots)
    assert any(p.endswith(".per-class.png") for p in plots)


WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _counting_benchmark(root):
    """A hand-written counting set: digits and words, two categories, grammatical captions."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        count = 1 + i % 10
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            root / "images" / f"c{i}.jpg"
        )
        if i % 2:
            verb, noun = ("is", "car") if count == 1 else ("are", "cars")
            caption = f"There {verb} {count} {noun} in the parking lot."
            category = "car"
        else:
            noun, verb = ("plane", "is") if count == 1 else ("planes", "are")
            caption = f"{WORDS[count - 1].capitalize()} {noun} {verb} parked at the airport."
            category = "plane"
        rows.append(
            {"image": f"images/c{i}.jpg", "category": category, "count": count, "caption": caption}
        )
    with open(root / "counting.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "category", "count", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "benchmark.json").write_text(
        json.dumps({"task": "counting", "name": "tiny-count", "categories": ["car", "plane"]})
    )
    return root


def test_counting_task_and_report(tmp_path):
    bench = _counting_benchmark(tmp_path / "tiny-count")
    out = tmp_path / "results"
    _eval("--model", "ts-tiny", "--benchmark", str(bench), "--task", "counting", "--out",
          str(out), "--no-cache", "--quiet")  # fmt: skip
    [path] = out.glob("*.json")
    result = json.loads(path.read_text())
    m = result["metrics"]
    assert m["acc10"] == 1.0 and 0 <= m["acc1"] <= m["acc5"] <= 1 and "words_acc1" in m
    assert np.sum(result["details"]["digits_confusion_matrix"]) == 12
    _eval("report", str(out))
    assert "## counting" in (out / "report" / "leaderboard.md").read_text()


def test_contamination_shown_in_report(tmp_path):
    from terrascribe.evaluate.report import contamination_summary

    ds = tmp_path / "train-ds"
    ds.mkdir()
    assert contamination_summary([str(ds)]) == "train-ds: not checked"
    (ds / "contamination.json").write_text(json.dumps({"n_flagged": 3, "benchmarks": ["rsicd"]}))
    text = contamination_summary([str(ds)], "rsicd")
    assert "checked" in text and "n_flagged=3" in text and "covers rsicd" in text
    assert contamination_summary([]) == "unknown"


def test_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["eval", "--model", "ts-tiny", "--benchmark", "aid", "--out",
                                 str(tmp_path), "--data-root", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 1
    assert "AID not found" in result.output and "captain-whu" in result.output
    result = runner.invoke(app, ["eval", "--benchmark", "aid", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--model" in result.output
    bench = _counting_benchmark(tmp_path / "c")
    result = runner.invoke(app, ["eval", "--model", "ts-tiny", "--benchmark", str(bench),
                                 "--task", "zeroshot", "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 1 and "does not apply" in result.output
    result = runner.invoke(app, ["eval", "--model", "ts-tiny", "--benchmark", str(bench),
                                 "--probe-c-grid", "0,1", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "positive numbers" in result.output
    result = runner.invoke(app, ["eval", "--model", "ts-tiny", "--benchmark", str(bench),
                                 "--benchmark", str(bench), "--save-embeddings",
                                 str(tmp_path / "e"), "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "one --benchmark" in result.output
    result = runner.invoke(app, ["eval", "report", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no such results folder" in result.output


def test_list_shows_registry():
    text = _eval("list")
    assert "nwpu-resisc45" in text and "skyscript" in text
