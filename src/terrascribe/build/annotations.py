"""Build image-text datasets from annotations: boxes (B2C), masks (M2B -> B2C), caption sets.

Each builder reads its annotations once in the calling process, splits the images into jobs
(``images_per_shard`` each, in an order shuffled with the seed, so that no shard holds one class
or one place only) and hands them to
:func:`terrascribe.shards.write_dataset`: job ``i`` is shard ``i``, re-runs resume, and a bad image
or annotation becomes a recorded :class:`~terrascribe.records.Skip` instead of stopping the build.
Objects are kept in pixel space as :class:`~terrascribe.records.ImageObject`\\ s (label normalised
for reading, the source's label in ``tags["source_label"]``); class counts go to the build report.

Large scenes can be tiled (``tile_size``): windows overlap by ``tile_overlap`` pixels, boxes are
clipped to each window and dropped when less than ``min_visibility`` of them is inside, and each
tile is captioned on its own.
"""

from __future__ import annotations

import functools
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

from terrascribe.records import Bounds, ImageObject, Sample, Skip, make_key
from terrascribe.shards import PARTS_DIR, batched, hash_path, write_dataset
from terrascribe.sources.annotations import (
    AnnotationError,
    Box,
    ImageAnnotations,
    Palette,
    check_boxes,
    class_map_palette,
    find_image,
    load_palette,
    read_boxes,
    read_mask,
)
from terrascribe.text.boxes import (
    B2COptions,
    Templates,
    box_captions,
    clip_to_window,
    derive_seed,
    load_templates,
    normalise_class,
    tile_windows,
)

MASK_SUFFIXES = (
    "_instance_color_RGB",
    "_instance_id_RGB",
    "_label_noBoundary",
    "_label",
    "_labels",
    "_mask",
    "_gt",
)
IMAGE_NAME_SUFFIXES = ("", "_RGB", "_rgb", "_image")
MASK_FILE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")


T = TypeVar("T")


class BuildError(ValueError):
    """The inputs of a build are missing or unusable as a whole (not one bad item)."""


# --------------------------------------------------------------------------------------------
# Shared per-image work


@dataclass(frozen=True)
class CaptionSettings:
    """How images become samples (picklable: it travels to the workers).

    Attributes:
        images: Image folder.
        source: Sample source kind (``"boxes"`` or ``"masks"``).
        key_prefix: First part of every sample key.
        seed: Run seed; each image's captions use ``derive_seed(seed, key)``.
        options: B2C options.
        templates: Template file (``None``: the packaged templates).
        label_names: Map of source labels to class names (``{"0": "tree"}``).
        tile_size: Tile scenes larger than this (pixels); ``None`` keeps whole images.
        tile_overlap: Overlap between tiles (pixels).
        min_visibility: Smallest fraction of a box inside a tile for it to count there.
        tolerance: Out-of-image tolerance for boxes (``None``: 2 % of the image side).
        gsd_m: Ground sampling distance to assume when neither annotation nor image gives one.
        georeference: Read GSD and bounds from GeoTIFF images.
        licence: Licence recorded on every sample.
        keep_empty: Keep images (tiles) without objects, with an "empty" caption.
    """

    images: str
    source: str = "boxes"
    key_prefix: str = "boxes"
    seed: int = 0
    options: B2COptions = field(default_factory=B2COptions)
    templates: str | None = None
    label_names: tuple[tuple[str, str], ...] = ()
    tile_size: int | None = None
    tile_overlap: int = 0
    min_visibility: float = 0.5
    tolerance: float | None = None
    gsd_m: float | None = None
    georeference: bool = True
    licence: str | None = None
    keep_empty: bool = False

    @functools.cached_property
    def b2c_templates(self) -> Templates:
        """The template set, read once per settings object (a template file is not re-read for
        every image and tile)."""
        return load_templates(self.templates)

    def params(self) -> dict[str, Any]:
        """JSON form for ``dataset.json`` (and the resume fingerprint)."""
        return {
            "source": self.source,
            "key_prefix": self.key_prefix,
            "options": asdict(self.options),
            "templates": self.b2c_templates.tag,
            "label_names": dict(self.label_names),
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "min_visibility": self.min_visibility,
            "tolerance": self.tolerance,
            "gsd_m": self.gsd_m,
            "georeference": self.georeference,
            "licence": self.licence,
            "keep_empty": self.keep_empty,
        }


def resolve_image(folder: str | Path, name: str) -> Path | None:
    """The file for image ``name`` inside ``folder``, never outside it (no path traversal).

    Tries the path as given, then the bare file name, then the stem with any image suffix
    (DOTA labels name ``P0000``; the image may be ``.png`` or ``.tif``).
    """
    root = Path(folder).resolve()
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        return None
    for candidate in (root / rel, root / rel.name):
        if candidate.is_file() and candidate.resolve().is_relative_to(root):
            return candidate
    found = find_image(root / rel.parent, rel.stem)
    if found is not None and found.resolve().is_relative_to(root):
        return found
    return None


def key_stem(name: str) -> str:
    """Key part for an image path: its stem, with sub-folders joined by ``_``."""
    rel = PurePosixPath(name.replace("\\", "/"))
    return "_".join([*rel.parent.parts, rel.stem]) if rel.parent.parts else rel.stem


def encoded_image_size(data: bytes, name: str) -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes from the header (no full decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise AnnotationError(f"{name}: cannot read image ({err})") from None


@dataclass(frozen=True)
class _Georef:
    gsd_m: float | None
    bounds: Bounds | None
    transform: Any = None
    crs: Any = None


def _georef(path: Path) -> _Georef:
    """GSD (metres) and bounds of a GeoTIFF in a projected metric CRS; nothing otherwise."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return _Georef(None, None)
    try:
        import warnings

        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                crs, transform = src.crs, src.transform
                if crs is None or not crs.is_projected or transform.is_identity:
                    return _Georef(None, None)
                units = (crs.linear_units or "").lower()
                gsd = abs(transform.a) if units in ("metre", "meter", "m") else None
                return _Georef(gsd, _bounds(crs, src.bounds), transform, crs)
    except Exception:  # not a GeoTIFF, or an unreadable header: plain image then
        return _Georef(None, None)


def _bounds(crs: Any, native: Sequence[float]) -> Bounds | None:
    from rasterio.warp import transform_bounds

    try:
        west, south, east, north = transform_bounds(crs, "EPSG:4326", *native)
        return Bounds(west, south, east, north, crs=crs.to_string(), native=tuple(native))
    except Exception:
        return None


def _window_bounds(geo: _Georef, window: Sequence[int]) -> Bounds | None:
    if geo.transform is None:
        return geo.bounds
    x0, y0, x1, y1 = window
    left, top = geo.transform * (x0, y0)
    right, bottom = geo.transform * (x1, y1)
    return _bounds(
        geo.crs, (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    )


def _objects(
    boxes: Sequence[Box], label_names: Mapping[str, str], templates: Templates
) -> list[ImageObject]:
    out = []
    for box in boxes:
        raw = label_names.get(box.label, box.label)
        name = normalise_class(raw, templates)
        tags = {}
        if name != box.label:
            tags["source_label"] = box.label
        if box.difficult:
            tags["difficult"] = "1"
        if box.score is not None:
            tags["score"] = f"{box.score:g}"
        out.append(ImageObject(name, box.xyxy, tags=tags, source_id=box.source_id))
    return out


def _sample(
    settings: CaptionSettings,
    key: str,
    image: Any,
    objects: list[ImageObject],
    size: tuple[int, int],
    gsd_m: float | None,
    bounds: Bounds | None,
    extra: dict[str, Any],
    source_ids: list[str],
) -> Sample | Skip:
    if not objects and not settings.keep_empty:
        return Skip(key, "no objects", "no annotated object (use keep_empty to keep it)")
    templates = settings.b2c_templates
    captions = box_captions(
        objects,
        size[0],
        size[1],
        seed=derive_seed(settings.seed, key),
        gsd_m=gsd_m,
        options=settings.options,
        templates=templates,
    )
    counts = Counter(o.label for o in objects)
    return Sample(
        key=key,
        image=image,
        captions=[c.text for c in captions],
        source=settings.source,
        source_ids=source_ids,
        bounds=bounds,
        gsd_m=gsd_m,
        objects=objects,
        licence=settings.licence,
        extra={
            **extra,
            "b2c": {
                "templates": templates.tag,
                "template_ids": [c.template_id for c in captions],
                "kinds": [c.kind for c in captions],
            },
            "class_counts": dict(sorted(counts.items())),
        },
    )


@dataclass(frozen=True)
class AnnotatedImage:
    """An image read from disk, its boxes checked against its real size.

    Attributes:
        path: The image file.
        data: Its encoded bytes.
        width, height: Its size in pixels (from the header).
        ann: The annotations with that size set and every box clipped to the image.
    """

    path: Path
    data: bytes
    width: int
    height: int
    ann: ImageAnnotations


def read_annotated_image(
    images: str | Path,
    ann: ImageAnnotations,
    *,
    tolerance: float | None = None,
    image_path: Path | None = None,
) -> AnnotatedImage | Skip:
    """Read ``ann``'s image and check its boxes (see ``check_boxes``), or the reason not.

    Args:
        images: Image folder.
        ann: The image's boxes (pixel coordinates of the full image).
        tolerance: Out-of-image tolerance for boxes (``None``: the default).
        image_path: The image file (default: resolved from ``ann.image_path`` in ``images``).

    Returns:
        The image, or a :class:`Skip` (``missing image``, ``corrupt image``, ``bad annotation``).
    """
    name = ann.image_path
    path = image_path or resolve_image(images, name)
    if path is None:
        return Skip(name, "missing image", f"no file for {name!r} in {images}")
    try:
        data = path.read_bytes()
    except OSError as err:
        return Skip(name, "missing image", f"{path}: {err}")
    try:
        width, height = encoded_image_size(data, str(path))
    except AnnotationError as err:
        return Skip(name, "corrupt image", str(err))
    try:
        checked = check_boxes(ann, width, height, tolerance=tolerance)
    except AnnotationError as err:
        return Skip(name, "bad annotation", str(err))
    return AnnotatedImage(path, data, width, height, checked)


def scene_windows(
    width: int, height: int, tile_size: int | None, overlap: int
) -> list[tuple[int, ...]] | None:
    """Tile windows for a scene larger than ``tile_size``; ``None`` keeps it whole."""
    if not tile_size or (width <= tile_size and height <= tile_size):
        return None
    return tile_windows(width, height, tile_size, overlap)


def decode_pixels(image: AnnotatedImage) -> np.ndarray | Skip:
    """The image's RGB pixels (to cut tiles from), or a ``corrupt image`` skip."""
    from terrascribe.images import ImageError, decode_rgb

    try:
        return np.asarray(decode_rgb(image.data, source=str(image.path)))
    except ImageError as err:
        return Skip(image.ann.image_path, "corrupt image", str(err))


def image_samples(
    settings: CaptionSettings, ann: ImageAnnotations, image_path: Path | None = None
) -> Iterator[Sample | Skip]:
    """Samples (one per image, or one per tile) for one annotated image, or the reason not.

    Args:
        settings: Build settings.
        ann: The image's boxes (pixel coordinates of the full image).
        image_path: The image file (default: resolved from ``ann.image_path`` in
            ``settings.images``).
    """
    image = read_annotated_image(
        settings.images, ann, tolerance=settings.tolerance, image_path=image_path
    )
    if isinstance(image, Skip):
        yield image
        return
    name, ann, width, height = ann.image_path, image.ann, image.width, image.height
    geo = _georef(image.path) if settings.georeference else _Georef(None, None)
    gsd_m = ann.gsd_m or geo.gsd_m or settings.gsd_m
    labels = dict(settings.label_names)
    objects = _objects(ann.boxes, labels, settings.b2c_templates)
    base_key = make_key(settings.key_prefix, key_stem(name))
    extra = {"image": name, "image_size": [width, height], **dict(ann.extra)}
    windows = scene_windows(width, height, settings.tile_size, settings.tile_overlap)
    if windows is None:
        yield _sample(
            settings,
            base_key,
            image.data,
            objects,
            (width, height),
            gsd_m,
            geo.bounds,
            extra,
            [name],
        )
        return
    pixels = decode_pixels(image)
    if isinstance(pixels, Skip):
        yield pixels
        return
    boxes = [o.bbox_xyxy for o in objects]
    for window in windows:
        x0, y0, x1, y1 = window
        key = make_key(base_key, f"x{x0}y{y0}")
        tile_objects = [
            replace_object(objects[i], xyxy, visible)
            for i, xyxy, visible in clip_to_window(boxes, window, settings.min_visibility)
        ]
        tile = pixels[y0:y1, x0:x1]
        yield _sample(
            settings,
            key,
            tile,
            tile_objects,
            (x1 - x0, y1 - y0),
            gsd_m,
            _window_bounds(geo, window),
            {**extra, "tile": list(window)},
            [name],
        )


def replace_object(obj: ImageObject, xyxy: Sequence[float], visible: float) -> ImageObject:
    """``obj`` moved to tile coordinates, tagged with its visible fraction when cut."""
    tags = dict(obj.tags)
    if visible < 1.0:
        tags["visible"] = f"{visible:.2f}"
    return ImageObject(obj.label, tuple(xyxy), tags=tags, source_id=obj.source_id)


def _box_items(
    settings: CaptionSettings, job: Sequence[ImageAnnotations]
) -> Iterator[Sample | Skip]:
    for ann in job:
        yield from image_samples(settings, ann)


def _part_extras(out: Path) -> Iterator[dict[str, Any]]:
    """Every written sample's ``extra``, from the per-shard manifest parts.

    Reports run before ``dataset.json`` (and the joined manifest) exist, so they read the parts.
    """
    import pyarrow.parquet as pq

    for part in sorted((out / PARTS_DIR).glob("*.parquet")):
        for text in pq.read_table(part, columns=["extra"]).column("extra").to_pylist():
            yield json.loads(text)


def _class_count_report(out: Path) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for extra in _part_extras(out):
        counts.update(extra.get("class_counts", {}))
    return {
        "class_counts": dict(sorted(counts.items())),
        "objects": sum(counts.values()),
    }


def _settings(
    images: str | Path,
    *,
    options: B2COptions | None,
    templates: str | Path | None,
    label_names: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> CaptionSettings:
    return CaptionSettings(
        images=str(images),
        options=options or B2COptions(),
        templates=str(templates) if templates else None,
        label_names=tuple(sorted((str(k), str(v)) for k, v in dict(label_names or {}).items())),
        **kwargs,
    )


def _shuffled(items: Sequence[T], seed: int) -> list[T]:
    """``items`` in a seeded order, so that each shard is a random sample of the input.

    Inputs are usually sorted by class or place (``airport_1.jpg``...); the trainer shuffles
    only within a window of a few shards, so shards must not be class- or space-contiguous.
    """
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def _write(
    out_dir: str | Path,
    items: Sequence[T],
    make_items: Callable[[Sequence[T]], Iterable[Sample | Skip]],
    *,
    seed: int,
    images_per_shard: int,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`write_dataset` over seeded-order chunks of ``items`` (one chunk per shard)."""
    return write_dataset(
        out_dir,
        list(batched(_shuffled(items, seed), images_per_shard)),
        make_items,
        seed=seed,
        **kwargs,
    )


def _check_images_folder(images: str | Path) -> None:
    if not Path(images).is_dir():
        raise BuildError(f"{images}: image folder not found")


def build_boxes_dataset(
    out_dir: str | Path,
    *,
    annotations: str | Path,
    images: str | Path,
    format: str,
    classes: Sequence[str] | str | Path | None = None,
    label_names: Mapping[str, str] | None = None,
    seed: int = 0,
    options: B2COptions | None = None,
    templates: str | Path | None = None,
    tile_size: int | None = None,
    tile_overlap: int = 0,
    min_visibility: float = 0.5,
    tolerance: float | None = None,
    gsd_m: float | None = None,
    georeference: bool = True,
    licence: str | None = None,
    keep_empty: bool = False,
    key_prefix: str = "boxes",
    images_per_shard: int = 1000,
    workers: int = 1,
    executor: str = "local",
    progress: bool = True,
) -> dict[str, Any]:
    """Build a Box-to-Caption dataset from detection annotations.

    Args:
        out_dir: Dataset folder.
        annotations: Annotation file or folder.
        images: Image folder.
        format: ``coco``, ``dota``, ``voc`` (DIOR), ``yolo`` or ``csv`` (DeepForest layout).
        classes: YOLO class names (list or file).
        label_names: Rename source labels before captioning (``{"0": "tree"}``).
        seed: Seed for caption choices.
        options: B2C options (default: the paper's five captions).
        templates: Template file overriding the packaged one.
        tile_size: Tile images larger than this many pixels.
        tile_overlap: Overlap between tiles in pixels.
        min_visibility: Drop boxes less visible than this in a tile.
        tolerance: Out-of-image box tolerance in pixels (default 2 % of the image side).
        gsd_m: GSD to assume when neither the annotations nor a GeoTIFF give one.
        georeference: Read GSD and bounds from GeoTIFF images.
        licence: Licence of images and annotations, recorded on every sample.
        keep_empty: Keep images without objects (with an "empty" caption).
        key_prefix: First part of every sample key.
        images_per_shard: Images per shard (job).
        workers: Parallel workers.
        executor: ``"local"`` or ``"ray"``.
        progress: Show progress.

    Returns:
        The content of ``dataset.json`` (class counts under ``report``).

    Raises:
        AnnotationError: The annotation files cannot be read.
        BuildError: The image folder does not exist.
    """
    _check_images_folder(images)
    anns = read_boxes(annotations, format, images=images, classes=classes)
    settings = _settings(
        images,
        source="boxes",
        key_prefix=key_prefix,
        seed=seed,
        options=options,
        templates=templates,
        label_names=label_names,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        min_visibility=min_visibility,
        tolerance=tolerance,
        gsd_m=gsd_m,
        georeference=georeference,
        licence=licence,
        keep_empty=keep_empty,
    )
    return _write(
        out_dir,
        anns,
        functools.partial(_box_items, settings),
        seed=seed,
        images_per_shard=images_per_shard,
        builder="boxes",
        params={"format": format, **settings.params()},
        inputs=[annotations, images],
        workers=workers,
        executor=executor,
        report=_class_count_report,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# Masks


@dataclass(frozen=True)
class MaskSettings:
    """Mask-specific settings (picklable)."""

    palette: Palette
    ignore: tuple[str, ...] | None = None
    min_area: float = 0.0


def pair_masks(masks: str | Path, images: str | Path) -> list[tuple[Path, Path | None]]:
    """Pair each mask file with its image, by name.

    The mask's stem without a known suffix (``_label``, ``_instance_color_RGB``, ``_mask``...)
    is looked up in ``images`` as is and with ``_RGB``-style suffixes (ISPRS naming). Unpaired
    masks come with ``None``.
    """
    masks = Path(masks)
    if not masks.is_dir():
        raise BuildError(f"{masks}: mask folder not found")
    files = sorted(p for p in masks.iterdir() if p.suffix.lower() in MASK_FILE_SUFFIXES)
    if not files:
        raise BuildError(f"{masks}: no mask files ({', '.join(MASK_FILE_SUFFIXES)})")
    pairs = []
    for mask in files:
        stems = [mask.stem] + [mask.stem[: -len(s)] for s in MASK_SUFFIXES if mask.stem.endswith(s)]
        found = (
            find_image(Path(images), stem + suffix)
            for stem in stems
            for suffix in IMAGE_NAME_SUFFIXES
        )
        image = next((i for i in found if i is not None and i.resolve() != mask.resolve()), None)
        pairs.append((mask, image))
    return pairs


def mask_annotations(
    mask_path: Path, image_name: str, mask_settings: MaskSettings
) -> ImageAnnotations:
    """M2B on one mask file: its boxes as :class:`ImageAnnotations` (size = the mask's)."""
    from terrascribe.build.m2b import mask_to_boxes

    palette = mask_settings.palette
    ids = read_mask(mask_path, palette)
    ignore = palette.ignore if mask_settings.ignore is None else mask_settings.ignore
    boxes = mask_to_boxes(
        ids, palette.class_names(), ignore=ignore, min_area=mask_settings.min_area
    )
    return ImageAnnotations(
        image_path=image_name,
        width=int(ids.shape[1]),
        height=int(ids.shape[0]),
        boxes=tuple(boxes),
        source=str(mask_path),
    )


def _mask_items(
    settings: CaptionSettings, mask_settings: MaskSettings, job: Sequence[tuple[str, str | None]]
) -> Iterator[Sample | Skip]:
    for mask, image in job:
        if image is None:
            yield Skip(mask, "missing image", f"no image for mask {mask} in {settings.images}")
            continue
        image_path = Path(image)
        try:
            ann = mask_annotations(Path(mask), image_path.name, mask_settings)
        except AnnotationError as err:
            yield Skip(mask, "bad annotation", str(err))
            continue
        yield from image_samples(settings, ann, image_path)


def build_masks_dataset(
    out_dir: str | Path,
    *,
    masks: str | Path,
    images: str | Path,
    palette: str | Path | None = None,
    classes: Mapping[int | str, str] | str | Path | None = None,
    ignore: Sequence[str] | None = None,
    min_area: float = 0.0,
    seed: int = 0,
    options: B2COptions | None = None,
    templates: str | Path | None = None,
    tile_size: int | None = None,
    tile_overlap: int = 0,
    min_visibility: float = 0.5,
    gsd_m: float | None = None,
    georeference: bool = True,
    licence: str | None = None,
    keep_empty: bool = False,
    key_prefix: str = "masks",
    images_per_shard: int = 500,
    workers: int = 1,
    executor: str = "local",
    progress: bool = True,
) -> dict[str, Any]:
    """Build a dataset from segmentation masks: Mask-to-Box, then Box-to-Caption.

    Args:
        out_dir: Dataset folder.
        masks: Folder of masks (label PNG/TIFF or colour-coded RGB).
        images: Folder of the matching images (paired by name, see :func:`pair_masks`).
        palette: Packaged palette name (``isaid``, ``potsdam``, ``vaihingen``, ``loveda``) or a
            palette JSON file.
        classes: For single-channel masks instead of a palette: ``{value: class}`` or its JSON file.
        ignore: Classes that are not objects (default: the palette's ``ignore`` list).
        min_area: Smallest box area (square pixels) kept by M2B.
        seed, options, templates, tile_size, tile_overlap, min_visibility, gsd_m, georeference,
        licence, keep_empty, key_prefix, images_per_shard, workers, executor, progress: As for
            :func:`build_boxes_dataset`.

    Returns:
        The content of ``dataset.json``.
    """
    if (palette is None) == (classes is None):
        raise BuildError("give exactly one of palette (colour or label masks) or classes")
    _check_images_folder(images)
    pal = load_palette(palette) if palette is not None else class_map_palette(classes)
    pairs = pair_masks(masks, images)
    mask_settings = MaskSettings(
        palette=pal, ignore=tuple(ignore) if ignore is not None else None, min_area=min_area
    )
    settings = _settings(
        images,
        source="masks",
        key_prefix=key_prefix,
        seed=seed,
        options=options,
        templates=templates,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        min_visibility=min_visibility,
        tolerance=0.0,
        gsd_m=gsd_m,
        georeference=georeference,
        licence=licence,
        keep_empty=keep_empty,
    )
    jobs = [(str(m), str(i) if i else None) for m, i in pairs]
    params = {
        **settings.params(),
        "palette": pal.name,
        "classes": {str(k): v for k, v in sorted(pal.class_names().items())},
        "ignore": sorted(mask_settings.ignore if ignore is not None else pal.ignore),
        "min_area": min_area,
    }
    return _write(
        out_dir,
        jobs,
        functools.partial(_mask_items, settings, mask_settings),
        seed=seed,
        images_per_shard=images_per_shard,
        builder="masks",
        params=params,
        inputs=[masks, images],
        workers=workers,
        executor=executor,
        report=_class_count_report,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# Caption sets


def _caption_items(
    dataset: str, licence: str | None, job: Sequence[tuple[Any, str | None]]
) -> Iterator[Sample | Skip]:
    for record, path in job:
        if path is None:
            yield Skip(record.image, "missing image", "not found in the image folder")
            continue
        captions = record.unique_captions
        if not captions:
            yield Skip(record.image, "no captions", "all captions are empty")
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            yield Skip(record.image, "missing image", str(err))
            continue
        yield Sample(
            key=make_key(dataset, key_stem(record.image)),
            image=data,
            captions=captions,
            source="captions",
            source_ids=[record.image],
            licence=licence,
            extra={
                "dataset": dataset,
                "split": record.split,
                "label": record.label,
                "image_id": record.image_id,
                "raw_captions": len(record.captions),
            },
        )


def _split_report(out: Path) -> dict[str, Any]:
    splits: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    for extra in _part_extras(out):
        splits[extra.get("split")] += 1
        if extra.get("label"):
            labels[extra["label"]] += 1
    return {"splits": dict(sorted(splits.items())), "labels": dict(sorted(labels.items()))}


def build_caption_set_dataset(
    out_dir: str | Path,
    *,
    captions: str | Path,
    images: str | Path,
    format: str = "auto",
    licence: str | None = None,
    seed: int = 0,
    images_per_shard: int = 2000,
    workers: int = 1,
    executor: str = "local",
    progress: bool = True,
) -> dict[str, Any]:
    """Build a dataset from an RS caption set and its images (official splits in ``extra``).

    Images are found by file name anywhere under ``images``. Missing images are recorded as
    skips; if none is found at all the build stops with an error that says what to download.

    Args:
        out_dir: Dataset folder.
        captions: ``dataset_*.json`` or caption CSV.
        images: Folder holding the images (searched recursively).
        format: ``rsicd``, ``rsitmd``, ``ucm``, ``sydney`` or ``auto``.
        licence: Licence recorded on every sample.
        seed: Seed of the order in which images are spread over shards.
        images_per_shard: Images per shard (job).
        workers: Parallel workers.
        executor: ``"local"`` or ``"ray"``.
        progress: Show progress.

    Returns:
        The content of ``dataset.json`` (splits and labels under ``report``).

    Raises:
        BuildError: No image folder, or none of the images in it.
        CaptionSetError: The caption file cannot be read.
    """
    from terrascribe.sources import caption_sets

    records = caption_sets.read(captions, format=format)
    dataset = records[0].dataset if records else format
    root = Path(images)
    if not root.is_dir():
        raise BuildError(
            f"{images}: image folder not found. Caption tables carry no images: download the "
            f"{dataset.upper()} images and pass their folder with --images"
        )
    by_name: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            by_name.setdefault(p.name, p)
    paired = [(r, str(by_name[r.image]) if r.image in by_name else None) for r in records]
    found = sum(1 for _, p in paired if p is not None)
    if records and not found:
        example = ", ".join(r.image for r in records[:3])
        raise BuildError(
            f"{images}: none of the {len(records)} images named in {captions} (e.g. {example}) is "
            f"there. Caption tables carry no images: download the {dataset.upper()} images and "
            "pass their folder with --images"
        )
    return _write(
        out_dir,
        paired,
        functools.partial(_caption_items, dataset, licence),
        seed=seed,
        images_per_shard=images_per_shard,
        builder="captions",
        params={"format": dataset, "licence": licence},
        inputs=[captions, hash_path(images)],
        workers=workers,
        executor=executor,
        report=lambda out: {**_split_report(out), "records": len(records), "images_found": found},
        progress=progress,
    )
