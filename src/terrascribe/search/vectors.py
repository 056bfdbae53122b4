"""The faiss side of an index: choosing the index type by size, building, growing, searching.

Vectors are L2-normalised, so inner product is cosine similarity. Faiss ids are row numbers of
the tile table (``0 .. n-1``, in insertion order), so no id map is needed.

Choice by size (``"auto"``), recorded in the index manifest with its parameters:

* fewer than ``EXACT_MAX`` vectors: ``flat`` (``IndexFlatIP``, exact);
* up to ``HNSW_MAX``: ``hnsw`` (``IndexHNSWFlat``, inner product; graph search over full
  vectors, no training, appends cheaply; ``efSearch`` sets the recall/latency trade-off);
* beyond: ``ivfpq`` (``IVF{nlist},PQ{m}`` trained on a sample; memory ``m`` bytes a vector).

When appends carry an index past a threshold it is rebuilt as the larger type from its own
stored vectors (flat and HNSW keep full vectors), so nothing is embedded again.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EXACT_MAX = 100_000
HNSW_MAX = 5_000_000
INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq")
_FAISS_LOCK = threading.Lock()


class VectorIndexError(ValueError):
    """An index type or parameter is unusable."""


@dataclass
class IndexSpec:
    """An index type and its parameters (what the manifest records)."""

    type: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {"type": self.type, "params": dict(self.params)}


def choose_spec(n: int, dim: int, requested: str = "auto") -> IndexSpec:
    """The index type for ``n`` vectors of ``dim`` (``requested`` forces one)."""
    if requested not in INDEX_TYPES:
        raise VectorIndexError(f"unknown index type {requested!r}; use one of {INDEX_TYPES}")
    kind = requested
    if kind == "auto":
        kind = "flat" if n < EXACT_MAX else "hnsw" if n < HNSW_MAX else "ivfpq"
    if kind == "flat":
        return IndexSpec("flat", {"metric": "inner_product"})
    if kind == "hnsw":
        return IndexSpec(
            "hnsw", {"metric": "inner_product", "M": 32, "efConstruction": 80, "efSearch": 256}
        )
    nlist = int(2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 16))))
    m = next(c for c in (64, 48, 32, 16, 8, 4, 2, 1) if dim % c == 0 and c <= dim)
    return IndexSpec(
        "ivfpq",
        {"metric": "inner_product", "nlist": nlist, "m": m, "nbits": 8, "nprobe": 32},
    )


def make_index(spec: IndexSpec, dim: int, train: np.ndarray | None = None, seed: int = 0):
    """An empty faiss index for ``spec`` (IVF-PQ is trained on ``train``)."""
    import faiss

    p = spec.params
    if spec.type == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(p["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["efConstruction"])
        index.hnsw.efSearch = int(p["efSearch"])
        return index
    if spec.type == "ivfpq":
        if train is None or len(train) < 39 * int(p["nlist"]) // 4:
            n = 0 if train is None else len(train)
            raise VectorIndexError(
                f"IVF-PQ with nlist={p['nlist']} needs at least {39 * int(p['nlist']) // 4} "
                f"training vectors, got {n}; use the flat or hnsw type for small indexes"
            )
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(
            quantizer,
            dim,
            int(p["nlist"]),
            int(p["m"]),
            int(p["nbits"]),
            faiss.METRIC_INNER_PRODUCT,
        )
        rng = np.random.default_rng(seed)
        cap = 256 * int(p["nlist"])
        sample = train if len(train) <= cap else train[np.sort(rng.choice(len(train), cap, False))]
        index.cp.seed = seed
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.nprobe = int(p["nprobe"])
        index.make_direct_map()  # reconstruct() for query-by-example and filtered exact search
        return index
    raise VectorIndexError(f"unknown index type {spec.type!r}")


def all_vectors(index) -> np.ndarray:
    """Every stored vector (exact for flat/HNSW, decoded approximations for IVF-PQ)."""
    n = index.ntotal
    if n == 0:
        return np.zeros((0, index.d), np.float32)
    return index.reconstruct_n(0, n)


def vectors_at(index, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of ``ids``."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros((0, index.d), np.float32)
    return index.reconstruct_batch(ids)


def search_params(spec: IndexSpec, k: int, selector: Any = None) -> Any:
    """Per-call faiss search parameters (thread-safe: nothing is set on the shared index)."""
    import faiss

    if spec.type == "hnsw":
        ef = max(int(spec.params.get("efSearch", 256)), k)
        return faiss.SearchParametersHNSW(efSearch=ef, sel=selector)
    if spec.type == "ivfpq":
        return faiss.SearchParametersIVF(nprobe=int(spec.params.get("nprobe", 32)), sel=selector)
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def search_vectors(
    index, spec: IndexSpec, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) of each query, restricted to ``allowed`` ids when given.

    A restriction to few ids is searched exactly over those vectors; a broad one goes through
    the index with a faiss ID selector, so approximate indexes filter inside the search rather
    than dropping hits afterwards. Missing hits have id -1.
    """
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = index.ntotal
    k = max(1, min(k, max(n, 1)))
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=np.int64)
        if len(allowed) == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full(
                (len(queries), k), -1, np.int64
            )
        if spec.type == "flat" or len(allowed) <= max(20_000, n // 50):
            return _exact_subset(index, queries, k, allowed)
        bitmap = np.zeros(n, bool)
        bitmap[allowed] = True
        packed = np.packbits(bitmap, bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(packed))
        params = search_params(spec, k, selector)
        scores, ids = index.search(queries, k, params=params)
        return scores, ids
    params = search_params(spec, k)
    if params is None:
        return index.search(queries, k)
    return index.search(queries, k, params=params)


def _exact_subset(index, queries: np.ndarray, k: int, allowed: np.ndarray):
    vecs = vectors_at(index, allowed)
    sims = queries @ vecs.T
    kk = min(k, len(allowed))
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, 1)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    scores[:, :kk] = np.take_along_axis(sims, top, 1)
    ids[:, :kk] = allowed[top]
    return scores, ids


def grow(index, spec: IndexSpec, vectors: np.ndarray, requested: str = "auto", seed: int = 0):
    """Append ``vectors``; returns ``(index, spec, rebuilt)``.

    With ``requested="auto"``, an index whose new size calls for a larger type is rebuilt as
    that type from its stored vectors plus the new ones.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    total = index.ntotal + len(vectors)
    wanted = choose_spec(total, index.d, requested) if requested == "auto" else spec
    order = {"flat": 0, "hnsw": 1, "ivfpq": 2}
    if order[wanted.type] > order[spec.type]:
        everything = np.concatenate([all_vectors(index), vectors])
        new = make_index(wanted, index.d, train=everything, seed=seed)
        new.add(everything)
        return new, wanted, True
    if len(vectors):
        index.add(vectors)
    return index, spec, False


def write(index, path) -> None:
    """Write an index through a temporary file and a rename."""
    import os

    import faiss

    tmp = f"{path}.tmp"
    with _FAISS_LOCK:
        faiss.write_index(index, tmp)
    os.replace(tmp, path)


def read(path):
    """Read an index written by :func:`write`."""
    import faiss

    return faiss.read_index(str(path))


__all__ = [
    "EXACT_MAX",
    "HNSW_MAX",
    "INDEX_TYPES",
    "IndexSpec",
    "VectorIndexError",
    "all_vectors",
    "choose_spec",
    "grow",
    "make_index",
    "read",
    "search_vectors",
    "vectors_at",
    "write",
]
