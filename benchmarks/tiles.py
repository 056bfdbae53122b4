"""Tile throughput: ``build_osm_dataset`` end to end vs a bare rasterio + JPEG loop (the floor).

Input: the generated sample region (``terrascribe.sample_data.generate``, ``--size`` pixels a side
at 0.5 m: roads, buildings, parking lots, fields... with matching OSM data), so tiles, captions and
objects look like real ones. The build runs with 1 and 2 workers into fresh folders; its fixed
costs (OSM extraction, planning, the report with its map) are timed on their own as well.

The floor reads exactly the windows the build wrote (bounds and pixel size from the manifest),
from one open dataset, with the source's resampling, and encodes them with the dataset's JPEG
settings (``terrascribe.images.encode_jpeg``): nothing else. A check asserts that the floor's
pixels equal what the builder's imagery source returns for the same windows.

Prints samples/s and the ratio to the floor (target >= 0.7). The machine is shared: absolute
numbers vary, read the ratios (both sides run in the same process, one after the other).

    python benchmarks/tiles.py [--size 4096] [--repeat 3] [--workers 1 2] [--breakdown] [--gsd M]

At the imagery's own GSD (the default) tiles lie on its pixel grid and reads are plain copies of
pixels; ``--gsd 0.6`` reads the 0.5 m imagery at 0.6 m, so every read (the floor's too) resamples.

``--breakdown`` adds one more 1-worker build with CPU timers around its stages and prints CPU
milliseconds per sample for each, by the thread that ran it: the main thread (objects in pixel
space, captions, the shard writer's JSON, tar and manifest row, window reads that are plain
copies of pixels, and the rest), the tile reader thread (reads that resample or warp) and the
writer's JPEG thread. The wall time of a 1-worker build is about the main thread's CPU when the
machine has a core for each thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from terrascribe import sample_data
from terrascribe.build.osm import (
    TileOptions,
    _load_table,
    build_osm_dataset,
    osm_report,
    plan_osm_jobs,
)
from terrascribe.images import encode_jpeg
from terrascribe.shards import Dataset
from terrascribe.sources.imagery import RasterSource, _on_grid
from terrascribe.sources.osm import extract_osm, visible_tag_filter
from terrascribe.tar_writer import TarWriter

_READ_STAGE = "main: window read (floor's read)"


def build(osm: Path, tif: Path, out: Path, workers: int, tiles: TileOptions) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    info = build_osm_dataset(osm, tif, out, tiles=tiles, workers=workers, progress=False)
    return time.perf_counter() - t0, info["counts"]["samples"]


def fixed_costs(
    osm: Path, tif: Path, built: Path, tmp: Path, tiles: TileOptions
) -> dict[str, float]:
    """Seconds of the stages whose cost does not grow with the number of tiles written."""
    times = {}
    features = tmp / "features"
    shutil.rmtree(features, ignore_errors=True)
    t0 = time.perf_counter()
    extract_osm(osm, features, keep=visible_tag_filter(_load_table(None)), progress=False)
    times["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan_osm_jobs(features, [RasterSource(tif)], tiles=tiles, seed=0)
    times["plan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    osm_report(built)
    times["report"] = time.perf_counter() - t0
    return times


def windows(tif: Path, built: Path) -> list[tuple[Window, int]]:
    """The windows the build read, as pixel windows of the raster, with their output side."""
    frame = Dataset(built).manifest()
    samples = {s.key: s for s in Dataset(built).samples(with_images=False)}
    out = []
    with rasterio.open(tif) as src:
        a, _, c, _, e, f = tuple(src.transform)[:6]
        for key, width in zip(frame["key"], frame["width"], strict=True):
            left, bottom, right, top = samples[key].bounds.native
            col0, row0 = (left - c) / a, (top - f) / e
            col1, row1 = (right - c) / a, (bottom - f) / e
            # as the source reads them: whole pixels when off the grid by rounding error only
            window = _on_grid(Window(col0, row0, col1 - col0, row1 - row0))
            out.append((window, int(width)))
    return out


def floor(tif: Path, wins: list[tuple[Window, int]]) -> float:
    """Read the same windows and JPEG-encode them: nothing else."""
    resampling = Resampling[RasterSource(tif).resampling]
    t0 = time.perf_counter()
    with rasterio.open(tif) as src:
        for window, side in wins:
            # Read pixel-interleaved, as the source does: JPEG wants (H, W, 3), and GDAL
            # interleaving while it reads is cheaper than transposing afterwards.
            rgb = np.empty((side, side, 3), np.uint8)
            src.read(window=window, out=rgb.transpose(2, 0, 1), resampling=resampling)
            encode_jpeg(rgb)
    return time.perf_counter() - t0


def check_same_pixels(tif: Path, built: Path, wins: list[tuple[Window, int]], n: int = 5) -> None:
    source = RasterSource(tif)
    resampling = Resampling[source.resampling]
    samples = list(Dataset(built).samples(with_images=False))[:n]
    with rasterio.open(tif) as src:
        for sample, (window, side) in zip(samples, wins, strict=False):
            ours = source.read(sample.bounds.native, (side, side)).rgb
            bare = src.read(window=window, out_shape=(3, side, side), resampling=resampling)
            assert np.array_equal(ours, np.moveaxis(bare, 0, -1)), "floor reads other pixels"


def breakdown(
    osm: Path, tif: Path, out: Path, tiles: TileOptions
) -> tuple[float, float, dict[str, float]]:
    """Wall and main-thread CPU seconds per sample, and CPU seconds per sample of each stage."""
    import terrascribe.build.osm as build_mod
    import terrascribe.shards as shards_mod
    import terrascribe.text.osm_captions as captions_mod
    from terrascribe.sources import imagery

    spent: dict[str, float] = {}
    lock = threading.Lock()

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.thread_time()  # CPU of the calling thread: waits for the GIL do not count
            try:
                return fn(*args, **kwargs)
            finally:
                thread = threading.current_thread()
                where = "main" if thread is threading.main_thread() else thread.name.split("_")[0]
                key = f"{where}: {name}"
                with lock:
                    spent[key] = spent.get(key, 0.0) + time.thread_time() - t0

        return wrapper

    patches = [
        (imagery.RasterSource, "read", _READ_STAGE.removeprefix("main: ")),
        (shards_mod, "to_jpeg", "JPEG encode (floor's encode)"),
        (build_mod, "_image_objects", "objects in pixel space"),
        (captions_mod, "make_captions", "captions"),
        (shards_mod, "_compact_json", "per-sample JSON"),
        (TarWriter, "add", "tar members"),
        (shards_mod, "_manifest_row", "manifest row"),
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    try:
        for owner, attr, name in patches:
            setattr(owner, attr, timed(name, getattr(owner, attr)))
        main_cpu = time.thread_time()
        seconds, count = build(osm, tif, out, 1, tiles)
        main_cpu = time.thread_time() - main_cpu
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
    return seconds / count, main_cpu / count, {k: v / count for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="region side in pixels (0.5 m)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure (median)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=None, help="keep inputs here (reused)")
    parser.add_argument("--breakdown", action="store_true", help="time the build's stages")
    parser.add_argument("--gsd", type=float, default=None, help="read at this GSD (m)")
    args = parser.parse_args()
    tiles = TileOptions(gsd_m=args.gsd)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        region = sample_data.generate(args.work or tmp / "region", seed=0, size_px=args.size)
        osm, tif = region.osm_pbf, region.geotiff
        med = statistics.median
        builds = {}
        for w in args.workers:
            runs = [build(osm, tif, tmp / f"w{w}", w, tiles) for _ in range(args.repeat)]
            builds[w] = (med(t for t, _ in runs), runs[0][1])
        counts = {w: count for w, (_, count) in builds.items()}
        assert len(set(counts.values())) == 1, f"worker counts gave other datasets: {counts}"
        built = tmp / f"w{args.workers[0]}"
        wins = windows(tif, built)
        check_same_pixels(tif, built, wins)
        floor_s = med(floor(tif, wins) for _ in range(args.repeat))
        fixed = [fixed_costs(osm, tif, built, tmp, tiles) for _ in range(args.repeat)]
        stage_times = breakdown(osm, tif, tmp / "breakdown", tiles) if args.breakdown else None
    n = len(wins)
    floor_rate = n / floor_s
    print(f"{'run':<34}{'samples':>9}{'seconds':>9}{'samples/s':>11}{'vs floor':>10}")
    for w, (t, count) in builds.items():
        name = f"build, {w} worker{'s' if w > 1 else ''}"
        print(f"{name:<34}{count:>9}{t:>9.2f}{count / t:>11.1f}{(count / t) / floor_rate:>10.2f}")
    print(f"{'floor: rasterio + JPEG':<34}{n:>9}{floor_s:>9.2f}{floor_rate:>11.1f}{1:>10.2f}")
    stages = {k: med(f[k] for f in fixed) for k in fixed[0]}
    t1, n1 = builds[args.workers[0]]
    rest = t1 - sum(stages.values())
    print(
        f"\nfixed costs inside the {args.workers[0]}-worker build: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
        + f"; tiles + shards: {rest:.2f} s = {rest / n1 * 1e3:.2f} ms/sample "
        f"(floor {floor_s / n * 1e3:.2f} ms/sample)"
    )
    if stage_times is not None:
        wall, main_cpu, stages_ms = stage_times
        print(
            f"\nCPU by stage in a timed 1-worker build ({wall * 1e3:.2f} ms/sample wall, "
            f"main thread {main_cpu * 1e3:.2f} ms/sample CPU):"
        )
        for name, secs in stages_ms.items():
            print(f"  {name:<44}{secs * 1e3:>7.3f} ms/sample")
        on_main = sum(v for k, v in stages_ms.items() if k.startswith("main:"))
        rest = main_cpu - on_main
        print(f"  {'main: the rest (placement, queries, glue...)':<44}{rest * 1e3:>7.3f} ms/sample")
        # A 1-worker build's wall time is about its main thread's CPU (the JPEG thread has the
        # other core), so 0.7 of the floor's rate leaves this much main-thread CPU per sample.
        budget = floor_s / n / 0.7
        print(
            f"  0.7 of the floor allows {budget * 1e3:.2f} ms/sample of wall: the main thread's "
            f"stages beyond the read take {(main_cpu - stages_ms.get(_READ_STAGE, 0.0)) * 1e3:.2f}"
        )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"medians of {args.repeat} runs; load average {load} on {os.cpu_count()} cores (shared).\n"
        "build = OSM extraction, planning, reads, captions, objects in pixel space, shard + "
        "manifest writing, report;\nfloor = the same windows read and JPEG-encoded in a bare loop."
    )


if __name__ == "__main__":
    main()
