"""Generated datasets for the curation tests: textured images, geo grid, labels, planted copies."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from terrascribe.records import Bounds, ImageObject, Sample
from terrascribe.shards import Dataset, DatasetWriter

CLASSES = ("forest", "river", "airport", "harbor")
# Rare class: few samples, so quotas can be checked.
CLASS_WEIGHTS = (0.45, 0.35, 0.15, 0.05)


def texture(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A smooth random colour field with a few flat rectangles and fine noise (RS-like texture)."""
    base = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    arr = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC))
    arr = arr.astype(np.int16)
    for _ in range(4):
        x0, y0 = rng.integers(0, size - 20, 2)
        w, h = rng.integers(8, 40, 2)
        arr[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 255, 3)
    arr += rng.integers(-12, 13, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def reencoded(arr: np.ndarray) -> bytes:
    return jpeg(arr, quality=40)


def resized(arr: np.ndarray) -> bytes:
    small = Image.fromarray(arr).resize((96, 96), Image.Resampling.BILINEAR)
    return jpeg(np.asarray(small))


def cropped(arr: np.ndarray) -> bytes:
    return jpeg(arr[2:-2, 2:-2])


PLANTS = {"reenc": reencoded, "resize": resized, "crop": cropped}


def make_samples(
    n: int = 40, *, seed: int = 0, plant: dict[int, list[str]] | None = None
) -> list[Sample]:
    """``n`` distinct samples ``img-NNN`` plus copies ``img-NNN-<kind>`` of the planted ones.

    Samples lie on a 0.02° lon/lat grid (8 per row) near Helsinki, over the years 2019-2022, with
    one object labelled by class (rare classes are rarer) and ``extra["label"]``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arr = texture(rng)
        cls = CLASSES[int(rng.choice(len(CLASSES), p=CLASS_WEIGHTS))]
        lon, lat = 24.0 + (i % 8) * 0.02, 60.0 + (i // 8) * 0.02
        common = dict(
            captions=[f"an aerial image of a {cls}", f"{cls} number {i}"],
            source="other",
            bounds=Bounds(lon, lat, lon + 0.005, lat + 0.005),
            capture_date=f"{2019 + i % 4}-06-01",
            objects=[ImageObject(cls, (0, 0, 10, 10))],
            extra={"label": cls},
        )
        out.append(Sample(key=f"img-{i:03d}", image=jpeg(arr), **common))
        for kind in (plant or {}).get(i, []):
            out.append(Sample(key=f"img-{i:03d}-{kind}", image=PLANTS[kind](arr), **common))
    return out


def make_dataset(root: Path, n: int = 40, *, seed: int = 0, shards: int = 3, plant=None) -> Dataset:
    """Write :func:`make_samples` as a dataset of ``shards`` shards (round robin)."""
    samples = make_samples(n, seed=seed, plant=plant)
    writer = DatasetWriter(root)
    for s in range(shards):
        writer.write_shard(s, samples[s::shards])
    writer.finalize(builder="test", n_shards=shards, command=["test"])
    return Dataset(root)


def test_generated_dataset_is_complete(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", 10, plant={1: ["reenc"]})
    assert len(ds) == 11
    assert set(ds.manifest()["key"]) >= {"img-001", "img-001-reenc"}


def test_subset_jobs_group_drops_by_shard_and_refuse_unknown_keys(tmp_path: Path) -> None:
    import pytest

    from terrascribe.curate.views import subset_jobs, write_subset
    from terrascribe.shards import DatasetError

    ds = make_dataset(tmp_path / "ds", 6, shards=3)
    drops = {"img-004": ("r", "b"), "img-000": ("r", "a"), "img-003": ("r", "c")}
    jobs = subset_jobs(ds, drops)
    assert [Path(p).name for p, _ in jobs] == [p.name for p in ds.shards]
    # round robin: shard 0 holds img-000 and img-003, shard 1 img-004, shard 2 none
    assert [d for _, d in jobs] == [
        (("img-000", "r", "a"), ("img-003", "r", "c")),
        (("img-004", "r", "b"),),
        (),
    ]
    with pytest.raises(DatasetError, match="keys not in the dataset"):
        subset_jobs(ds, {"nope": ("r", "x")})
    with pytest.raises(DatasetError, match="new folder"):
        write_subset(ds, ds.path, {}, builder="test", params={}, progress=False)
