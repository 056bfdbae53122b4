"""Readers for object annotations: detection boxes (COCO, DOTA, VOC/DIOR, YOLO, CSV) and masks.

Every box reader returns a list of :class:`ImageAnnotations`, one per image, in a stable order
(sorted by image path), with boxes in pixel coordinates ``(xmin, ymin, xmax, ymax)`` of that image,
origin top-left. Formats that do not store the image size (DOTA, CSV) leave ``width``/``height`` as
``None``; the builders fill them from the image and call :func:`check_boxes`.

Out-of-image policy (:func:`check_boxes`): annotation tools routinely put a corner a pixel or two
past the border (DOTA quads of truncated objects, DeepForest's ``xmax = 400`` on a 400 px tile), so
a box that sticks out by at most ``tolerance`` pixels (default: 2 % of the longer side, min 2 px)
is clipped to the image; a box further out, or one that is empty after clipping, is an error naming
the file, the box and the image size, because it almost always means the wrong image or a swapped
column.

Mask readers return an integer label array ``(H, W)`` plus the class names of its values: either a
single-channel label image with a class map (``{"1": "building", ...}``), or an RGB colour-coded
mask with a palette. Palettes for iSAID, ISPRS Potsdam/Vaihingen and LoveDA ship as data
(``sources/data/palettes.json``).

Every problem raises :class:`AnnotationError` with the file name and the problem.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

BOX_FORMATS = ("coco", "dota", "voc", "yolo", "csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


class AnnotationError(ValueError):
    """An annotation file is missing, malformed, or inconsistent with its image."""


@dataclass(frozen=True, slots=True)
class Box:
    """One annotated object as a horizontal box in pixel coordinates.

    Attributes:
        label: Class name as written in the source (normalised later, for captions only).
        xyxy: ``(xmin, ymin, xmax, ymax)`` in pixels, origin top-left.
        difficult: The source marks it difficult/truncated (DOTA, VOC).
        score: Detector confidence, for prediction files (DeepForest ``scores``).
        source_id: Identity in the source (COCO annotation id, line number...).
    """

    label: str
    xyxy: tuple[float, float, float, float]
    difficult: bool = False
    score: float | None = None
    source_id: str | None = None

    @property
    def centre(self) -> tuple[float, float]:
        """Box centre ``(x, y)``."""
        return ((self.xyxy[0] + self.xyxy[2]) / 2.0, (self.xyxy[1] + self.xyxy[3]) / 2.0)

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return max(0.0, self.xyxy[2] - self.xyxy[0]) * max(0.0, self.xyxy[3] - self.xyxy[1])


@dataclass(frozen=True, slots=True)
class ImageAnnotations:
    """The boxes of one image.

    Attributes:
        image_path: Image file name or path relative to the image folder, as the source gives it.
        width, height: Image size in pixels, when the format records it.
        boxes: The objects.
        gsd_m: Ground sampling distance in metres per pixel, when the format records it (DOTA).
        source: The annotation file this came from (for error messages and provenance).
        extra: Further per-image metadata from the source (DOTA ``imagesource``...).
    """

    image_path: str
    width: int | None
    height: int | None
    boxes: tuple[Box, ...]
    gsd_m: float | None = None
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Shared checks


def _fail(path: str | Path, problem: str) -> AnnotationError:
    return AnnotationError(f"{path}: {problem}")


def _number(path: str | Path, where: str, text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _fail(path, f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _fail(path, f"{where}: {text!r} is not a finite number")
    return value


def _make_box(
    path: str | Path, where: str, label: str, xyxy: Sequence[float], **kwargs: Any
) -> Box:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    if x1 < x0 or y1 < y0:
        raise _fail(path, f"{where}: box {list(xyxy)} has xmax < xmin or ymax < ymin")
    if not str(label).strip():
        raise _fail(path, f"{where}: empty class label")
    return Box(str(label).strip(), (x0, y0, x1, y1), **kwargs)


def default_tolerance(width: int, height: int) -> float:
    """Default out-of-image tolerance: 2 % of the longer side, at least 2 pixels."""
    return max(2.0, 0.02 * max(width, height))


def check_boxes(
    ann: ImageAnnotations,
    width: int,
    height: int,
    *,
    tolerance: float | None = None,
    classes: Iterable[str] | None = None,
) -> ImageAnnotations:
    """Check an image's boxes against its real size and return them clipped to the image.

    Args:
        ann: Annotations as read.
        width, height: The decoded image's size.
        tolerance: Pixels a box may stick out before it is an error (default
            :func:`default_tolerance`).
        classes: If given, the known class labels; any other label is an error.

    Returns:
        A copy with ``width``/``height`` set and every box clipped to the image.

    Raises:
        AnnotationError: The recorded size differs from the image, a box lies outside it by more
            than ``tolerance``, a clipped box is empty, or a label is unknown.
    """
    where = ann.source or ann.image_path
    if (ann.width is not None and ann.width != width) or (
        ann.height is not None and ann.height != height
    ):
        raise _fail(
            where,
            f"image size mismatch for {ann.image_path}: annotation says "
            f"{ann.width}x{ann.height}, image is {width}x{height}",
        )
    tol = default_tolerance(width, height) if tolerance is None else float(tolerance)
    known = set(classes) if classes is not None else None
    out = []
    for i, box in enumerate(ann.boxes):
        if known is not None and box.label not in known:
            raise _fail(
                where,
                f"unknown class {box.label!r} in box {i} of {ann.image_path} "
                f"(known: {sorted(known)})",
            )
        x0, y0, x1, y1 = box.xyxy
        overshoot = max(-x0, -y0, x1 - width, y1 - height)
        if overshoot > tol:
            raise _fail(
                where,
                f"box {i} ({box.label}) {list(box.xyxy)} lies outside the {width}x{height} image "
                f"{ann.image_path} by {overshoot:g} px (tolerance {tol:g} px)",
            )
        clipped = (
            min(max(x0, 0.0), width),
            min(max(y0, 0.0), height),
            min(max(x1, 0.0), width),
            min(max(y1, 0.0), height),
        )
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise _fail(
                where,
                f"box {i} ({box.label}) {list(box.xyxy)} is empty inside the {width}x{height} "
                f"image {ann.image_path}",
            )
        out.append(replace(box, xyxy=clipped))
    return replace(ann, width=width, height=height, boxes=tuple(out))


def _read_text(path: Path, *, required: bool = False) -> str:
    """The file's text (BOM dropped); with ``required``, an empty file is an error too."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except UnicodeDecodeError as err:
        raise _fail(path, f"not UTF-8 text ({err})") from None
    except OSError as err:
        raise _fail(path, f"cannot read ({err.strerror or err})") from None
    if required and not text.strip():
        raise _fail(path, "empty file")
    return text


def _read_json(path: Path) -> Any:
    """The file's parsed JSON; an unreadable, empty or invalid file is an error naming it."""
    try:
        return json.loads(_read_text(path, required=True))
    except json.JSONDecodeError as err:
        raise _fail(path, f"invalid JSON ({err})") from None


def _files(path: str | Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """``path`` itself, or the matching files directly in folder ``path``, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise _fail(path, f"folder holds no {what} files ({', '.join(suffixes)})")
        return files
    if not path.exists():
        raise _fail(path, "no such file or folder")
    return [path]


def find_image(folder: Path, stem: str) -> Path | None:
    """The image in ``folder`` named ``stem`` with any usual image suffix, if there is one."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header (no full decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError) as err:
        raise _fail(path, f"cannot read image size ({err})") from None


# --------------------------------------------------------------------------------------------
# Box readers


def read_coco(path: str | Path) -> list[ImageAnnotations]:
    """Read a COCO detection JSON file (``images``, ``annotations``, ``categories``).

    ``bbox`` is COCO's ``[x, y, w, h]``; ``iscrowd`` regions are kept and flagged ``difficult``.
    Images without annotations are returned with no boxes.
    """
    from pycocotools.coco import COCO

    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise _fail(path, "not a COCO detection file (needs 'images' and 'annotations')")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco.createIndex()
    except (KeyError, TypeError) as err:
        raise _fail(path, f"malformed COCO structure (missing {err})") from None
    names = {cat_id: str(cat["name"]) for cat_id, cat in coco.cats.items()}
    out = []
    for image_id in sorted(coco.imgs, key=lambda i: str(coco.imgs[i].get("file_name", ""))):
        info = coco.imgs[image_id]
        if "file_name" not in info:
            raise _fail(path, f"image {image_id} has no file_name")
        boxes = []
        for ann in coco.imgToAnns.get(image_id, []):
            where = f"annotation {ann.get('id')}"
            cat = ann.get("category_id")
            if cat not in names:
                raise _fail(path, f"{where}: unknown category_id {cat!r}")
            bbox = ann.get("bbox")
            if not isinstance(bbox, list | tuple) or len(bbox) != 4:
                raise _fail(path, f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
            x, y, w, h = (_number(path, where, v) for v in bbox)
            if w < 0 or h < 0:
                raise _fail(path, f"{where}: negative bbox size {bbox!r}")
            boxes.append(
                _make_box(
                    path,
                    where,
                    names[cat],
                    (x, y, x + w, y + h),
                    difficult=bool(ann.get("iscrowd", 0)),
                    score=ann.get("score"),
                    source_id=str(ann.get("id")) if ann.get("id") is not None else None,
                )
            )
        width, height = info.get("width"), info.get("height")
        out.append(
            ImageAnnotations(
                image_path=str(info["file_name"]),
                width=int(width) if width is not None else None,
                height=int(height) if height is not None else None,
                boxes=tuple(boxes),
                source=str(path),
            )
        )
    return out


_DOTA_HEADER = re.compile(r"^\s*(imagesource|gsd)\s*:\s*(.*)$", re.IGNORECASE)


def read_dota_file(path: str | Path, image_path: str | None = None) -> ImageAnnotations:
    """Read one DOTA label file: ``x1 y1 x2 y2 x3 y3 x4 y4 category difficult`` per line.

    The oriented quadrilateral becomes its horizontal bounding box. Optional header lines
    ``imagesource:...`` and ``gsd:...`` (DOTA v1.0) are read; ``gsd:null`` means unknown. An empty
    label file is an image with no objects (DOTA has a few).

    Args:
        path: The ``.txt`` file.
        image_path: Image name; default: the label file's stem + ``.png`` (DOTA's layout).
    """
    path = Path(path)
    text = _read_text(path)
    boxes, extra, gsd = [], {}, None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        header = _DOTA_HEADER.match(line)
        if header:
            key, value = header.group(1).lower(), header.group(2).strip()
            if key == "gsd":
                if value.lower() not in ("", "null", "none"):
                    gsd = _number(path, f"line {n}", value)
                    if gsd <= 0:
                        raise _fail(path, f"line {n}: gsd must be positive, got {value!r}")
            else:
                extra["imagesource"] = value
            continue
        parts = line.split()
        if len(parts) not in (9, 10):
            raise _fail(
                path,
                f"line {n}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 category [difficult]', got {line!r}",
            )
        coords = [_number(path, f"line {n}", v) for v in parts[:8]]
        xs, ys = coords[0::2], coords[1::2]
        difficult = parts[9] if len(parts) == 10 else "0"
        if difficult not in ("0", "1"):
            raise _fail(path, f"line {n}: difficult flag must be 0 or 1, got {difficult!r}")
        boxes.append(
            _make_box(
                path,
                f"line {n}",
                parts[8],
                (min(xs), min(ys), max(xs), max(ys)),
                difficult=difficult == "1",
                source_id=f"{path.stem}:{n}",
            )
        )
    return ImageAnnotations(
        image_path=image_path or f"{path.stem}.png",
        width=None,
        height=None,
        boxes=tuple(boxes),
        gsd_m=gsd,
        source=str(path),
        extra=extra,
    )


def read_dota(path: str | Path) -> list[ImageAnnotations]:
    """Read a DOTA label file or a folder of them (``labelTxt/P0000.txt`` -> ``P0000.png``)."""
    return [read_dota_file(p) for p in _files(path, (".txt",), "DOTA label")]


def read_voc_file(path: str | Path) -> ImageAnnotations:
    """Read one Pascal-VOC / DIOR XML file (``<annotation>`` with ``<size>`` and ``<object>``s)."""
    path = Path(path)
    text = _read_text(path, required=True)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise _fail(path, f"invalid XML ({err})") from None
    if root.tag != "annotation":
        raise _fail(path, f"root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip() or f"{path.stem}.jpg"
    size = root.find("size")
    width = height = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        width = int(_number(path, "<size>", size.findtext("width")))
        height = int(_number(path, "<size>", size.findtext("height")))
        if width == 0 or height == 0:  # some VOC exports write 0 for unknown
            width = height = None
    boxes = []
    for i, obj in enumerate(root.iter("object")):
        where = f"object {i}"
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if bnd is None:
            raise _fail(path, f"{where} ({name}): no <bndbox> (oriented DIOR-R boxes unsupported)")
        xyxy = [_number(path, where, bnd.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        boxes.append(
            _make_box(path, where, name, xyxy, difficult=difficult, source_id=f"{path.stem}:{i}")
        )
    return ImageAnnotations(
        image_path=filename,
        width=width,
        height=height,
        boxes=tuple(boxes),
        source=str(path),
    )


def read_voc(path: str | Path) -> list[ImageAnnotations]:
    """Read a VOC/DIOR XML file or a folder of them."""
    return [read_voc_file(p) for p in _files(path, (".xml",), "VOC XML")]


def read_class_list(path: str | Path) -> list[str]:
    """Read YOLO class names: ``classes.txt``/``obj.names`` (one a line) or a ``data.yaml``."""
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise _fail(path, f"invalid YAML ({err})") from None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        if not isinstance(names, list) or not names:
            raise _fail(path, "no 'names' list in the YAML file")
        return [str(n) for n in names]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise _fail(path, "empty class list")
    return names


def read_yolo_file(path: str | Path, classes: Sequence[str], image: str | Path) -> ImageAnnotations:
    """Read one YOLO label file (``class cx cy w h`` normalised to [0, 1]) for ``image``.

    The image header gives the size needed to turn normalised values into pixels.
    """
    path, image = Path(path), Path(image)
    width, height = image_size(image)
    boxes = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) not in (5, 6):
            raise _fail(path, f"line {n}: expected 'class cx cy w h [conf]', got {line!r}")
        cls = parts[0]
        if not cls.isdigit() or int(cls) >= len(classes):
            raise _fail(
                path, f"line {n}: unknown class index {cls!r} ({len(classes)} classes known)"
            )
        cx, cy, w, h = (_number(path, f"line {n}", v) for v in parts[1:5])
        if w < 0 or h < 0:
            raise _fail(path, f"line {n}: negative box size")
        score = _number(path, f"line {n}", parts[5]) if len(parts) == 6 else None
        xyxy = (
            (cx - w / 2) * width,
            (cy - h / 2) * height,
            (cx + w / 2) * width,
            (cy + h / 2) * height,
        )
        boxes.append(
            _make_box(
                path,
                f"line {n}",
                classes[int(cls)],
                xyxy,
                score=score,
                source_id=f"{path.stem}:{n}",
            )
        )
    return ImageAnnotations(
        image_path=image.name, width=width, height=height, boxes=tuple(boxes), source=str(path)
    )


def read_yolo(
    path: str | Path, *, images: str | Path, classes: Sequence[str] | str | Path
) -> list[ImageAnnotations]:
    """Read a YOLO label file or folder; ``NAME.txt`` pairs with image ``NAME.*`` in ``images``.

    Args:
        path: A label ``.txt`` or a folder of them (``classes.txt`` there is not a label file).
        images: Folder holding the images (needed for their sizes).
        classes: Class names in index order, or a file to read them from.
    """
    names = (
        read_class_list(classes) if isinstance(classes, str | Path) else [str(c) for c in classes]
    )
    out = []
    for label_file in _files(path, (".txt",), "YOLO label"):
        if label_file.name in ("classes.txt", "obj.names"):
            continue
        image = find_image(Path(images), label_file.stem)
        if image is None:
            raise _fail(label_file, f"no image named {label_file.stem}.* in {images}")
        out.append(read_yolo_file(label_file, names, image))
    return out


CSV_COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")


def read_csv_boxes(path: str | Path) -> list[ImageAnnotations]:
    """Read box CSVs in the DeepForest layout: ``image_path,xmin,ymin,xmax,ymax,label[,scores]``.

    Columns are found by name, never by position (some files order them
    ``xmin,xmax,ymin,ymax``). A ``score``/``scores`` column becomes :attr:`Box.score`. One file may
    hold several images; a folder of CSV files is read file by file.
    """
    grouped: dict[str, list[Box]] = {}
    sources: dict[str, str] = {}
    for csv_path in _files(path, (".csv",), "CSV"):
        text = _read_text(csv_path, required=True)
        reader = csv.DictReader(text.splitlines())
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise _fail(
                csv_path, f"missing column(s) {missing}; need {list(CSV_COLUMNS)}, got {header}"
            )
        score_col = next((c for c in ("score", "scores") if c in header), None)
        for n, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): v for k, v in raw.items()}
            where = f"line {n}"
            if any(row.get(c) in (None, "") for c in CSV_COLUMNS):
                raise _fail(csv_path, f"{where}: empty or missing value in {row}")
            xyxy = [_number(csv_path, where, row[c]) for c in ("xmin", "ymin", "xmax", "ymax")]
            score = _number(csv_path, where, row[score_col]) if score_col else None
            image = row["image_path"].strip()
            if sources.setdefault(image, str(csv_path)) != str(csv_path):
                raise _fail(
                    csv_path,
                    f"boxes for {image} also come from {sources[image]}; read one file at a time "
                    "(e.g. DeepForest predictions and ground truth of the same image)",
                )
            grouped.setdefault(image, []).append(
                _make_box(
                    csv_path,
                    where,
                    row["label"],
                    xyxy,
                    score=score,
                    source_id=f"{csv_path.stem}:{n}",
                )
            )
        if not grouped:
            raise _fail(csv_path, "no box rows (header only)")
    return [
        ImageAnnotations(
            image_path=image,
            width=None,
            height=None,
            boxes=tuple(grouped[image]),
            source=sources[image],
        )
        for image in sorted(grouped)
    ]


def read_boxes(
    path: str | Path,
    format: str,
    *,
    images: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
) -> list[ImageAnnotations]:
    """Read box annotations in ``format`` (one of :data:`BOX_FORMATS`), sorted by image.

    Args:
        path: Annotation file or folder.
        format: ``coco``, ``dota``, ``voc`` (also DIOR), ``yolo`` or ``csv``.
        images: Image folder (required by ``yolo``, which needs image sizes).
        classes: Class names for ``yolo`` (list or file; default ``classes.txt`` beside the
            labels).

    Raises:
        AnnotationError: Unknown format, or any problem in the files.
    """
    fmt = format.lower()
    if fmt in ("dior", "pascal", "pascal-voc"):
        fmt = "voc"
    if fmt == "coco":
        result = read_coco(path)
    elif fmt == "dota":
        result = read_dota(path)
    elif fmt == "voc":
        result = read_voc(path)
    elif fmt == "csv":
        result = read_csv_boxes(path)
    elif fmt == "yolo":
        if images is None:
            raise AnnotationError("yolo annotations need the image folder (for image sizes)")
        if classes is None:
            folder = Path(path) if Path(path).is_dir() else Path(path).parent
            classes = next(
                (folder / n for n in ("classes.txt", "obj.names") if (folder / n).exists()), None
            )
            if classes is None:
                raise _fail(folder, "yolo needs class names: pass classes or add classes.txt")
        result = read_yolo(path, images=images, classes=classes)
    else:
        raise AnnotationError(f"unknown box format {format!r}; choose one of {BOX_FORMATS}")
    return sorted(result, key=lambda a: a.image_path)


# --------------------------------------------------------------------------------------------
# Masks


@dataclass(frozen=True)
class Palette:
    """How a mask encodes classes.

    Attributes:
        name: Palette name.
        labels: Class name per integer value of single-channel masks.
        colours: Class name per RGB colour of colour-coded masks.
        ignore: Class names that are not objects (background, clutter, no-data).
    """

    name: str
    labels: Mapping[int, str] = field(default_factory=dict)
    colours: Mapping[tuple[int, int, int], str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()

    def class_names(self) -> dict[int, str]:
        """Integer id -> class name for arrays returned by :func:`read_mask`."""
        ids = dict(self.labels)
        known = set(ids.values())
        next_id = max(ids, default=0) + 1
        for name in sorted(set(self.colours.values()) - known):
            ids[next_id] = name
            next_id += 1
        return ids


@lru_cache(maxsize=1)
def _packaged_palettes() -> dict[str, Any]:
    text = resources.files("terrascribe.sources").joinpath("data/palettes.json").read_text("utf-8")
    return json.loads(text)


PALETTE_NAMES = ("isaid", "potsdam", "vaihingen", "loveda")


def _palette_from_dict(name: str, data: Mapping[str, Any], source: str) -> Palette:
    try:
        labels = {int(k): str(v) for k, v in (data.get("labels") or {}).items()}
        colours = {}
        for entry in data.get("colours") or []:
            rgb = tuple(int(c) for c in entry["rgb"])
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise ValueError(f"bad colour {entry['rgb']!r}")
            colours[rgb] = str(entry["class"])
        ignore = frozenset(str(c) for c in data.get("ignore") or [])
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(source, f"malformed palette {name!r} ({err})") from None
    if not labels and not colours:
        raise _fail(source, f"palette {name!r} has neither 'labels' nor 'colours'")
    return Palette(name=name, labels=labels, colours=colours, ignore=ignore)


def load_palette(name_or_path: str | Path) -> Palette:
    """Load a packaged palette (``isaid``, ``potsdam``, ``vaihingen``, ``loveda``) or a JSON file.

    A palette file holds ``{"labels": {"1": "building"}, "colours": [{"rgb": [255, 0, 0],
    "class": "building"}], "ignore": ["background"]}`` (``labels``, ``colours`` or both).
    """
    key = str(name_or_path).lower()
    packaged = {k: v for k, v in _packaged_palettes().items() if not k.startswith("_")}
    if key in packaged:
        return _palette_from_dict(key, packaged[key], "palettes.json")
    path = Path(name_or_path)
    if not path.exists():
        raise AnnotationError(
            f"unknown palette {name_or_path!r}: not one of {sorted(packaged)} and no such file"
        )
    data = _read_json(path)
    if not isinstance(data, dict):
        raise _fail(path, "palette must be a JSON object")
    return _palette_from_dict(path.stem, data, str(path))


def class_map_palette(class_map: Mapping[int | str, str] | str | Path) -> Palette:
    """A palette for single-channel label masks from ``{value: class}`` or a JSON file of it.

    Values mapped to ``null``, ``"background"`` or ``"ignore"`` are ignored.
    """
    source = "<class map>"
    if isinstance(class_map, str | Path):
        source = str(class_map)
        class_map = _read_json(Path(class_map))
        if not isinstance(class_map, dict):
            raise _fail(source, 'class map must be a JSON object {"1": "building", ...}')
    labels, ignore = {}, set()
    for k, v in class_map.items():
        try:
            value = int(k)
        except ValueError:
            raise _fail(source, f"class map key {k!r} is not an integer") from None
        name = "ignore" if v is None else str(v)
        labels[value] = name
        if name.lower() in ("background", "ignore", "no-data", "nodata", "unlabeled"):
            ignore.add(name)
    return Palette(name="classes", labels=labels, ignore=frozenset(ignore))


def _load_mask_array(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGB")
            elif img.mode in ("RGBA", "LA"):
                img = img.convert("RGB" if img.mode == "RGBA" else "L")
            return np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                import rasterio

                with rasterio.open(path) as src:
                    data = src.read()
                return data[0] if data.shape[0] == 1 else np.moveaxis(data[:3], 0, -1)
            except Exception as rio_err:  # report both decoders' view
                err = f"{err}; rasterio: {rio_err}"
        raise _fail(path, f"cannot read mask ({err})") from None


def mask_values(mask: np.ndarray) -> list[int]:
    """The distinct values of an integer mask, sorted.

    uint8/uint16 masks use OpenCV's histogram (one pass, no copy), which is several times faster
    than sorting a large mask with ``np.unique``.
    """
    if mask.dtype in (np.uint8, np.uint16) and mask.size:
        import cv2

        bins = 256 if mask.dtype == np.uint8 else 65536
        flat = np.ascontiguousarray(mask).reshape(-1, 1)
        hist = cv2.calcHist([flat], [0], None, [bins], [0, bins]).ravel()
        return np.flatnonzero(hist).tolist()
    return np.unique(mask).tolist()


def read_mask(path: str | Path, palette: Palette) -> np.ndarray:
    """Read a mask as an ``(H, W)`` integer array of class ids (see :meth:`Palette.class_names`).

    Label masks keep their dtype (uint8 masks stay uint8: M2B is fastest on small types).

    Single-channel masks are used as they are (values must be in ``palette.labels``); RGB masks
    are mapped through ``palette.colours`` (every colour must be known). Palette-mode PNGs are
    converted to RGB first.

    Raises:
        AnnotationError: Unreadable file, unknown values or colours.
    """
    path = Path(path)
    arr = _load_mask_array(path)
    if arr.size == 0:
        raise _fail(path, "empty mask")
    if arr.ndim == 2:
        if not palette.labels:
            raise _fail(path, f"single-channel mask, but palette {palette.name!r} has no labels")
        if not np.issubdtype(arr.dtype, np.integer):
            raise _fail(path, f"label mask must hold integers, got {arr.dtype}")
        unknown = [v for v in mask_values(arr) if v not in palette.labels]
        if unknown:
            raise _fail(
                path, f"unknown class value(s) {unknown[:10]} (known: {sorted(palette.labels)})"
            )
        return arr
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise _fail(path, f"unsupported mask shape {arr.shape}")
    if not palette.colours:
        raise _fail(path, f"colour mask, but palette {palette.name!r} has no colours")
    rgb = arr[..., :3].astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    ids = palette.class_names()
    by_name = {name: i for i, name in ids.items()}
    lut_keys = np.array([(r << 16) | (g << 8) | b for r, g, b in palette.colours], dtype=np.uint32)
    dtype = np.uint8 if max(ids) < 256 else np.int32
    lut_vals = np.array([by_name[c] for c in palette.colours.values()], dtype=dtype)
    order = np.argsort(lut_keys)
    lut_keys, lut_vals = lut_keys[order], lut_vals[order]
    pos = np.clip(np.searchsorted(lut_keys, packed), 0, len(lut_keys) - 1)
    found = lut_keys[pos] == packed
    if not found.all():
        bad = np.unique(packed[~found])[:5]
        colours = [((int(v) >> 16) & 255, (int(v) >> 8) & 255, int(v) & 255) for v in bad]
        raise _fail(path, f"colour(s) {colours} not in palette {palette.name!r}")
    return lut_vals[pos]
