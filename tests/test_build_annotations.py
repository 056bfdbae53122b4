"""Builders and CLI: boxes, masks, caption sets, counting benchmark; skips, resume, determinism."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from terrascribe.build.annotations import (
    BuildError,
    build_boxes_dataset,
    build_caption_set_dataset,
    build_masks_dataset,
    pair_masks,
    resolve_image,
)
from terrascribe.build.counting import build_counting_benchmark
from terrascribe.cli import app
from terrascribe.shards import Dataset
from terrascribe.sources.annotations import AnnotationError
from terrascribe.text.boxes import B2COptions

from .test_annotations import write_coco, write_csv, write_dota, write_images
from .test_caption_sets import write_vt_rsbs_csv


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}


def test_boxes_dataset_from_coco(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    write_coco(tmp_path / "coco.json")
    info = build_boxes_dataset(
        tmp_path / "ds",
        annotations=tmp_path / "coco.json",
        images=tmp_path / "images",
        format="coco",
        seed=3,
        licence="CC0-1.0",
        progress=False,
    )
    assert info["counts"]["samples"] == 2
    assert info["report"]["class_counts"] == {"harbor": 1, "ship": 2}
    ds = Dataset(tmp_path / "ds")
    samples = {s.key: s for s in ds.samples(with_images=False)}
    a = samples["boxes-a"]
    assert a.source == "boxes" and a.licence == "CC0-1.0" and len(a.captions) == 5
    assert [(o.label, o.bbox_xyxy) for o in a.objects] == [
        ("ship", (4.0, 6.0, 20.0, 16.0)),
        ("harbor", (30.0, 10.0, 60.0, 40.0)),
    ]
    assert len(a.extra["b2c"]["template_ids"]) == 5
    assert a.extra["b2c"]["templates"] == "terrascribe-b2c@1.0"
    manifest = ds.manifest()
    assert set(manifest["n_objects"]) == {1, 2}


def test_same_inputs_and_seed_give_the_same_bytes(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    write_dota(tmp_path / "dota")
    kwargs = dict(annotations=tmp_path / "dota", images=tmp_path / "images", format="dota")
    build_boxes_dataset(tmp_path / "one", seed=1, progress=False, **kwargs)
    build_boxes_dataset(tmp_path / "two", seed=1, progress=False, **kwargs)
    build_boxes_dataset(tmp_path / "three", seed=2, progress=False, **kwargs)
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    assert shard_bytes(tmp_path / "one") != shard_bytes(tmp_path / "three")
    sample = next(Dataset(tmp_path / "one").samples(keys=["boxes-a"], with_images=False))
    assert sample.gsd_m == 0.5  # from the DOTA header
    assert sample.objects[1].tags["difficult"] == "1"


def write_boxes_with_bad_rows(folder: Path, *, traversal: bool = True) -> None:
    """``folder/boxes.csv`` and ``folder/images``: a.png (one ship, one harbor) and b.png (one
    ship) are good; c.png is corrupt, d.png missing, e.png's box far outside its 32x32 image,
    and (with ``traversal``) one row names ``../secret.png``."""
    write_images(folder / "images")
    write_csv(folder / "boxes.csv")
    with open(folder / "boxes.csv", "a") as f:
        f.write("c.png,1,1,5,5,ship\n")
        f.write("d.png,1,1,5,5,ship\n")
        f.write("e.png,10,10,500,20,ship\n")
        if traversal:
            f.write("../secret.png,1,1,5,5,ship\n")
    (folder / "images" / "c.png").write_bytes(b"\x89PNG broken")
    Image.new("RGB", (32, 32)).save(folder / "images" / "e.png")


def test_bad_items_are_skipped_and_recorded(tmp_path: Path) -> None:
    write_boxes_with_bad_rows(tmp_path)
    info = build_boxes_dataset(
        tmp_path / "ds",
        annotations=tmp_path / "boxes.csv",
        images=tmp_path / "images",
        format="csv",
        progress=False,
    )
    assert info["counts"]["samples"] == 2
    assert info["counts"]["skip_reasons"] == {
        "bad annotation": 1,
        "corrupt image": 1,
        "missing image": 2,
    }
    stats = json.loads((tmp_path / "ds" / "shard-000000.stats.json").read_text())
    bad = next(s for s in stats["skips"] if s["reason"] == "bad annotation")
    assert "e.png" in bad["detail"] and "outside" in bad["detail"]


def test_resolve_image_stays_inside_the_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    (tmp_path / "secret.png").write_bytes(b"x")
    assert resolve_image(tmp_path / "images", "a.png") == tmp_path / "images" / "a.png"
    assert resolve_image(tmp_path / "images", "sub/a.png") == tmp_path / "images" / "a.png"
    assert resolve_image(tmp_path / "images", "a.jpg") == tmp_path / "images" / "a.png"
    assert resolve_image(tmp_path / "images", "../secret.png") is None
    assert resolve_image(tmp_path / "images", str(tmp_path / "secret.png")) is None


def test_tiling_large_scenes(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (300, 200), (10, 80, 20)).save(tmp_path / "images" / "scene.png")
    (tmp_path / "boxes.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        "scene.png,10,10,30,30,car\n"  # first tile only
        "scene.png,120,50,160,70,car\n"  # straddles the tiles' overlap
        "scene.png,250,150,290,190,car\n"  # last tile only
    )
    build_boxes_dataset(
        tmp_path / "ds",
        annotations=tmp_path / "boxes.csv",
        images=tmp_path / "images",
        format="csv",
        tile_size=160,
        tile_overlap=20,
        min_visibility=0.6,
        progress=False,
    )
    # windows start at x 0/140 and y 0/40; car 2 is half inside the right-hand tiles (< 0.6:
    # dropped there), car 3 only 25 % inside the top-right one: that tile has no object left
    ds = Dataset(tmp_path / "ds")
    samples = {s.key: s for s in ds.samples(with_images=True)}
    assert sorted(samples) == ["boxes-scene-x0y0", "boxes-scene-x0y40", "boxes-scene-x140y40"]
    assert ds.info["counts"]["skip_reasons"] == {"no objects": 1}
    first = samples["boxes-scene-x0y0"]
    assert [o.bbox_xyxy for o in first.objects] == [(10, 10, 30, 30), (120, 50, 160, 70)]
    assert first.extra["tile"] == [0, 0, 160, 160]
    assert [o.bbox_xyxy for o in samples["boxes-scene-x0y40"].objects] == [(120, 10, 160, 30)]
    last = samples["boxes-scene-x140y40"]
    assert [o.bbox_xyxy for o in last.objects] == [(110.0, 110.0, 150.0, 150.0)]
    from terrascribe.images import decode_rgb

    assert decode_rgb(last.image).size == (160, 160)


def test_custom_templates_are_read_once_per_build(tmp_path: Path, monkeypatch) -> None:
    import terrascribe.build.annotations as builder

    data = json.loads(
        (Path(__file__).parents[1] / "src/terrascribe/text/data/b2c_templates.json").read_text()
    )
    data["name"], data["version"] = "mine", "9"
    (tmp_path / "t.json").write_text(json.dumps(data))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (300, 200)).save(tmp_path / "images" / "scene.png")
    (tmp_path / "boxes.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\nscene.png,10,10,30,30,car\n"
        "scene.png,250,150,290,190,car\n"
    )
    reads = []
    load = builder.load_templates
    monkeypatch.setattr(builder, "load_templates", lambda path: reads.append(path) or load(path))
    info = build_boxes_dataset(
        tmp_path / "ds",
        annotations=tmp_path / "boxes.csv",
        images=tmp_path / "images",
        format="csv",
        templates=tmp_path / "t.json",
        tile_size=160,
        keep_empty=True,
        progress=False,
    )
    assert info["params"]["templates"] == "mine@9" and info["counts"]["samples"] == 4
    samples = list(Dataset(tmp_path / "ds").samples(with_images=False))
    assert {s.extra["b2c"]["templates"] for s in samples} == {"mine@9"}
    assert reads == [str(tmp_path / "t.json")]  # not once per image and tile


def test_masks_dataset_from_the_sample_region(sample_region, tmp_path: Path) -> None:
    info = build_masks_dataset(
        tmp_path / "ds",
        masks=sample_region.masks_dir,
        images=sample_region.chips_dir,
        classes=sample_region.mask_classes,
        min_area=12,
        progress=False,
    )
    truth = json.loads(sample_region.truth.read_text())
    assert info["counts"]["samples"] == len(truth["chips"])
    assert "background" not in info["report"]["class_counts"]
    assert info["report"]["objects"] >= sum(len(c["objects"]) for c in truth["chips"]) * 0.9
    sample = next(Dataset(tmp_path / "ds").samples(with_images=False))
    assert sample.source == "masks" and sample.objects and len(sample.captions) == 5


def test_mask_pairing_and_errors(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("top_potsdam_2_10_RGB.tif", "P0001.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / name)
    Image.new("RGB", (8, 8)).save(tmp_path / "masks" / "top_potsdam_2_10_label.tif")
    Image.new("RGB", (8, 8)).save(tmp_path / "masks" / "P0001_instance_color_RGB.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "masks" / "orphan.png")
    pairs = {
        m.name: (i.name if i else None) for m, i in pair_masks(tmp_path / "masks", tmp_path / "img")
    }
    assert pairs == {
        "P0001_instance_color_RGB.png": "P0001.png",
        "orphan.png": None,
        "top_potsdam_2_10_label.tif": "top_potsdam_2_10_RGB.tif",
    }
    # masks beside their images: a mask never pairs with itself
    (tmp_path / "both").mkdir()
    for name in ("x.png", "x_label.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "both" / name)
    pairs = {m.name: (i.name if i else None) for m, i in pair_masks(*[tmp_path / "both"] * 2)}
    assert pairs == {"x.png": None, "x_label.png": "x.png"}
    with pytest.raises(BuildError, match="mask folder not found"):
        pair_masks(tmp_path / "nope", tmp_path / "img")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="no mask files"):
        pair_masks(tmp_path / "empty", tmp_path / "img")
    with pytest.raises(BuildError, match="exactly one of palette"):
        build_masks_dataset(tmp_path / "ds", masks=tmp_path / "masks", images=tmp_path / "img")


def test_colour_masks_with_a_palette_and_size_mismatch(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.full((32, 32, 3), 255, dtype=np.uint8)  # impervious surface (ignored)
    mask[4:12, 4:20] = (0, 0, 255)  # building
    mask[20:24, 20:28] = (255, 255, 0)  # car
    Image.fromarray(mask).save(tmp_path / "masks" / "tile_label.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "tile_RGB.png")
    Image.fromarray(mask[:16]).save(tmp_path / "masks" / "small_label.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "small.png")
    info = build_masks_dataset(
        tmp_path / "ds",
        masks=tmp_path / "masks",
        images=tmp_path / "img",
        palette="potsdam",
        progress=False,
    )
    assert info["report"]["class_counts"] == {"building": 1, "car": 1}
    assert info["counts"]["skip_reasons"] == {"bad annotation": 1}
    sample = next(Dataset(tmp_path / "ds").samples(with_images=False))
    assert sorted((o.label, o.bbox_xyxy) for o in sample.objects) == [
        ("building", (4.0, 4.0, 20.0, 12.0)),
        ("car", (20.0, 20.0, 28.0, 24.0)),
    ]


def test_caption_set_dataset(tmp_path: Path) -> None:
    write_vt_rsbs_csv(tmp_path / "rsicd.csv")
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(tmp_path / "imgs" / "airport_1.jpg")
    Image.new("RGB", (16, 16)).save(tmp_path / "imgs" / "sub" / "00003.jpg")
    info = build_caption_set_dataset(
        tmp_path / "ds", captions=tmp_path / "rsicd.csv", images=tmp_path / "imgs", progress=False
    )
    assert info["counts"]["samples"] == 2
    assert info["counts"]["skip_reasons"] == {"missing image": 1}
    assert info["report"]["splits"] == {"test": 1, "train": 1}
    samples = {s.key: s for s in Dataset(tmp_path / "ds").samples(with_images=False)}
    airport = samples["rsicd-airport_1"]
    assert airport.captions == ["A plane is parked."]
    assert airport.extra["split"] == "train" and airport.extra["label"] == "airport"
    assert samples["rsicd-00003"].extra["label"] == "playfields"


def test_shards_are_random_samples_not_class_runs(tmp_path: Path) -> None:
    # a class-sorted caption set (UCM/RSICD order): every shard must mix classes, in a seeded way
    classes = ["airport", "beach", "forest", "river"]
    images = [
        {"filename": f"{c}_{i}.jpg", "split": "train", "sentences": [{"raw": f"a {c} {i}"}]}
        for c in classes
        for i in range(8)
    ]
    (tmp_path / "imgs").mkdir()
    for row in images:
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / row["filename"])
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps({"images": images}))

    def shard_classes(seed: int, name: str) -> list[set[str]]:
        out = tmp_path / name
        build_caption_set_dataset(
            out,
            captions=tmp_path / "dataset_rsicd.json",
            images=tmp_path / "imgs",
            seed=seed,
            images_per_shard=8,
            progress=False,
        )
        manifest = Dataset(out).manifest()
        keys = manifest.groupby("shard")["key"].apply(list).sort_index()
        return [{k.split("-")[1].rsplit("_", 1)[0] for k in ks} for ks in keys]

    first = shard_classes(0, "one")
    assert len(first) == 4 and all(len(c) > 1 for c in first)
    assert shard_classes(0, "two") == first  # same seed, same partition (resume relies on it)


def test_caption_set_without_images_is_a_clear_error(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"image folder not found.*download the UCM images"):
        build_caption_set_dataset(
            tmp_path / "ds",
            captions=shared_data / "captions" / "ucm_captions.csv",
            images=tmp_path / "nope",
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="none of the 2100 images"):
        build_caption_set_dataset(
            tmp_path / "ds",
            captions=shared_data / "captions" / "ucm_captions.csv",
            images=tmp_path / "empty",
        )


def test_counting_benchmark_format(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    (tmp_path / "boxes.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        + "".join(f"a.png,{2 * i},1,{2 * i + 2},3,Tree\n" for i in range(3))
        + "".join(f"b.png,{i},1,{i + 1},2,Tree\n" for i in range(12))  # 12: too many
    )
    summary = build_counting_benchmark(
        tmp_path / "bench",
        annotations=tmp_path / "boxes.csv",
        images=tmp_path / "images",
        format="csv",
        name="tiny-count",
        source="generated",
        licence="CC0-1.0",
        progress=False,
    )
    assert summary["rows"] == 1 and summary["skipped"] == 1
    rows = read_rows(tmp_path / "bench" / "counting.csv")
    assert rows == [
        {
            "image": "images/a.jpg",
            "category": "tree",
            "count": "3",
            "caption": "a satellite image of three trees",
        }
    ]
    assert Image.open(tmp_path / "bench" / "images" / "a.jpg").format == "JPEG"
    meta = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert meta == {
        "task": "counting",
        "name": "tiny-count",
        "categories": ["tree"],
        "source": "generated",
        "licence": "CC0-1.0",
    }
    with pytest.raises(BuildError, match="no image has a category"):
        build_counting_benchmark(
            tmp_path / "b2",
            annotations=tmp_path / "boxes.csv",
            images=tmp_path / "images",
            format="csv",
            categories=["ship"],
            progress=False,
        )
    with pytest.raises(BuildError, match="min_count"):
        build_counting_benchmark(tmp_path / "b3", annotations=[], images=tmp_path, max_count=11)


def test_counting_skips_difficult_instances(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    write_dota(tmp_path / "dota")  # a.png: one ship, one (difficult) harbor; b.png: one ship
    summary = build_counting_benchmark(
        tmp_path / "bench",
        annotations=tmp_path / "dota",
        images=tmp_path / "images",
        format="dota",
        progress=False,
    )
    rows = read_rows(tmp_path / "bench" / "counting.csv")
    assert {(r["image"], r["category"], r["count"]) for r in rows} == {
        ("images/a.jpg", "ship", "1"),
        ("images/b.jpg", "ship", "1"),
    }
    assert summary["categories"] == ["ship"]


def test_counting_records_why_images_are_skipped(tmp_path: Path) -> None:
    write_boxes_with_bad_rows(tmp_path, traversal=False)
    summary = build_counting_benchmark(
        tmp_path / "bench",
        annotations=tmp_path / "boxes.csv",
        images=tmp_path / "images",
        format="csv",
        progress=False,
    )
    assert summary["rows"] == 2
    reasons = {s["item"]: s["reason"] for s in summary["skips"]}
    assert reasons == {
        "c.png": "corrupt image",
        "d.png": "missing image",
        "e.png": "bad annotation",
    }


# ---------------------------------------------------------------------------- real data


def test_neon_trees_build_a_dataset(shared_data: Path, tmp_path: Path) -> None:
    neon = shared_data / "aerial" / "neon"
    info = build_boxes_dataset(
        tmp_path / "osbs",
        annotations=neon / "OSBS_029.csv",
        images=neon,
        format="csv",
        options=B2COptions(sizes=True, positions=True),
        licence="MIT (DeepForest); NEON data policy",
        progress=False,
    )
    assert info["report"]["class_counts"] == {"tree": 61}
    sample = next(Dataset(tmp_path / "osbs").samples(with_images=False))
    assert sample.gsd_m == pytest.approx(0.1) and sample.bounds.crs == "EPSG:32617"
    assert sample.bounds.west == pytest.approx(-81.990099, abs=1e-5)
    assert any("many trees" in c.lower() and " m long" in c for c in sample.captions)
    info = build_boxes_dataset(
        tmp_path / "sjer",
        annotations=neon / "2018_SJER_3_252000_4107000_image_477_truth.csv",
        images=neon,
        format="csv",
        label_names={"0": "tree"},
        progress=False,
    )
    assert info["report"]["class_counts"] == {"tree": 7}
    sample = next(Dataset(tmp_path / "sjer").samples(with_images=False))
    # truth columns are xmin,xmax,ymin,ymax: read by name, the first box is x 1-82, y 103-235
    assert sample.objects[0].bbox_xyxy == (1.0, 103.0, 82.0, 235.0)


def test_neon_trees_build_a_counting_set(shared_data: Path, tmp_path: Path) -> None:
    neon = shared_data / "aerial" / "neon"
    summary = build_counting_benchmark(
        tmp_path / "count",
        annotations=neon / "2018_SJER_3_252000_4107000_image_477_truth.csv",
        images=neon,
        format="csv",
        label_names={"0": "tree"},
        progress=False,
    )
    assert summary["rows"] == 1 and summary["count_histogram"] == {7: 1}
    rows = read_rows(tmp_path / "count" / "counting.csv")
    assert rows[0]["caption"] == "a satellite image of seven trees"
    # 61 crowns are too many for one image: count per 100 px tile, leaving out tiles whose
    # border cuts a crown ambiguously
    summary = build_counting_benchmark(
        tmp_path / "osbs",
        annotations=neon / "OSBS_029.csv",
        images=neon,
        format="csv",
        tile_size=100,
        ambiguous=(0.4, 0.6),
        progress=False,
    )
    assert summary["rows"] >= 5
    assert all(1 <= n <= 10 for n in summary["count_histogram"])
    assert len(list((tmp_path / "osbs" / "images").glob("*.jpg"))) == summary["rows"]


def test_cli_commands(tmp_path: Path, shared_data: Path) -> None:
    runner = CliRunner()
    neon = shared_data / "aerial" / "neon"
    images = tmp_path / "neon"
    shutil.copytree(neon, images)
    result = runner.invoke(
        app,
        [
            "build", "boxes", "--format", "csv",
            "--annotations", str(images / "2018_SJER_3_252000_4107000_image_477_truth.csv"),
            "--images", str(images), "--out", str(tmp_path / "ds"),
            "--label", "0=tree", "--describe-all", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tree" in result.output and Dataset(tmp_path / "ds").info["report"]["objects"] == 7
    result = runner.invoke(
        app,
        [
            "build", "counting", "--format", "csv",
            "--annotations", str(images / "2018_SJER_3_252000_4107000_image_477_truth.csv"),
            "--images", str(images), "--out", str(tmp_path / "bench"), "--label", "0=tree",
            "--caption", "an aerial image of {objects}", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "an aerial image of seven trees" in (tmp_path / "bench" / "counting.csv").read_text()
    result = runner.invoke(
        app,
        [
            "build", "captions", "--captions", str(shared_data / "captions" / "rsitmd.csv"),
            "--images", str(tmp_path / "no-images"), "--out", str(tmp_path / "c"),
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "Error:" in result.output and "download the RSITMD images" in result.output
    result = runner.invoke(
        app, ["build", "caption-stats", str(shared_data / "captions" / "sydney_captions.csv")]
    )
    assert json.loads(result.output)["splits"] == {"test": 58, "train": 497, "val": 58}
    result = runner.invoke(
        app,
        ["build", "masks", "--masks", str(tmp_path), "--images", str(tmp_path),
         "--out", str(tmp_path / "m")],
    )  # fmt: skip
    assert result.exit_code != 0 and "exactly one of --palette or --classes" in result.output


def test_unreadable_annotations_stop_the_build(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    (tmp_path / "coco.json").write_text("{")
    with pytest.raises(AnnotationError, match="invalid JSON"):
        build_boxes_dataset(
            tmp_path / "ds",
            annotations=tmp_path / "coco.json",
            images=tmp_path / "images",
            format="coco",
        )
    with pytest.raises(BuildError, match="image folder not found"):
        build_boxes_dataset(
            tmp_path / "ds",
            annotations=tmp_path / "coco.json",
            images=tmp_path / "x",
            format="coco",
        )
