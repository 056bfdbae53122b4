"""Throughput of Mask-to-Box + Box-to-Caption against the bare cost of decoding the same images.

Two workloads, generated into a temporary folder (seeded):

* large label masks (default 4 x 4096 px, PNG, 8 classes, ~2,000 objects each): reference = decode
  the mask PNG; measured = read_mask (decode + class check) + M2B + B2C;
* a many-box COCO file (default 60 JPEG images of 1024 px, 400 boxes each): reference = parse
  the COCO file and decode the JPEGs; measured = the same + box checks + B2C.

Prints images/s (best of ``--repeats`` runs, files already in the page cache) and the ratio
(measured time / reference time) from the same run. Timings on a shared machine are noisy;
compare ratios, not absolute figures.

    python benchmarks/annotations.py [--masks 4 --mask-size 4096 --coco-images 60 --boxes 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from terrascribe.build.m2b import mask_to_boxes
from terrascribe.images import read_rgb
from terrascribe.sources.annotations import check_boxes, class_map_palette, read_coco, read_mask
from terrascribe.text.boxes import box_captions

CLASSES = {
    0: "background",
    1: "building",
    2: "small-vehicle",
    3: "storagetank",
    4: "ship",
    5: "tennis-court",
    6: "harbor",
    7: "plane",
}


def make_masks(folder: Path, n: int, size: int, rng: np.random.Generator) -> list[Path]:
    paths = []
    for i in range(n):
        mask = np.zeros((size, size), dtype=np.uint8)
        for _ in range(2000):
            h, w = rng.integers(4, 80, 2)
            y, x = rng.integers(0, size - 80, 2)
            mask[y : y + h, x : x + w] = rng.integers(1, len(CLASSES))
        path = folder / f"mask_{i}.png"
        Image.fromarray(mask).save(path)
        paths.append(path)
    return paths


def make_coco(folder: Path, n: int, boxes: int, rng: np.random.Generator) -> Path:
    images, anns = [], []
    noise = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    for i in range(n):
        name = f"img_{i}.jpg"
        Image.fromarray(np.roll(noise, i * 7, axis=1)).save(folder / name, quality=90)
        images.append({"id": i, "file_name": name, "width": 1024, "height": 1024})
        for _ in range(boxes):
            x, y = rng.uniform(0, 1000, 2)
            w, h = rng.uniform(2, 24, 2)
            anns.append(
                {
                    "id": len(anns),
                    "image_id": i,
                    "category_id": int(rng.integers(1, len(CLASSES))),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
    path = folder / "coco.json"
    cats = [{"id": k, "name": v} for k, v in CLASSES.items() if k]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def best_of(repeats: int, fn) -> float:
    """Smallest wall time of ``repeats`` runs (the first also warms the file cache)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_masks(paths: list[Path], repeats: int) -> tuple[float, float, int]:
    palette = class_map_palette({str(k): v for k, v in CLASSES.items()})
    found = []

    def decode() -> None:
        for p in paths:
            np.asarray(Image.open(p))

    def m2b_b2c() -> None:
        found.clear()
        for i, p in enumerate(paths):
            ids = read_mask(p, palette)
            boxes = mask_to_boxes(ids, palette.class_names(), ignore=palette.ignore)
            box_captions([(b.label, b.xyxy) for b in boxes], ids.shape[1], ids.shape[0], seed=i)
            found.append(len(boxes))

    return best_of(repeats, decode), best_of(repeats, m2b_b2c), sum(found)


def bench_coco(path: Path, folder: Path, repeats: int) -> tuple[float, float, int]:
    def decode() -> None:
        for ann in read_coco(path):
            read_rgb(folder / ann.image_path)

    def b2c() -> None:
        for i, ann in enumerate(read_coco(path)):
            img = read_rgb(folder / ann.image_path)
            checked = check_boxes(ann, *img.size)
            box_captions([(b.label, b.xyxy) for b in checked.boxes], *img.size, seed=i)

    n_boxes = sum(len(a.boxes) for a in read_coco(path))
    return best_of(repeats, decode), best_of(repeats, b2c), n_boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=4)
    parser.add_argument("--mask-size", type=int, default=4096)
    parser.add_argument("--coco-images", type=int, default=60)
    parser.add_argument("--boxes", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="Best of this many runs.")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table = Table(
        "workload", "images", "objects", "reference img/s", "M2B/B2C img/s", "time ratio",
        title="annotations -> captions vs bare decoding (same run)",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        masks = make_masks(folder, args.masks, args.mask_size, rng)
        decode, full, n_boxes = bench_masks(masks, args.repeats)
        table.add_row(
            f"label masks {args.mask_size}px: decode PNG | read_mask+M2B+B2C",
            str(len(masks)),
            str(n_boxes),
            f"{len(masks) / decode:.2f}",
            f"{len(masks) / full:.2f}",
            f"{full / decode:.2f}x",
        )
        coco = make_coco(folder, args.coco_images, args.boxes, rng)
        decode, full, n_boxes = bench_coco(coco, folder, args.repeats)
        table.add_row(
            f"COCO {args.boxes} boxes/img: parse+decode | +check+B2C",
            str(args.coco_images),
            str(n_boxes),
            f"{args.coco_images / decode:.1f}",
            f"{args.coco_images / full:.1f}",
            f"{full / decode:.2f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
