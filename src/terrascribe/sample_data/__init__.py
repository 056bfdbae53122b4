"""Synthetic but realistic sample data: one small region in every input format terrascribe reads.

:func:`generate` writes, into one folder, a georeferenced RGB GeoTIFF of a made-up suburb in
UTM zone 33N, the OpenStreetMap data of the same objects (``.osm`` and ``.osm.pbf``), image
chips of it with COCO boxes and label masks, a scene-classification folder, and ``truth.json``
describing every object drawn, so tests can check what any reader or builder finds.
Everything is seeded: the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from terrascribe.sample_data.chips import CATEGORY_IDS, choose_windows, write_chips
from terrascribe.sample_data.features import CAPTURE_DATE, Feature
from terrascribe.sample_data.layout import build_region
from terrascribe.sample_data.osm import OsmData, build_osm, write_osm
from terrascribe.sample_data.render import render
from terrascribe.sample_data.scenes import SCENE_CLASSES, write_scenes

__all__ = ["CAPTURE_DATE", "CATEGORY_IDS", "SCENE_CLASSES", "SampleRegion", "generate"]

FORMAT_VERSION = 1
CRS_EPSG = 32633
SENSOR = "terrascribe-synthetic"
LICENCE = "CC0-1.0"
DESCRIPTIONS = {
    "region.tif": "RGB GeoTIFF (uint8, UTM 33N, tiled, deflate) of the synthetic region",
    "region.osm": "OpenStreetMap XML of the objects in the region",
    "region.osm.pbf": "the same OpenStreetMap data as PBF",
    "coco.json": "COCO boxes and polygons of the objects in chips/",
    "chips": "JPEG chips cut from region.tif",
    "masks": "single-channel PNG label masks of the chips (pixel value = category id)",
    "mask_classes.json": "mask pixel value -> class name (0 = background)",
    "scenes": "scene classification images, scenes/<class>/<class>_NNN.jpg",
    "truth.json": "every object: kind, tags, OSM id, pixel and lon/lat geometry; chip boxes",
}


@dataclass(frozen=True)
class SampleRegion:
    """Paths of a generated sample region.

    Attributes:
        root: The output folder.
        geotiff: RGB GeoTIFF of the region.
        osm_xml: OpenStreetMap XML (``.osm``).
        osm_pbf: The same OpenStreetMap data as ``.osm.pbf``.
        coco: COCO JSON with boxes for the chips (``file_name`` relative to ``chips_dir``).
        chips_dir: Folder of chip JPEGs.
        masks_dir: Folder of label-mask PNGs, one per chip with the same stem.
        mask_classes: JSON map from mask pixel value (as a string) to class name.
        scenes_dir: Scene-classification folder, ``<class>/<class>_NNN.jpg``.
        truth: JSON describing every object and every chip annotation.
        manifest: JSON listing the files, their hashes and the generation parameters.
    """

    root: Path
    geotiff: Path
    osm_xml: Path
    osm_pbf: Path
    coco: Path
    chips_dir: Path
    masks_dir: Path
    mask_classes: Path
    scenes_dir: Path
    truth: Path
    manifest: Path

    @classmethod
    def at(cls, root: Path) -> SampleRegion:
        return cls(
            root=root,
            geotiff=root / "region.tif",
            osm_xml=root / "region.osm",
            osm_pbf=root / "region.osm.pbf",
            coco=root / "coco.json",
            chips_dir=root / "chips",
            masks_dir=root / "masks",
            mask_classes=root / "mask_classes.json",
            scenes_dir=root / "scenes",
            truth=root / "truth.json",
            manifest=root / "manifest.json",
        )


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size_px: int = 2048,
    gsd_m: float = 0.5,
    n_chips: int = 24,
    scenes_per_class: int = 12,
    chip_px: int = 256,
    scene_px: int = 96,
) -> SampleRegion:
    """Write the sample region into ``out_dir`` (or reuse it if already complete).

    Args:
        out_dir: Output folder; created if needed. A folder holding a complete region made
            with the same arguments is reused as it is.
        seed: Seed for everything random; the same arguments give byte-identical files.
        size_px: Width and height of the GeoTIFF in pixels (at least 256).
        gsd_m: Ground sampling distance in metres per pixel.
        n_chips: Number of chips cut from the GeoTIFF for COCO boxes and masks.
        scenes_per_class: Images per scene-classification class.
        chip_px: Chip width and height in pixels (at most ``size_px``).
        scene_px: Scene image width and height in pixels.

    Returns:
        The paths of everything written.

    Raises:
        ValueError: If a size or count is out of range.
    """
    _check_arguments(size_px, gsd_m, n_chips, scenes_per_class, chip_px, scene_px)
    root = Path(out_dir)
    region = SampleRegion.at(root)
    parameters = {
        "seed": seed,
        "size_px": size_px,
        "gsd_m": gsd_m,
        "n_chips": n_chips,
        "scenes_per_class": scenes_per_class,
        "chip_px": chip_px,
        "scene_px": scene_px,
    }
    if _is_complete(region, parameters):
        return region
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    _write_all(SampleRegion.at(staging), parameters)
    _move_into_place(staging, root)
    _write_manifest(region, parameters)
    return region


def _check_arguments(size_px, gsd_m, n_chips, scenes_per_class, chip_px, scene_px) -> None:
    if size_px < 256:
        raise ValueError(f"size_px must be at least 256, got {size_px}")
    if not 0.05 <= gsd_m <= 10:
        raise ValueError(f"gsd_m must be between 0.05 and 10 m, got {gsd_m}")
    if not 16 <= chip_px <= size_px:
        raise ValueError(f"chip_px must be between 16 and size_px ({size_px}), got {chip_px}")
    if n_chips < 0 or scenes_per_class < 0:
        raise ValueError("n_chips and scenes_per_class must not be negative")
    if scene_px < 16:
        raise ValueError(f"scene_px must be at least 16, got {scene_px}")


def _write_all(region: SampleRegion, p: dict) -> None:
    """Generate every output into ``region`` (a staging folder)."""
    seed, size = p["seed"], p["size_px"]
    region.root.mkdir(parents=True)
    features = build_region(size, p["gsd_m"], np.random.default_rng([seed, 1]))
    rgb, owner = _render_region(features, size, p["gsd_m"], seed)
    transform = _transform(seed, p["gsd_m"])
    _write_geotiff(region.geotiff, rgb, transform)

    crs = f"EPSG:{CRS_EPSG}"
    osm = build_osm(features, transform, crs, seed)
    bounds = _bounds_lonlat(osm)
    write_osm(osm, region.osm_xml, bounds)
    write_osm(osm, region.osm_pbf, bounds)

    windows = choose_windows(
        features, size, p["chip_px"], p["n_chips"], np.random.default_rng([seed, 3])
    )
    coco, chip_records = write_chips(
        rgb, owner, features, windows, p["chip_px"], region.chips_dir, region.masks_dir
    )
    _write_json(region.coco, coco, compact=True)
    _write_json(
        region.mask_classes, {"0": "background"} | {str(i): n for n, i in CATEGORY_IDS.items()}
    )
    scenes = write_scenes(region.scenes_dir, p["scenes_per_class"], seed, p["scene_px"])
    truth = _truth(features, osm, transform, p, chip_records, scenes)
    _write_json(region.truth, truth, compact=True)


def _render_region(features: list[Feature], size: int, gsd_m: float, seed: int):
    drawables, shadows = [], []
    for f in features:
        if f.drawn:
            drawables += f.parts.drawables
            shadows += f.parts.shadows
    rng = np.random.default_rng([seed, 2])
    return render(drawables, shadows, size, size, rng=rng, px_per_m=1 / gsd_m)


def _transform(seed: int, gsd_m: float) -> Affine:
    """Upper-left corner on a 500 m grid west of Prague (UTM 33N), varied by the seed."""
    rng = np.random.default_rng([seed, 5])
    west = 446_000 + 500 * int(rng.integers(0, 8))
    north = 5_547_000 + 500 * int(rng.integers(0, 8))
    return Affine(gsd_m, 0.0, float(west), 0.0, -gsd_m, float(north))


def _write_geotiff(path: Path, rgb: np.ndarray, transform: Affine) -> None:
    height, width, _ = rgb.shape
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS.from_epsg(CRS_EPSG),
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "photometric": "RGB",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb.transpose(2, 0, 1))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.update_tags(
            TIFFTAG_DATETIME=CAPTURE_DATE.strftime("%Y:%m:%d 10:30:00"),
            TIFFTAG_SOFTWARE="terrascribe sample-data",
            capture_date=CAPTURE_DATE.isoformat(),
            sensor=SENSOR,
            licence=LICENCE,
        )


def _bounds_lonlat(osm: OsmData) -> tuple[float, float, float, float]:
    lonlat = np.array(list(osm.nodes)) / 1e7
    return (*lonlat.min(axis=0).round(7).tolist(), *lonlat.max(axis=0).round(7).tolist())


def _pixel_geojson(geom) -> dict:
    def rounded(coords):
        return [[round(x, 3), round(y, 3)] for x, y in coords]

    if geom.geom_type == "Point":
        return {"type": "Point", "coordinates": rounded(geom.coords)[0]}
    if geom.geom_type == "LineString":
        return {"type": "LineString", "coordinates": rounded(geom.coords)}
    rings = [geom.exterior, *geom.interiors]
    return {"type": "Polygon", "coordinates": [rounded(r.coords) for r in rings]}


def _truth(features, osm: OsmData, transform: Affine, p: dict, chips: list, scenes: dict):
    objects = [
        {
            "index": f.index,
            "kind": f.kind,
            "drawn": f.drawn,
            "osm": f.osm_ref,
            "version": f.version,
            "timestamp": f.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tags": f.tags,
            "category": f.coco,
            "pixel_geometry": _pixel_geojson(f.geom),
            "lonlat_geometry": osm.lonlat.get(f.index),
        }
        for f in features
    ]
    annotations = Counter(o["category"] for chip in chips for o in chip["objects"])
    return {
        "crs": f"EPSG:{CRS_EPSG}",
        "transform": list(transform)[:6],
        "size_px": p["size_px"],
        "gsd_m": p["gsd_m"],
        "capture_date": CAPTURE_DATE.isoformat(),
        "counts": {
            "objects": len(features),
            "kinds": dict(sorted(Counter(f.kind for f in features).items())),
            "drawn_kinds": dict(sorted(Counter(f.kind for f in features if f.drawn).items())),
            "osm_nodes": len(osm.nodes),
            "osm_ways": len(osm.ways),
            "osm_relations": len(osm.relations),
            "osm_tagged_nodes": sum(1 for tags, _ in osm.node_meta.values() if tags),
            "osm_tagged_ways": sum(1 for _, _, tags, _ in osm.ways if tags),
            "chips": len(chips),
            "chip_annotations": dict(sorted(annotations.items())),
            "scenes": {name: len(files) for name, files in scenes.items()},
        },
        "objects": objects,
        "chips": chips,
    }


def _write_json(path: Path, data: dict, *, compact: bool = False) -> None:
    # big machine-read files skip indentation: json's indenting encoder is pure Python and slow
    text = json.dumps(data, ensure_ascii=False, indent=None if compact else 1)
    path.write_text(text + "\n", encoding="utf-8")


def _move_into_place(staging: Path, root: Path) -> None:
    """Replace earlier outputs by the staged ones, then drop the staging folder."""
    (root / "manifest.json").unlink(missing_ok=True)  # the folder is incomplete until the end
    for item in sorted(staging.iterdir()):
        target = root / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(item, target)
    staging.rmdir()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listed_files(region: SampleRegion) -> list[Path]:
    names = [n for n in DESCRIPTIONS if n not in ("chips", "masks", "scenes")]
    files = [region.root / n for n in names]
    for folder in (region.chips_dir, region.masks_dir, region.scenes_dir):
        files += sorted(f for f in folder.rglob("*") if f.is_file())
    return files


def _write_manifest(region: SampleRegion, parameters: dict) -> None:
    files = [
        {
            "path": f.relative_to(region.root).as_posix(),
            "bytes": f.stat().st_size,
            "sha256": _sha256(f),
        }
        for f in _listed_files(region)
    ]
    manifest = {
        "name": "terrascribe synthetic sample region",
        "format_version": FORMAT_VERSION,
        "parameters": parameters,
        "capture_date": CAPTURE_DATE.isoformat(),
        "sensor": SENSOR,
        "licence": LICENCE,
        "crs": f"EPSG:{CRS_EPSG}",
        "contents": DESCRIPTIONS,
        "files": files,
    }
    tmp = region.manifest.with_suffix(".json.tmp")
    _write_json(tmp, manifest)
    os.replace(tmp, region.manifest)


def _is_complete(region: SampleRegion, parameters: dict) -> bool:
    """Whether the folder holds a finished region made with these parameters, intact."""
    try:
        manifest = json.loads(region.manifest.read_text(encoding="utf-8"))
        if manifest["format_version"] != FORMAT_VERSION or manifest["parameters"] != parameters:
            return False
        return all(
            _sha256(region.root / entry["path"]) == entry["sha256"] for entry in manifest["files"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
