"""The dataset format: round trip, resume, determinism, bad input, interop with other readers."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terrascribe.images import encode_jpeg
from terrascribe.records import Bounds, ImageObject, Sample, Skip
from terrascribe.shards import (
    Dataset,
    DatasetError,
    DatasetWriter,
    batched,
    iter_shard,
    write_dataset,
)


def _image(i: int) -> np.ndarray:
    return (np.random.default_rng(i).random((24, 32, 3)) * 255).astype(np.uint8)


def make_items(job: list[int]):
    """Module-level (picklable) job function used by the builds below."""
    for i in job:
        if i % 7 == 6:
            yield Skip(f"item-{i}", "blank tile", "fraction valid 0.01")
            continue
        yield Sample(
            key=f"test-{i:04d}",
            image=_image(i),
            captions=[f"a satellite image of thing {i}", f"another caption {i}"],
            source="other",
            source_ids=[str(i)],
            bounds=Bounds(10 + i * 1e-3, 50, 10.0005 + i * 1e-3, 50.0005, crs="EPSG:32632"),
            gsd_m=0.5,
            capture_date="2021-06-01",
            objects=[ImageObject("building", (1, 2, 10, 12), {"building": "yes"})],
            licence="CC0-1.0",
            extra={"i": i},
        )


JOBS = [list(range(s, s + 5)) for s in range(0, 20, 5)]


def _build(out: Path, jobs=JOBS, fn=make_items, **kw) -> dict:
    return write_dataset(
        out, jobs, fn, builder="test", params={"n": 20}, seed=0, progress=False, **kw
    )


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_round_trip(tmp_path):
    info = _build(tmp_path / "ds")
    assert info["counts"]["samples"] == 18
    assert info["counts"]["skip_reasons"] == {"blank tile": 2}
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 18 and len(ds.shards) == 4
    samples = list(ds)
    assert [s.key for s in samples] == sorted(s.key for s in samples)
    first = samples[0]
    assert first.captions == ["a satellite image of thing 0", "another caption 0"]
    assert first.objects[0].tags == {"building": "yes"}
    assert Image.open(io.BytesIO(first.image)).size == (32, 24)
    assert json.loads((tmp_path / "ds" / "sizes.json").read_text())["shard-000000.tar"] == 5
    stats = json.loads((tmp_path / "ds" / "shard-000001.stats.json").read_text())
    assert stats["skips"] == [
        {"item": "item-6", "reason": "blank tile", "detail": "fraction valid 0.01"}
    ]
    df = ds.manifest()
    assert list(df["key"]) == [s.key for s in samples]
    assert set(df["labels"].iloc[0]) == {"building"}


def test_tar_layout_is_webdataset_and_txt_is_first_caption(tmp_path):
    _build(tmp_path / "ds")
    with tarfile.open(tmp_path / "ds" / "shard-000000.tar") as tar:
        names = tar.getnames()
        assert names[:3] == ["test-0000.jpg", "test-0000.txt", "test-0000.json"]
        assert tar.extractfile("test-0000.txt").read().decode() == "a satellite image of thing 0"
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())


def test_filter_by_manifest_query(tmp_path):
    _build(tmp_path / "ds")
    ds = Dataset(tmp_path / "ds")
    keys = [s.key for s in ds.samples(where="west > 10.01")]
    assert keys == [f"test-{i:04d}" for i in range(11, 20) if i % 7 != 6]
    assert [s.key for s in ds.samples(keys=["test-0003"], with_images=False)] == ["test-0003"]
    both = ds.samples(keys=["test-0003", "test-0012"], where="west > 10.01", with_images=False)
    assert [s.key for s in both] == ["test-0012"]


def test_rerun_is_byte_identical(tmp_path):
    _build(tmp_path / "a")
    _build(tmp_path / "b")
    assert _tree_hashes(tmp_path / "a") == _tree_hashes(tmp_path / "b")


class Interrupt(Exception):
    pass


def make_items_crashing_in_job_2(job):
    for n, item in enumerate(make_items(job)):
        if job[0] == 10 and n == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-shard
        yield item


def test_interrupted_build_resumes_without_duplicates(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        _build(out, fn=make_items_crashing_in_job_2)
    # Shards 0 and 1 are complete; shard 2 left nothing behind (no tar, no temp file).
    assert sorted(p.name for p in out.glob("shard-*.tar")) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    assert not list(out.glob("*.tmp"))
    mtime = (out / "shard-000000.tar").stat().st_mtime_ns
    _build(out)
    assert (out / "shard-000000.tar").stat().st_mtime_ns == mtime  # kept, not rewritten
    keys = [s.key for s in Dataset(out)]
    assert len(keys) == len(set(keys)) == 18
    _build(tmp_path / "clean")
    assert _tree_hashes(out) == _tree_hashes(tmp_path / "clean")


def make_items_failing_in_job_1(job):
    if job[0] == 5:
        raise OSError("disk on fire")
    yield from make_items(job)


def test_failed_shard_is_reported_and_others_kept(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(DatasetError, match=r"1 of 4 shards failed.*disk on fire"):
        _build(out, fn=make_items_failing_in_job_1)
    assert (out / "shard-000002.stats.json").exists()
    with pytest.raises(DatasetError, match="not a complete terrascribe dataset"):
        Dataset(out)
    _build(out)
    assert len(Dataset(out)) == 18


def make_items_with_corrupt_image(job):
    for item in make_items(job):
        if isinstance(item, Sample) and item.key == "test-0002":
            good = encode_jpeg(_image(2))
            item.image = good[: len(good) // 3]  # truncated JPEG
        yield item


def test_corrupt_image_is_recorded_and_skipped(tmp_path):
    info = _build(tmp_path / "ds", fn=make_items_with_corrupt_image)
    assert info["counts"]["samples"] == 17
    stats = json.loads((tmp_path / "ds" / "shard-000000.stats.json").read_text())
    assert stats["skip_reasons"] == {"corrupt image": 1}
    assert "test-0002" in stats["skips"][0]["item"]
    assert "cannot decode image" in stats["skips"][0]["detail"]


def test_other_params_into_same_folder_is_refused(tmp_path):
    _build(tmp_path / "ds")
    with pytest.raises(DatasetError, match="other parameters"):
        write_dataset(
            tmp_path / "ds", JOBS, make_items, builder="test", params={"n": 21}, progress=False
        )


def test_duplicate_keys_within_a_shard_are_skipped(tmp_path):
    writer = DatasetWriter(tmp_path)
    items = list(make_items([0, 1]))
    stats = writer.write_shard(0, [*items, items[0]])
    assert stats.written == 2 and stats.skips[0]["reason"] == "duplicate key"


def test_jpeg_input_passes_through_unchanged(tmp_path):
    jpeg = encode_jpeg(_image(0), quality=80)
    sample = Sample(key="k", image=jpeg, captions=["c"], source="other")
    DatasetWriter(tmp_path).write_shard(0, [sample])
    assert next(iter_shard(tmp_path / "shard-000000.tar")).image == jpeg


def test_missing_dataset_error_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        Dataset(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(DatasetError, match="run it again to finish"):
        Dataset(tmp_path / "half")


def test_manifest_reads_in_geopandas_and_duckdb(tmp_path):
    geopandas = pytest.importorskip("geopandas")
    duckdb = pytest.importorskip("duckdb")
    _build(tmp_path / "ds")
    path = tmp_path / "ds" / "manifest.parquet"
    gdf = geopandas.read_parquet(path)
    assert len(gdf) == 18 and gdf.geometry.iloc[0].geom_type == "Polygon"
    assert gdf.crs is not None and gdf.crs.to_epsg() in (4326, None)
    assert gdf.geometry.iloc[0].bounds == pytest.approx((10.0, 50.0, 10.0005, 50.0005))
    n = duckdb.sql(
        f"select count(*) from read_parquet('{path}') where source = 'other'"
    ).fetchall()[0][0]
    assert n == 18


def test_webdataset_and_torch_dataset_read_the_shards(tmp_path):
    import webdataset as wds

    _build(tmp_path / "ds")
    ds = Dataset(tmp_path / "ds")
    raw = list(wds.WebDataset(ds.shard_urls(), shardshuffle=False).decode("pil"))
    assert len(raw) == 18 and raw[0]["txt"] == "a satellite image of thing 0"
    assert raw[0]["json"]["captions"][1] == "another caption 0"
    rows = list(ds.torch_dataset(transform=lambda im: im.size))
    assert rows[0]["image"] == (32, 24) and rows[0]["key"] == "test-0000"


def test_recorded_command_line_has_no_credentials(tmp_path, monkeypatch):
    argv = [
        "/usr/bin/terrascribe",
        "build",
        "--endpoint",
        "https://user:s3cret@llm.example/v1?api_key=s3cret&model=x",
        "--api-key",
        "s3cret",
        "--token=s3cret",
    ]
    monkeypatch.setattr("sys.argv", argv)
    _build(tmp_path / "ds")
    text = (tmp_path / "ds" / "dataset.json").read_text()
    assert "s3cret" not in text
    command = json.loads(text)["command"]
    assert command[0] == "terrascribe"
    assert command[3] == "https://REDACTED@llm.example/v1?api_key=REDACTED&model=x"


def test_compact_json_matches_the_standard_library_and_falls_back() -> None:
    from terrascribe.shards import _compact_json

    meta = {
        "key": "osm_w1_x",
        "objects": [{"bbox_xyxy": [113.77, 58.15, 129.9, 0.1], "tags": {"name": "Javorov\u00e1"}}],
        "gsd_m": 0.3,
        "n": 12345678901,
        "b": [True, None],
        "z": {"b": 1, "a": 2},
    }
    standard = json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert _compact_json(meta) == standard.encode()
    odd = {"x": np.float64(0.25), "big": 1 << 70}  # orjson refuses these: the stdlib writes them
    assert _compact_json(odd) == b'{"big":1180591620717411303424,"x":0.25}'
    assert _compact_json({2: "b", 1: "a"}) == b'{"1":"a","2":"b"}'  # int keys, as json writes them


def make_items_with_every_kind_of_skip(job):
    items = list(make_items(job))
    bad = items[1]
    bad.image = b"not an image"
    yield from items[:3]
    yield Skip("planned-skip", "blank tile", "")
    yield items[0]  # duplicate key
    yield Sample(key="no-image", image=None, captions=["c"], source="other")
    yield from items[3:]


def test_skips_and_samples_keep_stream_order(tmp_path):
    # Images are encoded on a thread behind the stream: the order of skips and members must
    # still be the stream's.
    stats = DatasetWriter(tmp_path).write_shard(0, make_items_with_every_kind_of_skip([0, 1, 2, 3]))
    assert [(s["item"], s["reason"]) for s in stats.skips] == [
        ("test-0001", "corrupt image"),
        ("planned-skip", "blank tile"),
        ("test-0000", "duplicate key"),
        ("no-image", "no image"),
    ]
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        keys = [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".jpg")]
    assert keys == ["test-0000", "test-0002", "test-0003"]


def test_jpeg_encoder_writes_pillows_bytes_and_is_deterministic() -> None:
    # encode_jpeg uses OpenCV (it releases the GIL); with these settings libjpeg-turbo writes
    # what Pillow writes, so datasets keep their bytes whichever library encoded them.
    image = _image(5)
    pillow = io.BytesIO()
    Image.fromarray(image).save(pillow, format="JPEG", quality=95, optimize=False, subsampling=0)
    assert encode_jpeg(image) == encode_jpeg(image) == pillow.getvalue()
    assert encode_jpeg(Image.fromarray(image).convert("L")) == encode_jpeg(
        np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, axis=2)
    )
    with pytest.raises(Exception, match=r"expected an \(H, W, 3\) uint8 array"):
        encode_jpeg(image.astype(np.float32))


def test_box_wkb_is_shapelys() -> None:
    import shapely

    from terrascribe.shards import box_wkb

    for bounds in [(10.0, 50.0, 10.5, 50.25), (-180.0, -90.0, 180.0, 90.0), (1e-9, -2.5, 3.0, 0.0)]:
        expected = shapely.to_wkb(shapely.box(*bounds), output_dimension=2)
        assert box_wkb(*bounds) == expected


def test_batched_cuts_any_iterable_in_order():
    assert list(batched(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched(range(6), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError, match="batch size must be >= 1, got 0"):
        list(batched([1], 0))
