"""Manifest views and subset materialisation, shared by every curation step.

A *view* is a parquet file of ``key`` plus new columns (``scores.parquet``: ``clip_score``;
``split.parquet``: ``split, cell``): it annotates a dataset without copying it, and joins its
manifest on ``key``. A *subset* is a new dataset holding some of a source dataset's samples,
written with :func:`terrascribe.shards.write_dataset`: job ``i`` is source shard ``i`` and the
keys to drop from it (each recorded as a ``Skip`` with the reason, so the shard stats say why
every sample left), which makes it resumable and byte-for-byte deterministic.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from terrascribe.records import Sample, Skip
from terrascribe.shards import (
    Dataset,
    DatasetError,
    atomic_write_bytes,
    atomic_write_text,
    dumps,
    iter_shard,
    write_dataset,
)


def open_dataset(dataset: Dataset | str | Path) -> Dataset:
    """A :class:`Dataset` from itself or its folder."""
    return dataset if isinstance(dataset, Dataset) else Dataset(dataset)


def write_view(
    path: str | Path, frame: pd.DataFrame, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write a view (``key`` + columns) atomically; ``meta`` goes into the parquet metadata.

    Raises:
        ValueError: If ``frame`` has no ``key`` column or repeats a key.
    """
    if "key" not in frame.columns:
        raise ValueError("a view needs a 'key' column")
    if frame["key"].duplicated().any():
        dupes = frame.loc[frame["key"].duplicated(), "key"].head(5).tolist()
        raise ValueError(f"a view must have one row per key; repeated: {dupes}")
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    if meta:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"terrascribe": json.dumps(meta, sort_keys=True)}
        )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_view(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a view written by :func:`write_view`: ``(frame, meta)``.

    Raises:
        DatasetError: If the file is missing, not parquet, or has no ``key`` column.
    """
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DatasetError(f"{path}: cannot read view ({err})") from None
    if "key" not in table.column_names:
        raise DatasetError(f"{path}: not a view (no 'key' column)")
    raw = (table.schema.metadata or {}).get(b"terrascribe")
    meta = json.loads(raw) if raw else {}
    return table.to_pandas(), meta


def join_view(
    manifest: pd.DataFrame, view: pd.DataFrame, *, require_all: bool = True
) -> pd.DataFrame:
    """Manifest rows with the view's columns added (left join on ``key``).

    Raises:
        DatasetError: If ``require_all`` and some manifest keys have no row in the view.
    """
    cols = [c for c in view.columns if c == "key" or c not in manifest.columns]
    joined = manifest.merge(view[cols], on="key", how="left", validate="one_to_one")
    if require_all:
        missing = ~manifest["key"].isin(view["key"])
        if missing.any():
            raise DatasetError(
                f"the view lacks {int(missing.sum())} of the dataset's keys (e.g. "
                f"{manifest.loc[missing, 'key'].head(3).tolist()}): was it made for this dataset?"
            )
    return joined


def write_report(out_dir: str | Path, name: str, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as deterministic JSON to ``out_dir/name`` (atomically)."""
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps(dict(report)))
    return path


# --------------------------------------------------------------------------------------------
# Subsets


def _subset_items(job: tuple[str, tuple[tuple[str, str, str], ...]]) -> Iterator[Sample | Skip]:
    shard, drops = job
    dropped = {key: (reason, detail) for key, reason, detail in drops}
    for sample in iter_shard(shard):
        if sample.key in dropped:
            reason, detail = dropped[sample.key]
            yield Skip(sample.key, reason, detail)
        else:
            yield sample


def subset_jobs(
    dataset: Dataset, drops: Mapping[str, tuple[str, str]]
) -> list[tuple[str, tuple[tuple[str, str, str], ...]]]:
    """One job per source shard: ``(shard path, ((key, reason, detail), ...))`` sorted by key."""
    manifest = dataset.manifest(columns=["key", "shard"])
    # a dict: a pandas lookup per dropped key costs microseconds each
    shard_of = dict(zip(manifest["key"].tolist(), manifest["shard"].tolist(), strict=True))
    unknown = [k for k in drops if k not in shard_of]
    if unknown:
        raise DatasetError(f"{dataset.path}: keys not in the dataset: {sorted(unknown)[:5]}")
    per_shard: dict[str, list[tuple[str, str, str]]] = {}
    for key, (reason, detail) in drops.items():
        per_shard.setdefault(shard_of[key], []).append((key, reason, detail))
    return [(str(p), tuple(sorted(per_shard.get(p.name, [])))) for p in dataset.shards]


def write_subset(
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    drops: Mapping[str, tuple[str, str]],
    *,
    builder: str,
    params: Mapping[str, Any],
    seed: int | None = None,
    inputs: Sequence[str | Path | Mapping[str, Any]] = (),
    workers: int = 1,
    report: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the samples of ``dataset`` not in ``drops`` as a new dataset (resumable).

    Args:
        dataset: Source dataset.
        out_dir: New dataset folder (must not be the source).
        drops: ``key -> (reason, detail)`` of samples to leave out; each becomes a ``Skip``.
        builder: Builder name for ``dataset.json`` (``"curate.filter"``...).
        params: Parameters that decided ``drops`` (a re-run with others into ``out_dir`` fails).
        seed: Seed that decided ``drops``, if any.
        inputs: Extra inputs for provenance (the source dataset is always recorded).
        workers: Parallel processes.
        report: Statistics stored in ``dataset.json``.
        progress: Show a progress bar.

    Returns:
        The new ``dataset.json`` content.
    """
    ds = open_dataset(dataset)
    out = Path(out_dir)
    if out.resolve() == ds.path.resolve():
        raise DatasetError(f"{out}: the output must be a new folder, not the source dataset")
    source = {
        "path": str(ds.path),
        "kind": "terrascribe-dataset",
        "builder": ds.info.get("builder"),
        "samples": len(ds),
    }
    return write_dataset(
        out,
        subset_jobs(ds, drops),
        _subset_items,
        builder=builder,
        params={**params, "source": str(ds.path)},
        seed=seed,
        inputs=[source, *inputs],
        workers=workers,
        report=report,
        progress=progress,
    )
