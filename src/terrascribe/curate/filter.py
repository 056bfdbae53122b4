"""Score-based filtering that keeps rare concepts: thresholds, top fractions, per-tag quotas.

SkyScript kept the top 20/30/50% of its pairs by CLIP image-caption similarity and noted that a
global cut throws away rare concepts, whose captions score lower. Here the cut can be made per
group (a tag, a class, a source): a sample is kept if it is in the top ``top`` fraction of *any*
of its groups, and each group keeps at least ``min_per_group`` samples (or all it has), so a rare
tag survives however low it scores.

Rules apply in order, and the report says what each removed, by group:

1. ``threshold``: drop samples scoring below it;
2. ``top`` (+ ``by`` and ``min_per_group``): of the rest, keep the top fraction, overall or per
   group.

Ties are broken by key, so the same scores always keep the same samples.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from terrascribe.curate.views import (
    join_view,
    open_dataset,
    read_view,
    write_report,
    write_subset,
    write_view,
)
from terrascribe.shards import Dataset

NO_GROUP = "(none)"


@dataclass
class FilterResult:
    """``decisions`` has ``key, score, groups, kept, rule`` (the rule that removed it, if any)."""

    decisions: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def group_values(manifest: pd.DataFrame, by: str) -> pd.Series:
    """The groups of each row, as lists: a manifest column (list columns such as ``labels`` give
    several groups per sample) or ``extra.FIELD`` (a field of the ``extra`` JSON).

    Raises:
        KeyError: If the column does not exist.
    """
    if by.startswith("extra."):
        name = by[len("extra.") :]
        values = manifest["extra"].map(lambda s: json.loads(s).get(name) if s else None)
    elif by in manifest.columns:
        values = manifest[by]
    else:
        raise KeyError(
            f"cannot group by {by!r}: not a manifest column ({', '.join(manifest.columns)}) nor "
            "extra.FIELD"
        )

    def as_list(v: Any) -> list[str]:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return [NO_GROUP]
        if isinstance(v, list | tuple | np.ndarray):
            return sorted({str(x) for x in v}) or [NO_GROUP]
        return [str(v)]

    return values.map(as_list)


def select(
    frame: pd.DataFrame,
    *,
    score: str = "clip_score",
    threshold: float | None = None,
    top: float | None = None,
    by: str | None = None,
    min_per_group: int = 0,
) -> FilterResult:
    """Decide which rows to keep.

    Args:
        frame: Manifest rows joined with the score column (and the ``by`` column).
        score: Score column; higher is better. Rows with no score are removed (rule ``no score``).
        threshold: Minimum score kept.
        top: Fraction in ``(0, 1]`` kept, overall or (with ``by``) within each group.
        by: Group column for quotas (see :func:`group_values`).
        min_per_group: With ``by``: each group keeps at least this many (or all it has).

    Returns:
        Decisions and a report: per rule the number removed and the removals by group.

    Raises:
        ValueError: On out-of-range arguments or no rule at all.
    """
    if threshold is None and top is None:
        raise ValueError("give a threshold, a top fraction, or both")
    if top is not None and not 0 < top <= 1:
        raise ValueError(f"top must be a fraction in (0, 1], got {top}")
    if min_per_group < 0:
        raise ValueError(f"min_per_group must be >= 0, got {min_per_group}")
    if min_per_group and by is None:
        raise ValueError("min_per_group needs a group column (by)")
    if score not in frame.columns:
        raise KeyError(f"no score column {score!r}; run 'terrascribe curate score' first")
    df = frame.sort_values("key").reset_index(drop=True)
    groups = group_values(df, by) if by else pd.Series([[NO_GROUP]] * len(df))
    scores = df[score].astype(float).to_numpy()
    rule = np.full(len(df), None, dtype=object)
    kept = np.isfinite(scores)
    rule[~kept] = "no score"
    if threshold is not None:
        below = kept & (scores < threshold)
        rule[below] = "threshold"
        kept &= ~below
    if top is not None:
        alive = np.flatnonzero(kept)
        keep = _top_per_group(
            df["key"].to_numpy()[alive], scores[alive], groups.iloc[alive], top, min_per_group
        )
        rule[alive[~keep]] = "top" if by is None else "top per group"
        kept[alive[~keep]] = False
    decisions = pd.DataFrame(
        {"key": df["key"], "score": scores, "groups": groups, "kept": kept, "rule": rule}
    )
    report = {
        "params": {
            "score": score,
            "threshold": threshold,
            "top": top,
            "by": by,
            "min_per_group": min_per_group,
        },
        "samples": len(df),
        "kept": int(kept.sum()),
        "removed": int((~kept).sum()),
        "rules": _rule_report(decisions),
        "kept_by_group": _count_groups(decisions.loc[decisions["kept"], "groups"]),
    }
    return FilterResult(decisions=decisions, report=report)


def _top_per_group(
    keys: np.ndarray, scores: np.ndarray, groups: pd.Series, top: float, minimum: int
) -> np.ndarray:
    """A sample survives if it ranks within its quota in any of its groups."""
    exploded = pd.DataFrame(
        {"pos": np.arange(len(keys)), "key": keys, "score": scores, "groups": groups.to_numpy()}
    ).explode("groups")
    exploded = exploded.sort_values(["groups", "score", "key"], ascending=[True, False, True])
    rank = exploded.groupby("groups", sort=False).cumcount().to_numpy()
    size = exploded.groupby("groups", sort=False)["key"].transform("size").to_numpy()
    quota = np.maximum(np.ceil(top * size - 1e-9), np.minimum(minimum, size))
    keep = np.zeros(len(keys), dtype=bool)
    keep[exploded["pos"].to_numpy(dtype=np.int64)[rank < quota]] = True
    return keep


def _count_groups(groups: pd.Series) -> dict[str, int]:
    counts: Counter[str] = Counter(g for gs in groups for g in gs)
    return dict(sorted(counts.items()))


def _rule_report(decisions: pd.DataFrame) -> dict[str, Any]:
    out = {}
    for rule in ("no score", "threshold", "top", "top per group"):
        removed = decisions.loc[decisions["rule"] == rule]
        if len(removed):
            out[rule] = {"removed": len(removed), "by_group": _count_groups(removed["groups"])}
    return out


def filter_dataset(
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    *,
    scores: str | Path,
    score: str = "clip_score",
    threshold: float | None = None,
    top: float | None = None,
    by: str | None = None,
    min_per_group: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> FilterResult:
    """Filter a dataset by a score view and write the kept samples as a new dataset.

    Writes ``out_dir`` (the dataset; removed samples are ``Skip``s with the rule as reason),
    ``out_dir/filter_report.json`` and ``out_dir/filter_decisions.parquet``.

    Args:
        dataset: Source dataset.
        out_dir: New dataset folder.
        scores: View with the score column (``scores.parquet`` from ``curate score``).
        score, threshold, top, by, min_per_group: See :func:`select`.
        workers: Parallel processes.
        progress: Show a progress bar.
    """
    ds = open_dataset(dataset)
    view, view_meta = read_view(scores)
    columns = ["key", "labels", "source", "sensor", "extra"]
    if by and not by.startswith("extra.") and by not in columns:
        columns.append(by)
    manifest = ds.manifest(columns=columns)
    frame = join_view(manifest, view)
    result = select(
        frame, score=score, threshold=threshold, top=top, by=by, min_per_group=min_per_group
    )
    result.report["source"] = str(ds.path)
    result.report["scores"] = {"path": str(scores), **view_meta}
    drops = {
        r.key: (f"filter: {r.rule}", f"{score}={r.score:.4f}")
        for r in result.decisions.loc[~result.decisions["kept"]].itertuples()
    }
    write_subset(
        ds,
        out_dir,
        drops,
        builder="curate.filter",
        params=result.report["params"],
        inputs=[str(scores)],
        workers=workers,
        report=result.report,
        progress=progress,
    )
    out = Path(out_dir)
    write_report(out, "filter_report.json", result.report)
    decisions = result.decisions.assign(groups=result.decisions["groups"].map(list))
    write_view(out / "filter_decisions.parquet", decisions, meta=result.report["params"])
    return result


def format_rules(report: dict[str, Any]) -> list[tuple[str, int, str]]:
    """``(rule, removed, top groups)`` rows for a printed summary."""
    rows = []
    for rule, info in report.get("rules", {}).items():
        top_groups = sorted(info["by_group"].items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        rows.append((rule, info["removed"], ", ".join(f"{g}: {n}" for g, n in top_groups)))
    return rows


__all__: Sequence[str] = ("FilterResult", "filter_dataset", "group_values", "select")
