"""Benchmarks built from terrascribe datasets: SkyScript's OSM attribute tasks and retrieval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from terrascribe.evaluate import benchmarks as bm
from terrascribe.evaluate import metrics
from terrascribe.evaluate.runner import EvalOptions, EvaluationError, evaluate, score_embeddings
from terrascribe.records import ImageObject, Sample
from terrascribe.shards import Dataset, write_dataset

# (focus object's tags, captions); the first object of each sample is the focus object.
ROWS = [
    ({"building": "house", "roof:shape": "gabled"}, ["a house with a gabled roof"]),
    ({"building": "house", "roof:shape": "flat"}, ["a flat-roofed house", "a house"]),
    ({"building": "yes", "roof:shape": "Hipped "}, ["a building"]),  # sloppy case/space
    ({"building": "yes", "roof:shape": "gabled;hipped"}, ["a building"]),  # ambiguous: left out
    ({"building": "church", "roof:shape": "onion"}, ["a church"]),  # not in the list: left out
    ({"highway": "residential", "smoothness": "very_bad", "surface": "gravel"}, ["a bad road"]),
    ({"highway": "track", "smoothness": "bad", "surface": "dirt"}, ["a dirt track", "a track"]),
    ({"highway": "service", "smoothness": "good", "surface": "paving_stones"}, ["a lane"]),
    ({"highway": "primary", "surface": "asphalt"}, ["a primary road", "a road"]),
    ({"natural": "water"}, ["a lake", "a lake"]),  # repeated caption (dedup protocol)
]


def _items(job: list[int]):
    rng = np.random.default_rng(0)
    for i in job:
        tags, captions = ROWS[i]
        image = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        objects = [
            ImageObject("focus", (2.0, 2.0, 20.0, 20.0), tags=tags, source_id=f"w{i}"),
            ImageObject("context", (0.0, 0.0, 5.0, 5.0), tags={"roof:shape": "dome"}),
        ]
        yield Sample(f"osm-w{i}", image, captions, "osm", [f"w{i}"], objects=objects)
    # a sample without objects is left out of attribute tasks, kept for retrieval
    if job[0] == 0:
        yield Sample("no-objects", rng.integers(0, 255, (24, 24, 3), np.uint8), ["empty"], "osm")


@pytest.fixture(scope="module")
def osm_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("osm-ds") / "ds"
    jobs = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    write_dataset(out, jobs, _items, builder="test-osm", progress=False)
    return out


def _result(paths) -> dict:
    [path] = paths
    return json.loads(path.read_text())


def test_roof_shape_from_focus_object_tags(osm_dataset, tiny_model, tmp_path):
    data = bm.load_osm_attribute(osm_dataset, bm.get_benchmark("roof-shape"))
    # gabled, flat, hipped (normalised); ambiguous, unknown values, context objects ignored
    assert data.ids == ["osm-w0", "osm-w1", "osm-w2"]
    classes = list(bm.get_benchmark("roof-shape").classes)
    assert data.labels.tolist() == [classes.index(v) for v in ("gabled", "flat", "hipped")]
    assert set(data.splits.tolist()) == {"test"}

    result = _result(
        evaluate(tiny_model, f"roof-shape:{osm_dataset}", "zeroshot", tmp_path, progress=False)
    )
    assert result["benchmark"]["name"] == "roof-shape" and result["n_test"] == 3
    assert result["classnames"] == classes
    assert result["templates"] == bm.resolve_templates("skyscript-roof")
    assert len(result["details"]["confusion_matrix"]) == len(classes)
    assert result["details"]["support"][classes.index("gabled")] == 1
    assert 0 <= result["metrics"]["acc1"] <= result["metrics"]["acc5"] <= 1


def test_road_attributes_use_clean_class_names(osm_dataset, tiny_model, tmp_path):
    smooth = _result(evaluate(tiny_model, f"road-smoothness:{osm_dataset}", "zeroshot", tmp_path))
    assert smooth["n_test"] == 3 and "very bad" in smooth["classnames"]
    assert smooth["details"]["support"][smooth["classes"].index("very_bad")] == 1
    surface = _result(evaluate(tiny_model, f"road-surface:{osm_dataset}", "zeroshot", tmp_path))
    assert surface["n_test"] == 4 and "paving stones" in surface["classnames"]
    # the folder variant gives the raw OSM values back
    raw = _result(
        evaluate(
            tiny_model,
            f"road-surface:{osm_dataset}",
            "zeroshot",
            tmp_path / "raw",
            options=EvalOptions(classnames="folder"),
        )
    )
    assert "paving_stones" in raw["classnames"]


def test_attribute_task_all_runs_what_a_test_only_set_allows(osm_dataset, tiny_model, tmp_path):
    """``--task all`` on a set without a training split runs zero-shot only; naming a probe
    task explicitly is an error that says why."""
    paths = evaluate(tiny_model, f"roof-shape:{osm_dataset}", "all", tmp_path, progress=False)
    assert [p.name.rsplit("__", 1)[1] for p in paths] == ["zeroshot.json"]
    with pytest.raises(EvaluationError, match="no training split"):
        evaluate(tiny_model, f"roof-shape:{osm_dataset}", "knn", tmp_path, progress=False)


def test_attribute_errors(osm_dataset, tiny_model, tmp_path):
    with pytest.raises(EvaluationError, match="roof-shape:PATH"):
        evaluate(tiny_model, "roof-shape", "zeroshot", tmp_path)
    # a dataset with no building tags at all
    empty = tmp_path / "roads"
    write_dataset(empty, [[5, 6]], _items, builder="test-osm", progress=False)
    with pytest.raises(bm.BenchmarkError, match=r"roads.*roof:shape"):
        evaluate(tiny_model, f"roof-shape:{empty}", "zeroshot", tmp_path)
    with pytest.raises(bm.BenchmarkNotFoundError, match="nowhere"):
        evaluate(tiny_model, f"roof-shape:{tmp_path / 'nowhere'}", "zeroshot", tmp_path)


def test_retrieval_over_a_terrascribe_dataset(osm_dataset, tiny_model, tmp_path):
    from terrascribe.models.encode import encode_images, encode_texts

    samples = list(Dataset(osm_dataset).samples())
    captions = [c for s in samples for c in s.captions]
    owner = [i for i, s in enumerate(samples) for _ in s.captions]
    result = _result(
        evaluate(
            tiny_model,
            osm_dataset,
            "all",
            tmp_path / "res",
            progress=False,
            save_embeddings=tmp_path / "emb",
        )
    )
    assert result["task"] == "retrieval" and result["benchmark"]["layout"] == "terrascribe"
    assert (result["n_images"], result["n_texts"]) == (len(samples), len(captions)) == (11, 15)
    # the same numbers as scoring the dataset's embeddings by hand
    img = encode_images(tiny_model, [s.image for s in samples], progress=False)
    txt = encode_texts(tiny_model, captions, progress=False)
    assert result["metrics"] == pytest.approx(metrics.retrieval(img, txt, owner))
    # published embeddings re-score identically
    rescored = _result(score_embeddings(tmp_path / "emb", "retrieval", tmp_path / "again"))
    assert rescored["metrics"] == pytest.approx(result["metrics"])
    assert len(rescored["split_hash"]) == 64
    # SkyScript's de-duplicated protocol: "a lake" counted once
    dedup = _result(
        evaluate(
            tiny_model,
            osm_dataset,
            "retrieval",
            tmp_path / "dedup",
            options=EvalOptions(dedup=True),
            progress=False,
        )
    )
    assert dedup["n_texts"] == len(set(captions)) == 13


def test_every_image_is_embedded_once_per_run(tiny_model, tmp_path, monkeypatch):
    """Zero-shot on all images, the probes on train/test and --save-embeddings share embeddings."""
    from PIL import Image

    import terrascribe.models.encode as encode

    rng = np.random.default_rng(0)
    for c in ("forest", "lake", "city"):
        (tmp_path / "scenes" / c).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "scenes" / c / f"{i}.png")
    embedded: list[int] = []
    real = encode.encode_images

    def counting(bundle, images, **kwargs):
        embedded.append(len(images))
        return real(bundle, images, **kwargs)

    monkeypatch.setattr(encode, "encode_images", counting)
    paths = evaluate(
        tiny_model,
        tmp_path / "scenes",
        "all",
        tmp_path / "res",
        options=EvalOptions(split="all", shots=(1,), few_shot_seeds=(0,)),
        progress=False,
        save_embeddings=tmp_path / "emb",
    )
    assert len(paths) == 4
    assert sum(embedded) == 15  # 12 train + 3 test, each once
    saved = np.load(tmp_path / "emb" / "images.npy")
    assert saved == pytest.approx(real(tiny_model, sorted((tmp_path / "scenes").rglob("*.png"))))
