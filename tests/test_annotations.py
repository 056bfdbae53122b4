"""Box and mask readers: tiny files in each real layout, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terrascribe.sources.annotations import (
    AnnotationError,
    Box,
    ImageAnnotations,
    check_boxes,
    class_map_palette,
    load_palette,
    read_boxes,
    read_class_list,
    read_coco,
    read_csv_boxes,
    read_dota,
    read_mask,
    read_voc,
    read_yolo,
)

# Two images, objects as (label, xyxy) in pixels; the generator writes them in every format.
IMAGES = {
    "a": (64, 48, [("ship", (4, 6, 20, 16)), ("harbor", (30, 10, 60, 40))]),
    "b": (32, 32, [("ship", (0, 0, 32, 8))]),
}


def write_images(folder: Path, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h, _) in IMAGES.items():
        Image.new("RGB", (w, h), (90, 120, 60)).save(folder / f"{name}{suffix}")


def write_coco(path: Path) -> None:
    cats = {"ship": 1, "harbor": 2}
    images, anns = [], []
    for i, (name, (w, h, objs)) in enumerate(IMAGES.items(), start=1):
        images.append({"id": i, "file_name": f"{name}.png", "width": w, "height": h})
        for label, (x0, y0, x1, y1) in objs:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cats[label],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": v, "name": k} for k, v in cats.items()],
            }
        )
    )


def write_dota(folder: Path) -> None:
    """DOTA v1.0 layout: header lines, then rotated quads ``x1 y1 ... x4 y4 class difficult``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, _, objs) in IMAGES.items():
        lines = ["imagesource:GoogleEarth", "gsd:0.5" if name == "a" else "gsd:null"]
        for k, (label, (x0, y0, x1, y1)) in enumerate(objs):
            # a diamond inscribed in the box: its horizontal box is the box itself
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            quad = [cx, y0, x1, cy, cx, y1, x0, cy]
            lines.append(" ".join(f"{v:g}" for v in quad) + f" {label} {k % 2}")
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def write_voc(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h, objs) in IMAGES.items():
        objects = "".join(
            f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for label, (x0, y0, x1, y1) in objs
        )
        (folder / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.png</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objects}</annotation>"
        )


def write_yolo(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    classes = ["ship", "harbor"]
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    for name, (w, h, objs) in IMAGES.items():
        lines = []
        for label, (x0, y0, x1, y1) in objs:
            cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
            lines.append(f"{classes.index(label)} {cx} {cy} {(x1 - x0) / w} {(y1 - y0) / h}")
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def write_csv(path: Path, order: str = "xmin,ymin,xmax,ymax") -> None:
    """DeepForest layout; ``order`` permutes the coordinate columns (SJER truth files do)."""
    cols = order.split(",")
    lines = ["image_path," + order + ",label"]
    for name, (_, _, objs) in IMAGES.items():
        for label, box in objs:
            values = dict(zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
            lines.append(f"{name}.png," + ",".join(str(values[c]) for c in cols) + f",{label}")
    path.write_text("\n".join(lines) + "\n")


def expected() -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    return {
        f"{n}.png": [(lbl, tuple(float(v) for v in b)) for lbl, b in objs]
        for n, (_, _, objs) in IMAGES.items()
    }


def as_dict(anns: list[ImageAnnotations]) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    return {a.image_path: [(b.label, b.xyxy) for b in a.boxes] for a in anns}


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    write_images(tmp_path / "images")
    return tmp_path / "images"


def test_every_format_reads_the_same_boxes(tmp_path: Path, images: Path) -> None:
    write_coco(tmp_path / "coco.json")
    write_dota(tmp_path / "dota")
    write_voc(tmp_path / "voc")
    write_yolo(tmp_path / "yolo")
    write_csv(tmp_path / "boxes.csv")
    sources = {
        "coco": tmp_path / "coco.json",
        "dota": tmp_path / "dota",
        "voc": tmp_path / "voc",
        "yolo": tmp_path / "yolo",
        "csv": tmp_path / "boxes.csv",
    }
    for fmt, path in sources.items():
        got = as_dict(read_boxes(path, fmt, images=images))
        assert list(got) == ["a.png", "b.png"], fmt
        for name, boxes in expected().items():
            assert [lbl for lbl, _ in got[name]] == [lbl for lbl, _ in boxes], fmt
            np.testing.assert_allclose(
                [b for _, b in got[name]], [b for _, b in boxes], atol=1e-6, err_msg=fmt
            )


def test_coco_keeps_sizes_ids_and_crowd_flag(tmp_path: Path) -> None:
    write_coco(tmp_path / "coco.json")
    data = json.loads((tmp_path / "coco.json").read_text())
    data["annotations"][0]["iscrowd"] = 1
    (tmp_path / "coco.json").write_text(json.dumps(data))
    anns = read_coco(tmp_path / "coco.json")
    assert (anns[0].width, anns[0].height) == (64, 48)
    assert anns[0].boxes[0].difficult and anns[0].boxes[0].source_id == "1"


def test_dota_header_and_difficult_flag(tmp_path: Path) -> None:
    write_dota(tmp_path / "dota")
    anns = {a.image_path: a for a in read_dota(tmp_path / "dota")}
    assert anns["a.png"].gsd_m == 0.5 and anns["b.png"].gsd_m is None
    assert anns["a.png"].extra["imagesource"] == "GoogleEarth"
    assert [b.difficult for b in anns["a.png"].boxes] == [False, True]


def test_dota_rotated_quad_becomes_enclosing_box(tmp_path: Path) -> None:
    (tmp_path / "P1.txt").write_text("10 0 20 10 10 20 0 10 plane 0\n")
    box = read_dota(tmp_path / "P1.txt")[0].boxes[0]
    assert box.xyxy == (0, 0, 20, 20) and box.label == "plane"


def test_csv_columns_are_read_by_name(tmp_path: Path) -> None:
    write_csv(tmp_path / "swapped.csv", order="xmin,xmax,ymin,ymax")
    assert as_dict(read_csv_boxes(tmp_path / "swapped.csv")) == expected()


def test_csv_scores_and_conflicting_files(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "p.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,scores,label\na.png,1,2,3,4,0.61,0\n"
    )
    assert read_csv_boxes(tmp_path / "pred")[0].boxes[0].score == pytest.approx(0.61)
    (tmp_path / "pred" / "q.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\na.png,1,2,3,4,0\n"
    )
    with pytest.raises(AnnotationError, match="also come from"):
        read_csv_boxes(tmp_path / "pred")


def test_yolo_class_list_variants(tmp_path: Path, images: Path) -> None:
    write_yolo(tmp_path / "yolo")
    (tmp_path / "data.yaml").write_text("names:\n  0: ship\n  1: harbor\n")
    assert read_class_list(tmp_path / "data.yaml") == ["ship", "harbor"]
    anns = read_yolo(tmp_path / "yolo", images=images, classes=["ship", "harbor"])
    assert as_dict(anns)["a.png"][1][0] == "harbor"


@pytest.mark.parametrize(
    ("fmt", "content", "problem"),
    [
        ("coco", "", "empty file"),
        ("coco", "{not json", "invalid JSON"),
        ("coco", '{"images": []}', "not a COCO detection file"),
        ("voc", "", "empty file"),
        ("voc", "<annotation><object><name>x</name></object>", "invalid XML"),
        ("voc", "<annotation><object><name>x</name></object></annotation>", "no <bndbox>"),
        ("dota", "1 2 3 4 ship 0\n", "line 1: expected"),
        ("dota", "0 0 1 0 1 1 0 1 ship 7\n", "difficult flag"),
        ("dota", "0 0 one 0 1 1 0 1 ship 0\n", "is not a number"),
        ("csv", "", "empty file"),
        ("csv", "image_path,xmin,ymin,xmax\na.png,1,2,3\n", "missing column"),
        ("csv", "image_path,xmin,ymin,xmax,ymax,label\na.png,5,2,3,4,tree\n", "xmax < xmin"),
        ("csv", "image_path,xmin,ymin,xmax,ymax,label\na.png,1,2,3,,tree\n", "empty or missing"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, fmt: str, content: str, problem: str):
    suffix = {"coco": ".json", "voc": ".xml", "dota": ".txt", "csv": ".csv"}[fmt]
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=problem) as err:
        read_boxes(path, fmt)
    assert str(path) in str(err.value)


def test_yolo_unknown_class_and_missing_image(tmp_path: Path, images: Path) -> None:
    (tmp_path / "a.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match="unknown class index '5'"):
        read_yolo(tmp_path / "a.txt", images=images, classes=["ship"])
    (tmp_path / "zzz.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match="no image named zzz"):
        read_yolo(tmp_path / "zzz.txt", images=images, classes=["ship"])
    with pytest.raises(AnnotationError, match="need the image folder"):
        read_boxes(tmp_path / "a.txt", "yolo")


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such file"):
        read_boxes(tmp_path / "nope.json", "coco")
    with pytest.raises(AnnotationError, match="unknown box format"):
        read_boxes(tmp_path, "kml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="holds no VOC XML files"):
        read_voc(tmp_path / "empty")


def _ann(*boxes: tuple[float, ...], width=None, height=None) -> ImageAnnotations:
    return ImageAnnotations(
        "x.png", width, height, tuple(Box("ship", b) for b in boxes), source="x.json"
    )


def test_check_boxes_clips_within_tolerance_and_rejects_beyond() -> None:
    clipped = check_boxes(_ann((-1, 0, 101, 50)), 100, 100)
    assert clipped.boxes[0].xyxy == (0, 0, 100, 50) and clipped.width == 100
    with pytest.raises(AnnotationError, match=r"outside the 100x100 image x\.png by 30 px"):
        check_boxes(_ann((50, 50, 130, 60)), 100, 100)
    assert check_boxes(_ann((50, 50, 130, 60)), 100, 100, tolerance=40).boxes[0].xyxy[2] == 100
    with pytest.raises(AnnotationError, match="is empty inside"):
        check_boxes(_ann((100, 10, 101, 20)), 100, 100)


def test_check_boxes_size_mismatch_and_unknown_class() -> None:
    with pytest.raises(AnnotationError, match=r"size mismatch.*64x48, image is 100x100"):
        check_boxes(_ann((0, 0, 1, 1), width=64, height=48), 100, 100)
    with pytest.raises(AnnotationError, match="unknown class 'ship'"):
        check_boxes(_ann((0, 0, 1, 1)), 10, 10, classes=["plane"])


# ---------------------------------------------------------------------------------- masks


def test_packaged_palettes_load() -> None:
    for name in ("isaid", "potsdam", "vaihingen", "loveda"):
        palette = load_palette(name)
        assert palette.colours and palette.labels
        assert set(palette.colours.values()) <= set(palette.class_names().values())
    assert load_palette("isaid").colours[(0, 0, 63)] == "ship"
    assert load_palette("potsdam").colours[(255, 255, 0)] == "car"


def test_colour_mask_maps_through_palette(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:] = (255, 255, 255)
    rgb[1:3, 1:3] = (0, 0, 255)  # building
    rgb[0, 5] = (255, 255, 0)  # car
    Image.fromarray(rgb).save(tmp_path / "m.png")
    palette = load_palette("potsdam")
    ids = read_mask(tmp_path / "m.png", palette)
    names = palette.class_names()
    assert names[int(ids[1, 1])] == "building" and names[int(ids[0, 5])] == "car"
    assert names[int(ids[3, 0])] == "impervious surface"
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(AnnotationError, match=r"colour\(s\) \[\(1, 2, 3\)\] not in palette"):
        read_mask(tmp_path / "bad.png", palette)


def test_label_mask_with_class_map(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 1], [2, 9]], dtype=np.uint8)).save(tmp_path / "m.png")
    (tmp_path / "classes.json").write_text('{"0": "background", "1": "building", "2": "road"}')
    palette = class_map_palette(tmp_path / "classes.json")
    assert palette.ignore == {"background"}
    with pytest.raises(AnnotationError, match=r"unknown class value\(s\) \[9\]"):
        read_mask(tmp_path / "m.png", palette)
    (tmp_path / "m.png").write_bytes(b"not a png")
    with pytest.raises(AnnotationError, match="cannot read mask"):
        read_mask(tmp_path / "m.png", palette)


def test_palette_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="unknown palette 'nope'"):
        load_palette("nope")
    (tmp_path / "p.json").write_text('{"colours": [{"rgb": [300, 0, 0], "class": "x"}]}')
    with pytest.raises(AnnotationError, match="malformed palette"):
        load_palette(tmp_path / "p.json")
    (tmp_path / "q.json").write_text('{"ignore": []}')
    with pytest.raises(AnnotationError, match="neither 'labels' nor 'colours'"):
        load_palette(tmp_path / "q.json")
    (tmp_path / "r.json").write_text("{broken")
    with pytest.raises(AnnotationError, match=r"r\.json: invalid JSON"):
        load_palette(tmp_path / "r.json")
    (tmp_path / "classes.json").write_text("")
    with pytest.raises(AnnotationError, match=r"classes\.json: empty file"):
        class_map_palette(tmp_path / "classes.json")
    (tmp_path / "classes.json").write_text('["building"]')
    with pytest.raises(AnnotationError, match="class map must be a JSON object"):
        class_map_palette(tmp_path / "classes.json")
