"""Per-item embedding cache: what a warm, regrouped or partly new call costs against a cold one.

N small images (seeded random 64x64 PNGs, as shards carry them) are embedded with the tiny model
through :func:`terrascribe.models.encode.encode_images` with a fresh cache folder:

* ``no cache``: ``cache_dir=None`` (what the cache costs on a cold call);
* ``cold``: empty cache, everything embedded (the reference);
* ``warm``: the same list again;
* ``warm, new process``: the same list with the in-memory index dropped (what another tool or a
  later run pays: listing and loading the chunk keys, memory-mapping the vectors);
* ``warm, regrouped``: the list shuffled and split into 10 groups, one call each (how curation
  scores shard by shard or search embeds tile chunks; the old whole-list cache missed all of it);
* ``10% new``: a shuffled list of 90% cached and 10% new images.

Each row reports its wall time, the images that went through the model, and the ratio to the
cold time measured in the same run.

Usage::

    python benchmarks/embed_cache.py              # N=5000, 2 threads
    python benchmarks/embed_cache.py --n 20000 --threads 4
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable

import numpy as np
from PIL import Image


def make_pngs(n: int, seed: int, size: int = 64) -> list[bytes]:
    """``n`` seeded random RGB PNGs (smooth noise, so they compress like imagery a little)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="Images in the reference list.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from terrascribe.models import encode
    from terrascribe.models.zoo import load_model

    torch.set_num_threads(args.threads)
    bundle = load_model("ts-tiny", seed=0)
    images = make_pngs(args.n, args.seed)
    new = make_pngs(args.n // 10, args.seed + 1)
    embedded = {"n": 0}
    encode_image = bundle.model.encode_image

    def counting(x, *a, **k):
        embedded["n"] += len(x)
        return encode_image(x, *a, **k)

    bundle.model.encode_image = counting
    rng = np.random.default_rng(args.seed)

    with tempfile.TemporaryDirectory() as tmp:

        def run(lists: list[list[bytes]]) -> tuple[float, int, np.ndarray]:
            embedded["n"] = 0
            t0 = time.perf_counter()
            outs = [
                encode.encode_images(
                    bundle, x, batch_size=args.batch_size, cache_dir=tmp, progress=False
                )
                for x in lists
            ]
            return time.perf_counter() - t0, embedded["n"], np.concatenate(outs)

        rows: list[tuple[str, int, float, int]] = []

        def row(name: str, lists: list[list[bytes]], check: Callable[[np.ndarray], None]) -> None:
            seconds, n_embedded, out = run(lists)
            check(out)
            rows.append((name, sum(map(len, lists)), seconds, n_embedded))

        embedded["n"] = 0
        t0 = time.perf_counter()
        encode.encode_images(bundle, images, batch_size=args.batch_size, progress=False)
        uncached = time.perf_counter() - t0

        cold_out: dict[str, np.ndarray] = {}
        row("cold (reference)", [images], lambda out: cold_out.setdefault("x", out))
        ref = cold_out["x"]
        row("warm, same list", [images], lambda out: np.testing.assert_array_equal(out, ref))
        encode._STORES.clear()  # as a new process would start
        row("warm, new process", [images], lambda out: np.testing.assert_array_equal(out, ref))
        order = rng.permutation(args.n)
        groups = [[images[i] for i in g] for g in np.array_split(order, 10)]
        row(
            "warm, shuffled into 10 groups",
            groups,
            lambda out: np.testing.assert_array_equal(out, ref[order]),
        )
        mixed_idx = rng.permutation(args.n)[: args.n - len(new)]
        mixed = [images[i] for i in mixed_idx] + new
        perm = rng.permutation(len(mixed))
        row("10% new, shuffled", [[mixed[i] for i in perm]], lambda out: None)

    cold = rows[0][2]
    table = Table(
        title=f"encode_images cache, ts-tiny, N={args.n} 64px PNGs, {args.threads} threads "
        "(shared, loaded machine)"
    )
    for col in ("call", "images", "embedded", "seconds", "ratio to cold"):
        table.add_column(col, justify="left" if col == "call" else "right")
    table.add_row("no cache", str(args.n), str(args.n), f"{uncached:.3f}", f"{uncached / cold:.3f}")
    for name, n, seconds, n_embedded in rows:
        table.add_row(name, str(n), str(n_embedded), f"{seconds:.3f}", f"{seconds / cold:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
