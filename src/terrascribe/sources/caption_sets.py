"""Readers for RS caption sets: RSICD, RSITMD, UCM-captions and Sydney-captions.

Two layouts are read:

* the original ``dataset_<name>.json`` (Karpathy layout): ``{"images": [{"filename", "split",
  "sentences": [{"raw": ...}, ...]}], "dataset": ...}``;
* the CSV tables of the VT-RSBS collection (``../shared/data/captions``): CRLF line ends, a pandas
  index column, ``sentence`` as a Python list literal (``ast.literal_eval``, not JSON).

:func:`read` returns one :class:`CaptionRecord` per image with the captions in their raw order
(empty and repeated ones included: RSICD pads short caption sets by repetition) and a
de-duplicated view (:attr:`CaptionRecord.unique_captions`) for training.

Labels: RSICD/RSITMD CSVs have a ``label`` column; in their JSON layout the class is the file
name's prefix (``baseballfield_12.tif``). UCM's class follows from the file number (blocks of 100
in alphabetical class order). Sydney has no labels. RSICD's 921 ``000NN.jpg`` images carry the
label ``playfields`` in the CSV; it is kept as is (it is not one of the 30 RSICD classes).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from terrascribe.records import normalise_captions

CAPTION_SET_FORMATS = ("rsicd", "rsitmd", "ucm", "sydney")
SPLITS = ("train", "val", "test")

# UC Merced land-use classes in alphabetical order; UCM-captions image n is class (n - 1) // 100.
UCM_CLASSES = (
    "agricultural",
    "airplane",
    "baseballdiamond",
    "beach",
    "buildings",
    "chaparral",
    "denseresidential",
    "forest",
    "freeway",
    "golfcourse",
    "harbor",
    "intersection",
    "mediumresidential",
    "mobilehomepark",
    "overpass",
    "parkinglot",
    "river",
    "runway",
    "sparseresidential",
    "storagetanks",
    "tenniscourt",
)


class CaptionSetError(ValueError):
    """A caption-set file is missing, malformed or not in a known layout."""


@dataclass(frozen=True, slots=True)
class CaptionRecord:
    """One image of a caption set.

    Attributes:
        image: Image file name in the original dataset (``"airport_1.jpg"``, ``"12.tif"``).
        captions: Captions in the source's order, as written (may repeat or be empty).
        split: ``"train"``, ``"val"`` or ``"test"`` (the official split).
        label: Scene class, when known.
        image_id: The source's image id, when it has one.
        dataset: Which caption set (one of :data:`CAPTION_SET_FORMATS`).
    """

    image: str
    captions: tuple[str, ...]
    split: str
    label: str | None
    image_id: int | None = None
    dataset: str = ""

    @property
    def unique_captions(self) -> list[str]:
        """Captions stripped, with empty and repeated ones removed (first occurrence kept)."""
        return normalise_captions(self.captions)


def _fail(path: Path, problem: str) -> CaptionSetError:
    return CaptionSetError(f"{path}: {problem}")


def ucm_label(filename: str) -> str | None:
    """UC Merced class of UCM-captions image ``"<n>.tif"`` (1-2100), else ``None``."""
    match = re.fullmatch(r"(\d+)\.\w+", filename)
    if not match:
        return None
    n = int(match.group(1))
    return UCM_CLASSES[(n - 1) // 100] if 1 <= n <= 100 * len(UCM_CLASSES) else None


def prefix_label(filename: str) -> str | None:
    """Class from a ``<class>_<n>.<ext>`` file name (RSICD/RSITMD), else ``None``."""
    match = re.fullmatch(r"(.+?)_\d+\.\w+", filename)
    return match.group(1) if match else None


def _label_for(dataset: str, filename: str) -> str | None:
    if dataset == "ucm":
        return ucm_label(filename)
    if dataset in ("rsicd", "rsitmd"):
        return prefix_label(filename)
    return None


def _check_split(path: Path, where: str, split: object) -> str:
    text = str(split).strip().lower()
    if text not in SPLITS:
        raise _fail(path, f"{where}: split must be one of {SPLITS}, got {split!r}")
    return text


def detect_format(path: str | Path) -> str:
    """Guess which caption set a file holds, from its name, then its content."""
    path = Path(path)
    name = path.name.lower()
    for fmt in CAPTION_SET_FORMATS:
        if fmt in name:
            return fmt
    if "sidney" in name:
        return "sydney"
    if path.suffix.lower() == ".json":
        data = _load_json(path)
        dataset = str(data.get("dataset", "")).lower()
        for fmt in CAPTION_SET_FORMATS:
            if fmt in dataset:
                return fmt
        names = [str(im.get("filename", "")) for im in data["images"][:50]]
        if names and all(re.fullmatch(r"\d+\.tif", n) for n in names):
            raise _fail(path, "cannot tell UCM from Sydney captions: pass format='ucm'|'sydney'")
        return "rsitmd" if any(n.endswith(".tif") for n in names) else "rsicd"
    header = _csv_header(path)
    if "label" in header:
        return "rsicd" if _first_filename(path).endswith(".jpg") else "rsitmd"
    return "ucm" if "img_id" in header else "sydney"


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [h.strip() for h in f.readline().split(",")]
    except OSError as err:
        raise _fail(path, f"cannot read ({err.strerror or err})") from None


def _first_filename(path: Path) -> str:
    import pandas as pd

    return str(pd.read_csv(path, index_col=0, nrows=1)["filename"].iloc[0])


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(path, f"cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise _fail(path, f"invalid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise _fail(path, "not a caption-set JSON (needs an 'images' list)")
    return data


def _read_json(path: Path, dataset: str) -> list[CaptionRecord]:
    data = _load_json(path)
    out = []
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(image, dict) or "filename" not in image:
            raise _fail(path, f"{where}: no 'filename'")
        sentences = image.get("sentences")
        if not isinstance(sentences, list):
            raise _fail(path, f"{where} ({image['filename']}): no 'sentences' list")
        captions = []
        for j, sentence in enumerate(sentences):
            if not isinstance(sentence, dict) or "raw" not in sentence:
                raise _fail(path, f"{where}.sentences[{j}]: no 'raw' text")
            captions.append(str(sentence["raw"]))
        filename = str(image["filename"])
        image_id = image.get("imgid")
        out.append(
            CaptionRecord(
                image=filename,
                captions=tuple(captions),
                split=_check_split(path, where, image.get("split")),
                label=_label_for(dataset, filename),
                image_id=int(image_id) if image_id is not None else None,
                dataset=dataset,
            )
        )
    return out


def _parse_list(path: Path, row: int, text: object) -> list[str]:
    if not isinstance(text, str):
        raise _fail(path, f"row {row}: 'sentence' is empty")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise _fail(path, f"row {row}: 'sentence' is not a list literal ({err})") from None
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        raise _fail(path, f"row {row}: 'sentence' must be a list of strings, got {type(value)}")
    return list(value)


def _read_csv(path: Path, dataset: str) -> list[CaptionRecord]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise _fail(path, f"cannot parse CSV ({err})") from None
    except pd.errors.EmptyDataError:
        raise _fail(path, "empty file") from None
    missing = [c for c in ("filename", "split", "sentence") if c not in frame.columns]
    if missing:
        raise _fail(path, f"missing column(s) {missing}; got {list(frame.columns)}")
    has_label = "label" in frame.columns
    has_id = "img_id" in frame.columns
    out = []
    for row, (filename, split, sentence, label, image_id) in enumerate(
        zip(
            frame["filename"],
            frame["split"],
            frame["sentence"],
            frame["label"] if has_label else [None] * len(frame),
            frame["img_id"] if has_id else [None] * len(frame),
            strict=True,
        )
    ):
        where = f"row {row}"
        if not filename:
            raise _fail(path, f"{where}: empty filename")
        out.append(
            CaptionRecord(
                image=filename,
                captions=tuple(_parse_list(path, row, sentence)),
                split=_check_split(path, where, split),
                label=(label or None) if has_label else _label_for(dataset, filename),
                image_id=int(image_id) if image_id not in (None, "") else None,
                dataset=dataset,
            )
        )
    return out


def read(path: str | Path, format: str = "auto") -> list[CaptionRecord]:
    """Read a caption set: one record per image, in file order.

    Args:
        path: ``dataset_*.json`` or a caption CSV.
        format: ``"rsicd"``, ``"rsitmd"``, ``"ucm"``, ``"sydney"`` or ``"auto"`` (from the file
            name, else the content). The layout (JSON or CSV) is detected from the content.

    Returns:
        One :class:`CaptionRecord` per image.

    Raises:
        CaptionSetError: Missing file, unknown format, malformed rows, duplicate image names.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file")
    fmt = format.lower()
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in CAPTION_SET_FORMATS:
        raise _fail(path, f"unknown caption-set format {format!r}; choose {CAPTION_SET_FORMATS}")
    with open(path, "rb") as f:
        first = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    records = _read_json(path, fmt) if first.startswith(b"{") else _read_csv(path, fmt)
    seen: set[str] = set()
    for record in records:
        if record.image in seen:
            raise _fail(path, f"image {record.image!r} appears in more than one row")
        seen.add(record.image)
    return records


def summary(records: Sequence[CaptionRecord]) -> dict[str, object]:
    """Counts for reports: images, captions, unique captions, images per split, labels."""
    from collections import Counter

    return {
        "images": len(records),
        "captions": sum(len(r.captions) for r in records),
        "unique_captions": sum(len(r.unique_captions) for r in records),
        "splits": dict(sorted(Counter(r.split for r in records).items())),
        "labels": len({r.label for r in records if r.label is not None}),
    }
