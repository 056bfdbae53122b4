"""Run evaluations: load a benchmark, embed (cached), score, write one result JSON per task.

``evaluate(model, benchmark, tasks, out_dir)`` is what ``terrascribe eval`` calls. Each
(model, benchmark, task) gives ``<out_dir>/<model>__<benchmark>__<task>.json`` (written
atomically), carrying the metrics and what is needed to reproduce them: class names, templates,
protocol options, split hash, model fingerprint, package versions, time. ``skip_existing`` makes
large sweeps resumable.

``score_embeddings(dir, ...)`` scores precomputed embeddings in this layout (all ``.npy``)::

    meta.json          optional: {"model", "fingerprint", "benchmark", "classnames", "templates"}
    images.npy         (N, D) image embeddings
    labels.npy         (N,) int class indices                 } classification
    split.npy          (N,) "train"/"test" (default all test) }
    classes.npy        (C, D) class embeddings (zero-shot; templates already ensembled)
    texts.npy          (T, D) caption embeddings              } retrieval
    text_to_image.npy  (T,) int image index of each caption   }
    candidates.npy     (N, K, D) count-prompt embeddings      } counting
    counts.npy         (N,) true counts (numbers 1..K)        }

``evaluate(..., save_embeddings=DIR)`` writes that layout, so embeddings can be published and
re-scored without the model.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from terrascribe.evaluate import benchmarks as bm
from terrascribe.evaluate import metrics
from terrascribe.shards import atomic_write_bytes, atomic_write_text, dumps, package_versions

TASKS = ("zeroshot", "retrieval", "linear-probe", "knn", "few-shot", "counting")
TASKS_BY_KIND = {
    "classification": ("zeroshot", "linear-probe", "knn", "few-shot"),
    "retrieval": ("retrieval",),
    "counting": ("counting",),
}
_NEEDS_TRAIN = frozenset({"linear-probe", "knn", "few-shot"})
RESULT_FORMAT = "terrascribe-eval-result"
RESULT_VERSION = 1
EVAL_PACKAGES = (
    "terrascribe",
    "numpy",
    "torch",
    "open_clip_torch",
    "scikit-learn",
    "pycocoevalcap",
)


class EvaluationError(ValueError):
    """A task does not apply to a benchmark, or options contradict each other."""


@dataclass
class EvalOptions:
    """Protocol options (recorded in every result).

    Attributes:
        templates: Template set name, file, or list (None: the benchmark's default).
        classnames: Class-name variant, file, or list (None: the benchmark's default).
        split: Which images zero-shot scores: ``test`` (default) or ``all`` (SkyScript scored
            whole datasets, training files included).
        split_rule: Override the registry's split rule (``remoteclip-80-20``, ``all-test``...).
        max_per_class: Subsample at most this many images per class and split (seeded).
        seed: Seed for subsampling, linear-probe validation split and few-shot draws.
        dedup: Retrieval: SkyScript's de-duplicated caption protocol.
        caption_prefix: Retrieval: text put before every caption (SkyScript: "a satellite
            image. "). None: none.
        knn_k: k of k-NN. knn_temperature: temperature of k-NN's weighted vote.
        c_grid: Inverse regularisation strengths the linear and few-shot probes choose from.
        shots: Few-shot k values. few_shot_seeds: Seeds of the few-shot draws.
        counting_numbers: Candidate counts for counting.
        training_data: Datasets the model was trained on (their contamination.json is shown
            by the report).
    """

    templates: str | list[str] | None = None
    classnames: str | list[str] | None = None
    split: str = "test"
    split_rule: str | None = None
    max_per_class: int | None = None
    seed: int = 0
    dedup: bool = False
    caption_prefix: str | None = None
    knn_k: int = 20
    knn_temperature: float = 0.07
    c_grid: tuple[float, ...] = metrics.DEFAULT_C_GRID
    shots: tuple[int, ...] = (1, 4, 8, 16, 32)
    few_shot_seeds: tuple[int, ...] = (0, 1, 2)
    counting_numbers: tuple[int, ...] = tuple(range(1, 11))
    training_data: list[str] = field(default_factory=list)


@dataclass
class _Source:
    """A benchmark resolved to files: its name, registry entry, layout and path."""

    name: str
    bench: bm.Benchmark | None
    layout: str
    path: Path
    kind: str


def default_cache_dir() -> Path:
    """The embedding cache every tool shares (:func:`terrascribe.models.encode.default_cache_dir`:
    ``$TERRASCRIBE_CACHE/embeddings``, default ``~/.cache/terrascribe/embeddings``)."""
    from terrascribe.models.encode import default_cache_dir as shared

    return shared()


def default_data_root() -> Path:
    """Where registry benchmarks live: ``$TERRASCRIBE_DATA`` (or ``~/.cache/terrascribe/data``)."""
    env = os.environ.get("TERRASCRIBE_DATA")
    return Path(env) if env else Path.home() / ".cache" / "terrascribe" / "data"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def resolve_source(benchmark: str | Path, data_root: str | Path | None = None) -> _Source:
    """Turn a registry name or a path into files to read (nothing is loaded yet)."""
    text = str(benchmark)
    path = Path(text)
    registry_names = {b.name for b in bm.list_benchmarks()}
    if text.lower().replace("_", "-") in registry_names and not path.exists():
        bench = bm.get_benchmark(text)
        root = Path(data_root) if data_root else default_data_root()
        if bench.layout == "osm-attribute":
            raise EvaluationError(
                f"{bench.name} is built from a terrascribe OSM dataset: pass "
                f"--benchmark {bench.name}:PATH_TO_DATASET"
            )
        where = root / (bench.folder or bench.name)
        if not where.exists():
            raise bm.BenchmarkNotFoundError(bench.missing_message(where))
        layout = bench.layout
        return _Source(bench.name, bench, layout, where, _kind(bench.task))
    if ":" in text and text.split(":", 1)[0].lower() in registry_names:
        # "roof-shape:/path/to/osm-dataset": a registry task built from a dataset
        name, _, rest = text.partition(":")
        bench = bm.get_benchmark(name)
        return _Source(bench.name, bench, bench.layout, Path(rest), _kind(bench.task))
    layout = bm.detect_layout(path)
    if layout == "wds":
        kind = bm.wds_type(path)
    elif layout == "counting":
        kind = "counting"
    elif layout in ("terrascribe", "caption-set"):
        kind = "retrieval"
    else:
        kind = "classification"
    return _Source(_slug(path.name or text), None, layout, path, kind)


def _kind(task: str) -> str:
    return task if task in bm.TASK_KINDS else "classification"


def expand_tasks(tasks: str | Sequence[str], kind: str, benchmark: str) -> list[str]:
    """``all`` -> every task of the benchmark's kind; check named tasks apply."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if "all" in names:
        return list(TASKS_BY_KIND[kind])
    for task in names:
        if task not in TASKS:
            raise EvaluationError(f"unknown task {task!r}; choose from {', '.join(TASKS)}, all")
        if task not in TASKS_BY_KIND[kind]:
            raise EvaluationError(
                f"task {task!r} does not apply to {benchmark} (a {kind} benchmark: "
                f"{', '.join(TASKS_BY_KIND[kind])})"
            )
    return names


def result_path(out_dir: str | Path, model_id: str, benchmark: str, task: str) -> Path:
    """Where the result of (model, benchmark, task) is written."""
    return Path(out_dir) / f"{_slug(model_id)}__{_slug(benchmark)}__{task}.json"


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars/arrays -> Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# Embedding


class _Embedder:
    """Embeds with a loaded model through the on-disk cache (if any).

    Within a run, each set of images is embedded once: the scoring functions keep what they
    embedded in the run's ``cache`` dict (per split, class and retrieval embeddings).
    """

    def __init__(self, model: Any, cache_dir: Path | None, batch_size: int, progress: bool):
        self.model = model
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.progress = progress

    def images(self, items: Sequence[Any]) -> np.ndarray:
        from terrascribe.models.encode import encode_images

        return encode_images(
            self.model,
            list(items),
            batch_size=self.batch_size,
            cache_dir=self.cache_dir,
            progress=self.progress,
        )

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        from terrascribe.models.encode import encode_texts

        return encode_texts(
            self.model, list(texts), cache_dir=self.cache_dir, progress=self.progress
        )

    def class_embeddings(self, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        prompts = [t.format(c=c) for c in classnames for t in templates]
        emb = self.texts(prompts).reshape(len(classnames), len(templates), -1)
        return metrics.ensemble_class_embeddings(emb)


# --------------------------------------------------------------------------------------------
# Scoring one task


@dataclass
class _Scored:
    metrics: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)  # classnames, templates, sizes...


def _classification_input(
    source: _Source, options: EvalOptions
) -> tuple[bm.ClassificationData, list[str], list[str]]:
    """Data, class names and templates of a classification benchmark."""
    bench = source.bench
    if source.layout == "wds":
        data, names, wds_templates = bm.load_wds_classification(source.path)
        templates = bm.resolve_templates(options.templates or wds_templates or None)
        classnames = list(options.classnames) if isinstance(options.classnames, list) else names
        if isinstance(options.classnames, str):
            classnames = [n.strip() for n in Path(options.classnames).read_text().splitlines()]
    elif source.layout == "osm-attribute":
        assert bench is not None
        data = bm.load_osm_attribute(source.path, bench)
        classnames = bm.resolve_classnames(bench, options.classnames)
        templates = bm.resolve_templates(options.templates, bench.templates)
    else:
        data = bm.load_class_folders(source.path, bench, split_rule=options.split_rule)
        if bench is not None:
            classnames = bm.resolve_classnames(bench, options.classnames)
        elif options.classnames is not None:
            generic = bm.Benchmark(
                name=source.name,
                title=source.name,
                task="classification",
                layout="class-folders",
                folder=None,
                classes=tuple(data.classes),
            )
            classnames = bm.resolve_classnames(generic, options.classnames)
        else:
            classnames = [c.replace("_", " ") for c in data.classes]
        templates = bm.resolve_templates(
            options.templates, bench.templates if bench else "rs-ensemble"
        )
    if options.max_per_class:
        data = bm.subsample(data, options.max_per_class, options.seed)
    if len(classnames) != len(data.classes):
        raise EvaluationError(f"{len(classnames)} class names for {len(data.classes)} classes")
    return data, classnames, templates


def _score_classification(
    task: str, source: _Source, embed: _Embedder, options: EvalOptions, cache: dict
) -> _Scored:
    data, classnames, templates = _loaded(source, options, cache)
    n_classes = len(classnames)
    record = {"classes": data.classes, "classnames": classnames}
    if task == "zeroshot":
        split = "all" if options.split == "all" else "test"
        img, labels, ids = _split_embedding(embed, data, split, cache)
        if img is None:
            raise EvaluationError(f"{source.name}: no {split} images")
        cls = _class_embedding(embed, classnames, templates, cache)
        scores = metrics.zero_shot_scores(img, cls)
        out = metrics.zero_shot_classification(img, cls, labels)
        details = metrics.classification_details(scores, labels, n_classes)
        record.update(
            templates=templates, n_test=len(ids), split_hash=bm.split_hash(ids, [split] * len(ids))
        )
        return _Scored(out, details, record)
    if not (data.splits == "train").any():
        raise EvaluationError(f"{source.name} has no training split; {task} needs one")
    train_e, train_y, train_ids = _split_embedding(embed, data, "train", cache)
    test_e, test_y, test_ids = _split_embedding(embed, data, "test", cache)
    if test_e is None:
        raise EvaluationError(f"{source.name} has no test split")
    record.update(
        n_train=len(train_ids),
        n_test=len(test_ids),
        split_hash=bm.split_hash(
            train_ids + test_ids, ["train"] * len(train_ids) + ["test"] * len(test_ids)
        ),
    )
    scored = _probe(task, (train_e, train_y, test_e, test_y), n_classes, options)
    scored.record = {**record, **scored.record}
    return scored


def _probe(task: str, arrays: tuple, n_classes: int, options: EvalOptions) -> _Scored:
    """k-NN, linear probe or few-shot on ``(train_e, train_y, test_e, test_y)``."""
    if task == "knn":
        out = metrics.knn(
            *arrays, k=options.knn_k, temperature=options.knn_temperature, n_classes=n_classes
        )
        return _Scored(out, record={"k": options.knn_k, "temperature": options.knn_temperature})
    if task == "linear-probe":
        out = metrics.linear_probe(
            *arrays, c_grid=options.c_grid, seed=options.seed, n_classes=n_classes
        )
        return _Scored(out)
    out = metrics.few_shot(
        *arrays,
        shots=options.shots,
        seeds=options.few_shot_seeds,
        c_grid=options.c_grid,
        n_classes=n_classes,
    )
    details = {"shots": out.pop("shots"), "skipped": out.pop("skipped")}
    record = {"shots": list(options.shots), "seeds": list(options.few_shot_seeds)}
    return _Scored(out, details, record)


def _split_embedding(
    embed: _Embedder, data: bm.ClassificationData, split: str, cache: dict
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embeddings, labels and ids of one split, embedded once per run.

    ``all`` is assembled from the splits' embeddings, so no image is embedded twice when
    zero-shot scores every image and the probes score train and test.
    """
    images, labels, ids = data.subset(split)
    store = cache.setdefault("splits", {})
    if split not in store:
        if not images:
            store[split] = None
        elif split == "all":
            parts = {str(name) for name in np.unique(data.splits)}
            embedded = {name: _split_embedding(embed, data, name, cache)[0] for name in parts}
            dim = next(iter(embedded.values())).shape[1]
            whole = np.empty((len(images), dim), dtype=np.float32)
            for name, emb in embedded.items():
                whole[data.splits == name] = emb
            store[split] = whole
        else:
            store[split] = embed.images(images)
    return store[split], labels, ids


def _class_embedding(
    embed: _Embedder, classnames: list[str], templates: list[str], cache: dict
) -> np.ndarray:
    """Template-ensembled class embeddings, made once per run."""
    if "classes" not in cache:
        cache["classes"] = embed.class_embeddings(classnames, templates)
    return cache["classes"]


def _retrieval_images(embed: _Embedder, data: bm.RetrievalData, cache: dict) -> np.ndarray:
    """Image embeddings of a retrieval set, made once per run."""
    if "ret_images" not in cache:
        cache["ret_images"] = embed.images(data.images)
    return cache["ret_images"]


def _retrieval_input(source: _Source) -> bm.RetrievalData:
    if source.layout == "wds":
        return bm.load_wds_retrieval(source.path)
    if source.layout == "terrascribe":
        return bm.load_dataset_retrieval(source.path)
    if source.layout == "caption-set" and source.bench is not None:
        bench = source.bench
        return bm.load_caption_set(
            source.path / bench.extra["captions_file"],
            source.path / bench.extra.get("images_dir", "images"),
            split="test",
            bench=bench,
        )
    # a caption table given as a path: its images sit in images/ beside it
    return bm.load_caption_set(source.path, source.path.parent / "images", split="test")


def _score_retrieval(
    source: _Source, embed: _Embedder, options: EvalOptions, cache: dict
) -> _Scored:
    data = _loaded(source, options, cache)
    captions = list(data.captions)
    if options.caption_prefix:
        captions = [options.caption_prefix + c for c in captions]
    positives: Any = data.text_to_image
    if options.dedup:
        captions, positives = metrics.deduplicate_captions(captions, data.text_to_image)
    img = _retrieval_images(embed, data, cache)
    txt = embed.texts(captions)
    out = metrics.retrieval(img, txt, positives)
    record = {
        "n_images": len(data.images),
        "n_texts": len(captions),
        "dedup": options.dedup,
        "caption_prefix": options.caption_prefix,
        "split_hash": bm.split_hash(data.ids, ["test"] * len(data.ids)),
    }
    return _Scored(out, {}, record)


def _score_counting(
    source: _Source, embed: _Embedder, options: EvalOptions, cache: dict
) -> _Scored:
    data, meta = _loaded(source, options, cache)
    numbers = list(options.counting_numbers)
    img = embed.images(data.images)
    out: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for style in ("digits", "words"):
        prompts = []
        rows = zip(data.captions, data.counts, data.categories, strict=True)
        for caption, count, category in rows:
            try:
                prompts += metrics.counting_prompts(
                    caption, int(count), category=category or None, numbers=numbers, style=style
                )
            except ValueError as err:
                raise bm.BenchmarkError(f"{source.path}/counting.csv: {err}") from None
        cands = embed.texts(prompts).reshape(len(data.images), len(numbers), -1)
        scored = metrics.counting(img, cands, data.counts, numbers=numbers)
        details[f"{style}_confusion_matrix"] = scored.pop("confusion_matrix")
        scored.pop("numbers")
        prefix = "" if style == "digits" else "words_"
        out.update({f"{prefix}{k}": v for k, v in scored.items()})
    details["numbers"] = numbers
    record = {
        "n_test": len(data.images),
        "categories": sorted(set(data.categories)),
        "benchmark_meta": meta,
        "split_hash": bm.split_hash(data.ids, ["test"] * len(data.ids)),
    }
    return _Scored(out, details, record)


def _score_task(
    task: str, source: _Source, embed: _Embedder, options: EvalOptions, cache: dict
) -> _Scored:
    """Score one task; ``cache`` keeps loaded data and embeddings between a run's tasks."""
    if task == "retrieval":
        return _score_retrieval(source, embed, options, cache)
    if task == "counting":
        return _score_counting(source, embed, options, cache)
    return _score_classification(task, source, embed, options, cache)


def _loaded(source: _Source, options: EvalOptions, cache: dict) -> Any:
    """A benchmark's data, loaded once per run (kept in ``cache`` under ``"data"``).

    Classification: ``(data, classnames, templates)``; retrieval: the data; counting:
    ``(data, meta)``.
    """
    if "data" not in cache:
        if source.kind == "classification":
            cache["data"] = _classification_input(source, options)
        elif source.kind == "retrieval":
            cache["data"] = _retrieval_input(source)
        else:
            cache["data"] = bm.load_counting(source.path)
    return cache["data"]


# --------------------------------------------------------------------------------------------
# Public entry points


def _model_info(model: Any, options: EvalOptions) -> dict[str, Any]:
    return {
        "name": getattr(model, "name", str(model)),
        "pretrained": getattr(model, "pretrained", None),
        "fingerprint": getattr(model, "fingerprint", None),
        "embed_dim": getattr(model, "embed_dim", None),
        "training_data": [str(p) for p in options.training_data],
    }


def _model_id(info: dict[str, Any]) -> str:
    fp = (info.get("fingerprint") or "nofp")[:8]
    return f"{info['name']}-{fp}"


def _write_result(
    path: Path,
    info: dict[str, Any],
    source: _Source,
    task: str,
    scored: _Scored,
    options: EvalOptions,
    started: float,
) -> dict[str, Any]:
    bench = source.bench
    result = {
        "format": RESULT_FORMAT,
        "format_version": RESULT_VERSION,
        "model": info,
        "benchmark": {
            "name": source.name,
            "title": bench.title if bench else source.name,
            "path": str(source.path),
            "layout": source.layout,
            "licence": bench.licence if bench else None,
        },
        "task": task,
        "metrics": scored.metrics,
        "details": scored.details,
        **scored.record,
        "protocol": _json_safe(
            {k: v for k, v in asdict(options).items() if k not in ("training_data",)}
        ),
        "versions": package_versions(EVAL_PACKAGES),
        "time": {
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 3),
        },
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }
    result = _json_safe(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps(result))
    return result


def _run_tasks(
    names: Sequence[str],
    score: Callable[[str], _Scored],
    out_dir: str | Path,
    info: dict[str, Any],
    source: _Source,
    options: EvalOptions,
    skip_existing: bool,
) -> list[Path]:
    """Score each task and write its result file; returns the paths (written or skipped)."""
    written = []
    for task in names:
        path = result_path(out_dir, _model_id(info), source.name, task)
        written.append(path)
        if skip_existing and path.exists():
            continue
        started = time.perf_counter()
        _write_result(path, info, source, task, score(task), options, started)
    return written


def _asks_all(tasks: str | Sequence[str]) -> bool:
    return "all" in ([tasks] if isinstance(tasks, str) else list(tasks))


def _tasks_the_split_allows(
    names: list[str], source: _Source, options: EvalOptions, cache: dict
) -> list[str]:
    """``all`` on a set without training images (attribute tasks, ``all-test``) is zero-shot."""
    if (_loaded(source, options, cache)[0].splits == "train").any():
        return names
    return [t for t in names if t not in _NEEDS_TRAIN]


def evaluate(
    model: Any,
    benchmark: str | Path,
    tasks: str | Sequence[str],
    out_dir: str | Path,
    *,
    options: EvalOptions | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    skip_existing: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    save_embeddings: str | Path | None = None,
) -> list[Path]:
    """Evaluate a loaded model on one benchmark; write one result JSON per task.

    Args:
        model: A :class:`~terrascribe.models.zoo.LoadedModel`.
        benchmark: A registry name (files under ``data_root``), ``NAME:PATH`` for attribute
            tasks built from an OSM dataset, or a path (class folders, CLIP_benchmark webdataset,
            terrascribe dataset, caption table, counting folder).
        tasks: Task names or ``"all"`` (every task of the benchmark's kind that its split
            allows: zero-shot only on a set without training images).
        out_dir: Results folder.
        options: Protocol options (:class:`EvalOptions`).
        data_root: Folder holding registry benchmarks (default :func:`default_data_root`).
        cache_dir: Embedding cache (None: no cache).
        skip_existing: Leave tasks whose result file exists untouched (resumable sweeps).
        batch_size: Images per forward pass.
        progress: Show progress bars.
        save_embeddings: Also write the embeddings in the ``--embeddings`` layout here
            (classification and retrieval).

    Returns:
        Paths of the result files (written or skipped).

    Raises:
        BenchmarkNotFoundError: If a registry benchmark's files are missing (says where to get
            them).
        EvaluationError: If a task does not apply to the benchmark.
    """
    options = options or EvalOptions()
    source = resolve_source(benchmark, data_root)
    names = expand_tasks(tasks, source.kind, source.name)
    info = _model_info(model, options)
    embed = _Embedder(model, Path(cache_dir) if cache_dir else None, batch_size, progress)
    cache: dict[str, Any] = {}
    if _asks_all(tasks) and source.kind == "classification":
        names = _tasks_the_split_allows(names, source, options, cache)
    written = _run_tasks(
        names,
        lambda task: _score_task(task, source, embed, options, cache),
        out_dir,
        info,
        source,
        options,
        skip_existing,
    )
    if save_embeddings is not None:
        _save_embeddings(Path(save_embeddings), source, embed, options, info, cache)
    return written


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _save_embeddings(
    out: Path, source: _Source, embed: _Embedder, options: EvalOptions, info: dict, cache: dict
) -> None:
    """Write the ``--embeddings`` layout (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "model": info["name"],
        "fingerprint": info["fingerprint"],
        "benchmark": source.name,
    }
    if source.kind == "classification":
        data, classnames, templates = _loaded(source, options, cache)
        _save_npy(out / "images.npy", _split_embedding(embed, data, "all", cache)[0])
        _save_npy(out / "labels.npy", data.labels)
        _save_npy(out / "split.npy", data.splits.astype("U5"))
        _save_npy(out / "classes.npy", _class_embedding(embed, classnames, templates, cache))
        meta.update(classnames=classnames, templates=templates)
    elif source.kind == "retrieval":
        data = _loaded(source, options, cache)
        _save_npy(out / "images.npy", _retrieval_images(embed, data, cache))
        _save_npy(out / "texts.npy", embed.texts(data.captions))
        _save_npy(out / "text_to_image.npy", data.text_to_image)
    else:
        raise EvaluationError("saving embeddings is supported for classification and retrieval")
    atomic_write_text(out / "meta.json", dumps(meta))


def _load_npy(folder: Path, name: str, required: bool = True) -> np.ndarray | None:
    path = folder / name
    if not path.exists():
        if required:
            raise EvaluationError(f"{folder}: {name} is missing (see the --embeddings layout)")
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{path}: unreadable ({err})") from None


def score_embeddings(
    embeddings_dir: str | Path,
    tasks: str | Sequence[str],
    out_dir: str | Path,
    *,
    benchmark: str | None = None,
    options: EvalOptions | None = None,
    skip_existing: bool = False,
) -> list[Path]:
    """Score precomputed embeddings (layout in the module docstring); one result per task."""
    options = options or EvalOptions()
    folder = Path(embeddings_dir)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such embeddings folder")
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except ValueError as err:
        raise EvaluationError(f"{meta_path}: invalid JSON ({err})") from None
    name = benchmark or meta.get("benchmark") or _slug(folder.name)
    if (folder / "texts.npy").exists():
        kind = "retrieval"
    elif (folder / "candidates.npy").exists():
        kind = "counting"
    else:
        kind = "classification"
    names = expand_tasks(tasks, kind, name)
    info = {
        "name": meta.get("model", "precomputed"),
        "pretrained": None,
        "fingerprint": meta.get("fingerprint"),
        "embed_dim": None,
        "training_data": [str(p) for p in options.training_data],
    }
    source = _Source(name, None, "embeddings", folder, kind)
    images = _load_npy(folder, "images.npy")
    info["embed_dim"] = int(images.shape[1]) if images.ndim == 2 else None
    return _run_tasks(
        names,
        lambda task: _score_precomputed(task, folder, images, meta, options),
        out_dir,
        info,
        source,
        options,
        skip_existing,
    )


def _row_split_hash(splits: Sequence[str]) -> str:
    """Split hash of precomputed embeddings, whose images are known by row number only."""
    return bm.split_hash([str(i) for i in range(len(splits))], splits)


def _score_precomputed(
    task: str, folder: Path, images: np.ndarray, meta: dict, options: EvalOptions
) -> _Scored:
    if task == "retrieval":
        texts = _load_npy(folder, "texts.npy")
        owner = _load_npy(folder, "text_to_image.npy")
        return _Scored(
            metrics.retrieval(images, texts, owner),
            record={
                "n_images": len(images),
                "n_texts": len(texts),
                "split_hash": _row_split_hash(["test"] * len(images)),
            },
        )
    if task == "counting":
        cands = _load_npy(folder, "candidates.npy")
        counts = _load_npy(folder, "counts.npy")
        numbers = list(range(1, cands.shape[1] + 1))
        out = metrics.counting(images, cands, counts, numbers=numbers)
        record = {"n_test": len(images), "split_hash": _row_split_hash(["test"] * len(images))}
        return _Scored(out, {"confusion_matrix": out.pop("confusion_matrix")}, record)
    labels = _load_npy(folder, "labels.npy")
    split = _load_npy(folder, "split.npy", required=False)
    split = split.astype(str) if split is not None else np.array(["test"] * len(images))
    test = (
        split == "test"
        if options.split != "all" or task != "zeroshot"
        else np.ones(len(split), bool)
    )
    train = split == "train"
    scored_split = np.where(test, "test", np.where(train, "train", "unused"))
    record: dict[str, Any] = {
        "classnames": meta.get("classnames"),
        "templates": meta.get("templates"),
        "split_hash": _row_split_hash(scored_split.tolist()),
    }
    if task == "zeroshot":
        classes = _load_npy(folder, "classes.npy")
        scores = metrics.zero_shot_scores(images[test], classes)
        out = metrics.zero_shot_classification(images[test], classes, labels[test])
        details = metrics.classification_details(scores, labels[test], len(classes))
        return _Scored(out, details, {**record, "n_test": int(test.sum())})
    if not train.any():
        raise EvaluationError(f"{folder}: split.npy marks no training images; {task} needs some")
    n_classes = int(labels.max()) + 1
    arrays = (images[train], labels[train], images[test], labels[test])
    scored = _probe(task, arrays, n_classes, options)
    scored.record = {
        **record,
        **scored.record,
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
    }
    return scored


# --------------------------------------------------------------------------------------------
# Evaluation during training

TrainEvalFn = Callable[[Any, Any, Any], dict[str, float]]


@dataclass
class _Prepared:
    source: _Source
    tasks: list[str]
    data: dict[str, Any]


def _tasks_for(tasks: str | Sequence[str], source: _Source) -> list[str]:
    """The requested tasks that apply to this benchmark (``all``: every one its data allows)."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if "all" in names:
        return expand_tasks("all", source.kind, source.name)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise EvaluationError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}, all")
    kept = [t for t in names if t in TASKS_BY_KIND[source.kind]]
    if not kept:
        raise EvaluationError(
            f"none of the tasks {', '.join(names)} applies to {source.name} (a {source.kind} "
            f"benchmark: {', '.join(TASKS_BY_KIND[source.kind])})"
        )
    return kept


def _training_bundle(model: Any, preprocess: Any, tokenizer: Any) -> Any:
    """A :class:`LoadedModel` view of a model being trained (never cached: weights change)."""
    from terrascribe.models.zoo import LoadedModel

    param = next(model.parameters())
    visual = getattr(model, "visual", None)
    projection = getattr(model, "text_projection", None)
    embed_dim = getattr(visual, "output_dim", None) or (
        projection.shape[-1] if projection is not None else 0
    )
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        name="training",
        pretrained=None,
        arch=type(model).__name__,
        fingerprint="",
        embed_dim=int(embed_dim),
        image_size=getattr(visual, "image_size", 0),
        device=param.device,
    )


def _flat_metrics(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """Finite scalar metrics as ``{prefix/name: float}`` (NaN acc5 of < 5 classes dropped)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            continue
        if math.isfinite(float(value)):
            out[f"{prefix}/{key}"] = float(value)
    return out


def make_train_eval_fn(
    benchmarks: Sequence[str | Path],
    tasks: str | Sequence[str] = ("zeroshot",),
    *,
    options: EvalOptions | None = None,
    data_root: str | Path | None = None,
    max_per_class: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> TrainEvalFn:
    """An ``eval_fn(model, preprocess, tokenizer) -> dict`` for :func:`terrascribe.train.train`.

    Benchmarks are resolved and their files listed now, so a wrong name or a missing folder
    fails before training starts; each call embeds afresh (the weights change between calls, so
    nothing is cached) and scores every (benchmark, task). Nothing is written to disk: the
    trainer logs the numbers (as ``eval/<benchmark>/<task>/<metric>``).

    Args:
        benchmarks: Registry names (files under ``data_root``), ``NAME:PATH`` attribute tasks,
            or paths, as for :func:`evaluate`.
        tasks: Tasks to run where they apply (``zeroshot`` on scene sets, ``retrieval`` on
            caption sets...; a benchmark to which none applies is an error), or ``"all"``.
        options: Protocol options (:class:`EvalOptions`).
        data_root: Folder holding registry benchmarks.
        max_per_class: Subsample each classification benchmark to this many images per class
            and split (seeded by ``options.seed``), to keep evaluation cheap during training.
        batch_size: Images per forward pass.
        progress: Show progress bars.

    Returns:
        A callable returning flat metrics, e.g. ``{"siri-whu/zeroshot/acc1": 0.42,
        "siri-whu/zeroshot/mean_per_class_recall": 0.40}`` (finite floats only).

    Raises:
        BenchmarkNotFoundError: If a benchmark's files are missing.
        EvaluationError: If no task applies to a benchmark, or two benchmarks share a name.
    """
    options = options or EvalOptions()
    if max_per_class is not None:
        options = replace(options, max_per_class=max_per_class)
    if not benchmarks:
        raise EvaluationError("no benchmark to evaluate during training")
    prepared: list[_Prepared] = []
    for benchmark in benchmarks:
        source = resolve_source(benchmark, data_root)
        if any(p.source.name == source.name for p in prepared):
            raise EvaluationError(
                f"two benchmarks are both called {source.name!r} ({benchmark}); "
                "their metrics would collide"
            )
        names = _tasks_for(tasks, source)
        data: dict[str, Any] = {}
        _loaded(source, options, data)
        if _asks_all(tasks) and source.kind == "classification":
            names = _tasks_the_split_allows(names, source, options, data)
        prepared.append(_Prepared(source, names, data))

    def eval_fn(model: Any, preprocess: Any, tokenizer: Any) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            embed = _Embedder(
                _training_bundle(model, preprocess, tokenizer), None, batch_size, progress
            )
            out: dict[str, float] = {}
            for item in prepared:
                cache = dict(item.data)  # loaded data only: embeddings are made per call
                for task in item.tasks:
                    scored = _score_task(task, item.source, embed, options, cache)
                    out.update(_flat_metrics(f"{item.source.name}/{task}", scored.metrics))
            return out
        finally:
            model.train(was_training)

    return eval_fn
