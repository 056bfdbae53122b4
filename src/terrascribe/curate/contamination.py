"""Benchmark contamination: training samples that (nearly) copy benchmark images or captions.

RemoteCLIP de-duplicated its training data against three caption sets only, leaving open whether
its other benchmarks leaked into training. Here a dataset is checked against any number of
benchmarks, and the check itself is recorded in ``contamination.json`` so an evaluation report can
say whether (and how) a model's training data was checked against the benchmark it is scored on.

* Image benchmarks (a ``class/image`` folder, or any folder of images): perceptual hashes within
  ``max_distance`` bits (the same index as ``curate dedup``).
* Caption benchmarks (a caption-set file read by :func:`terrascribe.sources.caption_sets.read`:
  RSICD/RSITMD/UCM/Sydney JSON or CSV): exact matches after normalisation (lower case,
  punctuation removed, whitespace collapsed) between any caption of a sample and any benchmark
  caption.

``contamination.json`` layout (stable; evaluation reads it)::

    {
      "format": "terrascribe-contamination", "version": 1,
      "dataset": "<path>",
      "checked_against": [
        {"benchmark": NAME, "path": PATH, "kind": "images" | "captions",
         "images": N, "captions": N, "hash": "phash" | null, "threshold": d | null}
      ],
      "overlaps": [
        {"key": KEY, "benchmark": NAME, "match": "image" | "caption",
         "distance": d | null, "benchmark_item": "<relative image path or caption-set image>"}
      ],
      "n_overlapping_keys": N
    }
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from terrascribe.curate.dedup import DEFAULT_MAX_DISTANCE
from terrascribe.curate.hashindex import HashIndex, hamming
from terrascribe.curate.perceptual import check_kinds, hash_dataset, hash_folder
from terrascribe.curate.views import open_dataset, write_subset
from terrascribe.shards import Dataset, atomic_write_text, dumps

CONTAMINATION_FILE = "contamination.json"
FORMAT = "terrascribe-contamination"
VERSION = 1
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark to check against: a folder of images or a caption-set file."""

    name: str
    path: Path
    kind: str  # "images" | "captions"


def parse_benchmark(spec: str) -> Benchmark:
    """``NAME=PATH`` or ``PATH`` (the name is then the folder or file stem), or a registry name.

    A folder is an image benchmark; a file is a caption set. A bare name that is not a path is
    looked up in the evaluation registry (:mod:`terrascribe.evaluate.benchmarks`), whose files
    live under ``$TERRASCRIBE_DATA``.

    Raises:
        FileNotFoundError: If the path does not exist and no registry knows the name.
    """
    name, sep, rest = spec.partition("=")
    path = Path(rest if sep else spec).expanduser()
    if not sep:
        name = path.stem if path.suffix else path.name
    if not path.exists():
        resolved = _from_registry(spec if not sep else rest)
        if resolved is None:
            raise FileNotFoundError(
                f"benchmark {spec!r}: no such folder or caption file, and no registered "
                "benchmark of that name"
            )
        path = resolved
    return Benchmark(name=name, path=path, kind="images" if path.is_dir() else "captions")


def _from_registry(name: str) -> Path | None:
    """The folder of a registry benchmark, or None when no benchmark has that name.

    Raises:
        BenchmarkNotFoundError: If the benchmark is known but its files are not where the
            registry expects them (the message says where to get them and where to put them).
    """
    from terrascribe.evaluate.benchmarks import list_benchmarks
    from terrascribe.evaluate.runner import resolve_source

    if name.lower().replace("_", "-") not in {b.name for b in list_benchmarks()}:
        return None
    return resolve_source(name).path


def normalise_caption(text: str) -> str:
    """Lower case, NFKC, punctuation removed, whitespace collapsed: the form compared exactly."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


@dataclass
class ContaminationResult:
    """Overlaps found (``key, benchmark, match, distance, benchmark_item``) and the record."""

    overlaps: pd.DataFrame
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """Sample keys that overlap any benchmark, sorted."""
        return sorted(set(self.overlaps["key"]))


def _image_overlaps(
    ds_hashes: pd.DataFrame,
    bench: Benchmark,
    kinds: tuple[str, ...],
    d: int,
    workers: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    b_hashes = hash_folder(bench.path, kinds, workers=workers, progress=progress)
    b_hashes = b_hashes.loc[b_hashes["error"].isna()].reset_index(drop=True)
    ds_ok = ds_hashes.loc[ds_hashes["error"].isna()].reset_index(drop=True)
    index = HashIndex(b_hashes[kinds[0]].to_numpy("uint64"), max_distance=d)
    pairs = index.query(ds_ok[kinds[0]].to_numpy("uint64"))
    close = pairs.distance <= d
    for k in kinds[1:]:
        close &= (
            hamming(
                ds_ok[k].to_numpy("uint64")[pairs.left], b_hashes[k].to_numpy("uint64")[pairs.right]
            )
            <= d
        )
    rows = [
        {
            "key": str(ds_ok["key"].iat[i]),
            "benchmark": bench.name,
            "match": "image",
            "distance": int(dist),
            "benchmark_item": str(b_hashes["item"].iat[j]),
        }
        for i, j, dist in zip(
            pairs.left[close].tolist(),
            pairs.right[close].tolist(),
            pairs.distance[close].tolist(),
            strict=True,
        )
    ]
    checked = {
        "benchmark": bench.name,
        "path": str(bench.path),
        "kind": "images",
        "images": len(b_hashes),
        "captions": 0,
        "hash": "+".join(kinds),
        "threshold": d,
    }
    return rows, checked


def _caption_overlaps(
    captions: dict[str, list[str]], bench: Benchmark
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from terrascribe.sources.caption_sets import read

    records = read(bench.path)
    where: dict[str, str] = {}
    n_captions = 0
    for record in records:
        for caption in record.captions:
            n_captions += 1
            norm = normalise_caption(caption)
            if norm:
                where.setdefault(norm, record.image)
    rows = []
    for key, texts in captions.items():
        hits = {where[n] for n in (normalise_caption(t) for t in texts) if n in where}
        rows.extend(
            {
                "key": key,
                "benchmark": bench.name,
                "match": "caption",
                "distance": None,
                "benchmark_item": item,
            }
            for item in sorted(hits)
        )
    checked = {
        "benchmark": bench.name,
        "path": str(bench.path),
        "kind": "captions",
        "images": len(records),
        "captions": n_captions,
        "hash": None,
        "threshold": None,
    }
    return rows, checked


def check_contamination(
    dataset: Dataset | str | Path,
    benchmarks: Sequence[Benchmark | str],
    *,
    kinds: Sequence[str] = ("phash",),
    max_distance: int = DEFAULT_MAX_DISTANCE,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ContaminationResult:
    """Find the samples of ``dataset`` that overlap the benchmarks.

    Args:
        dataset: The (training) dataset.
        benchmarks: :class:`Benchmark`\\ s or specs for :func:`parse_benchmark`.
        kinds: Hash kinds that must all match for an image overlap.
        max_distance: Largest Hamming distance of an image overlap (default 1).
        workers: Parallel processes for hashing.
        cache_dir: Cache of the dataset's per-shard hashes.
        progress: Show progress bars.

    Returns:
        The overlaps and the ``contamination.json`` record.
    """
    ds = open_dataset(dataset)
    kinds = check_kinds(kinds)
    benches = [b if isinstance(b, Benchmark) else parse_benchmark(b) for b in benchmarks]
    if not benches:
        raise ValueError("give at least one benchmark")
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark names must be distinct, got {names}: use NAME=PATH")
    rows: list[dict[str, Any]] = []
    checked: list[dict[str, Any]] = []
    ds_hashes = captions = None
    for bench in benches:
        if bench.kind == "images":
            if ds_hashes is None:
                ds_hashes = hash_dataset(
                    ds, kinds, workers=workers, cache_dir=cache_dir, progress=progress
                )
            found, info = _image_overlaps(ds_hashes, bench, kinds, max_distance, workers, progress)
        else:
            if captions is None:
                captions = {s.key: s.captions for s in ds.samples(with_images=False)}
            found, info = _caption_overlaps(captions, bench)
        rows.extend(found)
        checked.append(info)
    columns = ["key", "benchmark", "match", "distance", "benchmark_item"]
    overlaps = (
        pd.DataFrame(rows, columns=columns)
        .sort_values(["key", "benchmark", "match", "benchmark_item"])
        .reset_index(drop=True)
    )
    record = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": str(ds.path),
        "checked_against": checked,
        "overlaps": [
            {**r, "distance": None if pd.isna(r["distance"]) else int(r["distance"])}
            for r in overlaps.to_dict("records")
        ],
        "n_overlapping_keys": int(overlaps["key"].nunique()),
    }
    return ContaminationResult(overlaps=overlaps, record=record)


def contamination_dataset(
    dataset: Dataset | str | Path,
    benchmarks: Sequence[Benchmark | str],
    *,
    out_dir: str | Path | None = None,
    drop: str | Path | None = None,
    kinds: Sequence[str] = ("phash",),
    max_distance: int = DEFAULT_MAX_DISTANCE,
    workers: int = 1,
    progress: bool = True,
) -> ContaminationResult:
    """Check a dataset, write ``contamination.json``, and optionally a cleaned copy.

    Args:
        dataset: The dataset.
        benchmarks: Benchmarks (see :func:`check_contamination`).
        out_dir: Where to write ``contamination.json`` (default: the dataset folder).
        drop: If given, a new dataset without the overlapping samples (each recorded as a
            ``Skip`` "benchmark overlap"); it gets its own ``contamination.json`` too.
        kinds, max_distance, workers, progress: See :func:`check_contamination`.
    """
    ds = open_dataset(dataset)
    target = Path(out_dir) if out_dir is not None else ds.path
    result = check_contamination(
        ds,
        benchmarks,
        kinds=kinds,
        max_distance=max_distance,
        workers=workers,
        cache_dir=target / ".hashes",
        progress=progress,
    )
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / CONTAMINATION_FILE, dumps(result.record))
    if drop is not None:
        first = result.overlaps.groupby("key").first()
        drops = {
            key: ("benchmark overlap", f"{row.benchmark}: {row.match} {row.benchmark_item}")
            for key, row in first.iterrows()
        }
        params = {
            "benchmarks": [c["path"] for c in result.record["checked_against"]],
            "kinds": list(kinds),
            "max_distance": max_distance,
        }
        write_subset(
            ds,
            drop,
            drops,
            builder="curate.contamination",
            params=params,
            workers=workers,
            report={k: v for k, v in result.record.items() if k != "overlaps"},
            progress=progress,
        )
        cleaned = {
            **result.record,
            "dataset": str(drop),
            "removed_keys": result.keys,
            "overlaps": [],
            "n_overlapping_keys": 0,
        }
        atomic_write_text(Path(drop) / CONTAMINATION_FILE, dumps(cleaned))
    return result
