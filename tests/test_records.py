"""The sample schema: valid samples round-trip; invalid ones fail with messages that say why."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from terrascribe.records import (
    Bounds,
    ImageObject,
    RecordError,
    Sample,
    make_key,
    normalise_captions,
    validate_key,
)

IMG = np.zeros((4, 4, 3), np.uint8)


def _sample(**kw) -> Sample:
    args = {"key": "osm-w1-naip-2021", "image": IMG, "captions": ["a building"], "source": "osm"}
    args.update(kw)
    return Sample(**args)


def test_full_sample_round_trips_through_json_metadata():
    sample = _sample(
        source_ids=["w1"],
        bounds=Bounds(10.0, 50.0, 10.01, 50.01, crs="EPSG:32632", native=(1, 2, 3, 4)),
        gsd_m=0.6,
        capture_date="2021-06-01",
        sensor="NAIP",
        objects=[
            ImageObject(
                "building", (1, 2, 3, 4), {"roof:shape": "hipped"}, ((1, 2), (3, 2), (3, 4))
            )
        ],
        licence="CC0-1.0",
        extra={"style": "title"},
    )
    meta = json.loads(json.dumps(sample.metadata()))
    back = Sample.from_metadata(meta, image=IMG)
    assert back.metadata() == sample.metadata()
    assert back.objects[0].tags == {"roof:shape": "hipped"}
    assert back.bounds.native == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "has.dot"}, "invalid sample key"),
        ({"key": "../etc/passwd"}, "invalid sample key"),
        ({"key": ""}, "invalid sample key"),
        ({"captions": []}, "at least one caption"),
        ({"captions": "one string"}, "list of strings"),
        ({"captions": ["ok", "  "]}, "caption 1 is empty"),
        ({"source": "satellite"}, "source must be one of"),
        ({"gsd_m": -1.0}, "gsd_m must be positive"),
        ({"gsd_m": float("nan")}, "finite"),
        ({"capture_date": "June 2021"}, "ISO date"),
        ({"image": np.zeros((4, 4), np.uint8)}, "(H, W, 3)"),
        ({"image": np.zeros((4, 4, 3), np.float32)}, "uint8"),
        ({"image": b""}, "empty"),
        ({"image": "path.jpg"}, "encoded bytes or a uint8 array"),
    ],
)
def test_invalid_samples_name_the_key_and_the_problem(kwargs, message):
    with pytest.raises(RecordError) as err:
        _sample(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((200.0, 0.0, 201.0, 1.0), "longitudes"),
        ((0.0, 10.0, 1.0, 5.0), "latitudes"),
        ((0.0, -91.0, 1.0, 5.0), "latitudes"),
    ],
)
def test_invalid_bounds(args, message):
    with pytest.raises(RecordError, match=message):
        Bounds(*args)


def test_invalid_objects():
    with pytest.raises(RecordError, match="xmax >= xmin"):
        ImageObject("car", (5, 0, 1, 1))
    with pytest.raises(RecordError, match="non-empty"):
        ImageObject(" ", (0, 0, 1, 1))
    with pytest.raises(RecordError, match="at least 3 points"):
        ImageObject("car", (0, 0, 1, 1), polygon=((0, 0), (1, 1)))


def test_schema_from_the_future_is_refused():
    meta = _sample().metadata()
    meta["schema_version"] = 99
    with pytest.raises(RecordError, match="upgrade terrascribe"):
        Sample.from_metadata(meta)


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=1, max_size=5))
def test_make_key_is_always_valid_or_refuses(parts):
    try:
        key = make_key(*parts)
    except RecordError:
        return
    assert validate_key(key) == key


def test_normalise_captions_drops_empty_and_repeated_keeping_order():
    assert normalise_captions(["b  a", "", "b a", "c", " c "]) == ["b a", "c"]
