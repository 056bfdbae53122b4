"""Tile throughput: ``build_osm_dataset`` end to end vs a bare rasterio + JPEG loop (the floor).

Generates a textured UTM GeoTIFF and an OSM file with N buildings on it, builds the dataset with
1 and 2 workers, then reads exactly the same windows (from the built manifest) with rasterio and
encodes them to JPEG in a bare loop. Prints samples/s and the ratio to the floor (target >= 0.7).
The machine is shared: absolute numbers vary; read the ratios.

    python benchmarks/tiles.py [--objects 400] [--size 4096]
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import from_bounds

from terrascribe.build.osm import TileOptions, build_osm_dataset
from terrascribe.geo import transformer
from terrascribe.shards import Dataset

CRS = "EPSG:32633"
ORIGIN = (400000.0, 5500000.0)


def make_inputs(root: Path, n: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    tif = root / "scene.tif"
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(*ORIGIN, 0.5, 0.5),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dst:
        for _, window in dst.block_windows(1):
            dst.write(
                rng.integers(40, 200, (3, window.height, window.width), dtype=np.uint8),
                window=window,
            )
    to_ll = transformer(CRS, "EPSG:4326")
    nodes, ways = [], []
    nid = 1
    extent = size * 0.5
    for wid in range(1, n + 1):
        x, y = rng.uniform(60, extent - 60, 2)
        w, h = rng.uniform(8, 30, 2)
        ids = []
        for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)):
            lon, lat = to_ll.transform(ORIGIN[0] + px, ORIGIN[1] - py)
            nodes.append(f'<node id="{nid}" version="1" lat="{lat:.7f}" lon="{lon:.7f}"/>')
            ids.append(nid)
            nid += 1
        refs = "".join(f'<nd ref="{i}"/>' for i in [*ids, ids[0]])
        ways.append(f'<way id="{wid}" version="1">{refs}<tag k="building" v="yes"/></way>')
    osm = root / "scene.osm"
    osm.write_text('<osm version="0.6">' + "".join(nodes + ways) + "</osm>")
    return osm, tif


def build(osm: Path, tif: Path, out: Path, workers: int) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    info = build_osm_dataset(
        osm,
        tif,
        out,
        tiles=TileOptions(tile_px_range=(128, 256)),
        workers=workers,
        objects_per_shard=50,
        progress=False,
    )
    return time.perf_counter() - t0, info["counts"]["samples"]


def floor(tif: Path, out: Path) -> tuple[float, int]:
    """Read the same windows and JPEG-encode them: nothing else."""
    samples = list(Dataset(out).samples(with_images=False))
    meta = [s.bounds.native for s in samples]
    windows = [s.extra["tile"]["side_px"] for s in samples]
    t0 = time.perf_counter()
    with rasterio.open(tif) as src:
        for (left, bottom, right, top), width in zip(meta, windows, strict=True):
            win = from_bounds(left, bottom, right, top, src.transform)
            data = src.read(window=win, out_shape=(3, width, width))
            buf = io.BytesIO()
            Image.fromarray(np.moveaxis(data, 0, -1)).save(buf, format="JPEG", quality=95)
    return time.perf_counter() - t0, len(meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=400)
    parser.add_argument("--size", type=int, default=4096, help="raster side in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        osm, tif = make_inputs(tmp, args.objects, args.size)
        t1, n1 = build(osm, tif, tmp / "w1", 1)
        t2, n2 = build(osm, tif, tmp / "w2", 2)
        tf, nf = floor(tif, tmp / "w1")
    print(f"{'run':<28}{'samples':>9}{'seconds':>9}{'samples/s':>11}{'vs floor':>10}")
    floor_rate = nf / tf
    for name, t, n in (
        ("build, 1 worker", t1, n1),
        ("build, 2 workers", t2, n2),
        ("floor: rasterio + JPEG", tf, nf),
    ):
        print(f"{name:<28}{n:>9}{t:>9.2f}{n / t:>11.1f}{(n / t) / floor_rate:>10.2f}")
    print("\nbuild includes OSM extraction, planning, captions, objects in pixel space, shard and")
    print("manifest writing; the floor only reads the same windows and encodes JPEG.")


if __name__ == "__main__":
    main()
