"""Image chips cut from the big image, with COCO boxes and single-channel label masks.

Labels come from the renderer's owner raster, so a mask holds exactly the pixels each object
shows in the chip, and every COCO box is the tight box of that object's mask pixels (what a
Mask-to-Box converter should recover). Objects showing fewer than ``MIN_AREA_PX`` pixels are
left out of both. Where two objects of one class touch (8-connected), the chip records them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from terrascribe.sample_data.features import CAPTURE_DATE, Feature

CATEGORIES = (
    "building",
    "small vehicle",
    "tennis court",
    "soccer field",
    "basketball court",
    "ground track field",
    "storage tank",
)
CATEGORY_IDS = {name: i for i, name in enumerate(CATEGORIES, start=1)}
MIN_AREA_PX = 12
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def choose_windows(
    features: list[Feature], size_px: int, chip_px: int, n_chips: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Chip windows (column, row offsets) centred near objects, cycling through the categories."""
    by_category = {c: [f for f in features if f.coco == c and f.drawn] for c in CATEGORIES}
    present = [c for c in CATEGORIES if by_category[c]]
    windows = []
    for i in range(n_chips):
        if present:
            candidates = by_category[present[i % len(present)]]
            target = candidates[int(rng.integers(len(candidates)))].geom.centroid
            centre = np.array([target.x, target.y]) + rng.normal(0, chip_px / 6, 2)
        else:
            centre = rng.uniform(0, size_px, 2)
        col, row = np.clip(np.rint(centre - chip_px / 2), 0, size_px - chip_px).astype(int)
        windows.append((int(col), int(row)))
    return windows


def write_chips(
    rgb: np.ndarray,
    owner: np.ndarray,
    features: list[Feature],
    windows: list[tuple[int, int]],
    chip_px: int,
    chips_dir: Path,
    masks_dir: Path,
) -> tuple[dict, list[dict]]:
    """Write chip JPEGs and mask PNGs; returns the COCO dictionary and per-chip truth records."""
    chips_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    category_of = np.zeros(len(features) + 1, dtype=np.uint8)  # indexed by owner + 1
    for f in features:
        category_of[f.index + 1] = CATEGORY_IDS.get(f.coco, 0)
    images, annotations, records = [], [], []
    for image_id, (col, row) in enumerate(windows, start=1):
        name = f"chip_{image_id - 1:03d}"
        window = np.s_[row : row + chip_px, col : col + chip_px]
        Image.fromarray(rgb[window]).save(chips_dir / f"{name}.jpg", quality=90)
        objects, mask = _chip_objects(owner[window] + 1, category_of)
        Image.fromarray(mask).save(masks_dir / f"{name}.png")
        images.append(
            {
                "id": image_id,
                "file_name": f"{name}.jpg",
                "width": chip_px,
                "height": chip_px,
                "license": 1,
                "date_captured": CAPTURE_DATE.isoformat(),
                "geotiff_window": [col, row, chip_px, chip_px],
            }
        )
        chip_objects = []
        for index, bbox, area in objects:
            feature = features[index]
            annotation_id = len(annotations) + 1
            annotations.append(
                {
                    "id": annotation_id,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[feature.coco],
                    "bbox": bbox,
                    "area": area,
                    "iscrowd": 0,
                    "segmentation": _segmentation(feature.geom, col, row, chip_px),
                }
            )
            fx0, fy0, fx1, fy1 = feature.geom.bounds
            truncated = fx0 < col or fy0 < row or fx1 > col + chip_px or fy1 > row + chip_px
            chip_objects.append(
                {
                    "annotation_id": annotation_id,
                    "feature": index,
                    "osm": feature.osm_ref,
                    "category": feature.coco,
                    "bbox": bbox,
                    "area": area,
                    "truncated": bool(truncated),
                }
            )
        records.append(
            {
                "file": f"chips/{name}.jpg",
                "mask": f"masks/{name}.png",
                "window": [col, row, chip_px, chip_px],
                "objects": chip_objects,
                "touching": _touching(mask, owner[window] + 1),
            }
        )
    return _coco(images, annotations), records


def _chip_objects(owner1: np.ndarray, category_of: np.ndarray):
    """Annotated objects ``(feature index, [x, y, w, h], area)`` and the label mask."""
    labelled = np.unique(owner1[category_of[owner1] > 0])
    lut = np.zeros(len(category_of), dtype=np.int32)
    lut[labelled] = np.arange(1, len(labelled) + 1)
    instance = lut[owner1]
    areas = np.bincount(instance.ravel(), minlength=len(labelled) + 1)
    keep = np.zeros(len(labelled) + 1, dtype=bool)
    keep[1:] = areas[1:] >= MIN_AREA_PX
    mask = np.where(keep[instance], category_of[owner1], 0).astype(np.uint8)
    objects = []
    for k, rows_cols in enumerate(ndimage.find_objects(instance), start=1):
        if rows_cols is None or not keep[k]:
            continue
        rows, cols = rows_cols
        bbox = [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]
        objects.append((int(labelled[k - 1]) - 1, [int(v) for v in bbox], int(areas[k])))
    return objects, mask


def _touching(mask: np.ndarray, owner1: np.ndarray) -> list[list[int]]:
    """Groups of same-class objects whose mask pixels form one 8-connected component."""
    groups = []
    for category in np.unique(mask[mask > 0]):
        components, n = ndimage.label(mask == category, structure=EIGHT_CONNECTED)
        for component in range(1, n + 1):
            members = np.unique(owner1[components == component]) - 1
            if len(members) > 1:
                groups.append([int(i) for i in members])
    return groups


def _segmentation(geom: BaseGeometry, col: int, row: int, chip_px: int) -> list[list[float]]:
    """COCO polygons: the object's outline clipped to the chip, in chip pixel coordinates."""
    clipped = geom.intersection(box(col, row, col + chip_px, row + chip_px))
    # a clip can split an outline, or leave slivers of lines along the chip edge
    polygons = clipped.geoms if hasattr(clipped, "geoms") else [clipped]
    segmentation = []
    for polygon in polygons:
        if not isinstance(polygon, Polygon) or polygon.is_empty:
            continue
        coords = np.asarray(polygon.exterior.coords)[:-1] - (col, row)
        segmentation.append([round(float(v), 2) for v in coords.ravel()])
    return segmentation


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    return {
        "info": {
            "description": "terrascribe synthetic sample region: chips of the region GeoTIFF",
            "version": "1.0",
            "year": CAPTURE_DATE.year,
            "contributor": "terrascribe",
            "date_created": CAPTURE_DATE.isoformat(),
        },
        "licenses": [
            {
                "id": 1,
                "name": "CC0-1.0",
                "url": "https://creativecommons.org/publicdomain/zero/1.0/",
            }
        ],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": name, "supercategory": "vehicle" if "vehicle" in name else "facility"}
            for name, i in CATEGORY_IDS.items()
        ],
    }
