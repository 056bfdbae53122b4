"""Benchmark registry: entries, templates, split rule, loaders and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from terrascribe.evaluate import benchmarks as bm

SCENE_BENCHMARKS = {
    "aid", "eurosat", "fmow", "million-aid", "nwpu-resisc45", "patternnet", "rsi-cb128",
    "rsi-cb256", "rsscn7", "siri-whu", "uc-merced", "whu-rs19", "optimal-31", "mlrsnet", "rsc11",
}  # fmt: skip


def test_registry_covers_the_issue_and_is_consistent():
    names = {b.name for b in bm.list_benchmarks()}
    assert SCENE_BENCHMARKS | {"rsicd", "rsitmd", "ucm-captions", "sydney-captions"} <= names
    assert {"roof-shape", "road-smoothness", "road-surface"} <= names
    sets = bm.template_sets()
    for b in bm.list_benchmarks():
        assert b.licence and b.task in bm.TASK_KINDS
        for variant, names_ in b.classnames.items():
            assert len(names_) == len(b.classes), (b.name, variant)
        if b.classes:
            assert b.templates in sets
    assert bm.get_benchmark("NWPU_RESISC45").name == "nwpu-resisc45"
    with pytest.raises(bm.BenchmarkError, match="unknown benchmark"):
        bm.get_benchmark("imagenet")


def test_templates_and_classnames_resolution(tmp_path):
    assert bm.resolve_templates("skyscript") == [
        "a satellite photo of {c}.",
        "a satellite image of {c}",
    ]
    assert len(bm.resolve_templates("remoteclip")) == 1
    assert len(bm.resolve_templates("rs-ensemble")) >= 10
    assert bm.resolve_templates(["a {} photo"]) == ["a {c} photo"]
    with pytest.raises(bm.BenchmarkError, match="placeholder"):
        bm.resolve_templates(["no placeholder"])
    with pytest.raises(bm.BenchmarkError, match="neither"):
        bm.resolve_templates("nonexistent-set")
    euro = bm.get_benchmark("eurosat")
    assert bm.resolve_classnames(euro, "clip")[-1] == "lake or sea"
    f = tmp_path / "names.txt"
    f.write_text("\n".join(f"c{i}" for i in range(10)))
    assert bm.resolve_classnames(euro, str(f))[0] == "c0"
    f.write_text("just one")
    with pytest.raises(bm.BenchmarkError, match="10 classes"):
        bm.resolve_classnames(euro, str(f))


def test_remoteclip_split_rule():
    assert bm.remoteclip_split(10) == ["train"] * 8 + ["test"] * 2
    assert bm.remoteclip_split(199).count("train") == 159


def _folder(root, classes, n=5):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / c / f"{i:03d}.jpg")
    return root


def test_class_folders_split_aliases_and_split_file(tmp_path):
    bench = bm.get_benchmark("rsscn7")
    root = _folder(tmp_path / "rsscn7", list(bench.folder_aliases))  # original aGrass... names
    data = bm.load_class_folders(root, bench)
    assert data.classes == list(bench.classes)
    assert (data.splits == "train").sum() == 7 * 4 and (data.splits == "test").sum() == 7
    # the last file of each class (sorted by name) is the test file
    assert all(
        i.endswith("004.jpg") for i, s in zip(data.ids, data.splits, strict=True) if s == "test"
    )
    h = bm.split_hash(data.ids, data.splits)
    (root / "split.json").write_text(json.dumps({"test": data.ids[:3], "train": data.ids[3:10]}))
    custom = bm.load_class_folders(root, bench)
    assert (custom.splits == "test").sum() == 3 and bm.split_hash(custom.ids, custom.splits) != h
    (root / "split.json").write_text("{not json")
    with pytest.raises(bm.BenchmarkError, match=r"split\.json"):
        bm.load_class_folders(root, bench)


def test_missing_dataset_raises_one_helpful_error(tmp_path):
    bench = bm.get_benchmark("uc-merced")
    with pytest.raises(bm.BenchmarkNotFoundError) as err:
        bm.load_class_folders(tmp_path / "uc_merced", bench)
    msg = str(err.value)
    assert "UC Merced" in msg and "UCMerced_LandUse.zip" in msg and "--data-root" in msg
    _folder(tmp_path / "partial", ["airplane"])
    with pytest.raises(bm.BenchmarkNotFoundError, match="class folders missing: agricultural"):
        bm.load_class_folders(tmp_path / "partial", bench)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(bm.BenchmarkError, match="holds no images"):
        bm.load_class_folders(tmp_path / "empty")


def test_subsample_is_seeded_and_per_class(tmp_path):
    data = bm.load_class_folders(_folder(tmp_path / "d", ["a", "b"], n=10))
    small = bm.subsample(data, 3, seed=1)
    assert len(small.images) == 2 * 3 + 2 * 2  # train 8 -> 3, test 2 -> 2, per class
    assert bm.subsample(data, 3, seed=1).ids == small.ids


def test_counting_loader_errors(tmp_path):
    root = tmp_path / "count"
    (root / "images").mkdir(parents=True)
    with pytest.raises(bm.BenchmarkNotFoundError, match=r"benchmark\.json"):
        bm.load_counting(root)
    (root / "benchmark.json").write_text(json.dumps({"task": "counting", "name": "x"}))
    (root / "counting.csv").write_text("image,category,count,caption\n../x.jpg,car,2,two cars\n")
    with pytest.raises(bm.BenchmarkError, match="leaves the benchmark"):
        bm.load_counting(root)
    (root / "counting.csv").write_text("image,category,count,caption\na.jpg,car,two,two cars\n")
    with pytest.raises(bm.BenchmarkError, match=r"counting\.csv:2: malformed row"):
        bm.load_counting(root)


def test_caption_csvs_load_as_retrieval_text_side(shared_data):
    """The real caption tables (text only) load through caption_sets.read."""
    for name, n_test in [("ucm_captions", 210), ("rsicd", 1093), ("sydney_captions", 58)]:
        data = bm.load_caption_set(shared_data / "captions" / f"{name}.csv", None)
        assert len(data.images) == n_test, name
        assert len(data.captions) == len(data.text_to_image)
        assert np.bincount(data.text_to_image).min() >= 1
    missing = bm.get_benchmark("rsitmd")
    with pytest.raises(bm.BenchmarkNotFoundError, match="missing from"):
        bm.load_caption_set(shared_data / "captions" / "rsitmd.csv", shared_data, bench=missing)
