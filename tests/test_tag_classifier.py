"""The learned tag classifier: fitting, held-out accuracy, safe save/load, extending the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from terrascribe.text.osm_tags import GSD_LEVELS, TagRule, TagTable
from terrascribe.text.tag_classifier import (
    HashedNgramEmbedder,
    TagClassifier,
    TagClassifierError,
    evaluate_tag_classifier,
    extend_table,
    fit_tag_classifier,
    model_embedder,
    tag_text,
)


@pytest.fixture(scope="module")
def table() -> TagTable:
    return TagTable.load()


@pytest.fixture(scope="module")
def embed() -> HashedNgramEmbedder:
    return HashedNgramEmbedder(n_features=1024)


@pytest.fixture(scope="module")
def clf(table: TagTable, embed: HashedNgramEmbedder) -> TagClassifier:
    return fit_tag_classifier(table, embed)


def test_tag_text() -> None:
    assert tag_text("roof:shape", "half-hipped") == "roof shape half-hipped"
    assert tag_text("addr:*", "*") == "addr"
    assert tag_text("highway", "motorway_link") == "highway motorway link"
    assert tag_text("sur\u200bface", "a;b") == "surface a b"


def test_hashed_embedder_is_deterministic(embed: HashedNgramEmbedder) -> None:
    a = embed(["highway residential", "name"])
    b = HashedNgramEmbedder(n_features=1024)(["highway residential", "name"])
    assert a.shape == (2, 1024) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_fit_learns_the_table(table: TagTable, clf: TagClassifier) -> None:
    rules = [r for r in table.rules if not r.is_key_rule]
    predicted = clf.predict([(r.key, r.value) for r in rules])
    visible_acc = np.mean([p.visible == r.visible for p, r in zip(predicted, rules, strict=True)])
    assert visible_acc > 0.9, "stage I should fit its own training rows"
    assert all(p.source == "classifier" for p in predicted)
    assert {p.max_gsd_m for p in predicted if p.visible} <= set(GSD_LEVELS)
    assert all(p.phrase for p in predicted if p.visible)
    assert all(p.max_gsd_m is None and not p.phrase for p in predicted if not p.visible)


def test_predicted_rules_read_well(clf: TagClassifier) -> None:
    rules = clf.predict({"building": "glass_hall", "addr:county": "Uusimaa"})
    building, addr = rules
    assert building.visible and building.phrase == "glass hall" and building.category == "building"
    assert not addr.visible
    assert clf.predict([]) == []


def test_held_out_accuracy_beats_majority(table: TagTable, embed: HashedNgramEmbedder) -> None:
    report = evaluate_tag_classifier(table, embed, split="random", seed=0)
    assert report["n_train"] + report["n_test"] == len(table)
    assert report["stage1_accuracy"] > report["stage1_majority"] + 0.15
    assert report["stage2_accuracy"] > report["stage2_majority"]
    assert 0 <= report["stage2_within_one_level"] <= 1
    by_key = evaluate_tag_classifier(table, embed, split="key", seed=0)
    assert by_key["split"] == "key" and by_key["n_test"] > 0
    with pytest.raises(ValueError, match="split must be"):
        evaluate_tag_classifier(table, embed, split="bogus")
    with pytest.raises(ValueError, match="no training or no test rows"):
        evaluate_tag_classifier(table, embed, test_fraction=0.0)


def test_save_load_round_trip(tmp_path: Path, clf: TagClassifier, embed) -> None:
    path = clf.save(tmp_path / "clf.json")
    data = json.loads(path.read_text())
    assert data["format"] == "terrascribe-tag-classifier" and data["dim"] == 1024
    loaded = TagClassifier.load(path, embed)
    pairs = [("highway", "busway_lane"), ("amenity", "grit_bin"), ("name:xx", "Y")]
    assert loaded.predict(pairs) == clf.predict(pairs)
    assert not list(tmp_path.glob("*.tmp")), "saving leaves no temporary file"


def test_load_refuses_other_embeddings_and_bad_files(
    tmp_path: Path, clf: TagClassifier, embed
) -> None:
    path = clf.save(tmp_path / "clf.json")
    with pytest.raises(TagClassifierError, match="fitted on embedding"):
        TagClassifier.load(path, HashedNgramEmbedder(n_features=512))
    wrong_width = TagClassifier.load(
        path, HashedNgramEmbedder(n_features=512), check_embedding=False
    )
    with pytest.raises(TagClassifierError, match="does not match"):
        wrong_width.predict([("a", "b")])
    with pytest.raises(TagClassifierError, match="no embedding function"):
        TagClassifier.load(path).predict([("a", "b")])

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TagClassifierError, match="not a readable JSON"):
        TagClassifier.load(bad, embed)
    bad.write_text(json.dumps({"format": "pickle"}))
    with pytest.raises(TagClassifierError, match="not a terrascribe tag classifier"):
        TagClassifier.load(bad, embed)
    data = json.loads(path.read_text())
    data["heads"]["gsd"]["coef"] = [[1.0, 2.0]]
    bad.write_text(json.dumps(data))
    with pytest.raises(TagClassifierError, match="expected"):
        TagClassifier.load(bad, embed)
    data = json.loads(path.read_text())
    data["heads"]["gsd"]["classes"][0] = "0.5"
    bad.write_text(json.dumps(data))
    with pytest.raises(TagClassifierError, match="not one of"):
        TagClassifier.load(bad, embed)
    data = json.loads(path.read_text())
    del data["dim"]
    bad.write_text(json.dumps(data))
    with pytest.raises(TagClassifierError, match="malformed"):
        TagClassifier.load(bad, embed)
    with pytest.raises(TagClassifierError, match="no such"):
        TagClassifier.load(tmp_path / "absent.json", embed)


def test_extend_table_adds_only_unknown_tags(table: TagTable, clf: TagClassifier) -> None:
    tags = [("highway", "busway_lane"), ("building", "house"), ("zz_new_key", "thing")]
    bigger = extend_table(table, tags, clf)
    assert bigger.version == f"{table.version}+classifier"
    assert bigger.lookup("building", "house") == table.lookup("building", "house")
    # highway has no key-level rule, so an unlisted highway value is unknown to the table
    assert table.lookup("highway", "busway_lane") is None
    new = bigger.lookup("highway", "busway_lane")
    assert isinstance(new, TagRule) and new.source == "classifier"
    assert bigger.lookup("zz_new_key", "thing").source == "classifier"
    assert len(bigger) == len(table) + 2
    # Round trip through CSV keeps the provenance column.
    again = TagTable.from_csv(bigger.to_csv())
    assert again.lookup("zz_new_key", "thing").source == "classifier"


def test_embedding_errors(table: TagTable) -> None:
    with pytest.raises(ValueError, match="returned shape"):
        fit_tag_classifier(table, lambda texts: np.zeros((1, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        fit_tag_classifier(table, lambda texts: np.full((len(texts), 4), np.nan))


@pytest.mark.slow
def test_with_the_tiny_model(table: TagTable, tiny_model) -> None:
    """ts-tiny has random weights: the point is the plumbing, not the accuracy."""
    embed = model_embedder(tiny_model)
    assert embed.name.startswith("model:")
    x = embed(["building yes", "name"])
    assert x.shape == (2, tiny_model.embed_dim)
    small = TagTable.from_rules(list(table.rules)[::4], version=table.version)
    clf = fit_tag_classifier(small, embed)
    rules = clf.predict([("highway", "busway"), ("addr:street", "x")])
    assert len(rules) == 2 and all(r.source == "classifier" for r in rules)
    report = evaluate_tag_classifier(small, embed, seed=0)
    assert 0.0 <= report["stage1_accuracy"] <= 1.0
