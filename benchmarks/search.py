"""Search benchmarks: query latency and recall of the index types, and indexing throughput.

Part 1 (vectors): for each size (default 100k and 1M) and data kind, ``d``-dimensional unit
vectors are generated (seeded), exact top-10 is computed with ``IndexFlatIP`` (the reference),
and each approximate index the build would choose is timed one query at a time (what a user
waits for), reporting p50/p99 latency, recall@10 against exact, and the latency ratio to exact
search measured in the same run.

* ``random``: i.i.d. Gaussian directions, the hardest case for any approximate index (no
  structure, neighbours barely closer than strangers);
* ``clustered``: a mixture of 1000 Gaussian clusters with queries from the same mixture, closer
  to real image embeddings (which concentrate around scene types).

Part 2 (indexing): ``build_index`` on a generated sample region against the bare embedding rate
of the same tiles (``encode_images`` on pre-read arrays), both with the tiny model.

Usage::

    python benchmarks/search.py                       # 100k and 1M, both kinds, 2 threads
    python benchmarks/search.py --sizes 100000 --queries 300 --skip-indexing
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(kind: str, n: int, nq: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Database and query vectors of one kind (chunked to bound peak memory)."""
    rng = np.random.default_rng(seed)
    xb = np.empty((n, d), np.float32)
    if kind == "random":
        for i in range(0, n, 100_000):
            m = min(100_000, n - i)
            xb[i : i + m] = unit(rng.standard_normal((m, d), dtype=np.float32))
        xq = unit(rng.standard_normal((nq, d), dtype=np.float32))
        return xb, xq
    centres = unit(rng.standard_normal((1000, d), dtype=np.float32))
    spread = 0.6 / np.sqrt(d)  # within-cluster noise of ~0.6 of a unit vector's length

    def draw(m: int) -> np.ndarray:
        c = centres[rng.integers(0, len(centres), m)]
        return unit(c + spread * rng.standard_normal((m, d), dtype=np.float32))

    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        xb[i : i + m] = draw(m)
    return xb, draw(nq)


def latencies(search_one, xq: np.ndarray) -> np.ndarray:
    """Per-query wall times in ms (one query at a time)."""
    out = np.empty(len(xq))
    for i in range(len(xq)):
        t = time.perf_counter()
        search_one(xq[i : i + 1])
        out[i] = (time.perf_counter() - t) * 1000
    return out


def recall_at(ids: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of the true top-k found in the returned top-k."""
    hits = [len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, truth, strict=True)]
    return float(np.mean(hits))


def bench_vectors(args: argparse.Namespace) -> list[dict]:
    import faiss

    from terrascribe.search import vectors

    rows = []
    for n in args.sizes:
        for kind in args.kinds:
            xb, xq = make_data(kind, n, args.queries, args.dim, args.seed)
            faiss.omp_set_num_threads(args.build_threads)
            flat = faiss.IndexFlatIP(args.dim)
            flat.add(xb)
            _, truth = flat.search(xq, 10)
            faiss.omp_set_num_threads(args.threads)
            exact_ms = latencies(lambda q, f=flat: f.search(q, 10), xq[: args.exact_queries])
            rows.append(row(n, kind, "flat (exact, reference)", 0.0, exact_ms, 1.0, exact_ms))
            del flat
            specs = [vectors.choose_spec(n, args.dim, "hnsw")]
            if n >= 200_000 or args.ivfpq:
                specs.append(vectors.choose_spec(max(n, 5_000_000), args.dim, "ivfpq"))
            for spec in specs:
                faiss.omp_set_num_threads(args.build_threads)
                t = time.perf_counter()
                if spec.type == "ivfpq":
                    spec.params["nlist"] = int(2 ** round(np.log2(4 * np.sqrt(n))))
                    train = xb[:: max(1, n // (args.ivf_train_per_list * spec.params["nlist"]))]
                    index = vectors.make_index(spec, args.dim, train=train, seed=args.seed)
                else:
                    index = vectors.make_index(spec, args.dim)
                index.add(xb)
                build_s = time.perf_counter() - t
                faiss.omp_set_num_threads(args.threads)
                knob = "efSearch" if spec.type == "hnsw" else "nprobe"
                values = args.ef if spec.type == "hnsw" else args.nprobe
                for v in values:
                    spec.params[knob] = v
                    _, ids = vectors.search_vectors(index, spec, xq, 10)
                    rec = recall_at(ids, truth)
                    ms = latencies(
                        lambda q, i=index, s=spec: vectors.search_vectors(i, s, q, 10), xq
                    )
                    label = f"{spec.type} {knob}={v}"
                    rows.append(row(n, kind, label, build_s, ms, rec, exact_ms))
                    print_row(rows[-1], flush=True)
                del index
            del xb
    return rows


def row(n, kind, label, build_s, ms, rec, exact_ms) -> dict:
    p50, p99 = np.percentile(ms, [50, 99])
    return {
        "n": n,
        "data": kind,
        "index": label,
        "build_s": build_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "recall10": rec,
        "speedup_p50": float(np.percentile(exact_ms, 50) / p50),
    }


def print_row(r: dict, flush: bool = False) -> None:
    print(
        f"{r['n']:>9,} {r['data']:>9} {r['index']:<26} {r['build_s']:8.1f} "
        f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['recall10']:8.3f} {r['speedup_p50']:8.1f}x",
        flush=flush,
    )


def bench_indexing(args: argparse.Namespace) -> None:
    import torch

    from terrascribe.models.encode import encode_images
    from terrascribe.models.zoo import load_model
    from terrascribe.sample_data import generate
    from terrascribe.search.index import build_index
    from terrascribe.search.tiling import TilingParams, iter_tiles, resolve_inputs

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        region = generate(Path(tmp) / "region", seed=0, size_px=args.region_px)
        bundle = load_model("ts-tiny", seed=0)
        params = TilingParams(tile_px=64, gsd_m=None, overlap=0.5)
        t = time.perf_counter()
        tiles = [rgb for _, rgb in iter_tiles(resolve_inputs([region.geotiff]), params)]
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        encode_images(bundle, tiles, batch_size=128, progress=False)
        embed_s = time.perf_counter() - t
        t = time.perf_counter()
        report = build_index(
            [region.geotiff],
            bundle,
            Path(tmp) / "index",
            tile_px=64,
            overlap=0.5,
            batch_size=128,
            progress=False,
        )
        build_s = time.perf_counter() - t
    n = report.added
    print(
        f"\nIndexing ({args.region_px}x{args.region_px} px region, 64 px tiles, 50% overlap, "
        f"ts-tiny, {args.threads} threads): {n} tiles"
    )
    print(f"{'stage':<42} {'seconds':>8} {'tiles/s':>9} {'ratio':>7}")
    bare = n / embed_s
    for name, secs in (
        ("bare embedding (encode_images, reference)", embed_s),
        ("tile reads only (rasterio windowed)", read_s),
        ("build_index (read + embed + faiss + parquet)", build_s),
    ):
        print(f"{name:<42} {secs:8.2f} {n / secs:9.1f} {n / secs / bare:7.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--kinds", nargs="+", default=["random", "clustered"])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--exact-queries", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="Threads for queries.")
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    p.add_argument("--ivfpq", action="store_true", help="Also time IVF-PQ below 200k.")
    p.add_argument("--ivf-train-per-list", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--region-px", type=int, default=1024)
    p.add_argument("--skip-vectors", action="store_true")
    p.add_argument("--skip-indexing", action="store_true")
    args = p.parse_args(argv)
    print(
        f"threads: queries {args.threads}, build {args.build_threads}; cpu_count "
        f"{os.cpu_count()}; the machine may be shared, so compare ratios, not absolute times"
    )
    if not args.skip_vectors:
        print(
            f"{'n':>9} {'data':>9} {'index':<26} {'build_s':>8} {'p50_ms':>8} {'p99_ms':>8} "
            f"{'recall10':>8} {'vs exact':>9}"
        )
        rows = bench_vectors(args)
        print("\nsummary")
        for r in rows:
            print_row(r)
    if not args.skip_indexing:
        bench_indexing(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
