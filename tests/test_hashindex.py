"""The multi-index Hamming search returns exactly what brute force returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrascribe.curate.hashindex import (
    HashIndex,
    block_layout,
    brute_force_pairs,
    brute_force_query,
    hamming,
)


def _near_duplicates(rng: np.random.Generator, n: int, n_copies: int, max_flips: int) -> np.ndarray:
    """Random hashes plus copies of some of them with up to ``max_flips`` bits flipped."""
    base = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    if n == 0:
        return base
    src = rng.integers(0, n, size=n_copies)
    copies = base[src].copy()
    for i in range(n_copies):
        for bit in rng.choice(64, size=rng.integers(0, max_flips + 1), replace=False):
            copies[i] ^= np.uint64(1) << np.uint64(bit)
    return np.concatenate([base, copies])


@st.composite
def hash_sets(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(0, 60))
    # Few distinct bit patterns in some draws, so blocks collide a lot and values repeat.
    if draw(st.booleans()):
        pool = rng.integers(0, 2**64, size=max(1, n // 4 + 1), dtype=np.uint64)
        hashes = pool[rng.integers(0, len(pool), size=n)]
        flips = rng.integers(0, 64, size=n).astype(np.uint64)
        flip_mask = rng.random(n) < 0.5
        hashes = np.where(flip_mask, hashes ^ (np.uint64(1) << flips), hashes)
    else:
        hashes = _near_duplicates(rng, n, draw(st.integers(0, 20)), max_flips=6)
    return hashes.astype(np.uint64)


@settings(max_examples=150, deadline=None)
@given(hashes=hash_sets(), d=st.integers(0, 6))
def test_pairs_equal_brute_force(hashes: np.ndarray, d: int) -> None:
    index = HashIndex(hashes, max_distance=d)
    assert index.pairs().as_set() == brute_force_pairs(hashes, d).as_set()


@settings(max_examples=100, deadline=None)
@given(hashes=hash_sets(), queries=hash_sets(), d=st.integers(0, 5))
def test_query_equals_brute_force(hashes: np.ndarray, queries: np.ndarray, d: int) -> None:
    index = HashIndex(hashes, max_distance=d)
    assert index.query(queries).as_set() == brute_force_query(queries, hashes, d).as_set()


@settings(max_examples=50, deadline=None)
@given(hashes=hash_sets(), d=st.integers(1, 4))
def test_smaller_distance_than_built_for(hashes: np.ndarray, d: int) -> None:
    index = HashIndex(hashes, max_distance=d)
    assert index.pairs(d - 1).as_set() == brute_force_pairs(hashes, d - 1).as_set()


def test_chunking_does_not_change_results() -> None:
    rng = np.random.default_rng(1)
    # Only 3 distinct low blocks: huge buckets, so candidates are processed in many chunks.
    hashes = (rng.integers(0, 2**32, size=400, dtype=np.uint64) << np.uint64(32)) | rng.integers(
        0, 3, size=400
    ).astype(np.uint64)
    small = HashIndex(hashes, max_distance=3, chunk_candidates=50)
    assert small.pairs().as_set() == brute_force_pairs(hashes, 3).as_set()


def test_each_pair_is_reported_once_with_its_distance() -> None:
    h = np.array([0, 1, 3, 0, 2**63], dtype=np.uint64)
    got = HashIndex(h, max_distance=2).pairs()
    pairs = list(zip(got.left.tolist(), got.right.tolist(), got.distance.tolist(), strict=True))
    assert pairs == [
        (0, 1, 1),
        (0, 2, 2),
        (0, 3, 0),
        (0, 4, 1),
        (1, 2, 1),
        (1, 3, 1),
        (1, 4, 2),
        (2, 3, 2),
        (3, 4, 1),
    ]


def test_hamming_and_layout() -> None:
    assert hamming(np.array([0b1011], np.uint64), np.array([0], np.uint64)).tolist() == [3]
    assert block_layout(3) == [(0, 22), (22, 21), (43, 21)]
    assert sum(w for _, w in block_layout(7)) == 64
    with pytest.raises(ValueError, match="n_blocks"):
        block_layout(0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_distance"):
        HashIndex(np.zeros(3, np.uint64), max_distance=64)
    with pytest.raises(ValueError, match="1-D"):
        HashIndex(np.zeros((2, 2), np.uint64))
    index = HashIndex(np.zeros(3, np.uint64), max_distance=1)
    with pytest.raises(ValueError, match="up to 1"):
        index.pairs(2)


def test_empty_and_single() -> None:
    assert len(HashIndex(np.zeros(0, np.uint64)).pairs()) == 0
    assert len(HashIndex(np.ones(1, np.uint64)).pairs()) == 0
    assert len(HashIndex(np.ones(1, np.uint64)).query(np.zeros(0, np.uint64))) == 0
