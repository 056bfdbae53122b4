"""CLIP scores: one per sample, cosine in [-1, 1], cached, recorded with the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terrascribe.curate.score import score_dataset, score_samples
from terrascribe.curate.views import read_view
from tests.test_curate_helpers import make_dataset


@pytest.mark.slow
def test_scores_view(tiny_model, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TERRASCRIBE_CACHE", str(tmp_path / "shared"))
    ds = make_dataset(tmp_path / "ds", 12, shards=2)
    scores = score_dataset(ds, tiny_model, tmp_path / "scores.parquet", progress=False)
    assert scores["key"].tolist() == ds.manifest()["key"].tolist()
    assert np.isfinite(scores["clip_score"]).all()
    assert (scores["clip_score"].abs() <= 1.0001).all()
    view, meta = read_view(tmp_path / "scores.parquet")
    assert meta["fingerprint"] == tiny_model.fingerprint and meta["model"] == tiny_model.name
    assert list(view.columns) == ["key", "clip_score", "clip_score_mean"]
    cache = tmp_path / "shared" / "embeddings"
    assert any(cache.rglob("chunk-*.npy"))  # cached in the cache every tool shares
    again = score_dataset(ds, tiny_model, progress=False, cache_dir=cache)
    np.testing.assert_array_equal(again["clip_score"], scores["clip_score"])


def test_score_samples_first_and_mean(tiny_model) -> None:
    from tests.test_curate_helpers import make_samples

    samples = make_samples(3)
    first, mean = score_samples(
        tiny_model, [s.image for s in samples], [[s.captions[0]] for s in samples]
    )
    np.testing.assert_allclose(first, mean, rtol=1e-5)
    with pytest.raises(ValueError, match="caption lists"):
        score_samples(tiny_model, [samples[0].image], [])
