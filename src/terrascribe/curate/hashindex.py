"""Multi-index hashing: all pairs of 64-bit hashes within a small Hamming distance, fast.

Comparing every hash with every other is O(n²): about 5·10¹¹ comparisons for a million images.
Multi-index hashing (Norouzi et al., 2012) avoids that with the pigeonhole principle: split each
64-bit hash into ``m`` disjoint blocks of bits; if two hashes differ in at most ``d < m`` bits, at
least one of their ``m`` blocks is identical. So candidates are only the pairs that share a block
value, found by sorting each block's values (no Python dict of buckets: numpy sorts and
``searchsorted`` ranges), and each candidate is checked exactly with ``popcount(a ^ b)``.

Identical hashes are collapsed first (``np.unique``), so a large group of identical images (blank
tiles, repeated frames) costs one entry rather than a quadratic number of candidates; pairs
between their members are expanded only when asked for.

The results are exactly those of brute force (:func:`brute_force_pairs`, the reference the tests
and ``benchmarks/dedup.py`` compare against).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

HASH_BITS = 64
# Upper bound on candidate pairs materialised at once (each costs ~40 bytes in flight).
DEFAULT_CHUNK_CANDIDATES = 8_000_000


def popcount64(values: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 (numpy's ``bitwise_count``), as uint8."""
    return np.bitwise_count(np.asarray(values, dtype=np.uint64))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance between two uint64 arrays."""
    return popcount64(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def block_layout(n_blocks: int, bits: int = HASH_BITS) -> list[tuple[int, int]]:
    """``(shift, width)`` of ``n_blocks`` disjoint blocks covering ``bits`` bits, as even as can be.

    Raises:
        ValueError: If ``n_blocks`` is not in ``[1, bits]``.
    """
    if not 1 <= n_blocks <= bits:
        raise ValueError(f"n_blocks must be between 1 and {bits}, got {n_blocks}")
    base, extra = divmod(bits, n_blocks)
    layout, shift = [], 0
    for b in range(n_blocks):
        width = base + (1 if b < extra else 0)
        layout.append((shift, width))
        shift += width
    return layout


def _block_values(hashes: np.ndarray, shift: int, width: int) -> np.ndarray:
    if width == HASH_BITS:
        return hashes
    mask = np.uint64((1 << width) - 1)
    return (hashes >> np.uint64(shift)) & mask


def _expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row r, all ``(r, c)`` with ``lo[r] <= c < hi[r]``, vectorised."""
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    rows = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    cols = lo[rows] + (np.arange(total, dtype=np.int64) - starts)
    return rows, cols


def _chunks_by_count(counts: np.ndarray, limit: int) -> Iterator[slice]:
    """Consecutive row slices whose summed ``counts`` stay near ``limit`` (one row at least)."""
    n = len(counts)
    if n == 0:
        return
    cum = np.cumsum(counts)
    start = 0
    while start < n:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + limit, side="right"))
        stop = max(stop, start + 1)
        yield slice(start, min(stop, n))
        start = stop


@dataclass(frozen=True)
class Pairs:
    """Matches between hashes: index arrays ``left``, ``right`` and their Hamming ``distance``."""

    left: np.ndarray
    right: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.left)

    def as_set(self) -> set[tuple[int, int, int]]:
        """The pairs as a Python set of ``(left, right, distance)`` (for tests and small data)."""
        return set(
            zip(self.left.tolist(), self.right.tolist(), self.distance.tolist(), strict=True)
        )

    @staticmethod
    def empty() -> Pairs:
        """No pairs."""
        z = np.zeros(0, dtype=np.int64)
        return Pairs(z, z.copy(), np.zeros(0, dtype=np.uint8))


def _sorted_pairs(left: np.ndarray, right: np.ndarray, dist: np.ndarray) -> Pairs:
    order = np.lexsort((right, left))
    return Pairs(left[order], right[order], dist[order].astype(np.uint8))


class HashIndex:
    """A multi-index over 64-bit hashes, answering Hamming range queries up to ``max_distance``.

    Args:
        hashes: uint64 array (one hash per item; duplicates allowed).
        max_distance: Largest Hamming distance any query will ask for (``d``): the index uses
            ``d + 1`` blocks, the fewest that guarantee a shared block, so buckets stay selective.
        chunk_candidates: Candidate pairs processed at once (bounds memory on skewed data).

    Raises:
        ValueError: On a negative or too large ``max_distance`` or a non-1-D input.
    """

    def __init__(
        self,
        hashes: np.ndarray,
        max_distance: int = 1,
        *,
        chunk_candidates: int = DEFAULT_CHUNK_CANDIDATES,
    ) -> None:
        hashes = np.asarray(hashes)
        if hashes.ndim != 1:
            raise ValueError(f"hashes must be a 1-D array, got shape {hashes.shape}")
        if not 0 <= max_distance < HASH_BITS:
            raise ValueError(f"max_distance must be in [0, {HASH_BITS - 1}], got {max_distance}")
        self.hashes = hashes.astype(np.uint64, copy=False)
        self.max_distance = int(max_distance)
        self.chunk_candidates = int(chunk_candidates)
        # Unique values and, for each, the original items holding it (grouped by `order`).
        self.unique, self.inverse, self.counts = np.unique(
            self.hashes, return_inverse=True, return_counts=True
        )
        self.layout = block_layout(self.max_distance + 1)
        self._blocks = []
        for shift, width in self.layout:
            values = _block_values(self.unique, shift, width)
            order = np.argsort(values, kind="stable")
            self._blocks.append((shift, width, values[order], order))

    def __len__(self) -> int:
        return len(self.hashes)

    def _check_distance(self, max_distance: int | None) -> int:
        d = self.max_distance if max_distance is None else int(max_distance)
        if not 0 <= d <= self.max_distance:
            raise ValueError(
                f"this index answers distances up to {self.max_distance}, asked for {d}: build it "
                "with a larger max_distance"
            )
        return d

    def unique_pairs(self, max_distance: int | None = None) -> Pairs:
        """Pairs ``(u, v)``, ``u < v``, of distinct unique hash values within ``max_distance``.

        Indices refer to :attr:`unique`. Identical values are one entry, so never paired here.
        """
        d = self._check_distance(max_distance)
        found_l, found_r, found_d = [], [], []
        for b, (_, _, sorted_vals, order) in enumerate(self._blocks):
            n = len(sorted_vals)
            if n < 2:
                continue
            # Runs of equal block values in sorted order: each position pairs with later ones.
            bounds = np.flatnonzero(np.diff(sorted_vals)) + 1
            run_end = np.repeat(np.append(bounds, n), np.diff(np.concatenate(([0], bounds, [n]))))
            lo = np.arange(1, n + 1, dtype=np.int64)
            hi = run_end.astype(np.int64)
            counts = hi - lo
            for sl in _chunks_by_count(counts, self.chunk_candidates):
                rows, cols = _expand_ranges(lo[sl], hi[sl])
                u = order[rows + sl.start]
                v = order[cols]
                dist = hamming(self.unique[u], self.unique[v])
                keep = dist <= d
                u, v, dist = u[keep], v[keep], dist[keep]
                # A pair sharing several blocks is reported once: by the first block it shares.
                first = _first_shared_block(self.unique[u], self.unique[v], self.layout)
                own = first == b
                lo_i, hi_i = np.minimum(u[own], v[own]), np.maximum(u[own], v[own])
                found_l.append(lo_i)
                found_r.append(hi_i)
                found_d.append(dist[own])
        if not found_l:
            return Pairs.empty()
        return _sorted_pairs(
            np.concatenate(found_l), np.concatenate(found_r), np.concatenate(found_d)
        )

    def pairs(self, max_distance: int | None = None) -> Pairs:
        """All item pairs ``(i, j)``, ``i < j``, within ``max_distance`` (identical hashes too).

        This expands groups of identical hashes into all their pairs: for clustering use
        :meth:`unique_pairs` with :attr:`inverse`, which never does.
        """
        upairs = self.unique_pairs(max_distance)
        members = np.argsort(self.inverse, kind="stable")  # items grouped by unique value
        starts = np.cumsum(self.counts) - self.counts
        left, right, dist = [], [], []
        # Pairs between items holding two different (but close) values.
        if len(upairs):
            rows, offs_a = _expand_ranges(
                np.zeros(len(upairs), np.int64), self.counts[upairs.left].astype(np.int64)
            )
            ia = members[starts[upairs.left[rows]] + offs_a]
            counts_b = self.counts[upairs.right[rows]].astype(np.int64)
            rows2, offs_b = _expand_ranges(np.zeros(len(rows), np.int64), counts_b)
            ib = members[starts[upairs.right[rows[rows2]]] + offs_b]
            ia = ia[rows2]
            left.append(np.minimum(ia, ib))
            right.append(np.maximum(ia, ib))
            dist.append(upairs.distance[rows[rows2]])
        # Pairs within groups of identical values (distance 0).
        if np.any(self.counts > 1):
            # members is grouped by value: each position pairs with the later ones of its group.
            group_end = np.repeat(starts + self.counts, self.counts).astype(np.int64)
            lo = np.arange(1, len(members) + 1, dtype=np.int64)
            rows, cols = _expand_ranges(lo, group_end)
            ia, ib = members[rows], members[cols]
            left.append(np.minimum(ia, ib))
            right.append(np.maximum(ia, ib))
            dist.append(np.zeros(len(ia), np.uint8))
        if not left:
            return Pairs.empty()
        return _sorted_pairs(np.concatenate(left), np.concatenate(right), np.concatenate(dist))

    def query(self, queries: np.ndarray, max_distance: int | None = None) -> Pairs:
        """Matches between ``queries`` and the indexed items: ``left`` indexes ``queries``,
        ``right`` the items of this index, every pair within ``max_distance``."""
        d = self._check_distance(max_distance)
        q = np.asarray(queries).astype(np.uint64, copy=False)
        if q.ndim != 1:
            raise ValueError(f"queries must be a 1-D array, got shape {q.shape}")
        q_unique, q_inverse = np.unique(q, return_inverse=True)
        found_q, found_u, found_d = [], [], []
        for b, (shift, width, sorted_vals, order) in enumerate(self._blocks):
            qv = _block_values(q_unique, shift, width)
            lo = np.searchsorted(sorted_vals, qv, side="left").astype(np.int64)
            hi = np.searchsorted(sorted_vals, qv, side="right").astype(np.int64)
            for sl in _chunks_by_count(hi - lo, self.chunk_candidates):
                rows, cols = _expand_ranges(lo[sl], hi[sl])
                qa = rows + sl.start
                u = order[cols]
                dist = hamming(q_unique[qa], self.unique[u])
                keep = dist <= d
                qa, u, dist = qa[keep], u[keep], dist[keep]
                own = _first_shared_block(q_unique[qa], self.unique[u], self.layout) == b
                found_q.append(qa[own])
                found_u.append(u[own])
                found_d.append(dist[own])
        if not found_q:
            return Pairs.empty()
        uq, uu, ud = (np.concatenate(x) for x in (found_q, found_u, found_d))
        # Expand unique query values to query items, and unique index values to index items.
        q_members = np.argsort(q_inverse, kind="stable")
        q_counts = np.bincount(q_inverse, minlength=len(q_unique))
        q_starts = np.cumsum(q_counts) - q_counts
        rows, offs = _expand_ranges(np.zeros(len(uq), np.int64), q_counts[uq].astype(np.int64))
        qi = q_members[q_starts[uq[rows]] + offs]
        members = np.argsort(self.inverse, kind="stable")
        starts = np.cumsum(self.counts) - self.counts
        rows2, offs2 = _expand_ranges(
            np.zeros(len(rows), np.int64), self.counts[uu[rows]].astype(np.int64)
        )
        ii = members[starts[uu[rows[rows2]]] + offs2]
        return _sorted_pairs(qi[rows2], ii, ud[rows[rows2]])


def _first_shared_block(a: np.ndarray, b: np.ndarray, layout: list[tuple[int, int]]) -> np.ndarray:
    """Index of the first block in which ``a`` and ``b`` agree (``len(layout)`` if none)."""
    first = np.full(len(a), len(layout), dtype=np.int64)
    x = np.bitwise_xor(a, b)
    for i in range(len(layout) - 1, -1, -1):
        shift, width = layout[i]
        same = _block_values(x, shift, width) == 0
        first[same] = i
    return first


def brute_force_pairs(hashes: np.ndarray, max_distance: int, *, chunk_rows: int = 256) -> Pairs:
    """Reference: every item pair ``(i, j)``, ``i < j``, within ``max_distance``, by comparing all.

    O(n²) time; memory bounded by ``chunk_rows × n``. Used to check :class:`HashIndex` and as the
    baseline of ``benchmarks/dedup.py``.
    """
    h = np.asarray(hashes).astype(np.uint64, copy=False)
    n = len(h)
    left, right, dist = [], [], []
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        block = np.bitwise_count(h[start:stop, None] ^ h[None, :])
        rows, cols = np.nonzero(block <= max_distance)
        rows = rows + start
        keep = cols > rows
        left.append(rows[keep])
        right.append(cols[keep])
        dist.append(block[rows[keep] - start, cols[keep]])
    if not left:
        return Pairs.empty()
    return _sorted_pairs(
        np.concatenate(left).astype(np.int64),
        np.concatenate(right).astype(np.int64),
        np.concatenate(dist),
    )


def brute_force_query(queries: np.ndarray, hashes: np.ndarray, max_distance: int) -> Pairs:
    """Reference for :meth:`HashIndex.query`: compare every query with every item."""
    q = np.asarray(queries).astype(np.uint64, copy=False)
    h = np.asarray(hashes).astype(np.uint64, copy=False)
    block = np.bitwise_count(q[:, None] ^ h[None, :])
    rows, cols = np.nonzero(block <= max_distance)
    return _sorted_pairs(rows.astype(np.int64), cols.astype(np.int64), block[rows, cols])
