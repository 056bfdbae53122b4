"""The sample-data generator: every output opens in the standard reader and matches truth.json."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import osmium
import pytest
import rasterio
from PIL import Image
from pycocotools.coco import COCO
from pyproj import Transformer

from terrascribe.sample_data import CAPTURE_DATE, SCENE_CLASSES, SampleRegion, generate

SIZE = 512
ARGS = {"size_px": SIZE, "n_chips": 8, "scenes_per_class": 4}


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> SampleRegion:
    return generate(tmp_path_factory.mktemp("region"), seed=0, **ARGS)


@pytest.fixture(scope="module")
def truth(region) -> dict:
    return json.loads(region.truth.read_text(encoding="utf-8"))


def file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class OsmCounter(osmium.SimpleHandler):
    """Counts objects and collects tags, versions, timestamps and node locations."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()
        self.tags: dict[str, dict[str, str]] = {}
        self.timestamps: list[dt.datetime] = []
        self.versions: list[int] = []
        self.locations: list[tuple[float, float]] = []

    def _common(self, kind: str, obj) -> None:
        self.counts[kind] += 1
        if len(obj.tags):
            self.counts[f"tagged_{kind}"] += 1
            self.tags[f"{kind[0]}{obj.id}"] = dict(obj.tags)
        self.timestamps.append(obj.timestamp)
        self.versions.append(obj.version)

    def node(self, n):
        self._common("node", n)
        self.locations.append((n.location.lon, n.location.lat))

    def way(self, w):
        self._common("way", w)

    def relation(self, r):
        self._common("relation", r)


def read_osm(path: Path) -> OsmCounter:
    handler = OsmCounter()
    handler.apply_file(str(path))
    return handler


def values_of(tags: dict[str, dict[str, str]], key: str) -> set[str]:
    return {t[key] for t in tags.values() if key in t}


def test_geotiff_is_georeferenced_rgb(region, truth):
    with rasterio.open(region.geotiff) as src:
        assert src.crs.to_epsg() == 32633
        assert src.res == (0.5, 0.5)
        assert (src.width, src.height, src.count) == (SIZE, SIZE, 3)
        assert src.dtypes == ("uint8",) * 3
        assert src.nodata is None
        assert src.block_shapes[0] == (256, 256)
        assert src.compression.name.lower() == "deflate"
        assert list(src.transform)[:6] == truth["transform"]
        tags = src.tags()
        image = src.read()
    assert tags["capture_date"] == CAPTURE_DATE.isoformat() == "2021-06-01"
    assert tags["TIFFTAG_DATETIME"].startswith("2021:06:01")
    assert tags["sensor"] == "terrascribe-synthetic"
    assert tags["licence"] == "CC0-1.0"
    assert image.std() > 10  # drawn content, not a flat fill
    assert len(np.unique(image[0, :64, :64])) > 8  # per-pixel noise


@pytest.mark.parametrize("which", ["osm_xml", "osm_pbf"])
def test_osm_counts_match_truth(region, truth, which):
    osm = read_osm(getattr(region, which))
    counts = truth["counts"]
    assert osm.counts["node"] == counts["osm_nodes"]
    assert osm.counts["way"] == counts["osm_ways"]
    assert osm.counts["relation"] == counts["osm_relations"] >= 2
    assert osm.counts["tagged_node"] == counts["osm_tagged_nodes"]
    assert osm.counts["tagged_way"] == counts["osm_tagged_ways"]
    kinds = Counter(o["kind"] for o in truth["objects"] if o["osm"])
    assert len(osm.tags) == sum(kinds.values())
    buildings = [t for t in osm.tags.values() if "building" in t]
    assert len(buildings) == sum(1 for o in truth["objects"] if "building" in o["tags"])


def test_xml_and_pbf_hold_the_same_data(region):
    xml, pbf = read_osm(region.osm_xml), read_osm(region.osm_pbf)
    assert xml.counts == pbf.counts
    assert xml.tags == pbf.tags
    assert xml.locations == pbf.locations
    assert xml.timestamps == pbf.timestamps


def test_osm_tags_are_realistic(region):
    osm = read_osm(region.osm_pbf)
    tags = osm.tags
    assert {"house", "residential", "yes"} <= values_of(tags, "building")
    assert {"gabled", "hipped", "flat"} <= values_of(tags, "roof:shape")
    assert {"primary", "residential", "service", "track", "footway"} <= values_of(tags, "highway")
    assert {"asphalt", "unpaved", "gravel"} <= values_of(tags, "surface")
    assert values_of(tags, "smoothness")
    assert {"forest", "farmland", "grass", "residential"} <= values_of(tags, "landuse")
    assert {"soccer", "tennis"} <= values_of(tags, "sport")
    assert values_of(tags, "waterway") == {"river"}
    assert values_of(tags, "water") == {"lake"}
    assert "parking" in values_of(tags, "amenity")
    assert {"tree"} <= values_of(tags, "natural")
    assert {"water_tower", "storage_tank"} <= values_of(tags, "man_made")
    assert {"tower", "line"} <= values_of(tags, "power")
    # things no image can show, for visibility filters to drop
    assert values_of(tags, "name") and values_of(tags, "addr:housenumber")
    assert values_of(tags, "opening_hours")
    capture = dt.datetime(2021, 6, 1, tzinfo=dt.UTC)
    assert min(osm.timestamps) < capture < max(osm.timestamps)
    assert min(osm.versions) >= 1 and max(osm.versions) > 1


def test_multipolygons_assemble_into_areas(region, truth):
    from_relations, inner_rings = {}, {}
    for obj in osmium.FileProcessor(str(region.osm_pbf)).with_areas():
        if obj.is_area() and not obj.from_way():
            key = "water" if obj.tags.get("natural") == "water" else obj.tags.get("landuse")
            from_relations[obj.orig_id()] = key
            inner_rings[key] = sum(len(list(obj.inner_rings(o))) for o in obj.outer_rings())
    assert len(from_relations) == truth["counts"]["osm_relations"]
    assert {"water", "forest"} <= set(from_relations.values())
    assert inner_rings["water"] == 1  # the island
    assert inner_rings["forest"] == 1  # the clearing


def test_osm_lies_inside_the_raster(region, truth):
    osm = read_osm(region.osm_xml)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    lon, lat = np.array(osm.locations).T
    east, north = to_utm.transform(lon, lat)
    with rasterio.open(region.geotiff) as src:
        left, bottom, right, top = src.bounds
    assert east.min() > left and east.max() < right
    assert north.min() > bottom and north.max() < top


def test_truth_lonlat_and_pixel_geometries_agree(truth):
    a, _, c, _, e, f = truth["transform"]  # north-up: no rotation terms
    to_utm = Transformer.from_crs("EPSG:4326", truth["crs"], always_xy=True)
    checked = 0
    for obj in truth["objects"]:
        if obj["lonlat_geometry"] is None:
            assert obj["osm"] is None and obj["kind"] == "car"
            continue
        lonlat, pixel = obj["lonlat_geometry"], obj["pixel_geometry"]
        assert lonlat["type"] == pixel["type"]
        ll = np.array(flatten(lonlat["coordinates"]))
        px = np.array(flatten(pixel["coordinates"]))
        east, north = to_utm.transform(ll[:, 0], ll[:, 1])
        back = np.c_[(east - c) / a, (north - f) / e]
        assert np.abs(back - px).max() < 0.05  # 1e-7 degrees is about 1 cm
        checked += 1
    assert checked > 30


def flatten(coords) -> list:
    if isinstance(coords[0], int | float):
        return [coords]
    return [p for part in coords for p in flatten(part)]


def test_undrawn_objects_were_mapped_after_capture(truth):
    undrawn = [o for o in truth["objects"] if not o["drawn"]]
    assert undrawn
    for obj in undrawn:
        assert obj["timestamp"] > "2021-06-01" and obj["version"] == 1


def test_coco_boxes_are_the_masks_tight_boxes(region, truth):
    coco = COCO(str(region.coco))
    classes = json.loads(region.mask_classes.read_text(encoding="utf-8"))
    assert classes["0"] == "background"
    assert {str(c["id"]): c["name"] for c in coco.dataset["categories"]} == {
        k: v for k, v in classes.items() if k != "0"
    }
    assert len(coco.dataset["images"]) == ARGS["n_chips"] == len(truth["chips"])
    seen = set()
    for image, chip in zip(coco.dataset["images"], truth["chips"], strict=True):
        assert (region.chips_dir / image["file_name"]).is_file()
        mask = np.array(Image.open(region.masks_dir / f"{Path(image['file_name']).stem}.png"))
        assert mask.shape == (image["height"], image["width"]) and mask.dtype == np.uint8
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert [a["bbox"] for a in annotations] == [o["bbox"] for o in chip["objects"]]
        assert chip["touching"] == []
        expected = defaultdict(list)
        for a in annotations:
            assert a["iscrowd"] == 0 and a["segmentation"] and a["area"] > 0
            expected[a["category_id"]].append(a["bbox"])
        for category in set(np.unique(mask[mask > 0]).tolist()) | set(expected):
            contours, _ = cv2.findContours(
                (mask == category).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            found = sorted(list(cv2.boundingRect(c)) for c in contours)
            assert found == sorted(expected[category]), (image["file_name"], category)
            seen.add(category)
    assert len(seen) >= 4
    first = coco.dataset["annotations"][0]
    assert coco.annToMask(first).sum() > 0


def test_scene_folder_has_every_class(region):
    folders = sorted(p.name for p in region.scenes_dir.iterdir())
    assert folders == sorted(SCENE_CLASSES)
    for name in SCENE_CLASSES:
        files = sorted((region.scenes_dir / name).glob(f"{name}_*.jpg"))
        assert len(files) == ARGS["scenes_per_class"]
        with Image.open(files[0]) as image:
            assert image.size == (96, 96) and image.mode == "RGB"


def test_scene_classes_differ_in_colour(region):
    """A crude check that the classes are separable: nearest class mean colour wins often."""
    stats = {
        name: [
            np.asarray(Image.open(p), dtype=np.float32).reshape(-1, 3).mean(0)
            for p in sorted((region.scenes_dir / name).glob("*.jpg"))
        ]
        for name in SCENE_CLASSES
    }
    means = {name: np.mean(v, axis=0) for name, v in stats.items()}
    hits = sum(
        min(means, key=lambda n: np.linalg.norm(means[n] - x)) == name
        for name, values in stats.items()
        for x in values
    )
    assert hits / sum(len(v) for v in stats.values()) > 0.6  # chance is 1/6


def test_manifest_lists_every_file(region):
    manifest = json.loads(region.manifest.read_text(encoding="utf-8"))
    assert manifest["parameters"]["seed"] == 0
    assert manifest["capture_date"] == "2021-06-01"
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    actual = file_hashes(region.root)
    actual.pop("manifest.json")
    assert listed == actual


def test_same_seed_is_byte_identical_and_reused(region, tmp_path):
    again = generate(tmp_path / "again", seed=0, **ARGS)
    assert file_hashes(again.root) == file_hashes(region.root)

    before = {p: p.stat().st_mtime_ns for p in again.root.rglob("*")}
    generate(again.root, seed=0, **ARGS)
    assert {p: p.stat().st_mtime_ns for p in again.root.rglob("*")} == before

    again.geotiff.write_bytes(b"broken")  # a damaged folder is regenerated
    generate(again.root, seed=0, **ARGS)
    assert file_hashes(again.root) == file_hashes(region.root)


def test_different_seed_gives_a_different_region(region, tmp_path):
    other = generate(tmp_path / "other", seed=1, **ARGS)
    with rasterio.open(region.geotiff) as a, rasterio.open(other.geotiff) as b:
        assert a.shape == b.shape
        assert not np.array_equal(a.read(), b.read())
    assert other.osm_pbf.read_bytes() != region.osm_pbf.read_bytes()


@pytest.mark.parametrize(
    "bad", [{"size_px": 100}, {"gsd_m": 0.0}, {"chip_px": 1024}, {"n_chips": -1}]
)
def test_bad_arguments_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate(tmp_path, **({"size_px": 512} | bad))
