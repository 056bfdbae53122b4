"""Build a counting benchmark (RemoteCount-style) from box annotations.

RemoteCLIP's RemoteCount (DOTA images, counts 1-10) was never released; this builds the same kind
of benchmark from any box annotations. An image (or tile) qualifies for a category when that
category appears ``min_count``..``max_count`` times and no instance is ambiguous (marked difficult,
or cut by a tile border so that it is neither clearly in nor clearly out). One category is chosen
per image, at random from the qualifying ones (seeded), as in RemoteCount.

The benchmark folder (the evaluation format, read by ``terrascribe evaluate``)::

    images/<name>.jpg
    counting.csv      image,category,count,caption   (image: path relative to this folder,
                                                      caption: the count as a word)
    benchmark.json    {"task": "counting", "name", "categories", "source", "licence"}
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from terrascribe.build.annotations import (
    BuildError,
    decode_pixels,
    key_stem,
    read_annotated_image,
    scene_windows,
)
from terrascribe.images import ImageError, to_jpeg
from terrascribe.progress import track
from terrascribe.records import Skip, make_key
from terrascribe.shards import atomic_write_bytes, atomic_write_text, dumps
from terrascribe.sources.annotations import (
    ImageAnnotations,
    read_boxes,
)
from terrascribe.text.boxes import (
    clip_to_window,
    count_phrase,
    derive_seed,
    load_templates,
    normalise_class,
)

DEFAULT_CAPTION = "a satellite image of {objects}"
COLUMNS = ("image", "category", "count", "caption")
# A tile-cut object counts when at least half of it is visible; a category is left out of a tile
# when any of its objects is cut so that it is between these fractions visible (too ambiguous).
COUNTED = 0.5
DEFAULT_AMBIGUOUS = (0.2, 0.8)


def _eligible(
    labels: Sequence[tuple[str, bool, float]],
    min_count: int,
    max_count: int,
    ambiguous: tuple[float, float] = DEFAULT_AMBIGUOUS,
) -> dict[str, int]:
    """``{category: count}`` for categories that can be counted without doubt."""
    counts: Counter[str] = Counter()
    doubtful: set[str] = set()
    for label, difficult, visible in labels:
        if difficult or ambiguous[0] < visible < ambiguous[1]:
            doubtful.add(label)
        if visible >= COUNTED:
            counts[label] += 1
    return {
        c: n for c, n in sorted(counts.items()) if c not in doubtful and min_count <= n <= max_count
    }


def build_counting_benchmark(
    out_dir: str | Path,
    *,
    annotations: str | Path | Sequence[ImageAnnotations],
    images: str | Path,
    format: str | None = None,
    classes: Sequence[str] | str | Path | None = None,
    label_names: Mapping[str, str] | None = None,
    categories: Sequence[str] | None = None,
    min_count: int = 1,
    max_count: int = 10,
    tile_size: int | None = None,
    tile_overlap: int = 0,
    ambiguous: tuple[float, float] = DEFAULT_AMBIGUOUS,
    caption_template: str = DEFAULT_CAPTION,
    name: str | None = None,
    source: str | None = None,
    licence: str | None = None,
    tolerance: float | None = None,
    seed: int = 0,
    jpeg_quality: int = 95,
    progress: bool = True,
) -> dict[str, Any]:
    """Select images where one category appears ``min_count``..``max_count`` times and write a
    counting benchmark.

    Args:
        out_dir: Benchmark folder (created).
        annotations: Annotation file/folder (with ``format``), or annotations already read.
        images: Image folder.
        format: Box format (see :func:`terrascribe.sources.annotations.read_boxes`).
        classes: YOLO class names.
        label_names: Rename source labels (``{"0": "tree"}``).
        categories: Only count these categories (normalised names); default all.
        min_count, max_count: Count range (RemoteCount: 1-10; number words exist up to 10).
        tile_size: Cut large images into tiles of this size and count per tile.
        tile_overlap: Overlap between tiles in pixels.
        ambiguous: A category is left out of a tile when one of its objects is cut by the tile
            border so that this fraction range of it is visible (objects at least half visible
            are counted).
        caption_template: Caption with ``{objects}`` (``"three trees"``); must leave the number
            word in the caption.
        name: Benchmark name (default: the output folder's name).
        source: Where the images and annotations come from.
        licence: Their licence.
        tolerance: Out-of-image box tolerance (see ``check_boxes``).
        seed: Seed for the category choice when several qualify.
        jpeg_quality: Quality for re-encoded images.
        progress: Show progress.

    Returns:
        A summary: ``{"rows", "categories", "count_histogram", "skipped", "skips"}``.

    Raises:
        BuildError: No image folder, bad count range, or no image qualifies.
    """
    templates = load_templates()
    if not 1 <= min_count <= max_count <= templates.many_threshold:
        raise BuildError(
            f"need 1 <= min_count <= max_count <= {templates.many_threshold}, "
            f"got {min_count}..{max_count}"
        )
    if "{objects}" not in caption_template:
        raise BuildError(f"caption_template must contain '{{objects}}': {caption_template!r}")
    if not Path(images).is_dir():
        raise BuildError(f"{images}: image folder not found")
    if isinstance(annotations, str | Path):
        if format is None:
            raise BuildError("format is required when annotations is a path")
        anns = read_boxes(annotations, format, images=images, classes=classes)
    else:
        anns = list(annotations)
    wanted = {normalise_class(c, templates) for c in categories} if categories else None
    names = dict(label_names or {})
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skips: list[Skip] = []
    for ann in track(anns, "counting benchmark") if progress else anns:
        for item in _image_rows(
            ann,
            images,
            names,
            wanted,
            (min_count, max_count),
            tile_size,
            tile_overlap,
            ambiguous,
            tolerance,
        ):
            if isinstance(item, Skip):
                skips.append(item)
                continue
            stem, image_bytes, counts = item
            rng = random.Random(derive_seed(seed, stem))
            category = rng.choice(sorted(counts))
            count = counts[category]
            try:
                jpeg, _ = to_jpeg(image_bytes, source=stem, quality=jpeg_quality)
            except ImageError as err:
                skips.append(Skip(stem, "corrupt image", str(err)))
                continue
            atomic_write_bytes(out / "images" / f"{stem}.jpg", jpeg)
            objects = count_phrase(count, category, templates)
            rows.append(
                {
                    "image": f"images/{stem}.jpg",
                    "category": category,
                    "count": count,
                    "caption": caption_template.format(objects=objects),
                }
            )
    if not rows:
        raise BuildError(
            f"no image has a category appearing {min_count}-{max_count} times "
            f"({len(skips)} skipped); try tile_size to cut large scenes"
        )
    kept = {Path(r["image"]).name for r in rows}
    for stale in (out / "images").glob("*.jpg"):  # left by an earlier run with other inputs
        if stale.name not in kept:
            stale.unlink()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "counting.csv", buf.getvalue())
    found = sorted({r["category"] for r in rows})
    atomic_write_text(
        out / "benchmark.json",
        dumps(
            {
                "task": "counting",
                "name": name or out.name,
                "categories": found,
                "source": source,
                "licence": licence,
            }
        ),
    )
    return {
        "rows": len(rows),
        "categories": found,
        "count_histogram": dict(sorted(Counter(r["count"] for r in rows).items())),
        "skipped": len(skips),
        "skips": [{"item": s.item, "reason": s.reason, "detail": s.detail} for s in skips],
    }


def _image_rows(
    ann: ImageAnnotations,
    images: str | Path,
    names: Mapping[str, str],
    wanted: set[str] | None,
    count_range: tuple[int, int],
    tile_size: int | None,
    tile_overlap: int,
    ambiguous: tuple[float, float],
    tolerance: float | None,
) -> Iterator[Skip | tuple[str, Any, dict[str, int]]]:
    """Yield ``(stem, image bytes or array, {category: count})`` per qualifying image/tile."""
    image = read_annotated_image(images, ann, tolerance=tolerance)
    if isinstance(image, Skip):
        yield image
        return
    ann = image.ann
    labels = [normalise_class(names.get(b.label, b.label)) for b in ann.boxes]
    stem = make_key(key_stem(ann.image_path))
    windows = scene_windows(image.width, image.height, tile_size, tile_overlap)
    if windows is None:
        entries = [(lbl, b.difficult, 1.0) for lbl, b in zip(labels, ann.boxes, strict=True)]
        counts = _filter(_eligible(entries, *count_range, ambiguous), wanted)
        if counts:
            yield stem, image.data, counts
        else:
            yield Skip(ann.image_path, "no countable category", "")
        return
    pixels = decode_pixels(image)
    if isinstance(pixels, Skip):
        yield pixels
        return
    boxes = [b.xyxy for b in ann.boxes]
    for window in windows:
        seen = clip_to_window(boxes, window, min_visibility=0.0)
        entries = [(labels[i], ann.boxes[i].difficult, visible) for i, _, visible in seen]
        counts = _filter(_eligible(entries, *count_range, ambiguous), wanted)
        x0, y0, x1, y1 = window
        tile_stem = f"{stem}-x{x0}y{y0}"
        if counts:
            yield tile_stem, pixels[y0:y1, x0:x1].copy(), counts
        else:
            yield Skip(tile_stem, "no countable category", "")


def _filter(counts: dict[str, int], wanted: set[str] | None) -> dict[str, int]:
    return counts if wanted is None else {c: n for c, n in counts.items() if c in wanted}
