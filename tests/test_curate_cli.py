"""The ``terrascribe curate`` commands are thin wrappers: check they run and fail cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from terrascribe.cli import app
from terrascribe.curate.views import write_view
from terrascribe.shards import Dataset
from tests.test_curate_helpers import make_dataset, make_samples


def test_dedup_split_merge_and_errors(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", 20, plant={2: ["reenc"]})
    runner = CliRunner()
    r = runner.invoke(
        app, ["curate", "dedup", str(tmp_path / "ds"), str(tmp_path / "dd"), "--max-distance", "4"]
    )
    assert r.exit_code == 0, r.output
    assert "removed" in r.output
    clusters = json.loads((tmp_path / "dd" / "dedup_clusters.json").read_text())["clusters"]
    assert clusters[0]["kept"] == "img-002"
    r = runner.invoke(app, ["curate", "split", str(tmp_path / "dd"), "--method", "random"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "dd" / "split.parquet").exists()
    r = runner.invoke(
        app,
        [
            "curate",
            "merge",
            str(tmp_path / "m"),
            f"a={tmp_path / 'dd'}:1",
            f"b={tmp_path / 'ds'}:1",
            "--total",
            "10",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["curate", "split", str(tmp_path / "dd"), "--fractions", "0.5,0.1"])
    assert r.exit_code == 1
    assert "Error: fractions must sum to 1" in r.output


def test_filter_and_an_unknown_score_column(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", 20)
    keys = ds.manifest()["key"]
    scores = pd.DataFrame({"key": keys, "clip_score": np.linspace(0, 1, len(keys))})
    write_view(tmp_path / "ds" / "scores.parquet", scores, meta={"model": "test"})
    runner = CliRunner()
    r = runner.invoke(
        app, ["curate", "filter", str(tmp_path / "ds"), str(tmp_path / "f"), "--top", "0.5"]
    )
    assert r.exit_code == 0, r.output
    assert len(Dataset(tmp_path / "f")) == 10
    # A KeyError from the library is shown as its message, not its repr (no extra quotes).
    r = runner.invoke(
        app,
        [
            "curate",
            "filter",
            str(tmp_path / "ds"),
            str(tmp_path / "g"),
            "--top",
            "0.5",
            "--score",
            "nope",
        ],
    )
    assert r.exit_code == 1
    assert "Error: no score column 'nope'; run" in r.output


def test_contamination_counts_overlapping_keys_per_benchmark(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", 6)
    samples = make_samples(6)
    # An image benchmark holding copies of two training images; a caption set quoting a third.
    (tmp_path / "bench" / "forest").mkdir(parents=True)
    for i in (1, 4):
        (tmp_path / "bench" / "forest" / f"{i}.jpg").write_bytes(samples[i].image)
    captions = tmp_path / "dataset_rsicd.json"
    sentences = [{"raw": samples[2].captions[1]}]
    captions.write_text(
        json.dumps({"images": [{"filename": "x.jpg", "split": "test", "sentences": sentences}]})
    )
    args = ["curate", "contamination", str(tmp_path / "ds")]
    args += ["-b", f"imgs={tmp_path / 'bench'}", "-b", f"caps={captions}"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    # Table rows: benchmark, kind, images, captions, overlapping keys.
    rows = {}
    for line in r.output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] in ("imgs", "caps"):
            rows[cells[0]] = cells
    assert rows["imgs"][-1] == "2" and rows["caps"][-1] == "1"
    assert "3 overlapping keys; record written to" in r.output
