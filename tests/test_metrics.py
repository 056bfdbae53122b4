"""Metrics: hand-checked cases, cross-checks against scikit-learn, error paths."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from terrascribe.evaluate import metrics


def _onehot(n: int, d: int) -> np.ndarray:
    return np.eye(d, dtype=np.float32)[:n]


def _clusters(rng, n_classes=4, per_class=30, dim=16, noise=0.6):
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    return x.astype(np.float32), labels, centres.astype(np.float32)


def test_ensemble_is_mean_of_normalised_then_renormalised():
    t = np.array([[[2.0, 0.0], [0.0, 1.0]]], dtype=np.float32)  # one class, two templates
    out = metrics.ensemble_class_embeddings(t)
    np.testing.assert_allclose(out, [[np.sqrt(0.5), np.sqrt(0.5)]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(C, T, D\)"):
        metrics.ensemble_class_embeddings(np.zeros((2, 3)))


def test_zero_shot_hand_checked():
    classes = _onehot(6, 6)
    # image 0 -> class 0 (right), image 1 -> class 2 (wrong, true 1; true class ranked 2nd)
    images = np.array(
        [[1, 0, 0, 0, 0, 0], [0, 0.5, 0.9, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32
    )
    labels = np.array([0, 1, 5])
    out = metrics.zero_shot_classification(images, classes, labels)
    assert set(out) == {"acc1", "acc5", "mean_per_class_recall"}
    assert out["acc1"] == pytest.approx(2 / 3)
    assert out["acc5"] == 1.0
    assert out["mean_per_class_recall"] == pytest.approx(2 / 3)  # classes 0, 1, 5 present
    assert all(isinstance(v, float) for v in out.values())


def test_zero_shot_matches_sklearn_balanced_accuracy():
    rng = np.random.default_rng(0)
    x, y, centres = _clusters(rng, n_classes=7, noise=2.0)
    out = metrics.zero_shot_classification(x, centres, y)
    pred = metrics.zero_shot_scores(x, centres).argmax(1)
    assert out["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert out["acc1"] == pytest.approx((pred == y).mean())
    assert 0 <= out["acc1"] <= out["acc5"] <= 1


def test_zero_shot_few_classes_acc5_is_nan_and_errors():
    out = metrics.zero_shot_classification(_onehot(3, 3), _onehot(3, 3), np.array([0, 1, 2]))
    assert out["acc1"] == 1.0 and np.isnan(out["acc5"])
    with pytest.raises(ValueError, match="only 3 classes"):
        metrics.zero_shot_classification(_onehot(3, 3), _onehot(3, 3), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="length 3"):
        metrics.zero_shot_classification(_onehot(3, 3), _onehot(3, 3), np.array([0, 1]))
    with pytest.raises(ValueError, match="embedding sizes"):
        metrics.zero_shot_classification(_onehot(3, 3), _onehot(3, 4), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        metrics.zero_shot_classification(_onehot(3, 3), _onehot(3, 3), np.array([0.0, 1, 2]))


def test_retrieval_hand_checked():
    images = _onehot(3, 3)
    # texts 0,1 -> image 0; text 2 -> image 1; text 3 -> image 2 but looks like image 0
    texts = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.8, 0, 0.6]], dtype=np.float32)
    out = metrics.retrieval(images, texts, [0, 0, 1, 2], ks=(1, 2))
    assert out["t2i_R@1"] == pytest.approx(3 / 4)  # text 3 ranks image 0 first
    assert out["t2i_R@2"] == 1.0
    # image 0's best text is text 0; image 1 -> text 2; image 2 -> text 3 is first
    assert out["i2t_R@1"] == 1.0
    assert out["mean_recall"] == pytest.approx(np.mean([1, 1, 0.75, 1]))


def test_retrieval_chunking_matches(monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(40, 8)).astype(np.float32)
    idx = np.repeat(np.arange(40), 3)
    texts = images[idx] + rng.normal(size=(120, 8)).astype(np.float32)
    full = metrics.retrieval(images, texts, idx)
    monkeypatch.setattr(metrics, "_MAX_CELLS", 50)
    assert metrics.retrieval(images, texts, idx) == full


def test_deduplicated_protocol_counts_any_matching_image():
    captions = ["a road", "a road", "a lake"]
    unique, positives = metrics.deduplicate_captions(captions, [0, 1, 2])
    assert unique == ["a road", "a lake"] and positives == [[0, 1], [2]]
    images = _onehot(3, 3)
    texts = np.array([[0, 1, 0], [0, 0, 1]], dtype=np.float32)  # "a road" looks like image 1
    out = metrics.retrieval(images, texts, positives, ks=(1,))
    assert out["t2i_R@1"] == 1.0
    with pytest.raises(ValueError, match="captions"):
        metrics.deduplicate_captions(captions, [0, 1])


def test_retrieval_errors():
    with pytest.raises(ValueError, match="no caption"):
        metrics.retrieval(_onehot(3, 3), _onehot(2, 3), [0, 1])
    with pytest.raises(ValueError, match="there are 3 images"):
        metrics.retrieval(_onehot(3, 3), _onehot(3, 3), [0, 1, 5])
    with pytest.raises(ValueError, match="entries for 3 texts"):
        metrics.retrieval(_onehot(3, 3), _onehot(3, 3), [0, 1])


def test_knn_weighted_vote_hand_checked():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    y_train = np.array([0, 0, 1])
    test = np.array([[0.2, 1.0]], dtype=np.float32)
    # k=3: two weak class-0 votes vs one strong class-1 vote; T small -> similarity dominates
    assert metrics.knn(train, y_train, test, np.array([1]), k=3, temperature=0.07)["acc1"] == 1.0
    # huge temperature: all weights ~1, so the majority (class 0) wins
    out = metrics.knn(train, y_train, test, np.array([1]), k=3, temperature=1e6)
    assert out["acc1"] == 0.0
    with pytest.raises(ValueError, match="temperature"):
        metrics.knn(train, y_train, test, np.array([1]), temperature=0)


def test_knn_separable_clusters():
    rng = np.random.default_rng(2)
    x, y, _ = _clusters(rng, n_classes=5, noise=0.3)
    out = metrics.knn(x[::2], y[::2], x[1::2], y[1::2])
    assert out["acc1"] > 0.95 and out["acc5"] == 1.0


def test_linear_probe_picks_c_on_train_only():
    rng = np.random.default_rng(3)
    x, y, _ = _clusters(rng, n_classes=6, noise=1.5)
    out = metrics.linear_probe(x[::2], y[::2], x[1::2], y[1::2], seed=0)
    assert out["C"] in metrics.DEFAULT_C_GRID
    assert out["acc1"] > 0.5
    # Test labels do not influence the choice of C: shuffling them leaves C unchanged.
    shuffled = rng.permutation(y[1::2])
    assert metrics.linear_probe(x[::2], y[::2], x[1::2], shuffled, seed=0)["C"] == out["C"]
    again = metrics.linear_probe(x[::2], y[::2], x[1::2], y[1::2], seed=0)
    assert again == out  # deterministic
    with pytest.raises(ValueError, match="2 classes"):
        metrics.linear_probe(x[:5], np.zeros(5, int), x[5:10], np.zeros(5, int))


def test_few_shot_mean_std_and_skips():
    rng = np.random.default_rng(4)
    x, y, _ = _clusters(rng, n_classes=3, per_class=10, noise=0.8)
    out = metrics.few_shot(x[::2], y[::2], x[1::2], y[1::2], shots=(1, 4, 8), seeds=(0, 1))
    assert set(out["shots"]) == {"1", "4"}
    assert "8" in out["skipped"]  # 5 train images per class
    for k in ("1", "4"):
        runs = out["shots"][k]["acc1_runs"]
        assert len(runs) == 2
        assert out[f"{k}-shot_acc1"] == pytest.approx(np.mean(runs))
        assert out[f"{k}-shot_acc1_std"] == pytest.approx(np.std(runs, ddof=1))
    assert out == metrics.few_shot(x[::2], y[::2], x[1::2], y[1::2], shots=(1, 4, 8), seeds=(0, 1))


def test_counting_prompts_digits_and_words():
    assert metrics.counting_prompts("There are 3 planes.", 3, numbers=[1, 2])[1] == (
        "There are 2 planes."
    )
    words = metrics.counting_prompts("Three ships at the dock", 3, numbers=[1, 10], style="words")
    assert words == ["One ships at the dock", "Ten ships at the dock"]  # no category: number only
    assert metrics.counting_prompts("three cars", 3, numbers=[4])[0] == "4 cars"
    with pytest.raises(ValueError, match="does not state the count 4"):
        metrics.counting_prompts("three cars", 4)
    # 13 must not match 3
    with pytest.raises(ValueError):
        metrics.counting_prompts("13 cars", 3)


@pytest.mark.parametrize(
    ("caption", "count", "category", "style", "expected"),
    [
        # the annotations engineer's report: plural -> one, singular -> two
        ("a satellite image of seven trees", 7, "tree", "words",
         ["a satellite image of one tree", "a satellite image of two trees"]),
        ("a satellite image of one tree", 1, "tree", "digits",
         ["a satellite image of 1 tree", "a satellite image of 2 trees"]),
        # -es / -ies plurals, irregular and uninflected nouns
        ("4 buses on the road", 4, "bus", "digits", ["1 bus on the road", "2 buses on the road"]),
        ("two ferries", 2, "ferry", "words", ["one ferry", "two ferries"]),
        ("two people on the beach", 2, "person", "words",
         ["one person on the beach", "two people on the beach"]),
        ("one sheep in a field", 1, "sheep", "digits",
         ["1 sheep in a field", "2 sheep in a field"]),
        # multi-word category as build counting writes it, and as raw source labels
        ("5 small vehicles", 5, "small vehicle", "digits", ["1 small vehicle", "2 small vehicles"]),
        ("5 small vehicles", 5, "small-vehicle", "digits", ["1 small vehicle", "2 small vehicles"]),
        ("3 storage tanks", 3, "storagetank", "words", ["one storage tank", "two storage tanks"]),
        # head word only in the caption; adjectives between count and noun
        ("3 vehicles", 3, "small vehicle", "digits", ["1 vehicle", "2 vehicles"]),
        ("There are 3 small white cars.", 3, "car", "digits",
         ["There is 1 small white car.", "There are 2 small white cars."]),
        # capitalised count word and noun, verb after the noun
        ("Three Planes are parked.", 3, "plane", "words",
         ["One Plane is parked.", "Two Planes are parked."]),
        ("There is one car", 1, "car", "words", ["There is one car", "There are two cars"]),
    ],
)  # fmt: skip
def test_counting_prompts_reinflect_the_noun(caption, count, category, style, expected):
    prompts = metrics.counting_prompts(caption, count, category=category, style=style)
    assert len(prompts) == 10
    assert prompts[:2] == expected
    # the candidate for the true count, written as the caption writes it, is the caption itself
    own = "digits" if any(ch.isdigit() for ch in caption) else "words"
    own_prompts = metrics.counting_prompts(caption, count, category=category, style=own)
    assert own_prompts[count - 1] == caption


def test_counting_prompts_category_errors():
    with pytest.raises(ValueError, match="does not name the category 'car'"):
        metrics.counting_prompts("three planes near two cars", 3, category="car")
    # the noun must follow the count within three words
    with pytest.raises(ValueError, match="right after the count"):
        metrics.counting_prompts("3 of the many old rusty cars", 3, category="car")


def test_counting_hand_checked():
    images = _onehot(2, 3)
    cands = np.zeros((2, 3, 3), dtype=np.float32)
    cands[0] = [[0, 1, 0], [1, 0, 0], [0, 0, 1]]  # image 0 picks count 2
    cands[1] = [[1, 0, 0], [0, 0, 1], [0.5, 0.9, 0]]  # image 1 picks count 3
    out = metrics.counting(images, cands, np.array([2, 1]), numbers=[1, 2, 3])
    assert out["acc1"] == 0.5  # image 0 right; image 1 (true 1) predicted 3, true ranked 2nd
    assert out["acc2"] == 1.0 and out["acc3"] == 1.0
    assert out["confusion_matrix"] == [[0, 0, 1], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="not among the candidates"):
        metrics.counting(images, cands, np.array([2, 7]), numbers=[1, 2, 3])
    with pytest.raises(ValueError, match="candidate embeddings"):
        metrics.counting(images, cands[:, :2], np.array([2, 1]), numbers=[1, 2, 3])


REFS = [["a plane on the runway", "an airplane parked at the airport"], ["green trees by a river"]]


@pytest.mark.slow
def test_caption_metrics_with_java():
    if not metrics.java_available():
        pytest.skip("java not installed")
    perfect = metrics.caption_metrics(REFS, [REFS[0][0], REFS[1][0]])
    assert set(perfect) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    meteor = metrics._METEOR
    worse = metrics.caption_metrics(REFS, ["a river", "a plane"])
    assert metrics._METEOR is meteor  # one METEOR start-up (~10 s) per process, not per call
    for key in perfect:
        assert perfect[key] > worse[key]
        assert worse[key] >= 0


def test_caption_metrics_without_java_skips_meteor(monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = metrics.caption_metrics({"a": REFS[0], "b": REFS[1]}, {"a": REFS[0][1], "b": "x"})
    assert "METEOR" not in out and out["BLEU-1"] > 0
    assert any("METEOR skipped" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="different images"):
        metrics.caption_metrics({"a": REFS[0]}, {"b": "x"})
