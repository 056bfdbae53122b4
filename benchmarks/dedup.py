"""Near-duplicate search throughput: multi-index hashing vs brute-force Hamming comparison (numpy).

Synthetic 64-bit hashes (uniform random) with planted near-duplicates (copies with 0-1 bits
flipped, 5% of the items). For each size the script times:

* index: building :class:`terrascribe.curate.hashindex.HashIndex` (unique + per-block sort);
* query: all pairs within the distance (``unique_pairs``) + union-find clustering
  (:func:`terrascribe.curate.dedup.find_duplicates` does both; timed end to end);
* brute force: every pair compared with ``popcount(a ^ b)`` in numpy chunks. It is O(n²), so for
  large n it runs on a random subsample of ``--brute-sample`` items and is extrapolated by
  (n / sample)², as the table says. The pairs found on the subsample are compared with the
  index's pairs restricted to it: they must be identical.

Also: image hashing throughput (pHash of 128 px JPEGs) on this machine, to put the index cost in
proportion. Run: ``OMP_NUM_THREADS=1 python benchmarks/dedup.py [--sizes 100000 1000000]``.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from terrascribe.curate.dedup import find_duplicates
from terrascribe.curate.hashindex import HashIndex, brute_force_pairs


def synthetic_hashes(n: int, seed: int = 0, dup_fraction: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    n_dup = int(n * dup_fraction)
    src = rng.integers(n_dup, n, size=n_dup)
    flip = rng.random(n_dup) < 0.5
    bits = np.uint64(1) << rng.integers(0, 64, size=n_dup).astype(np.uint64)
    h[:n_dup] = np.where(flip, h[src] ^ bits, h[src])
    return h


def time_index(h: np.ndarray, d: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    index = HashIndex(h, max_distance=d)
    t1 = time.perf_counter()
    pairs = index.unique_pairs()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(pairs)


def time_end_to_end(h: np.ndarray, d: int) -> tuple[float, int]:
    n = len(h)
    table = pd.DataFrame(
        {
            "key": np.char.add("k", np.arange(n).astype(str)),
            "width": np.full(n, 256),
            "height": np.full(n, 256),
            "sha256": np.arange(n).astype(str),  # no byte-identical images
            "phash": h,
        }
    )
    t0 = time.perf_counter()
    result = find_duplicates(table, max_distance=d, exact=True)
    return time.perf_counter() - t0, result.report["removed"]


def check_on_sample(h: np.ndarray, d: int, m: int, seed: int) -> tuple[float, bool, int]:
    rng = np.random.default_rng(seed)
    # Keep planted copies and their sources in the sample: take the first m items (copies come
    # first) plus random others, so the check sees real matches, not only empty results.
    idx = np.unique(np.concatenate([np.arange(min(m // 2, len(h))), rng.choice(len(h), m // 2)]))
    sub = h[idx]
    t0 = time.perf_counter()
    brute = brute_force_pairs(sub, d, chunk_rows=512)
    brute_s = time.perf_counter() - t0
    same = HashIndex(sub, max_distance=d).pairs().as_set() == brute.as_set()
    return brute_s * (len(h) / len(sub)) ** 2, same, len(sub)


def time_hashing(n: int = 300) -> float:
    from PIL import Image

    from terrascribe.curate.perceptual import hash_image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):
        arr = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).resize((128, 128)).save(buf, "JPEG", quality=90)
        images.append(buf.getvalue())
    t0 = time.perf_counter()
    for data in images:
        hash_image(data)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--max-distance", type=int, default=1)
    parser.add_argument("--brute-sample", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    d = args.max_distance
    table = Table(title=f"near-duplicate search, Hamming <= {d} (machine shared, timings noisy)")
    for col in (
        "items",
        "index build s",
        "pair search s",
        "clusters end-to-end s",
        "removed",
        "brute force s",
        "brute measured on",
        "speed-up",
        "same pairs",
    ):
        table.add_column(col, justify="right")
    for n in args.sizes:
        h = synthetic_hashes(n, args.seed)
        build_s, search_s, _ = time_index(h, d)
        e2e_s, removed = time_end_to_end(h, d)
        m = min(n, args.brute_sample)
        brute_s, same, used = check_on_sample(h, d, m, args.seed)
        note = "all" if used >= n else f"{used} (x{(n / used) ** 2:,.0f} extrapolated)"
        table.add_row(
            f"{n:,}",
            f"{build_s:.2f}",
            f"{search_s:.2f}",
            f"{e2e_s:.2f}",
            f"{removed:,}",
            f"{brute_s:,.0f}",
            note,
            f"{brute_s / (build_s + search_s):,.0f}x",
            "yes" if same else "NO",
        )
    console = Console(width=170)
    console.print(table)
    rate = time_hashing()
    console.print(
        f"pHash of 128 px JPEGs (decode + hash, one process): {rate:,.0f} images/s; "
        f"1M images would take {1e6 / rate / 60:,.1f} min per core"
    )


if __name__ == "__main__":
    main()
