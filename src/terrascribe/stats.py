"""Summary statistics of a terrascribe dataset (what ``terrascribe info`` prints)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from terrascribe.shards import Dataset

# Ground sampling distance bins in metres: sub-decimetre drone/aerial up to Landsat-like pixels.
GSD_BINS_M = (0.0, 0.1, 0.3, 0.6, 1.0, 3.0, 10.0, 30.0, math.inf)


def describe_dataset(path: str | Path) -> dict[str, Any]:
    """Counts, caption lengths, sources, GSD histogram and spatial extent of a dataset.

    Args:
        path: Dataset folder.

    Returns:
        A JSON-serialisable dict.
    """
    ds = Dataset(path)
    df = ds.manifest(
        columns=[
            "caption",
            "n_captions",
            "source",
            "gsd_m",
            "licence",
            "west",
            "south",
            "east",
            "north",
            "labels",
            "width",
            "height",
        ]
    )
    words = df["caption"].str.split().str.len().to_numpy() if len(df) else np.zeros(0)
    gsd = df["gsd_m"].dropna().to_numpy(dtype=float)
    hist, _ = np.histogram(gsd, bins=np.array(GSD_BINS_M))  # all zeros when no GSD is known
    geo = df.dropna(subset=["west", "south", "east", "north"])
    labels: Counter[str] = Counter()
    for row in df["labels"]:
        labels.update(list(row) if row is not None else [])
    counts = ds.info.get("counts", {})
    return {
        "path": str(ds.path),
        "builder": ds.info.get("builder"),
        "samples": len(df),
        "shards": len(ds.sizes),
        "skipped": counts.get("skipped", 0),
        "skip_reasons": counts.get("skip_reasons", {}),
        "captions_per_sample": _summary(df["n_captions"].to_numpy(dtype=float)),
        "caption_words": _summary(words.astype(float)),
        "sources": _top(Counter(df["source"])),
        "licences": _top(Counter(df["licence"].fillna("unknown"))),
        "image_size": {
            "width": _summary(df["width"].to_numpy(dtype=float)),
            "height": _summary(df["height"].to_numpy(dtype=float)),
        },
        "gsd_m": {
            "known": int(gsd.size),
            "histogram": [
                {"from": lo, "to": hi if math.isfinite(hi) else None, "count": int(n)}
                for lo, hi, n in zip(GSD_BINS_M[:-1], GSD_BINS_M[1:], hist, strict=True)
            ],
        },
        "extent": (
            {
                "georeferenced": len(geo),
                "west": float(geo["west"].min()),
                "south": float(geo["south"].min()),
                "east": float(geo["east"].max()),
                "north": float(geo["north"].max()),
            }
            if len(geo)
            else {"georeferenced": 0}
        ),
        "top_labels": _top(labels, 15),
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "mean": round(float(values.mean()), 3),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _top(counter: Counter, n: int = 20) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]}


def format_json(summary: dict[str, Any]) -> str:
    """The summary as indented JSON."""
    return json.dumps(summary, indent=2, ensure_ascii=False)
