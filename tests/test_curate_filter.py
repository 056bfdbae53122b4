"""Filtering: thresholds, top fractions and per-group quotas, with per-rule reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from terrascribe.curate.filter import filter_dataset, group_values, select
from terrascribe.curate.views import write_view
from terrascribe.shards import Dataset
from tests.test_curate_helpers import make_dataset


def _frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tags = rng.choice(["common", "medium", "rare"], p=[0.7, 0.27, 0.03], size=n)
    scores = rng.normal(0.3, 0.05, n)
    scores[tags == "rare"] -= 0.2  # rare concepts score low (SkyScript's observation)
    labels = [[t] if i % 10 else [t, "common"] for i, t in enumerate(tags)]
    return pd.DataFrame(
        {
            "key": [f"k{i:03d}" for i in range(n)],
            "clip_score": scores,
            "labels": labels,
            "extra": ["{}"] * n,
        }
    )


def test_global_top_fraction_drops_rare_tags_but_quotas_keep_them() -> None:
    df = _frame()
    n_rare = sum("rare" in ls for ls in df["labels"])
    assert n_rare >= 3
    overall = select(df, top=0.3)
    assert overall.report["kept"] == math.ceil(0.3 * len(df))
    kept = overall.decisions[overall.decisions["kept"]]
    assert not any("rare" in g for g in kept["groups"])  # the global cut loses the rare tag
    quota = select(df, top=0.3, by="labels", min_per_group=3)
    d = quota.decisions
    for tag in ("common", "medium", "rare"):
        members = d[d["groups"].map(lambda g, t=tag: t in g)]
        need = max(math.ceil(0.3 * len(members)), min(3, len(members)))
        # Within each group, its own top `need` are all kept.
        top = members.sort_values(["score", "key"], ascending=[False, True]).head(need)
        assert top["kept"].all(), tag
    assert quota.report["rules"]["top per group"]["removed"] == int((~d["kept"]).sum())
    assert "rare" in quota.report["kept_by_group"]


def test_threshold_then_top_and_report_by_group() -> None:
    df = _frame()
    r = select(df, threshold=0.25, top=0.5, by="labels")
    d = r.decisions
    assert (d.loc[d["rule"] == "threshold", "score"] < 0.25).all()
    assert (d.loc[d["kept"], "score"] >= 0.25).all()
    removed_by_rule = r.report["rules"]["threshold"]
    assert removed_by_rule["removed"] == int((d["rule"] == "threshold").sum())
    assert removed_by_rule["by_group"]["rare"] == sum(
        "rare" in g for g in d.loc[d["rule"] == "threshold", "groups"]
    )


def test_ties_are_broken_by_key_and_missing_scores_removed() -> None:
    df = pd.DataFrame({"key": ["b", "a", "c", "d"], "clip_score": [1.0, 1.0, 1.0, np.nan]})
    r = select(df, top=0.5)
    assert r.decisions.set_index("key")["kept"].to_dict() == {
        "a": True,
        "b": True,
        "c": False,
        "d": False,
    }
    assert r.report["rules"]["no score"]["removed"] == 1


def test_group_values_extra_and_errors() -> None:
    df = pd.DataFrame({"key": ["a", "b"], "extra": ['{"label": "x"}', "{}"]})
    assert group_values(df, "extra.label").tolist() == [["x"], ["(none)"]]
    with pytest.raises(KeyError, match="cannot group"):
        group_values(df, "tags")
    with pytest.raises(ValueError, match="threshold"):
        select(df.assign(clip_score=1.0))
    with pytest.raises(ValueError, match="fraction"):
        select(df.assign(clip_score=1.0), top=1.5)
    with pytest.raises(ValueError, match="needs a group"):
        select(df.assign(clip_score=1.0), top=0.5, min_per_group=2)
    with pytest.raises(KeyError, match="curate score"):
        select(df, top=0.5)


def test_filter_dataset_writes_subset_and_report(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", 40)
    keys = ds.manifest()["key"]
    scores = pd.DataFrame({"key": keys, "clip_score": np.linspace(0, 1, len(keys))})
    write_view(tmp_path / "scores.parquet", scores, meta={"model": "test"})
    result = filter_dataset(
        ds,
        tmp_path / "out",
        scores=tmp_path / "scores.parquet",
        top=0.25,
        by="extra.label",
        min_per_group=2,
        progress=False,
    )
    out = Dataset(tmp_path / "out")
    assert len(out) == result.report["kept"]
    assert set(out.manifest()["key"]) == set(result.decisions.loc[result.decisions["kept"], "key"])
    report = json.loads((tmp_path / "out" / "filter_report.json").read_text())
    assert report["scores"]["model"] == "test"
    kept_groups = report["kept_by_group"]
    assert all(n >= 2 for n in kept_groups.values())
    assert Dataset(tmp_path / "out").info["builder"] == "curate.filter"
