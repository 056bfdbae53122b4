"""Contamination: benchmark image copies and caption matches are found, recorded, dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from terrascribe.curate.contamination import (
    CONTAMINATION_FILE,
    contamination_dataset,
    normalise_caption,
    parse_benchmark,
)
from terrascribe.images import decode_rgb
from terrascribe.shards import Dataset
from tests.test_curate_helpers import jpeg, make_samples, resized, texture


@pytest.fixture()
def setup(tmp_path: Path):
    from terrascribe.shards import DatasetWriter

    samples = make_samples(12, seed=3)
    writer = DatasetWriter(tmp_path / "ds")
    writer.write_shard(0, samples[:6])
    writer.write_shard(1, samples[6:])
    writer.finalize(builder="test", n_shards=2, command=["test"])
    bench = tmp_path / "bench"
    (bench / "forest").mkdir(parents=True)
    # Benchmark holds a resized copy of img-004 and an unrelated image.
    img4 = np.asarray(decode_rgb(samples[4].image))
    (bench / "forest" / "1.jpg").write_bytes(resized(img4))
    (bench / "forest" / "2.jpg").write_bytes(jpeg(texture(np.random.default_rng(99))))
    captions = tmp_path / "dataset_rsicd.json"
    captions.write_text(
        json.dumps(
            {
                "dataset": "rsicd",
                "images": [
                    {
                        "filename": "x_1.jpg",
                        "split": "test",
                        "sentences": [
                            {"raw": samples[7].captions[1].upper() + "."},
                            {"raw": "green trees"},
                        ],
                    },
                ],
            }
        )
    )
    return Dataset(tmp_path / "ds"), bench, captions


def test_image_and_caption_overlaps(setup, tmp_path: Path) -> None:
    ds, bench, captions = setup
    result = contamination_dataset(
        ds,
        [f"scenes={bench}", str(captions)],
        max_distance=4,
        drop=tmp_path / "clean",
        progress=False,
    )
    record = json.loads((ds.path / CONTAMINATION_FILE).read_text())
    assert record["checked_against"][0] | {} == {
        "benchmark": "scenes",
        "path": str(bench),
        "kind": "images",
        "images": 2,
        "captions": 0,
        "hash": "phash",
        "threshold": 4,
    }
    assert record["checked_against"][1]["kind"] == "captions"
    overlaps = {(o["key"], o["match"], o["benchmark_item"]) for o in record["overlaps"]}
    assert ("img-004", "image", "forest/1.jpg") in overlaps
    caption_hits = {o["key"] for o in record["overlaps"] if o["match"] == "caption"}
    assert caption_hits == {"img-007"}
    assert record["n_overlapping_keys"] == len(result.keys)
    clean = Dataset(tmp_path / "clean")
    assert len(clean) == len(ds) - len(result.keys)
    assert not set(clean.manifest()["key"]) & set(result.keys)
    cleaned = json.loads((tmp_path / "clean" / CONTAMINATION_FILE).read_text())
    assert cleaned["n_overlapping_keys"] == 0 and cleaned["removed_keys"] == result.keys


def test_normalise_and_parse(tmp_path: Path) -> None:
    assert (
        normalise_caption("  Many  GREEN trees, near a river! ") == "many green trees near a river"
    )
    (tmp_path / "b").mkdir()
    assert parse_benchmark(str(tmp_path / "b")).kind == "images"
    assert parse_benchmark(f"x={tmp_path / 'b'}").name == "x"
    with pytest.raises(FileNotFoundError, match="no such folder"):
        parse_benchmark(str(tmp_path / "missing"))


def test_distinct_names_required(setup) -> None:
    ds, bench, _ = setup
    with pytest.raises(ValueError, match="distinct"):
        contamination_dataset(ds, [str(bench), str(bench)], progress=False)


def test_registry_names_resolve_through_the_evaluation_registry(tmp_path, monkeypatch):
    from terrascribe.curate.contamination import parse_benchmark
    from terrascribe.evaluate.benchmarks import BenchmarkNotFoundError, get_benchmark

    monkeypatch.setenv("TERRASCRIBE_DATA", str(tmp_path))
    with pytest.raises(BenchmarkNotFoundError):  # known, but its files are not there yet
        parse_benchmark("rsscn7")
    folder = tmp_path / (get_benchmark("rsscn7").folder or "rsscn7")
    (folder / "grass").mkdir(parents=True)
    assert parse_benchmark("rsscn7").path == folder
    with pytest.raises(FileNotFoundError, match="no registered benchmark"):
        parse_benchmark("no-such-benchmark")
