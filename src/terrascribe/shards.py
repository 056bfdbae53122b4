"""Dataset I/O: WebDataset tar shards + a GeoParquet manifest, written atomically and resumably.

A terrascribe dataset is a folder::

    shard-000000.tar          KEY.jpg, KEY.txt (first caption), KEY.json (all captions + metadata)
    shard-000000.stats.json   written / skipped counts and the reason for every skip
    manifest.parquet          one row per sample; ``geometry`` is WKB (GeoPandas reads it)
    sizes.json                {"shard-000000.tar": N, ...}, open_clip's convention
    dataset.json              how it was built: builder, command, params, seed, inputs, versions
    .parts/                   per-shard manifest parts (the join key is the shard name)

Builders split their input into *jobs* deterministically; job ``i`` becomes shard ``i``. A shard is
written to a temporary name and renamed when complete, and its stats file is written last, so a
shard with a stats file is complete. A re-run with the same output skips complete shards and
finishes the rest: no duplicates, nothing lost. Tar members carry fixed metadata and the JSON is
written with sorted keys, so the same inputs and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import struct
import sys
import tarfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from terrascribe.images import ImageError, to_jpeg
from terrascribe.records import RecordError, Sample, Skip
from terrascribe.tar_writer import TarWriter

if TYPE_CHECKING:
    import pandas as pd
    import torch.utils.data

FORMAT_NAME = "terrascribe-dataset"
FORMAT_VERSION = 1
SHARD_PATTERN = "shard-{:06d}.tar"
MANIFEST = "manifest.parquet"
PARTS_DIR = ".parts"
PARAMS_FILE = ".params.json"
# Items per encoding task: one batch is encoded while the stream makes the next (a hand-over of
# the GIL per image costs more than the Python around an encode).
_ENCODE_BATCH = 8

# Packages whose versions are recorded in dataset.json and evaluation results.
RECORDED_PACKAGES = (
    "terrascribe",
    "numpy",
    "pillow",
    "pyarrow",
    "rasterio",
    "pyproj",
    "shapely",
    "osmium",
    "torch",
    "open_clip_torch",
)


class DatasetError(RuntimeError):
    """A dataset folder is missing, incomplete, inconsistent or was built differently."""


MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("caption", pa.string()),
        ("n_captions", pa.int32()),
        ("source", pa.string()),
        ("source_ids", pa.list_(pa.string())),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("gsd_m", pa.float64()),
        ("capture_date", pa.string()),
        ("sensor", pa.string()),
        ("licence", pa.string()),
        ("west", pa.float64()),
        ("south", pa.float64()),
        ("east", pa.float64()),
        ("north", pa.float64()),
        ("crs", pa.string()),
        ("n_objects", pa.int32()),
        ("labels", pa.list_(pa.string())),
        ("image_sha256", pa.string()),
        ("extra", pa.string()),
        ("geometry", pa.binary()),
    ]
)

# GeoParquet 1.1 metadata: WKB geometry column, lon/lat (no "crs" member means OGC:CRS84).
GEO_METADATA = {
    "version": "1.1.0",
    "primary_column": "geometry",
    "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}},
}


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return SHARD_PATTERN.format(index)


def dumps(obj: Any) -> str:
    """Deterministic JSON (sorted keys, UTF-8, 2-space indent) used for every file we write."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def package_versions(names: Iterable[str] = RECORDED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (missing ones are left out) plus Python's."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def hash_path(path: str | Path, *, chunk: int = 1 << 20) -> dict[str, Any]:
    """Describe an input for provenance: sha256 of a file, or of a folder's listing.

    A folder is hashed by its sorted relative paths and sizes (not contents), which is cheap on
    large image folders and still changes when files are added, removed or resized.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        n = 0
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            digest.update(f"{p.relative_to(path).as_posix()}\0{p.stat().st_size}\n".encode())
            n += 1
        return {
            "path": str(path),
            "kind": "folder",
            "files": n,
            "listing_sha256": digest.hexdigest(),
        }
    if not path.exists():
        return {"path": str(path), "kind": "missing"}
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return {
        "path": str(path),
        "kind": "file",
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }


# --------------------------------------------------------------------------------------------
# Writing


@dataclass
class ShardStats:
    """What happened while writing one shard."""

    shard: str
    written: int = 0
    skipped: int = 0
    skips: list[dict[str, str]] = field(default_factory=list)

    def skip(self, item: str, reason: str, detail: str = "") -> None:
        """Record one skipped item."""
        self.skipped += 1
        self.skips.append({"item": item, "reason": reason, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, with skip counts by reason."""
        return {
            "shard": self.shard,
            "written": self.written,
            "skipped": self.skipped,
            "skip_reasons": dict(sorted(Counter(s["reason"] for s in self.skips).items())),
            "skips": self.skips,
        }


def _compact_json(obj: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON: what programs read inside shards (deterministic).

    orjson writes a sample's metadata (hundreds of pixel coordinates) ten times faster than the
    standard library, and the same bytes as ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` for finite floats of ordinary size (``1e-5`` where json has ``1e-05``).
    Values it does not handle (numpy scalars, huge ints...) go through the standard library.
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def box_wkb(west: float, south: float, east: float, north: float) -> bytes:
    """WKB of ``shapely.box(west, south, east, north)``, byte for byte, without building it.

    One per manifest row: packing 5 points is a tenth of the cost of a shapely round trip.
    """
    return _BOX_WKB.pack(
        1, 3, 1, 5, east, south, east, north, west, north, west, south, east, south
    )


_BOX_WKB = struct.Struct("<BIII10d")  # little endian, Polygon, 1 ring, 5 points


def _manifest_row(sample: Sample, shard: str, encoded: Encoded) -> dict[str, Any]:
    b = sample.bounds
    geometry = box_wkb(b.west, b.south, b.east, b.north) if b is not None else None
    return {
        "key": sample.key,
        "shard": shard,
        "caption": sample.caption,
        "n_captions": len(sample.captions),
        "source": sample.source,
        "source_ids": sample.source_ids,
        "width": encoded.size[0],
        "height": encoded.size[1],
        "gsd_m": sample.gsd_m,
        "capture_date": sample.capture_date,
        "sensor": sample.sensor,
        "licence": sample.licence,
        "west": b.west if b else None,
        "south": b.south if b else None,
        "east": b.east if b else None,
        "north": b.north if b else None,
        "crs": b.crs if b else None,
        "n_objects": len(sample.objects),
        "labels": sorted({o.label for o in sample.objects}),
        "image_sha256": encoded.sha256,
        "extra": json.dumps(sample.extra, sort_keys=True, ensure_ascii=False),
        "geometry": geometry,
    }


def write_geoparquet(path: Path, table: pa.Table, geo: Mapping[str, Any] | None = None) -> None:
    """Write ``table`` as GeoParquet (WKB ``geometry`` in lon/lat, zstd), atomically.

    The manifest and every other table with a lon/lat ``geometry`` column (search indexes'
    tile tables, OSM feature parts) go through here, so GeoPandas, DuckDB and QGIS read them
    all the same way.

    Args:
        path: Output file.
        table: The table; its ``geometry`` column holds WKB.
        geo: GeoParquet ``geo`` metadata (default: polygons, :data:`GEO_METADATA`).
    """
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"geo": json.dumps(geo or GEO_METADATA).encode()}
    )
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue().to_pybytes())


def _write_parquet(path: Path, rows: list[dict[str, Any]] | pa.Table) -> None:
    table = (
        rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    )
    write_geoparquet(path, table)


T = TypeVar("T")


class Encoded(NamedTuple):
    """A sample's image as written: JPEG bytes, ``(width, height)`` and the bytes' SHA-256."""

    jpeg: bytes
    size: tuple[int, int]
    sha256: str


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` consecutive items of any iterable (the last may be shorter).

    Raises:
        ValueError: If ``size`` is below 1.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class DatasetWriter:
    """Writes shards of a terrascribe dataset into ``out_dir``, one complete shard at a time.

    Args:
        out_dir: Dataset folder (created if needed).
        jpeg_quality: Quality for images that must be (re-)encoded; RGB JPEG input is kept as is.
    """

    def __init__(self, out_dir: str | Path, *, jpeg_quality: int = 95) -> None:
        self.out_dir = Path(out_dir)
        self.jpeg_quality = jpeg_quality
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / PARTS_DIR).mkdir(exist_ok=True)

    def stats_path(self, index: int) -> Path:
        """Path of shard ``index``'s stats file (its presence marks the shard complete)."""
        return self.out_dir / f"shard-{index:06d}.stats.json"

    def is_complete(self, index: int) -> bool:
        """Whether shard ``index`` was fully written by an earlier run."""
        return self.stats_path(index).exists()

    def write_shard(self, index: int, items: Iterable[Sample | Skip]) -> ShardStats:
        """Write shard ``index`` from a stream of samples and skips.

        Items that cannot be written (undecodable image, duplicate key) are recorded as skips. If
        the stream raises, nothing of this shard is kept and the error propagates, so a re-run
        writes it again from scratch.

        Images are encoded on a background thread, a batch behind the stream (the JPEG
        encoder releases the GIL, so the stream makes the next samples meanwhile); samples are
        still written, and skips recorded, in stream order.

        Returns:
            The shard's stats (also written to ``shard-NNNNNN.stats.json``).
        """
        name = shard_name(index)
        final = self.out_dir / name
        tmp = final.with_name(name + ".tmp")
        stats = ShardStats(shard=name)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        pending: deque[tuple[list[Sample | Skip], Future]] = deque()

        def write_oldest(tar: TarWriter) -> None:
            batch, encoding = pending.popleft()
            for item, encoded in zip(batch, encoding.result(), strict=True):
                if isinstance(item, Skip):
                    stats.skip(item.item, item.reason, item.detail)
                else:
                    self._add_sample(tar, item, encoded, name, seen, rows, stats)

        try:
            with (
                TarWriter(tmp) as tar,
                ThreadPoolExecutor(1, thread_name_prefix="jpeg") as encoder,
            ):
                for batch in batched(items, _ENCODE_BATCH):
                    pending.append((batch, encoder.submit(self._encode_all, batch)))
                    if len(pending) > 1:
                        write_oldest(tar)
                while pending:
                    write_oldest(tar)
            if stats.written:
                os.replace(tmp, final)
            else:
                tmp.unlink()
            _write_parquet(self.out_dir / PARTS_DIR / f"shard-{index:06d}.parquet", rows)
            atomic_write_text(self.stats_path(index), dumps(stats.to_dict()))
        except BaseException:
            for _, encoding in pending:
                encoding.cancel()
            tmp.unlink(missing_ok=True)
            raise
        return stats

    def _encode_all(self, batch: list[Sample | Skip]) -> list[Encoded | ImageError | None]:
        """Encode (and hash) each sample's image; None for skips and image-less samples."""
        out: list[Encoded | ImageError | None] = []
        for item in batch:
            if isinstance(item, Skip) or item.image is None:
                out.append(None)
                continue
            try:
                jpeg, size = to_jpeg(item.image, source=item.key, quality=self.jpeg_quality)
            except ImageError as err:  # recorded as a skip, in stream order
                out.append(err)
                continue
            out.append(Encoded(jpeg, size, hashlib.sha256(jpeg).hexdigest()))
        return out

    def _add_sample(
        self,
        tar: TarWriter,
        sample: Sample,
        encoded: Encoded | ImageError | None,
        shard: str,
        seen: set[str],
        rows: list[dict[str, Any]],
        stats: ShardStats,
    ) -> None:
        if sample.key in seen:
            stats.skip(sample.key, "duplicate key", "the same key appeared earlier in this shard")
            return
        if encoded is None:
            stats.skip(sample.key, "no image", "sample has no image data")
            return
        if isinstance(encoded, ImageError):
            stats.skip(sample.key, "corrupt image", str(encoded))
            return
        seen.add(sample.key)
        meta = sample.metadata()
        meta["width"], meta["height"] = encoded.size
        tar.add(f"{sample.key}.jpg", encoded.jpeg)
        tar.add(f"{sample.key}.txt", sample.caption.encode("utf-8"))
        tar.add(f"{sample.key}.json", _compact_json(meta))
        rows.append(_manifest_row(sample, shard, encoded))
        stats.written += 1

    def finalize(
        self,
        *,
        builder: str,
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        inputs: Sequence[str | Path | Mapping[str, Any]] = (),
        command: Sequence[str] | None = None,
        n_shards: int | None = None,
        report: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Merge shard parts into the manifest; write ``sizes.json`` and ``dataset.json``.

        Args:
            builder: Name of the builder ("osm", "boxes", "llm", "curate.filter"...).
            params: Builder parameters (JSON-serialisable) for the record.
            seed: The seed used.
            inputs: Input paths (hashed here) or already-made input descriptions.
            command: The command line; defaults to ``sys.argv``.
            n_shards: Expected number of shards; an incomplete one raises :class:`DatasetError`.
            report: Builder-specific statistics stored under ``report``.

        Returns:
            The content of ``dataset.json``.
        """
        indices = sorted(int(p.name[6:12]) for p in self.out_dir.glob("shard-*.stats.json"))
        if n_shards is not None:
            missing = sorted(set(range(n_shards)) - set(indices))
            if missing:
                raise DatasetError(
                    f"{self.out_dir}: shards {missing[:10]} are not complete; run the build again "
                    "to finish them"
                )
        tables, sizes = [], {}
        written = skipped = 0
        reasons: Counter[str] = Counter()
        for i in indices:
            stats = json.loads(self.stats_path(i).read_text())
            written += stats["written"]
            skipped += stats["skipped"]
            reasons.update(stats["skip_reasons"])
            if stats["written"]:
                sizes[shard_name(i)] = stats["written"]
            tables.append(pq.read_table(self.out_dir / PARTS_DIR / f"shard-{i:06d}.parquet"))
        manifest = (pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()).cast(
            MANIFEST_SCHEMA
        )
        keys = manifest.column("key").to_pylist()
        if len(keys) != len(set(keys)):
            dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
            raise DatasetError(f"{self.out_dir}: duplicate keys across shards: {dupes[:10]}")
        _write_parquet(self.out_dir / MANIFEST, manifest)
        atomic_write_text(self.out_dir / "sizes.json", dumps(sizes))
        info = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "builder": builder,
            "command": list(command) if command is not None else _command_line(),
            "params": dict(params or {}),
            "seed": seed,
            "inputs": [i if isinstance(i, Mapping) else hash_path(i) for i in inputs],
            "versions": package_versions(),
            "counts": {
                "samples": written,
                "shards": len(sizes),
                "skipped": skipped,
                "skip_reasons": dict(sorted(reasons.items())),
            },
            "report": dict(report or {}),
        }
        atomic_write_text(self.out_dir / "dataset.json", dumps(info))
        return info


_SECRET_QUERY = re.compile(
    r"(?i)([?&][^=&#]*(?:key|token|secret|password|passwd|sig)[^=&#]*=)[^&#]*"
)
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@")
_SECRET_OPTION = re.compile(r"(?i)^--?[a-z0-9-]*(?:api-key|token|secret|password)$")


def redact(text: str) -> str:
    """Remove credentials from a URL or argument: ``user:pass@`` and ``?api_key=...`` values."""
    return _SECRET_QUERY.sub(r"\1REDACTED", _URL_USERINFO.sub(r"\1REDACTED@", text))


def _command_line() -> list[str]:
    """``sys.argv`` as recorded in dataset.json: program name only, credentials redacted."""
    argv = [redact(a) for a in sys.argv]
    if argv:
        argv[0] = Path(argv[0]).name
    for i in range(1, len(argv)):
        name = argv[i - 1].split("=", 1)[0]
        if _SECRET_OPTION.match(name):
            argv[i] = "REDACTED"
        elif _SECRET_OPTION.match(argv[i].split("=", 1)[0]) and "=" in argv[i]:
            argv[i] = argv[i].split("=", 1)[0] + "=REDACTED"
    return argv


def _params_fingerprint(builder: str, params: Mapping[str, Any], seed: int | None) -> str:
    payload = json.dumps({"builder": builder, "params": params, "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _write_job(
    out_dir: str,
    jpeg_quality: int,
    make_items: Callable[[T], Iterable[Sample | Skip]],
    index: int,
    job: T,
) -> dict[str, Any]:
    return (
        DatasetWriter(out_dir, jpeg_quality=jpeg_quality)
        .write_shard(index, make_items(job))
        .to_dict()
    )


def write_dataset(
    out_dir: str | Path,
    jobs: Sequence[T],
    make_items: Callable[[T], Iterable[Sample | Skip]],
    *,
    builder: str,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    inputs: Sequence[str | Path | Mapping[str, Any]] = (),
    workers: int = 1,
    executor: str = "local",
    jpeg_quality: int = 95,
    report: Callable[[Path], Mapping[str, Any]] | Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a dataset: job ``i`` becomes shard ``i``; complete shards of an earlier run are kept.

    ``make_items`` must be a picklable (module-level) callable when ``workers > 1`` or with Ray; it
    runs in the worker and its shard is written there, so images never cross process boundaries.

    Args:
        out_dir: Dataset folder.
        jobs: Deterministic partition of the input (e.g. lists of files, spatial cells).
        make_items: Turns one job into samples and skips.
        builder: Builder name recorded in ``dataset.json``.
        params: Builder parameters; a re-run into the same folder must use the same ones.
        seed: Seed recorded in ``dataset.json`` (the builder itself must derive randomness from it).
        inputs: Input paths or descriptions for provenance.
        workers: Parallel workers (local processes, or Ray tasks).
        executor: ``"local"`` or ``"ray"``.
        jpeg_quality: JPEG quality for re-encoded images.
        report: Builder statistics for ``dataset.json``, or a callable computing them from the
            finished folder.
        progress: Show a progress bar.

    Returns:
        The content of ``dataset.json``.

    Raises:
        DatasetError: If ``out_dir`` holds a dataset built with other parameters, or shards failed.
    """
    from terrascribe.scale import run_tasks

    out = Path(out_dir)
    writer = DatasetWriter(out, jpeg_quality=jpeg_quality)
    params = dict(params or {})
    fingerprint = _params_fingerprint(builder, params, seed)
    params_file = out / PARAMS_FILE
    if params_file.exists():
        recorded = json.loads(params_file.read_text())
        if recorded.get("fingerprint") != fingerprint:
            raise DatasetError(
                f"{out} holds a dataset built with other parameters "
                f"(builder {recorded.get('builder')!r}); choose another output folder or delete it"
            )
    else:
        atomic_write_text(
            params_file,
            dumps({"builder": builder, "params": params, "seed": seed, "fingerprint": fingerprint}),
        )
    for stale in out.glob("*.tmp"):
        stale.unlink()
    todo = [(i, job) for i, job in enumerate(jobs) if not writer.is_complete(i)]
    import functools

    task = functools.partial(_write_job, str(out), jpeg_quality, make_items)
    failures = []
    for (i, _), result in zip(
        todo,
        run_tasks(
            task,
            todo,
            workers=workers,
            executor=executor,
            description=f"build {builder}",
            progress=progress,
            star=True,
        ),
        strict=True,
    ):
        if isinstance(result, BaseException):
            failures.append((i, result))
    if failures:
        detail = "; ".join(f"shard {i}: {type(e).__name__}: {e}" for i, e in failures[:5])
        raise DatasetError(
            f"{len(failures)} of {len(jobs)} shards failed ({detail}); the others are kept: "
            "fix the cause and run the same command again to finish"
        )
    extra = report(out) if callable(report) else report
    return writer.finalize(
        builder=builder,
        params=params,
        seed=seed,
        inputs=inputs,
        n_shards=len(jobs),
        report=extra,
    )


# --------------------------------------------------------------------------------------------
# Reading


class Dataset:
    """A terrascribe dataset on disk: its manifest, its shards, its samples.

    Args:
        path: Dataset folder.

    Raises:
        DatasetError: If the folder is not a complete terrascribe dataset.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: no such dataset folder")
        info_path = self.path / "dataset.json"
        if not info_path.exists() or not (self.path / MANIFEST).exists():
            raise DatasetError(
                f"{self.path}: not a complete terrascribe dataset (dataset.json or {MANIFEST} is "
                "missing); if a build was interrupted, run it again to finish"
            )
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        if self.info.get("format") != FORMAT_NAME:
            raise DatasetError(f"{info_path}: not a terrascribe dataset description")
        if self.info.get("format_version", 0) > FORMAT_VERSION:
            raise DatasetError(
                f"{info_path}: format version {self.info['format_version']} is newer than this "
                f"terrascribe reads ({FORMAT_VERSION}); upgrade terrascribe"
            )
        sizes_path = self.path / "sizes.json"
        self.sizes: dict[str, int] = (
            json.loads(sizes_path.read_text()) if sizes_path.exists() else {}
        )

    def __len__(self) -> int:
        return sum(self.sizes.values())

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, samples={len(self)}, shards={len(self.sizes)})"

    @property
    def shards(self) -> list[Path]:
        """Paths of the shard tar files, in order."""
        return [self.path / name for name in sorted(self.sizes)]

    def shard_urls(self) -> str:
        """Brace-expanded shard pattern for webdataset and open_clip (``shard-{0..3}.tar``)."""
        indices = sorted(int(name[6:12]) for name in self.sizes)
        if not indices:
            raise DatasetError(f"{self.path}: dataset has no shards")
        if indices == list(range(indices[0], indices[-1] + 1)):
            return str(self.path / f"shard-{{{indices[0]:06d}..{indices[-1]:06d}}}.tar")
        return "::".join(str(p) for p in self.shards)

    def manifest(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The manifest as a pandas DataFrame."""
        return pq.read_table(
            self.path / MANIFEST, columns=list(columns) if columns else None
        ).to_pandas()

    def query(self, where: str) -> pd.DataFrame:
        """Manifest rows matching a pandas query, e.g. ``"gsd_m < 1 and source == 'osm'"``."""
        return self.manifest().query(where)

    def samples(
        self,
        *,
        keys: Iterable[str] | None = None,
        where: str | None = None,
        with_images: bool = True,
    ) -> Iterator[Sample]:
        """Iterate samples in shard order, optionally only ``keys`` or rows matching ``where``.

        Images come as JPEG bytes (``sample.image``): see :func:`terrascribe.images.decode_rgb`.
        """
        wanted: set[str] | None = set(keys) if keys is not None else None
        shards: Iterable[str] = sorted(self.sizes)
        rows = self.query(where) if where is not None else None  # holds key and shard
        if rows is not None:
            chosen = set(rows["key"])
            wanted = chosen if wanted is None else wanted & chosen
        if wanted is not None:
            if rows is None:
                rows = self.manifest(columns=["key", "shard"])
            shards = sorted(set(rows.loc[rows["key"].isin(wanted), "shard"]))
        for name in shards:
            for sample in iter_shard(self.path / name, with_images=with_images):
                if wanted is None or sample.key in wanted:
                    yield sample

    def __iter__(self) -> Iterator[Sample]:
        return self.samples()

    def torch_dataset(
        self,
        transform: Callable[[Any], Any] | None = None,
        *,
        shuffle: int = 0,
        seed: int = 0,
    ) -> torch.utils.data.IterableDataset:
        """A webdataset pipeline yielding dicts ``{"key", "image", "caption", "meta"}``.

        Args:
            transform: Applied to the decoded PIL image (e.g. an open_clip preprocess).
            shuffle: Shuffle buffer size (0: shard order).
            seed: Seed for shard and sample shuffling.
        """
        import webdataset as wds

        pipeline = wds.WebDataset(
            [str(p) for p in self.shards],
            shardshuffle=False if not shuffle else len(self.shards),
            seed=seed if shuffle else None,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            empty_check=False,
        )
        if shuffle:
            pipeline = pipeline.shuffle(shuffle, rng=random.Random(seed))
        pipeline = pipeline.decode("pil").map(
            lambda s: {
                "key": s["__key__"],
                "image": transform(s["jpg"]) if transform else s["jpg"],
                "caption": s["txt"],
                "meta": s["json"],
            }
        )
        return pipeline


def iter_shard(path: str | Path, *, with_images: bool = True) -> Iterator[Sample]:
    """Iterate the samples of one shard tar, in the order they were written.

    Raises:
        DatasetError: If the tar is unreadable or a sample's JSON is malformed.
    """
    path = Path(path)
    current: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if key != current:
                    if current is not None:
                        yield _sample_from_parts(path, current, parts, with_images)
                    current, parts = key, {}
                if ext == "jpg" and not with_images:
                    continue
                fileobj = tar.extractfile(member)
                assert fileobj is not None
                parts[ext] = fileobj.read()
            if current is not None:
                yield _sample_from_parts(path, current, parts, with_images)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DatasetError(f"{path}: unreadable shard ({err})") from None


def _sample_from_parts(path: Path, key: str, parts: dict[str, bytes], with_images: bool) -> Sample:
    if "json" not in parts:
        raise DatasetError(f"{path}: sample {key!r} has no .json member")
    try:
        meta = json.loads(parts["json"])
        return Sample.from_metadata(meta, image=parts.get("jpg") if with_images else None)
    except (ValueError, KeyError, RecordError) as err:
        raise DatasetError(f"{path}: sample {key!r} has malformed metadata ({err})") from None
