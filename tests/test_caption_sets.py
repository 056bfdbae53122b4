"""Caption sets: the dataset_*.json and the VT-RSBS CSV layouts, generated; then the real CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terrascribe.sources import caption_sets
from terrascribe.sources.caption_sets import CaptionSetError, read, summary, ucm_label

ROWS = [
    ("airport_1.jpg", "train", "airport", ["A plane is parked.", "A plane is parked.", ""]),
    ("bare land_2.jpg", "val", "bare land", ["It is a piece of bare land.", "Bare land."]),
    ("00003.jpg", "test", "playfields", ["A playground with buildings around"]),
]


def write_karpathy_json(path: Path, dataset: str = "rsicd") -> None:
    """The original layout: images[].sentences[].raw, split, filename, imgid."""
    images = [
        {
            "filename": name,
            "imgid": i,
            "split": split,
            "sentences": [
                {"raw": s, "tokens": s.lower().split(), "imgid": i, "sentid": 5 * i + j}
                for j, s in enumerate(sents)
            ],
            "sentids": [5 * i + j for j in range(len(sents))],
        }
        for i, (name, split, _, sents) in enumerate(ROWS)
    ]
    path.write_text(json.dumps({"images": images, "dataset": dataset}))


def write_vt_rsbs_csv(path: Path, label: bool = True, img_id: bool = True) -> None:
    """The CSV layout in shared/data/captions: CRLF, pandas index column, list literals."""
    header = [""] + ["filename"] + (["img_id"] if img_id else []) + ["split"]
    header += (["label"] if label else []) + (["sent_id"] if img_id else []) + ["sentence"]
    lines = [",".join(header)]
    for i, (name, split, lbl, sents) in enumerate(ROWS):
        cells = [str(i), name] + ([str(100 + i)] if img_id else []) + [split]
        cells += ([lbl] if label else []) + (
            [f'"{[5 * i + j for j in range(len(sents))]}"'] if img_id else []
        )
        cells.append('"' + repr(sents).replace('"', '""') + '"')
        lines.append(",".join(cells))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


def test_karpathy_json(tmp_path: Path) -> None:
    write_karpathy_json(tmp_path / "dataset_rsicd.json")
    records = read(tmp_path / "dataset_rsicd.json")
    assert [r.image for r in records] == [r[0] for r in ROWS]
    first = records[0]
    assert first.captions == ("A plane is parked.", "A plane is parked.", "")
    assert first.unique_captions == ["A plane is parked."]
    assert (first.split, first.label, first.image_id, first.dataset) == (
        "train",
        "airport",
        0,
        "rsicd",
    )
    assert records[1].label == "bare land"
    assert records[2].label is None  # no class in the file name


def test_csv_layout_with_crlf_index_and_list_literals(tmp_path: Path) -> None:
    write_vt_rsbs_csv(tmp_path / "rsicd.csv")
    records = read(tmp_path / "rsicd.csv")
    assert [r.split for r in records] == ["train", "val", "test"]
    assert records[0].captions == ("A plane is parked.", "A plane is parked.", "")
    assert records[2].label == "playfields" and records[2].image_id == 102
    assert summary(records) == {
        "images": 3,
        "captions": 6,
        "unique_captions": 4,
        "splits": {"test": 1, "train": 1, "val": 1},
        "labels": 3,
    }


def test_format_detection(tmp_path: Path) -> None:
    write_vt_rsbs_csv(tmp_path / "a.csv")
    assert caption_sets.detect_format(tmp_path / "a.csv") == "rsicd"  # .jpg names + label
    write_vt_rsbs_csv(tmp_path / "b.csv", label=False)
    assert caption_sets.detect_format(tmp_path / "b.csv") == "ucm"  # img_id, no label
    write_vt_rsbs_csv(tmp_path / "c.csv", label=False, img_id=False)
    assert caption_sets.detect_format(tmp_path / "c.csv") == "sydney"
    write_karpathy_json(tmp_path / "d.json", dataset="rsitmd")
    assert caption_sets.detect_format(tmp_path / "d.json") == "rsitmd"
    assert read(tmp_path / "d.json", format="rsitmd")[0].dataset == "rsitmd"


def test_ucm_label_from_file_number() -> None:
    assert ucm_label("1.tif") == "agricultural"
    assert ucm_label("100.tif") == "agricultural"
    assert ucm_label("101.tif") == "airplane"
    assert ucm_label("2100.tif") == "tenniscourt"
    assert ucm_label("2101.tif") is None and ucm_label("x.tif") is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b'{"images": [{"filename": "a.jpg", "split": "train"}]}', "no 'sentences' list"),
        (
            b'{"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]}',
            "split must be one of",
        ),
        (b"{broken", "invalid JSON"),
        (b",filename,split\r\n0,a.tif,train\r\n", r"missing column\(s\) \['sentence'\]"),
        (b',filename,split,sentence\r\n0,a.tif,train,"[unclosed"\r\n', "not a list literal"),
        (b',filename,split,sentence\r\n0,a.tif,train,"[1, 2]"\r\n', "list of strings"),
        (
            b",filename,split,sentence\r\n0,a.tif,train,\"['x']\"\r\n1,a.tif,val,\"['y']\"\r\n",
            "more than one row",
        ),
    ],
)
def test_errors_name_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "sydney_captions.csv"
    if content.startswith(b"{"):
        path = tmp_path / "dataset_sydney.json"
    path.write_bytes(content)
    with pytest.raises(CaptionSetError, match=problem) as err:
        read(path)
    assert str(path) in str(err.value)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(CaptionSetError, match="no such file"):
        read(tmp_path / "nope.csv")
    write_vt_rsbs_csv(tmp_path / "a.csv")
    with pytest.raises(CaptionSetError, match="unknown caption-set format"):
        read(tmp_path / "a.csv", format="coco")


# The data card's figures: images, split sizes, distinct labels.
REAL = {
    "ucm_captions.csv": ("ucm", 2100, {"train": 1680, "val": 210, "test": 210}, 21),
    "rsicd.csv": ("rsicd", 10921, {"train": 8734, "val": 1094, "test": 1093}, 31),
    "rsitmd.csv": ("rsitmd", 4743, {"train": 3432, "val": 859, "test": 452}, 33),
    "sydney_captions.csv": ("sydney", 613, {"train": 497, "val": 58, "test": 58}, 0),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_caption_csvs(shared_data: Path, name: str) -> None:
    fmt, images, splits, labels = REAL[name]
    records = read(shared_data / "captions" / name)
    stats = summary(records)
    assert records[0].dataset == fmt
    assert stats["images"] == images and stats["captions"] == 5 * images
    assert stats["splits"] == dict(sorted(splits.items()))
    assert stats["labels"] == labels
    assert all(len(r.captions) == 5 and r.unique_captions for r in records)


def test_real_rsicd_quirks(shared_data: Path) -> None:
    records = {r.image: r for r in read(shared_data / "captions" / "rsicd.csv")}
    assert "" in records["bridge_218.jpg"].captions  # one of the 3 empty captions, kept raw
    assert "" not in records["bridge_218.jpg"].unique_captions
    single = sum(1 for r in records.values() if len(set(r.captions)) == 1)
    assert single == 4853  # data card: rows with 1 distinct sentence out of 5
    # 'playfields' occurs only among the 921 '000NN.jpg' rows (on 661 of them), kept as is
    numeric = [r for r in records.values() if r.image[:5].isdigit()]
    assert len(numeric) == 921
    playfields = [r for r in records.values() if r.label == "playfields"]
    assert len(playfields) == 661 and all(r.image[:5].isdigit() for r in playfields)
