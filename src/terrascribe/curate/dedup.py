"""Near- and exact-duplicate removal with perceptual hashes (RemoteCLIP's recipe, at scale).

Two images are duplicates when their encoded bytes are identical (``sha256``), or when their
perceptual hashes differ in at most ``max_distance`` bits: RemoteCLIP used pHash with Hamming
distance < 2, which is the default here (``max_distance=1``). With several hash kinds (pHash and
dHash), a pair must be close under *every* kind, which cuts false matches between low-texture
images (water, bare fields) whose pHashes alone collide.

Matches become clusters by connected components (a union-find over the match graph, computed by
``scipy.sparse.csgraph``): items, and the distinct hash values they hold, are nodes; so a group of
10,000 identical blank tiles costs 10,000 edges, not 50 million pairs. One item of each cluster is
kept, by a stated rule:

* ``largest`` (default): the largest image (width × height), then the lexicographically smallest
  key;
* ``first``: the lexicographically smallest key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from terrascribe.curate.hashindex import HashIndex, hamming
from terrascribe.curate.perceptual import check_kinds, hash_dataset, hash_folder
from terrascribe.curate.views import open_dataset, write_report, write_subset, write_view
from terrascribe.shards import Dataset, atomic_write_text, dumps

KEEP_RULES = ("largest", "first")
DEFAULT_MAX_DISTANCE = 1  # RemoteCLIP: Hamming distance < 2


@dataclass
class DedupResult:
    """Duplicate clusters found among hashed items.

    Attributes:
        clusters: One row per item in a cluster of two or more: ``key, cluster, size, kept,
            kept_key, exact`` (bytes identical to the kept item) and ``distance`` (Hamming
            distance of the first hash kind to the kept item).
        report: Counts and parameters (JSON-serialisable).
    """

    clusters: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def removed(self) -> list[str]:
        """Keys that de-duplication drops (every cluster member but the kept one), sorted."""
        return sorted(self.clusters.loc[~self.clusters["kept"], "key"])

    def cluster_list(self) -> list[dict[str, Any]]:
        """Clusters as plain JSON: ``[{"cluster", "kept", "members": [{"key", ...}]}]``."""
        out = []
        for cid, group in self.clusters.groupby("cluster", sort=True):
            out.append(
                {
                    "cluster": int(cid),
                    "kept": str(group["kept_key"].iloc[0]),
                    "size": len(group),
                    "members": [
                        {
                            "key": str(r.key),
                            "exact": bool(r.exact),
                            "distance": int(r.distance),
                            "width": int(r.width),
                            "height": int(r.height),
                        }
                        for r in group.sort_values("key").itertuples()
                    ],
                }
            )
        return out


def _components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels


def find_duplicates(
    hashes: pd.DataFrame,
    *,
    kinds: Sequence[str] = ("phash",),
    max_distance: int = DEFAULT_MAX_DISTANCE,
    keep: str = "largest",
    exact: bool = True,
) -> DedupResult:
    """Cluster duplicates among hashed items (from :func:`hash_dataset` or :func:`hash_folder`).

    Args:
        hashes: Columns ``key`` (or ``item``), ``width, height, sha256`` and one uint64 column per
            hash kind; rows with an ``error`` are ignored.
        kinds: Hash kinds that must all be within ``max_distance`` for a near-duplicate.
        max_distance: Largest Hamming distance (bits) of a near-duplicate; 0 finds only
            identical hashes.
        keep: Which member of a cluster survives: one of :data:`KEEP_RULES`.
        exact: Also join items whose encoded bytes are identical (``sha256``).

    Returns:
        The clusters (items in no cluster are not listed) and a report.

    Raises:
        ValueError: On an unknown keep rule or hash kind, or missing columns.
    """
    kinds = check_kinds(kinds)
    if keep not in KEEP_RULES:
        raise ValueError(f"unknown keep rule {keep!r}; choose from {KEEP_RULES}")
    if "key" not in hashes.columns and "item" in hashes.columns:
        hashes = hashes.rename(columns={"item": "key"})
    missing = [c for c in ("key", "width", "height", "sha256", *kinds) if c not in hashes]
    if missing:
        raise ValueError(f"hash table lacks columns {missing}")
    errors = hashes["error"].notna() if "error" in hashes else pd.Series(False, hashes.index)
    items = hashes.loc[~errors].reset_index(drop=True)
    n = len(items)
    matrix = np.stack([items[k].to_numpy(np.uint64) for k in kinds], axis=1).reshape(n, len(kinds))
    # Nodes: items [0, n), distinct hash combinations [n, n + c), distinct sha256 after that.
    combos, combo_of = np.unique(matrix, axis=0, return_inverse=True)
    combo_of = combo_of.reshape(-1)
    src = [np.arange(n)]
    dst = [n + combo_of]
    index = HashIndex(combos[:, 0] if len(combos) else np.zeros(0, np.uint64), max_distance)
    pairs = index.pairs()
    close = np.ones(len(pairs), dtype=bool)
    for k in range(1, len(kinds)):
        close &= hamming(combos[pairs.left, k], combos[pairs.right, k]) <= max_distance
    src.append(n + pairs.left[close])
    dst.append(n + pairs.right[close])
    n_nodes = n + len(combos)
    if exact and n:
        _, sha_of = np.unique(items["sha256"].to_numpy(str), return_inverse=True)
        src.append(np.arange(n))
        dst.append(n_nodes + sha_of.reshape(-1))
        n_nodes += int(sha_of.max()) + 1
    labels = _components(n_nodes, np.concatenate(src), np.concatenate(dst))[:n]
    sizes = np.bincount(labels, minlength=labels.max() + 1 if n else 0) if n else np.zeros(0)
    in_cluster = sizes[labels] > 1 if n else np.zeros(0, bool)
    members = items.loc[in_cluster, ["key", "width", "height", "sha256"]].copy()
    members["component"] = labels[in_cluster]
    members["_h0"] = matrix[in_cluster, 0] if n else np.zeros(0, np.uint64)
    members["_area"] = members["width"].astype(np.int64) * members["height"].astype(np.int64)
    if keep == "largest":
        members = members.sort_values(["component", "_area", "key"], ascending=[True, False, True])
    else:
        members = members.sort_values(["component", "key"])
    head = members.groupby("component", sort=False).head(1).set_index("component")
    members["kept_key"] = members["component"].map(head["key"])
    members["kept"] = members["key"] == members["kept_key"]
    members["exact"] = members["sha256"].to_numpy() == members["component"].map(head["sha256"])
    ref = members["component"].map(head["_h0"]).to_numpy(np.uint64)
    members["distance"] = hamming(members["_h0"].to_numpy(np.uint64), ref).astype(np.int64)
    # Cluster ids in order of each cluster's smallest key: stable across runs and workers.
    first_key = members.groupby("component")["key"].min().sort_values()
    cluster_id = pd.Series(np.arange(len(first_key)), index=first_key.index)
    members["cluster"] = members["component"].map(cluster_id).astype(np.int64)
    members["size"] = members["component"].map(members["component"].value_counts()).astype(np.int64)
    clusters = (
        members[
            ["key", "cluster", "size", "kept", "kept_key", "exact", "distance", "width", "height"]
        ]
        .sort_values(["cluster", "key"])
        .reset_index(drop=True)
    )
    removed = int((~clusters["kept"]).sum())
    size_hist = Counter(clusters.groupby("cluster").size().tolist())
    report = {
        "params": {
            "kinds": list(kinds),
            "max_distance": max_distance,
            "keep": keep,
            "exact": exact,
        },
        "items": len(hashes),
        "hashed": n,
        "unreadable": int(errors.sum()),
        "clusters": int(clusters["cluster"].nunique()),
        "in_clusters": len(clusters),
        "removed": removed,
        "kept": len(hashes) - int(errors.sum()) - removed,
        "exact_duplicates_removed": int((~clusters["kept"] & clusters["exact"]).sum()),
        "cluster_sizes": {str(k): v for k, v in sorted(size_hist.items())},
        "distance_to_kept": {
            str(k): int(v)
            for k, v in sorted(Counter(clusters.loc[~clusters["kept"], "distance"]).items())
        },
    }
    return DedupResult(clusters=clusters, report=report)


def _write_clusters(out: Path, result: DedupResult) -> None:
    write_view(out / "dedup_clusters.parquet", result.clusters, meta=result.report["params"])
    atomic_write_text(
        out / "dedup_clusters.json",
        dumps({"params": result.report["params"], "clusters": result.cluster_list()}),
    )
    write_report(out, "dedup_report.json", result.report)


def dedup_dataset(
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    *,
    kinds: Sequence[str] = ("phash",),
    max_distance: int = DEFAULT_MAX_DISTANCE,
    keep: str = "largest",
    exact: bool = True,
    materialise: bool = True,
    workers: int = 1,
    progress: bool = True,
) -> DedupResult:
    """De-duplicate a dataset: hash, cluster, keep one per cluster, write the rest as a new dataset.

    Writes into ``out_dir``: ``dedup_clusters.parquet`` (one row per clustered item),
    ``dedup_clusters.json`` (the same, grouped), ``dedup_report.json``, and with ``materialise``
    the de-duplicated dataset itself (each removed sample recorded as a ``Skip`` with reason
    ``"duplicate"`` naming the kept key). Per-shard hashes are cached in ``out_dir/.hashes`` so
    an interrupted run resumes.

    Args:
        dataset: Source dataset.
        out_dir: Output folder.
        kinds: Hash kinds (``phash``, optionally ``dhash``); all must match.
        max_distance: Largest Hamming distance of a near-duplicate (default 1, i.e. < 2).
        keep: Rule choosing the surviving member (:data:`KEEP_RULES`).
        exact: Also join byte-identical images.
        materialise: Write the de-duplicated dataset (else only the cluster files).
        workers: Parallel processes for hashing and writing.
        progress: Show progress bars.

    Returns:
        The clusters and report.
    """
    ds = open_dataset(dataset)
    out = Path(out_dir)
    hashes = hash_dataset(ds, kinds, workers=workers, cache_dir=out / ".hashes", progress=progress)
    result = find_duplicates(hashes, kinds=kinds, max_distance=max_distance, keep=keep, exact=exact)
    result.report["source"] = str(ds.path)
    if materialise:
        removed = result.clusters.loc[~result.clusters["kept"]]
        drops = {
            key: ("duplicate", f"duplicate of {kept}")
            for key, kept in zip(removed["key"], removed["kept_key"], strict=True)
        }
        write_subset(
            ds,
            out,
            drops,
            builder="curate.dedup",
            params=result.report["params"],
            workers=workers,
            report=result.report,
            progress=progress,
        )
    _write_clusters(out, result)
    return result


def dedup_folder(
    folder: str | Path,
    out_dir: str | Path,
    *,
    kinds: Sequence[str] = ("phash",),
    max_distance: int = DEFAULT_MAX_DISTANCE,
    keep: str = "largest",
    exact: bool = True,
    workers: int = 1,
    progress: bool = True,
) -> DedupResult:
    """Find duplicate clusters in a plain image folder (keys are paths relative to ``folder``).

    Writes the cluster files and report into ``out_dir``; nothing is copied or deleted.
    """
    hashes = hash_folder(folder, kinds, workers=workers, progress=progress)
    result = find_duplicates(hashes, kinds=kinds, max_distance=max_distance, keep=keep, exact=exact)
    result.report["source"] = str(folder)
    unreadable = hashes.loc[hashes["error"].notna(), ["item", "error"]]
    result.report["unreadable_items"] = unreadable.to_dict("records")
    _write_clusters(Path(out_dir), result)
    return result
