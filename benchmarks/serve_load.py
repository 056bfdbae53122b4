"""Load test of ``terrascribe serve`` on loopback: throughput and p50/p99 latency, no errors.

Starts the service on a free 127.0.0.1 port in this process (uvicorn in a thread) over an index
of a generated sample region (or ``--index``), then runs ``--clients`` concurrent clients, each
sending a mix of text searches (new and repeated queries) and thumbnail requests, until
``--requests`` have been sent or ``--seconds`` have passed, whichever comes first: it always
stops by itself. The reference is the same searches called in-process (no HTTP), one at a time.

    python benchmarks/serve_load.py --clients 8 --requests 800 --seconds 60
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import httpx
    import uvicorn

    from terrascribe.models.zoo import load_model
    from terrascribe.sample_data import generate
    from terrascribe.search.index import SearchIndex, build_index
    from terrascribe.search.query import search
    from terrascribe.search.service import create_app

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, help="An existing index (default: a sample one).")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=800)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.index is None:
            region = generate(Path(tmp) / "region", seed=0, size_px=1024)
            args.index = Path(tmp) / "index"
            build_index(
                [region.geotiff],
                load_model("ts-tiny", seed=0),
                args.index,
                tile_px=64,
                gsd_m=1.0,
                progress=False,
            )
        index = SearchIndex(args.index)
        index.model()
        n_tiles = len(index)
        app = create_app(index)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        words = ["houses", "a road", "forest", "a lake", "a field", "parking lot", "trees"]

        # Reference: the same searches in-process, one at a time.
        ref = []
        for i in range(100):
            t = time.perf_counter()
            search(index, f"{words[i % len(words)]} {i % 13}", k=10)
            ref.append((time.perf_counter() - t) * 1000)

        lock = threading.Lock()
        sent = 0
        lat: dict[str, list[float]] = {"search": [], "thumbnail": []}
        errors: list[str] = []
        deadline = time.perf_counter() + args.seconds

        def client(cid: int) -> None:
            nonlocal sent
            rng = np.random.default_rng(cid)
            with httpx.Client(base_url=base, timeout=30) as c:
                while time.perf_counter() < deadline:
                    with lock:
                        if sent >= args.requests:
                            return
                        sent += 1
                    if rng.random() < 0.7:
                        kind = "search"
                        q = f"{words[rng.integers(len(words))]} {rng.integers(0, 40)}"
                        url, params = "/api/search", {"q": q, "k": 10}
                    else:
                        kind, url, params = (
                            "thumbnail",
                            f"/api/tile/{rng.integers(n_tiles)}.jpg",
                            {},
                        )
                    t = time.perf_counter()
                    try:
                        r = c.get(url, params=params)
                        ok = r.status_code == 200
                    except httpx.HTTPError as err:
                        ok, r = False, err
                    ms = (time.perf_counter() - t) * 1000
                    with lock:
                        lat[kind].append(ms)
                        if not ok:
                            errors.append(f"{url}: {getattr(r, 'status_code', r)}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server.should_exit = True
        thread.join(timeout=10)

    total = sum(len(v) for v in lat.values())
    print(
        f"index: {n_tiles} tiles ({index.spec.type}); {args.clients} clients on loopback; "
        f"{total} requests in {wall:.1f} s; errors: {len(errors)}"
    )
    print("(the machine is shared with other engineers: compare ratios, not absolute times)")
    print(f"{'what':<34} {'n':>6} {'p50_ms':>8} {'p99_ms':>8} {'req/s':>8} {'p50 ratio':>10}")
    ref_p50 = float(np.percentile(ref, 50))
    print(
        f"{'in-process search (reference)':<34} {len(ref):6d} {ref_p50:8.2f} "
        f"{np.percentile(ref, 99):8.2f} {1000 / np.mean(ref):8.1f} {1.0:10.2f}"
    )
    for kind, values in lat.items():
        if values:
            p50, p99 = np.percentile(values, [50, 99])
            print(
                f"{'HTTP ' + kind:<34} {len(values):6d} {p50:8.2f} {p99:8.2f} "
                f"{len(values) / wall:8.1f} {p50 / ref_p50:10.2f}"
            )
    print(f"{'HTTP all':<34} {total:6d} {'':>8} {'':>8} {total / wall:8.1f}")
    for e in errors[:5]:
        print("error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
