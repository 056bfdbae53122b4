"""The registry of remote-sensing benchmarks and the loaders that turn a folder into an item list.

Every benchmark is described once in ``data/benchmarks.json`` (shipped with the package): task,
class folder names (which fix the label order), versioned class names (``clean-v1``, the raw
``folder`` names, and published variants such as CLIP's EuroSAT names), prompt templates, the
expected folder layout, the split rule, licence, homepage, and download URL + hash where public.

Layouts a benchmark can have (``layout`` in the registry, or detected for a path):

``class-folders``
    ``<root>/<folder>/<class>/<image>`` (images found recursively below each class folder, so
    fMoW's and Million-AID's nested folders work). ``split-folders`` is the same below
    ``train/`` and ``val/`` (or ``test/``).
``wds``
    CLIP_benchmark's webdataset layout: ``test/0.tar ... test/nshards.txt``, ``classnames.txt``,
    ``zeroshot_classification_templates.txt``, ``dataset_type.txt`` (``retrieval`` for captions).
``caption-set``
    A caption table read by :func:`terrascribe.sources.caption_sets.read` plus an ``images/``
    folder with the files it names.
``terrascribe``
    A terrascribe dataset (retrieval over its captions, or an OSM attribute task).
``counting``
    What ``terrascribe build counting`` writes: ``images/<name>.jpg``, ``counting.csv``
    (``image,category,count,caption``; ``image`` relative to the folder, ``category`` the
    singular noun counted) and ``benchmark.json`` (``{"task": "counting", ...}``).

Split rules: ``remoteclip-80-20`` (RemoteCLIP's: per class, sorted by file name, the first 80 %
train, the rest test), ``split-folders``, ``all-test`` (no training split), a ``split.json`` in
the dataset folder (``{"train": [relative paths], "test": [...]}``, overrides the rule), and
``caption-set:test`` (the table's own ``split`` column).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

REGISTRY_FILE = Path(__file__).with_name("data") / "benchmarks.json"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
TASK_KINDS = ("classification", "retrieval", "counting")


class BenchmarkError(ValueError):
    """A benchmark name is unknown or its files are malformed."""


class BenchmarkNotFoundError(FileNotFoundError):
    """A registered benchmark's files are not where they should be (says where to get them)."""


@dataclass(frozen=True)
class Benchmark:
    """One registry entry (see ``data/benchmarks.json``)."""

    name: str
    title: str
    task: str
    layout: str
    folder: str | None
    classes: tuple[str, ...] = ()
    classnames: dict[str, list[str]] = field(default_factory=dict)
    default_classnames: str = "clean-v1"
    folder_aliases: dict[str, str] = field(default_factory=dict)
    templates: str = "rs-ensemble"
    split: str = "remoteclip-80-20"
    licence: str = ""
    homepage: str | None = None
    download: dict[str, str | None] = field(default_factory=dict)
    citation: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def class_names(self, variant: str | None = None) -> list[str]:
        """Class names of ``variant`` (default: the registry's default), in label order."""
        variant = variant or self.default_classnames
        if variant not in self.classnames:
            raise BenchmarkError(
                f"{self.name} has no class-name variant {variant!r}; "
                f"known: {sorted(self.classnames)} (or pass a file with one name per line)"
            )
        return list(self.classnames[variant])

    def missing_message(self, path: Path) -> str:
        """The one error a user sees when the files are not there: where to get and put them."""
        where = self.homepage or "the dataset's homepage"
        lines = [f"{self.title} not found at {path}."]
        url = self.download.get("url") if self.download else None
        lines.append(
            f"Download it from {url} (homepage: {where})." if url else f"Get it from {where}."
        )
        if self.layout in ("class-folders", "split-folders"):
            sub = "{train,val}/" if self.layout == "split-folders" else ""
            lines.append(
                f"Unpack it so that {path}/{sub}<class>/<image> exists, with the "
                f"{len(self.classes)} class folders {', '.join(self.classes[:4])}, ..."
            )
        elif self.layout == "caption-set":
            lines.append(
                f"Put the caption table at {path}/{self.extra.get('captions_file')} and the images "
                f"it names in {path}/{self.extra.get('images_dir', 'images')}/."
            )
        lines.append(f"Licence: {self.licence}. Pass --data-root DIR if {path.parent} is not it.")
        return " ".join(lines)


@lru_cache(maxsize=1)
def _registry() -> dict[str, Any]:
    return json.loads(REGISTRY_FILE.read_text(encoding="utf-8"))


_KNOWN_FIELDS = {f for f in Benchmark.__dataclass_fields__ if f != "extra"}


def _entry(raw: dict[str, Any]) -> Benchmark:
    known = {k: v for k, v in raw.items() if k in _KNOWN_FIELDS}
    known["classes"] = tuple(raw.get("classes", ()))
    extra = {k: v for k, v in raw.items() if k not in _KNOWN_FIELDS}
    return Benchmark(**known, extra=extra)


def list_benchmarks() -> list[Benchmark]:
    """All registered benchmarks, in registry order."""
    return [_entry(raw) for raw in _registry()["benchmarks"]]


def get_benchmark(name: str) -> Benchmark:
    """The registry entry called ``name`` (case-insensitive; ``_`` and ``-`` are the same)."""
    wanted = name.lower().replace("_", "-")
    for bench in list_benchmarks():
        if bench.name == wanted:
            return bench
    known = ", ".join(b.name for b in list_benchmarks())
    raise BenchmarkError(f"unknown benchmark {name!r}; known: {known} (or pass a folder path)")


def template_sets() -> dict[str, list[str]]:
    """Named prompt-template sets (``{c}`` marks the class name)."""
    return {k: list(v) for k, v in _registry()["templates"].items()}


def template_sources() -> dict[str, str]:
    """Where each template set comes from."""
    return dict(_registry()["template_sources"])


def resolve_templates(spec: str | Sequence[str] | None, default: str = "rs-ensemble") -> list[str]:
    """Templates from a set name, a file (one per line) or a list; ``{}`` works as ``{c}``."""
    if spec is None:
        spec = default
    if isinstance(spec, str):
        sets = template_sets()
        if spec in sets:
            templates = sets[spec]
        elif Path(spec).is_file():
            templates = [t.strip() for t in Path(spec).read_text().splitlines() if t.strip()]
        else:
            raise BenchmarkError(
                f"templates {spec!r} is neither a template set ({', '.join(sets)}) nor a file"
            )
    else:
        templates = list(spec)
    templates = [t.replace("{}", "{c}") for t in templates]
    bad = [t for t in templates if "{c}" not in t]
    if bad or not templates:
        raise BenchmarkError(f"every template needs a {{c}} placeholder: {bad or templates}")
    return templates


def resolve_classnames(bench: Benchmark, spec: str | Sequence[str] | None) -> list[str]:
    """Class names from a variant name, a file (one per line), or a list."""
    if spec is None or (isinstance(spec, str) and spec in bench.classnames):
        return bench.class_names(spec)  # type: ignore[arg-type]
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_file():
            raise BenchmarkError(
                f"class names {spec!r} is neither a variant of {bench.name} "
                f"({', '.join(bench.classnames)}) nor a file"
            )
        names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
    else:
        names = list(spec)
    if bench.classes and len(names) != len(bench.classes):
        raise BenchmarkError(
            f"{bench.name} has {len(bench.classes)} classes but {len(names)} class names were given"
        )
    return names


# --------------------------------------------------------------------------------------------
# Loaded benchmark data


@dataclass
class ClassificationData:
    """Images with integer labels and a train/test assignment."""

    images: list[Any]  # paths or encoded bytes
    labels: np.ndarray
    splits: np.ndarray  # "train" / "test"
    classes: list[str]  # folder names, label order
    ids: list[str]  # stable identity of each image (relative path or key)

    def subset(self, split: str) -> tuple[list[Any], np.ndarray, list[str]]:
        """Images, labels and ids of one split (``"all"`` for everything)."""
        idx = (
            np.arange(len(self.images)) if split == "all" else np.flatnonzero(self.splits == split)
        )
        return [self.images[i] for i in idx], self.labels[idx], [self.ids[i] for i in idx]


@dataclass
class RetrievalData:
    """Images and their captions (several per image)."""

    images: list[Any]
    captions: list[str]
    text_to_image: np.ndarray
    ids: list[str]


@dataclass
class CountingData:
    """Images with a count, a category and a caption stating the count."""

    images: list[Any]
    counts: np.ndarray
    categories: list[str]
    captions: list[str]
    ids: list[str]


def split_hash(ids: Sequence[str], splits: Sequence[str]) -> str:
    """SHA-256 over the sorted ``id<TAB>split`` lines: identifies exactly what was scored."""
    digest = hashlib.sha256()
    for line in sorted(f"{i}\t{s}" for i, s in zip(ids, splits, strict=True)):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _images_below(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def remoteclip_split(n: int, train_fraction: float = 0.8) -> list[str]:
    """RemoteCLIP's rule for one class of ``n`` files sorted by name: first 80 % train."""
    n_train = math.floor(n * train_fraction)
    return ["train"] * n_train + ["test"] * (n - n_train)


def _class_folders(root: Path, bench: Benchmark | None) -> list[tuple[str, Path]]:
    """(class name, folder) in label order; registry order when known, else sorted names."""
    present = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if bench is None or not bench.classes:
        return sorted(present.items())
    aliases = {v: k for k, v in bench.folder_aliases.items()}  # clean -> original
    out, missing = [], []
    for cls in bench.classes:
        folder = present.get(cls) or present.get(aliases.get(cls, ""))
        if folder is None:
            missing.append(cls)
        else:
            out.append((cls, folder))
    if missing:
        raise BenchmarkNotFoundError(
            f"{root}: class folders missing: {', '.join(missing[:5])}"
            + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            + f". {bench.missing_message(root)}"
        )
    return out


def _read_split_file(root: Path) -> dict[str, str] | None:
    path = root / "split.json"
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return {str(item): split for split, items in raw.items() for item in items}
    except (ValueError, AttributeError, TypeError) as err:
        raise BenchmarkError(
            f"{path}: malformed split file ({err}); expected {{'train': [...], 'test': [...]}}"
        ) from None


def load_class_folders(
    root: str | Path, bench: Benchmark | None = None, *, split_rule: str | None = None
) -> ClassificationData:
    """Load a ``class/image`` folder (or a registry benchmark's folder) with its split.

    Args:
        root: The dataset folder.
        bench: Registry entry (fixes class order, aliases, split rule); None for any folder.
        split_rule: Override the split rule (``remoteclip-80-20``, ``all-test``, ``split-folders``).

    Raises:
        BenchmarkNotFoundError: If the folder or its class folders are missing.
        BenchmarkError: If a folder holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        msg = bench.missing_message(root) if bench else f"{root}: no such benchmark folder"
        raise BenchmarkNotFoundError(msg)
    rule = split_rule or (bench.split if bench else "remoteclip-80-20")
    if rule == "split-folders":
        return _load_split_folders(root, bench)
    split_file = _read_split_file(root)
    images: list[Any] = []
    labels: list[int] = []
    splits: list[str] = []
    ids: list[str] = []
    folders = _class_folders(root, bench)
    if not folders:
        raise BenchmarkError(f"{root}: no class folders (expected <class>/<image> below it)")
    for label, (_, folder) in enumerate(folders):
        files = _images_below(folder)
        if not files:
            raise BenchmarkError(f"{folder}: class folder holds no images")
        rels = [p.relative_to(root).as_posix() for p in files]
        if split_file is not None:
            file_splits = [split_file.get(r, "unused") for r in rels]
        elif rule == "all-test":
            file_splits = ["test"] * len(files)
        elif rule == "remoteclip-80-20":
            file_splits = remoteclip_split(len(files))
        else:
            raise BenchmarkError(f"unknown split rule {rule!r}")
        images.extend(files)
        labels.extend([label] * len(files))
        splits.extend(file_splits)
        ids.extend(rels)
    return ClassificationData(
        images, np.array(labels, dtype=np.int64), np.array(splits), [c for c, _ in folders], ids
    )


def _load_split_folders(root: Path, bench: Benchmark | None) -> ClassificationData:
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    parts = [("train", root / "train"), ("test", test_dir)]
    if test_dir is None:
        msg = bench.missing_message(root) if bench else f"{root}: no test/ or val/ folder"
        raise BenchmarkNotFoundError(msg)
    loaded = [
        (name, load_class_folders(path, bench, split_rule="all-test"))
        for name, path in parts
        if path is not None and path.is_dir()
    ]
    classes = loaded[0][1].classes
    images, labels, splits, ids = [], [], [], []
    for name, data in loaded:
        if data.classes != classes:
            raise BenchmarkError(f"{root}: train and test hold different class folders")
        images += data.images
        labels.append(data.labels)
        splits += [name] * len(data.images)
        ids += [f"{name}/{i}" for i in data.ids]
    return ClassificationData(images, np.concatenate(labels), np.array(splits), classes, ids)


def subsample(data: ClassificationData, per_class: int, seed: int = 0) -> ClassificationData:
    """Keep at most ``per_class`` images per (class, split), drawn with ``seed`` (order kept)."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for split in sorted(set(data.splits.tolist())):
        for label in np.unique(data.labels):
            idx = np.flatnonzero((data.labels == label) & (data.splits == split))
            if len(idx) > per_class:
                idx = np.sort(rng.choice(idx, size=per_class, replace=False))
            keep.extend(idx.tolist())
    keep.sort()
    return ClassificationData(
        [data.images[i] for i in keep],
        data.labels[keep],
        data.splits[keep],
        data.classes,
        [data.ids[i] for i in keep],
    )


# --------------------------------------------------------------------------------------------
# CLIP_benchmark's webdataset layout


def is_wds(root: Path) -> bool:
    """Whether ``root`` is in CLIP_benchmark's webdataset layout."""
    return (root / "test" / "nshards.txt").is_file()


def _wds_samples(root: Path, split: str) -> list[dict[str, bytes]]:
    nshards = int((root / split / "nshards.txt").read_text().strip())
    samples: list[dict[str, bytes]] = []
    for i in range(nshards):
        path = root / split / f"{i}.tar"
        current: dict[str, bytes] = {}
        key = None
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    stem, _, ext = member.name.partition(".")
                    if stem != key and current:
                        samples.append(current)
                        current = {}
                    key = stem
                    f = tar.extractfile(member)
                    current[ext.lower()] = f.read() if f else b""
                    current["__key__"] = stem.encode()
            if current:
                samples.append(current)
        except (tarfile.TarError, OSError) as err:
            raise BenchmarkError(f"{path}: unreadable webdataset shard ({err})") from None
    return samples


def _wds_image(sample: dict[str, bytes], where: str) -> bytes:
    for ext in ("webp", "png", "jpg", "jpeg"):
        if ext in sample:
            return sample[ext]
    raise BenchmarkError(f"{where}: sample {sample.get('__key__', b'?').decode()} has no image")


def wds_type(root: Path) -> str:
    """``classification`` or ``retrieval`` (``dataset_type.txt``; classification if absent)."""
    path = root / "dataset_type.txt"
    kind = path.read_text().strip().lower() if path.exists() else "classification"
    return "retrieval" if kind == "retrieval" else "classification"


def load_wds_classification(root: str | Path) -> tuple[ClassificationData, list[str], list[str]]:
    """A CLIP_benchmark webdataset classification set: data, class names and templates.

    ``test/`` is the test split; ``train/`` (if present) the training split.
    """
    root = Path(root)
    classes = [c.strip() for c in (root / "classnames.txt").read_text().splitlines()]
    tpl_path = root / "zeroshot_classification_templates.txt"
    templates = [t.strip() for t in tpl_path.read_text().splitlines()] if tpl_path.exists() else []
    images, labels, splits, ids = [], [], [], []
    for split in ("train", "test"):
        if not (root / split / "nshards.txt").is_file():
            continue
        for sample in _wds_samples(root, split):
            if "cls" not in sample:
                raise BenchmarkError(f"{root}/{split}: sample without a .cls label")
            images.append(_wds_image(sample, f"{root}/{split}"))
            labels.append(int(sample["cls"].decode().strip()))
            splits.append(split)
            ids.append(f"{split}/{sample['__key__'].decode()}")
    data = ClassificationData(
        images, np.array(labels, dtype=np.int64), np.array(splits), classes, ids
    )
    return data, classes, templates


def load_wds_retrieval(root: str | Path) -> RetrievalData:
    """A CLIP_benchmark webdataset retrieval set (``test/``; one caption per line in ``.txt``)."""
    root = Path(root)
    images, captions, owner, ids = [], [], [], []
    for i, sample in enumerate(_wds_samples(root, "test")):
        images.append(_wds_image(sample, f"{root}/test"))
        lines = sample.get("txt", b"").decode("utf-8").splitlines()
        captions += lines
        owner += [i] * len(lines)
        ids.append(sample["__key__"].decode())
    return RetrievalData(images, captions, np.array(owner, dtype=np.int64), ids)


# --------------------------------------------------------------------------------------------
# Caption sets, terrascribe datasets, counting sets


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def read_caption_records(path: str | Path) -> list[Any]:
    """Records of a caption table via :func:`terrascribe.sources.caption_sets.read`."""
    try:
        from terrascribe.sources.caption_sets import read
    except ImportError as err:  # pragma: no cover - the sources module ships with terrascribe
        raise BenchmarkError(f"caption-set reader unavailable: {err}") from None
    return list(read(path))


def load_caption_set(
    captions_file: str | Path,
    images_dir: str | Path | None,
    *,
    split: str = "test",
    bench: Benchmark | None = None,
) -> RetrievalData:
    """A retrieval benchmark from a caption table and its image folder.

    Args:
        captions_file: The caption table (RSICD/RSITMD/UCM/Sydney CSV or JSON).
        images_dir: Folder with the images the table names (None: text side only, images are
            the file names; useful to inspect the captions).
        split: Which rows to keep (``all`` for every row).
        bench: Registry entry, for the missing-files error.
    """
    captions_file = Path(captions_file)
    if not captions_file.is_file():
        msg = bench.missing_message(captions_file.parent) if bench else f"{captions_file}: missing"
        raise BenchmarkNotFoundError(msg)
    images, captions, owner, ids = [], [], [], []
    missing: list[str] = []
    for record in read_caption_records(captions_file):
        if split != "all" and _field(record, "split") not in (split, None):
            continue
        name = str(_field(record, "image"))
        caps = [c for c in _field(record, "captions", []) if isinstance(c, str) and c.strip()]
        if not caps:
            continue
        image: Any = name
        if images_dir is not None:
            image = Path(images_dir) / name
            if not image.is_file():
                missing.append(name)
                continue
        owner += [len(images)] * len(caps)
        images.append(image)
        captions += caps
        ids.append(name)
    if missing:
        head = f"{len(missing)} images named in {captions_file.name} are missing from {images_dir}"
        msg = f"{head} (first: {missing[0]}). "
        raise BenchmarkNotFoundError(
            msg + (bench.missing_message(captions_file.parent) if bench else "")
        )
    if not images:
        raise BenchmarkError(f"{captions_file}: no rows with split {split!r}")
    return RetrievalData(images, captions, np.array(owner, dtype=np.int64), ids)


def load_dataset_retrieval(path: str | Path, *, where: str | None = None) -> RetrievalData:
    """Retrieval over a terrascribe dataset's images and all their captions."""
    from terrascribe.shards import Dataset

    ds = Dataset(path)
    images, captions, owner, ids = [], [], [], []
    for sample in ds.samples(where=where):
        owner += [len(images)] * len(sample.captions)
        captions += list(sample.captions)
        images.append(sample.image)
        ids.append(sample.key)
    if not images:
        raise BenchmarkError(f"{path}: no samples to evaluate")
    return RetrievalData(images, captions, np.array(owner, dtype=np.int64), ids)


def load_osm_attribute(
    path: str | Path, bench: Benchmark, *, min_per_class: int = 1
) -> ClassificationData:
    """A SkyScript-style attribute task from a terrascribe OSM dataset.

    The label is the value of the benchmark's tag (``roof:shape``, ``smoothness``, ``surface``)
    on the sample's focus object (``objects[0]``), compared case-insensitively after trimming
    spaces; samples without it, with several values (``gabled;hipped``) or with a value outside
    the registry's list are left out. Every kept image is a test image (zero-shot task).

    Raises:
        BenchmarkNotFoundError: If ``path`` is not a terrascribe dataset.
        BenchmarkError: If no sample (or too few of a class) carries a listed value.
    """
    from terrascribe.shards import Dataset, DatasetError

    tag = bench.extra["tag"]
    index = {v: i for i, v in enumerate(bench.classes)}
    try:
        dataset = Dataset(path)
    except DatasetError as err:
        raise BenchmarkNotFoundError(
            f"{err}. {bench.title} is built from a terrascribe OSM dataset "
            "(terrascribe build osm ...): pass its folder"
        ) from None
    images, labels, ids = [], [], []
    for sample in dataset.samples():
        if not sample.objects:
            continue
        value = str(sample.objects[0].tags.get(tag, "")).strip().lower()
        if value in index:
            images.append(sample.image)
            labels.append(index[value])
            ids.append(sample.key)
    counts = np.bincount(np.array(labels, dtype=np.int64), minlength=len(bench.classes))
    if not images or (counts[counts > 0] < min_per_class).any():
        raise BenchmarkError(
            f"{path}: {len(images)} samples whose focus object has a {tag} value in "
            f"{list(bench.classes)}; too few to evaluate {bench.name}"
        )
    return ClassificationData(
        images,
        np.array(labels, dtype=np.int64),
        np.array(["test"] * len(images)),
        list(bench.classes),
        ids,
    )


def load_counting(root: str | Path) -> tuple[CountingData, dict[str, Any]]:
    """A counting benchmark made by ``terrascribe build counting``.

    Raises:
        BenchmarkError: If ``benchmark.json`` or ``counting.csv`` is missing or malformed.
    """
    root = Path(root)
    meta_path = root / "benchmark.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise BenchmarkNotFoundError(f"{meta_path}: missing (not a counting benchmark)") from None
    except ValueError as err:
        raise BenchmarkError(f"{meta_path}: invalid JSON ({err})") from None
    if meta.get("task") != "counting":
        raise BenchmarkError(f"{meta_path}: task is {meta.get('task')!r}, expected 'counting'")
    table = root / "counting.csv"
    images, counts, cats, caps, ids = [], [], [], [], []
    try:
        text = table.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkNotFoundError(f"{table}: missing") from None
    for line_no, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            name, count = row["image"], int(row["count"])
            caption, category = row["caption"], row["category"]
        except (KeyError, TypeError, ValueError) as err:
            raise BenchmarkError(
                f"{table}:{line_no}: malformed row ({err}); "
                "the columns are image,category,count,caption"
            ) from None
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BenchmarkError(f"{table}:{line_no}: image path {name!r} leaves the benchmark")
        image = root / name
        if not image.is_file():
            raise BenchmarkError(
                f"{table}:{line_no}: image {image} is missing (image paths are relative to the "
                "benchmark folder, e.g. images/x.jpg)"
            )
        images.append(image)
        counts.append(count)
        cats.append(category)
        caps.append(caption)
        ids.append(name)
    if not images:
        raise BenchmarkError(f"{table}: no rows")
    return CountingData(images, np.array(counts, dtype=np.int64), cats, caps, ids), meta


def detect_layout(path: Path) -> str:
    """Guess the layout of a benchmark given as a path."""
    if path.is_file():
        return "caption-set"
    if is_wds(path):
        return "wds"
    if (path / "benchmark.json").is_file():
        return "counting"
    if (path / "dataset.json").is_file():
        return "terrascribe"
    if path.is_dir():
        return "class-folders"
    raise BenchmarkNotFoundError(f"{path}: no such benchmark file or folder")
