"""Merge several datasets into one, in requested proportions, keeping where every sample came from.

Each input has a name, a folder and a weight (without weights, inputs are concatenated). The
output holds ``round(weight share × total)`` samples of each input (``total`` defaults to the
sum of the inputs' sizes): an input with more samples than its share is subsampled without
replacement; one with fewer is repeated (every sample ``share // n`` times, plus a seeded choice
of the remainder). Choices come from a
generator seeded by ``(seed, input position)`` over the input's sorted keys, so the same inputs
and seed give the same dataset.

Keys are prefixed with the input's name (``rsicd-00012``; repeats get ``-r1``, ``-r2``...), so
inputs never collide, and ``extra["provenance"]`` records ``{"dataset", "path", "key", "copy"}``.

(open_clip can also weight data sources at training time with ``--train-data-upsampling-factors``
and ``--dataset-resampled``; a merged dataset makes the mixture explicit, inspectable and
reusable by any tool.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from terrascribe.curate.views import open_dataset
from terrascribe.records import RecordError, Sample, Skip, make_key, validate_key
from terrascribe.shards import Dataset, iter_shard, write_dataset


@dataclass(frozen=True)
class MergeInput:
    """One input of a merge: ``name`` (key prefix), dataset ``path`` and sampling ``weight``
    (None: its own size, so inputs without weights are simply concatenated)."""

    name: str
    path: Path
    weight: float | None = None


def parse_input(spec: str) -> MergeInput:
    """``NAME=PATH:WEIGHT``, ``NAME=PATH``, ``PATH:WEIGHT`` or ``PATH`` (name: the folder name).

    Raises:
        ValueError: If the weight is not a positive number or the name is not key-safe.
    """
    name, sep, rest = spec.partition("=")
    if not sep:
        rest, name = spec, ""
    path_text, colon, weight_text = rest.rpartition(":")
    weight = None
    if colon:
        try:
            weight = float(weight_text)
        except ValueError:
            path_text = rest  # a colon inside the path, no weight
        else:
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"{spec!r}: weight must be a positive number, got {weight_text}")
    else:
        path_text = rest
    path = Path(path_text).expanduser()
    name = name or make_key(path.name)
    try:
        validate_key(name)
    except RecordError:
        raise ValueError(
            f"{spec!r}: input name {name!r} must be letters, digits, '_' or '-' (it prefixes keys)"
        ) from None
    return MergeInput(name=name, path=path, weight=weight)


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of ``total`` by ``weights`` (ties to the earlier input)."""
    w = np.asarray(weights, float) / float(np.sum(weights))
    exact = w * total
    counts = np.floor(exact).astype(int)
    left = total - int(counts.sum())
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts.tolist()


def plan_merge(
    inputs: Sequence[MergeInput], *, total: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """How many copies of each input sample the merge writes.

    Returns:
        ``name, key, copies`` for every input sample (``copies`` may be 0).
    """
    datasets = [open_dataset(i.path) for i in inputs]
    sizes = [len(d) for d in datasets]
    total = sum(sizes) if total is None else int(total)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    given = [i.weight is not None for i in inputs]
    if any(given) and not all(given):
        raise ValueError("give a weight to every input or to none (none: concatenate)")
    weights = [i.weight for i in inputs] if all(given) else sizes
    if sum(weights) <= 0:
        return pd.DataFrame({"name": [], "key": [], "copies": []})
    targets = _apportion(total, weights)
    frames = []
    for pos, (inp, ds, n, target) in enumerate(zip(inputs, datasets, sizes, targets, strict=True)):
        keys = np.sort(ds.manifest(columns=["key"])["key"].to_numpy(dtype=str))
        copies = np.zeros(n, dtype=np.int64)
        if n == 0 and target > 0:
            raise ValueError(f"{inp.path}: empty dataset cannot provide {target} samples")
        if n:
            rng = np.random.default_rng([seed, pos])
            copies[:] = target // n
            extra = rng.choice(n, size=target % n, replace=False)
            copies[extra] += 1
        frames.append(pd.DataFrame({"name": inp.name, "key": keys, "copies": copies}))
    return pd.concat(frames, ignore_index=True)


def _merge_items(job: tuple[str, str, str, tuple[tuple[str, int], ...]]) -> Iterator[Sample | Skip]:
    shard, name, source_path, copies = job
    wanted = dict(copies)
    for sample in iter_shard(shard):
        n = wanted.get(sample.key, 0)
        if n == 0:
            yield Skip(sample.key, "not sampled", f"{name}: left out by the merge weights")
            continue
        for copy in range(n):
            provenance = {"dataset": name, "path": source_path, "key": sample.key, "copy": copy}
            yield dataclasses.replace(
                sample,
                key=make_key(name, sample.key) + (f"-r{copy}" if copy else ""),
                extra={**sample.extra, "provenance": provenance},
            )


def merge_datasets(
    inputs: Sequence[MergeInput | str],
    out_dir: str | Path,
    *,
    total: int | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Merge datasets into ``out_dir`` with sampling weights and provenance (resumable).

    Args:
        inputs: :class:`MergeInput`\\ s or specs for :func:`parse_input`.
        out_dir: New dataset folder.
        total: Output size (default: the sum of the input sizes).
        seed: Seed of the subsampling/oversampling choices.
        workers: Parallel processes.
        progress: Show a progress bar.

    Returns:
        The new ``dataset.json`` content; its ``report`` gives, per input, the size, the weight,
        the share asked for and the samples written.

    Raises:
        ValueError: On repeated input names or no inputs.
    """
    items = [i if isinstance(i, MergeInput) else parse_input(i) for i in inputs]
    if not items:
        raise ValueError("give at least one input dataset")
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        raise ValueError(f"input names must be distinct, got {names}: use NAME=PATH")
    plan = plan_merge(items, total=total, seed=seed)
    jobs = []
    report_inputs = []
    for inp in items:
        ds: Dataset = open_dataset(inp.path)
        rows = (
            ds.manifest(columns=["key", "shard"])
            .merge(plan.loc[plan["name"] == inp.name, ["key", "copies"]], on="key")
            .sort_values("key")
        )
        # one pass over the manifest (a mask per shard was shards x samples)
        per_shard = {
            shard: tuple(zip(group["key"].tolist(), group["copies"].tolist(), strict=True))
            for shard, group in rows.groupby("shard", sort=False)
        }
        jobs.extend(
            (str(shard), inp.name, str(inp.path), per_shard.get(shard.name, ()))
            for shard in ds.shards
        )
        copies = rows["copies"]
        report_inputs.append(
            {
                "name": inp.name,
                "path": str(inp.path),
                "samples": len(ds),
                "weight": inp.weight,
                "written": int(copies.sum()),
                "repeated": int((copies > 1).sum()),
                "left_out": int((copies == 0).sum()),
            }
        )
    written = sum(r["written"] for r in report_inputs)
    for r in report_inputs:
        r["share"] = round(r["written"] / written, 4) if written else 0.0
    return write_dataset(
        out_dir,
        jobs,
        _merge_items,
        builder="curate.merge",
        params={
            "inputs": [{"name": i.name, "path": str(i.path), "weight": i.weight} for i in items],
            "total": total,
        },
        seed=seed,
        inputs=[
            {"path": str(i.path), "kind": "terrascribe-dataset", "name": i.name} for i in items
        ],
        workers=workers,
        report={"inputs": report_inputs, "samples": written},
        progress=progress,
    )
