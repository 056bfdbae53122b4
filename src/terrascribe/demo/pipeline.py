"""The demo's steps: the whole terrascribe story on the generated sample region.

Each step calls the same public functions the CLI wraps, writes into its own folder under the demo
output, and returns a small JSON summary that the HTML report is made from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from terrascribe.demo.steps import Step, StepContext

# Small enough for a few minutes on 2 CPU cores, large enough for the tiny model to learn.
TRAIN_STEPS = 300
TRAIN_BATCH = 32
SCENES_PER_CLASS = 40
# Frequent tags (houses, trees) would otherwise drown the rare ones (fields, water, pitches).
OSM_TAG_QUOTA = 40


def _region(ctx: StepContext):
    from terrascribe.sample_data import generate

    return generate(
        ctx.out / "sample",
        seed=ctx.seed,
        size_px=ctx.options.get("size_px", 2048),
        scenes_per_class=SCENES_PER_CLASS,
    )


def _dataset_summary(path: Path) -> dict[str, Any]:
    from terrascribe.stats import describe_dataset

    s = describe_dataset(path)
    return {
        "path": str(path),
        "samples": s["samples"],
        "skipped": s["skipped"],
        "skip_reasons": s["skip_reasons"],
        "caption_words": s["caption_words"],
        "top_labels": s["top_labels"],
    }


def step_sample_data(ctx: StepContext) -> dict[str, Any]:
    region = _region(ctx)
    manifest = json.loads(Path(region.manifest).read_text())
    return {"root": str(region.root), "files": len(manifest.get("files", {}))}


def step_build_osm(ctx: StepContext) -> dict[str, Any]:
    from terrascribe.build.osm import build_osm_dataset

    region = _region(ctx)
    out = ctx.out / "datasets" / "osm"
    build_osm_dataset(
        region.osm_pbf, region.geotiff, out, seed=ctx.seed, per_tag_quota=OSM_TAG_QUOTA
    )
    return _dataset_summary(out)


def step_build_annotations(ctx: StepContext) -> dict[str, Any]:
    from terrascribe.build.annotations import build_boxes_dataset, build_masks_dataset

    region = _region(ctx)
    boxes = ctx.out / "datasets" / "boxes"
    masks = ctx.out / "datasets" / "masks"
    build_boxes_dataset(
        boxes, annotations=region.coco, images=region.chips_dir, format="coco", seed=ctx.seed
    )
    build_masks_dataset(
        masks,
        masks=region.masks_dir,
        images=region.chips_dir,
        classes=region.mask_classes,
        seed=ctx.seed,
    )
    return {"boxes": _dataset_summary(boxes), "masks": _dataset_summary(masks)}


def _training_scenes(scenes_dir: Path) -> list[tuple[str, Path]]:
    """The scene images evaluation treats as training files (RemoteCLIP's rule: per class,
    the first 80% by sorted file name), so the held-out 20% stay unseen until evaluation."""
    from terrascribe.evaluate.benchmarks import remoteclip_split

    chosen = []
    for folder in sorted(p for p in scenes_dir.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        splits = remoteclip_split(len(files))
        chosen += [(folder.name, f) for f, s in zip(files, splits, strict=True) if s == "train"]
    return chosen


def step_build_llm(ctx: StepContext) -> dict[str, Any]:
    """Caption scene images with the offline template captioner (no endpoint, no network)."""
    from terrascribe.build.llm import build_llm_dataset
    from terrascribe.sources.web import WebItem, write_items

    region = _region(ctx)
    items = []
    for label, path in _training_scenes(Path(region.scenes_dir)):
        name = label.replace("_", " ")
        items.append(
            WebItem(
                image=str(path.resolve()),
                id=f"{label}-{path.stem}",
                title=f"{name} seen from above",
                alt_text=f"an aerial photograph of {name}",
                credits="terrascribe synthetic sample data",
                licence="CC0-1.0",
                place="terrascribe sample region",
            )
        )
    items_path = ctx.path("llm", "items.jsonl")
    write_items(items_path, items)
    out = ctx.out / "datasets" / "llm"
    build_llm_dataset(items_path, out, seed=ctx.seed, progress=True)
    return _dataset_summary(out)


def step_curate(ctx: StepContext) -> dict[str, Any]:
    """Merge the three builders' output, remove duplicates, score, filter, and split by place."""
    from terrascribe.curate.dedup import dedup_dataset
    from terrascribe.curate.filter import filter_dataset
    from terrascribe.curate.merge import merge_datasets
    from terrascribe.curate.score import score_dataset
    from terrascribe.curate.split import split_dataset
    from terrascribe.models.zoo import load_model

    d = ctx.out / "datasets"
    merged, deduped, filtered = d / "merged", d / "dedup", d / "filtered"
    merge_datasets([str(d / n) for n in ("osm", "boxes", "masks", "llm")], merged, seed=ctx.seed)
    dedup = dedup_dataset(merged, deduped)
    # Scores from the untrained tiny model only show the mechanics; a real run scores with a
    # strong RS model (e.g. remoteclip-vit-b-32) and keeps the top 50% as SkyScript did.
    bundle = load_model("ts-tiny", seed=ctx.seed)
    scores = d / "scores.parquet"
    score_dataset(deduped, bundle, scores, cache_dir=ctx.out / "cache")
    filt = filter_dataset(deduped, filtered, scores=scores, top=0.9, by="labels", min_per_group=2)
    split = split_dataset(
        filtered,
        d / "split.parquet",
        method="geo",
        fractions=(0.8, 0.2),
        names=("train", "test"),
        cell_size=100.0,
        seed=ctx.seed,
        materialise=d / "splits",
    )
    return {
        "merged": _dataset_summary(merged),
        "dedup": _summarise_result(dedup),
        "filter": _summarise_result(filt),
        "split": _summarise_result(split),
        "train": _dataset_summary(d / "splits" / "train"),
        "test": _dataset_summary(d / "splits" / "test"),
    }


def _summarise_result(result: Any) -> dict[str, Any]:
    """A curation result's report as plain JSON (paths and numpy numbers become strings)."""
    return json.loads(json.dumps(result.report, default=str))


def step_train(ctx: StepContext) -> dict[str, Any]:
    from terrascribe.train import TrainConfig, train

    d = ctx.out / "datasets"
    result = train(
        TrainConfig(
            data=[str(d / "splits" / "train")],
            out=str(ctx.out / "run"),
            model="ts-tiny",
            steps=ctx.options.get("train_steps", TRAIN_STEPS),
            batch_size=TRAIN_BATCH,
            lr=1e-3,
            warmup=20,
            workers=0,
            seed=ctx.seed,
            save_every=100,
            log_every=10,
            device="cpu",
            tensorboard=False,
        )
    )
    return {
        "checkpoint": str(result.checkpoint),
        "steps": result.step,
        "final_loss": result.final_loss,
        "samples_per_s": result.samples_per_s,
        "metrics": str(result.metrics),
    }


def step_evaluate(ctx: StepContext) -> dict[str, Any]:
    """Score the untrained and the trained tiny model on the scene folder and the held-out split."""
    from terrascribe.evaluate.report import write_report
    from terrascribe.evaluate.runner import EvalOptions, evaluate
    from terrascribe.models.zoo import load_model

    region = _region(ctx)
    results = ctx.out / "eval"
    trained = load_model("ts-tiny", ctx.results["train"]["checkpoint"])
    untrained = load_model("ts-tiny", seed=ctx.seed)
    options = EvalOptions(seed=ctx.seed)
    cache = ctx.out / "cache"
    for bundle in (untrained, trained):
        evaluate(
            bundle,
            region.scenes_dir,
            ["zeroshot", "linear-probe", "knn"],
            results,
            options=options,
            cache_dir=cache,
            skip_existing=True,
        )
        evaluate(
            bundle,
            ctx.out / "datasets" / "splits" / "test",
            ["retrieval"],
            results,
            options=options,
            cache_dir=cache,
            skip_existing=True,
        )
    report = write_report(results)
    return {
        "results": report["results"],
        "markdown": str(report["markdown"]),
        "plots": [str(p) for p in report["plots"]],
    }


SEARCH_QUERIES = ("a parking lot with cars", "a soccer field")
MAP_CLASSES = ("farmland", "forest", "parking", "residential", "sports field", "water")


def step_search(ctx: StepContext) -> dict[str, Any]:
    """Index the region's GeoTIFF with the trained model and run two text queries."""
    from terrascribe.models.zoo import load_model
    from terrascribe.search.index import SearchIndex, build_index
    from terrascribe.search.query import search

    region = _region(ctx)
    bundle = load_model("ts-tiny", ctx.results["train"]["checkpoint"])
    out = ctx.out / "index"
    report = build_index(
        [region.geotiff], bundle, out, tile_px=96, gsd_m=0.5, cache_dir=ctx.out / "cache"
    )
    index = SearchIndex(out)
    queries = []
    for i, text in enumerate(SEARCH_QUERIES):
        hits = search(index, text, k=10, model=bundle)
        slug = f"q{i}"
        sheet = hits.contact_sheet(index, ctx.path("search", f"{slug}.png"), columns=5)
        hits.write_geojson(ctx.path("search", f"{slug}.geojson"))
        queries.append(
            {"query": text, "slug": slug, "hits": len(hits), "contact_sheet": str(sheet)}
        )
    return {"index": str(out), "tiles": len(index), "added": report.to_dict(), "queries": queries}


def step_map(ctx: StepContext) -> dict[str, Any]:
    """Zero-shot land-cover map of the region's GeoTIFF with the trained model."""
    from terrascribe.apply.zeroshot_map import map_geotiff
    from terrascribe.models.zoo import load_model

    region = _region(ctx)
    bundle = load_model("ts-tiny", ctx.results["train"]["checkpoint"])
    result = map_geotiff(region.geotiff, list(MAP_CLASSES), bundle, ctx.path("map", "map.tif"))
    return {
        "classes": result.classes,
        "class_map": str(result.class_map),
        "preview": str(result.preview) if result.preview else None,
        "class_fractions": result.class_fractions,
    }


def step_real_osm(ctx: StepContext) -> dict[str, Any]:
    """Real imagery and real OSM: the Sintra XYZ tiles with their OSM labels."""
    from terrascribe.build.osm import build_osm_dataset

    sintra = Path(ctx.options["real_data"]) / "aerial" / "sintra_z17"
    out = ctx.out / "datasets" / "real-osm"
    build_osm_dataset(sintra / "labels.geojson", sintra / "tiles", out, seed=ctx.seed)
    return _dataset_summary(out)


def step_evaluate_real(ctx: StepContext) -> dict[str, Any]:
    """The trained tiny model on real scene benchmarks (it has seen only synthetic images)."""
    from terrascribe.evaluate.report import write_report
    from terrascribe.evaluate.runner import EvalOptions, evaluate
    from terrascribe.models.zoo import load_model

    scenes = Path(ctx.options["real_data"]) / "scenes"
    results = ctx.out / "eval"
    options = EvalOptions(seed=ctx.seed, max_per_class=20)
    for pretrained in (None, ctx.results["train"]["checkpoint"]):
        bundle = load_model("ts-tiny", pretrained, seed=ctx.seed)
        for folder in sorted(p for p in scenes.iterdir() if p.is_dir()):
            evaluate(
                bundle,
                folder,
                ["zeroshot", "knn", "linear-probe"],
                results,
                options=options,
                cache_dir=ctx.out / "cache",
                skip_existing=True,
            )
    report = write_report(results)
    ctx.results["evaluate"].update(
        results=report["results"],
        markdown=str(report["markdown"]),
        plots=[str(p) for p in report["plots"]],
    )
    return {"benchmarks": sorted(p.name for p in scenes.iterdir() if p.is_dir())}


def all_steps(real_data: bool = False) -> list[Step]:
    """The demo's steps, in order (with ``real_data``, two more on ../shared/data)."""
    real = [
        Step("real-osm", "build from real tiles and real OSM (Sintra)", step_real_osm),
        Step("evaluate-real", "evaluate on real scene benchmarks", step_evaluate_real),
    ]
    return [
        Step("sample-data", "generate the sample region", step_sample_data),
        Step("build-osm", "build a dataset from OSM + imagery (SkyScript method)", step_build_osm),
        Step(
            "build-annotations",
            "build datasets from boxes and masks (RemoteCLIP B2C + M2B)",
            step_build_annotations,
        ),
        Step("build-llm", "caption scene images with the offline captioner (GAIA)", step_build_llm),
        Step("curate", "merge, de-duplicate, score, filter, split by place", step_curate),
        Step("train", "continually pre-train the tiny CLIP", step_train),
        Step("evaluate", "zero-shot, linear probe, k-NN, retrieval", step_evaluate),
        Step("search", "index the GeoTIFF and search it by text", step_search),
        Step("map", "zero-shot map of the GeoTIFF", step_map),
        *(real if real_data else []),
    ]
