"""Mask-to-Box: outer contours per class, one box each; recovers the sample generator's boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from terrascribe.build.m2b import mask_to_boxes
from terrascribe.sources.annotations import class_map_palette, read_coco, read_mask

CLASSES = {0: "background", 1: "building", 2: "tree"}


def boxes_of(mask: np.ndarray, **kwargs) -> list[tuple[str, tuple[float, ...]]]:
    return [(b.label, b.xyxy) for b in mask_to_boxes(mask, CLASSES, **kwargs)]


def test_one_box_per_connected_region_with_pixel_edges() -> None:
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:5, 3:8] = 1  # rows 2-4, columns 3-7
    mask[10:18, 20:29] = 1
    mask[12:14, 0:2] = 2
    got = boxes_of(mask, ignore={"background"})
    assert got == [
        ("building", (3.0, 2.0, 8.0, 5.0)),
        ("building", (20.0, 10.0, 29.0, 18.0)),
        ("tree", (0.0, 12.0, 2.0, 14.0)),
    ]


def test_holes_and_nested_regions_give_one_outer_box() -> None:
    mask = np.zeros((12, 12), dtype=np.uint8)
    mask[1:11, 1:11] = 1
    mask[3:9, 3:9] = 0  # a courtyard
    mask[5:7, 5:7] = 1  # a building inside the courtyard: nested, not external
    assert boxes_of(mask, ignore={"background"}) == [("building", (1.0, 1.0, 11.0, 11.0))]


def test_diagonal_touch_is_one_region_and_options_apply() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0:2, 0:2] = 1
    mask[2:4, 2:4] = 1  # touches the first block at a corner (8-connected)
    mask[8, 8] = 1
    assert boxes_of(mask, ignore={"background"}) == [
        ("building", (0.0, 0.0, 4.0, 4.0)),
        ("building", (8.0, 8.0, 9.0, 9.0)),
    ]
    assert boxes_of(mask, ignore={"background"}, min_area=2) == [("building", (0.0, 0.0, 4.0, 4.0))]
    with_background = boxes_of(mask, offset=(100, 50), min_area=2)
    assert ("background", (100.0, 50.0, 110.0, 60.0)) in with_background
    assert ("building", (100.0, 50.0, 104.0, 54.0)) in with_background


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        mask_to_boxes(np.zeros((2, 2, 3), dtype=np.uint8), CLASSES)
    with pytest.raises(KeyError):
        mask_to_boxes(np.full((2, 2), 7, dtype=np.uint8), CLASSES)
    assert mask_to_boxes(np.zeros((4, 4), dtype=np.uint8), CLASSES, ignore={"background"}) == []


def test_recovers_the_sample_generators_boxes(sample_region) -> None:
    """Every COCO box the generator drew (tight box of the object's mask pixels) comes back
    exactly, except objects the generator reports as touching another of their class (one
    8-connected region, so M2B correctly sees one object)."""
    truth = json.loads(sample_region.truth.read_text())
    palette = class_map_palette(sample_region.mask_classes)
    coco = {a.image_path: a for a in read_coco(sample_region.coco)}
    checked = 0
    for chip in truth["chips"]:
        ids = read_mask(sample_region.root / chip["mask"], palette)
        got = {
            (b.label, b.xyxy)
            for b in mask_to_boxes(ids, palette.class_names(), ignore=palette.ignore)
        }
        annotations = coco[chip["file"].split("/", 1)[1]]
        touching = {i for group in chip["touching"] for i in group}
        drawn = [
            (box.label, box.xyxy)
            for box, obj in zip(annotations.boxes, chip["objects"], strict=True)
            if obj["feature"] not in touching
        ]
        assert set(drawn) <= got, chip["file"]
        # nothing invented: every M2B box is a drawn box or covers a group of touching objects
        extra = got - {(b.label, b.xyxy) for b in annotations.boxes}
        assert len(extra) <= len(chip["touching"]), chip["file"]
        checked += len(drawn)
    assert checked > 100
