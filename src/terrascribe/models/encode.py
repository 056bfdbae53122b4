"""Batched image and text embedding, cached per item on disk so nothing is embedded twice.

Embeddings are float32, L2-normalised, one row per input, in input order.

The cache is content-addressed **per item**: every input gets a digest, and a store per
(model fingerprint, kind) maps digest -> vector. So the same images embedded in any grouping or
order, by any tool (evaluation embeds a dataset whole, curation shard by shard, search tile chunk
by tile chunk), are embedded once. Every tool defaults to the same folder,
:func:`default_cache_dir` (``$TERRASCRIBE_CACHE/embeddings``, default
``~/.cache/terrascribe/embeddings``).

Item digests (SHA-256):

* ``bytes``: of the bytes; PIL images and arrays: of their pixels, mode/dtype and size;
* paths: of the resolved path, file size and modification time (not the content: hashing a
  large image archive on every call would cost as much as decoding it). A file rewritten in
  place with the same size and timestamp would not be noticed; touch it or clear the cache;
* texts: of the UTF-8 text.

Store layout: ``<cache_dir>/<model fingerprint[:16]>/<images|texts>/`` holds append-only chunks,
``chunk-<time>-<pid>-<random>.vecs.npy`` (float32 rows) and ``...keys.npy`` (the rows' 32-byte
digests), each written atomically (temporary file + rename), vectors first: a chunk exists once
its keys file does. Names are unique, so several processes can append at once without locks; a
damaged chunk is ignored with a warning and its items are recomputed. Millions of items take
thousands of files, not millions: one chunk per call (or per 16,384 new rows). Each process loads
the keys lazily into sorted arrays (about 44 bytes per item) and reads vectors through memory maps.

An iterable that is not a sequence (e.g. a generator over a huge archive) is streamed block by
block, never held in memory, and cached per item like a sequence. ``data_key`` (optional) names
the stream: the call records its digests in order under that name, so a later call with the
same key whose items are all cached returns without reading the stream at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from terrascribe.images import decode_rgb, read_rgb
from terrascribe.models.zoo import LoadedModel
from terrascribe.progress import progress_bar
from terrascribe.shards import atomic_write_bytes, batched

ImageInput = Image.Image | str | Path | bytes | np.ndarray

KINDS = ("images", "texts")
DIGEST_DTYPE = np.dtype("S32")  # raw SHA-256 digests, compared byte-wise by numpy
_FLUSH_ROWS = 16384  # new rows per chunk at most: an interrupted call keeps what it embedded


def default_cache_dir() -> Path:
    """The embedding cache every tool shares: ``$TERRASCRIBE_CACHE/embeddings``.

    ``$TERRASCRIBE_CACHE`` defaults to ``~/.cache/terrascribe`` (model downloads live beside,
    under ``models/``).
    """
    base = os.environ.get("TERRASCRIBE_CACHE") or Path.home() / ".cache" / "terrascribe"
    return Path(base) / "embeddings"


# --------------------------------------------------------------------------------------------
# Digests


def item_digest(item: ImageInput) -> bytes:
    """Digest of one image input (see the module docstring for what is hashed)."""
    h = hashlib.sha256()
    if isinstance(item, (bytes, bytearray, memoryview)):
        h.update(b"bytes\0")
        h.update(item)
    elif isinstance(item, (str, Path)):
        path = Path(item).resolve()
        st = os.stat(path)
        h.update(f"path\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    elif isinstance(item, Image.Image):
        h.update(f"pil\0{item.mode}\0{item.size}".encode())
        h.update(item.tobytes())
    elif isinstance(item, np.ndarray):
        h.update(f"array\0{item.dtype}\0{item.shape}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    else:
        raise TypeError(f"unsupported image input {type(item).__name__}")
    return h.digest()


def text_digest(text: str) -> bytes:
    """Digest of one text: the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def images_fingerprint(images: Iterable[ImageInput]) -> str:
    """Fingerprint of a sequence of image inputs (order matters)."""
    h = hashlib.sha256(b"images-v1")
    for item in images:
        h.update(item_digest(item))
    return h.hexdigest()


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Fingerprint of a sequence of texts (order matters)."""
    h = hashlib.sha256(b"texts-v1")
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _digest_array(digests: Iterable[bytes]) -> np.ndarray:
    # frombuffer keeps every byte (building an S32 array from bytes objects would too, but
    # reading one element back as ``bytes`` strips trailing NULs: we never do that).
    return np.frombuffer(b"".join(digests), dtype=DIGEST_DTYPE)


# --------------------------------------------------------------------------------------------
# The per-item store


def store_dir(cache_dir: str | Path, bundle: LoadedModel, kind: str) -> Path:
    """Folder of the per-item store of ``kind`` (``images``/``texts``) for a model."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return Path(cache_dir) / bundle.fingerprint[:16] / kind


@dataclass
class _Level:
    """Sorted digests of some chunks, with where each row lives."""

    keys: np.ndarray  # (n,) S32, sorted
    chunk: np.ndarray  # (n,) int32 index into _Store.vectors
    row: np.ndarray  # (n,) int64 row in that chunk


def _merge(a: _Level, b: _Level) -> _Level:
    keys = np.concatenate([a.keys, b.keys])
    order = np.argsort(keys, kind="stable")  # stable: an older duplicate stays first
    return _Level(keys[order], np.concatenate([a.chunk, b.chunk])[order],
                  np.concatenate([a.row, b.row])[order])  # fmt: skip


@dataclass
class _Store:
    """Digest -> vector map over the append-only chunks of one folder, refreshed on each call.

    The index is a few sorted levels merged like a binary counter (each merge at least doubles a
    level), so a store grown by one chunk per call costs O(N log N) over its life, not per call.
    """

    path: Path
    dim: int
    vectors: list[np.ndarray] = field(default_factory=list)  # memory-mapped, one per chunk
    levels: list[_Level] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # chunk names loaded or found damaged
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        """Load the chunks other calls or processes appended since the last look."""
        try:
            names = sorted(
                p.name[: -len(".keys.npy")]
                for p in os.scandir(self.path)
                if p.name.endswith(".keys.npy")
            )
        except FileNotFoundError:
            return
        for name in names:
            if name not in self.seen:
                self.seen.add(name)
                self._load(name)

    def _load(self, name: str) -> None:
        keys_path = self.path / f"{name}.keys.npy"
        vecs_path = self.path / f"{name}.vecs.npy"
        try:
            keys = np.load(keys_path, allow_pickle=False)
            vecs = np.load(vecs_path, mmap_mode="r", allow_pickle=False)
            if keys.dtype != DIGEST_DTYPE or keys.ndim != 1:
                raise ValueError(f"keys are {keys.dtype} {keys.shape}, expected S32 (n,)")
            if vecs.dtype != np.float32 or vecs.shape != (len(keys), self.dim):
                raise ValueError(f"vectors are {vecs.dtype} {vecs.shape}, "
                                 f"expected float32 ({len(keys)}, {self.dim})")  # fmt: skip
        except (OSError, ValueError, EOFError) as err:
            warnings.warn(
                f"{vecs_path}: damaged embedding cache chunk ({err}); ignoring it, its items "
                "are embedded again",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self._add(keys, vecs)

    def _add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        chunk = len(self.vectors)
        self.vectors.append(vecs)
        order = np.argsort(keys, kind="stable")
        level = _Level(keys[order], np.full(len(keys), chunk, np.int32), order.astype(np.int64))
        self.levels.append(level)
        while len(self.levels) > 1 and len(self.levels[-2].keys) <= 2 * len(self.levels[-1].keys):
            last = self.levels.pop()
            self.levels[-1] = _merge(self.levels[-1], last)

    def lookup(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(found, chunk, row)`` for each digest; the first level holding it wins."""
        found = np.zeros(len(digests), bool)
        chunk = np.zeros(len(digests), np.int32)
        row = np.zeros(len(digests), np.int64)
        for level in self.levels:
            if not len(level.keys):
                continue
            pos = np.searchsorted(level.keys, digests)
            pos_c = np.minimum(pos, len(level.keys) - 1)
            hit = ~found & (pos < len(level.keys)) & (level.keys[pos_c] == digests)
            chunk[hit] = level.chunk[pos_c[hit]]
            row[hit] = level.row[pos_c[hit]]
            found |= hit
        return found, chunk, row

    def gather(self, chunk: np.ndarray, row: np.ndarray, out: np.ndarray, where: np.ndarray):
        """Copy the vectors at ``(chunk, row)`` into ``out[where]``."""
        for c in np.unique(chunk):
            sel = chunk == c
            out[where[sel]] = self.vectors[c][row[sel]]

    def append(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """Write one new chunk (vectors first, then the keys that make it visible)."""
        if not len(keys):
            return
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        atomic_write_bytes(self.path / f"{name}.vecs.npy", _npy(vecs.astype(np.float32)))
        atomic_write_bytes(self.path / f"{name}.keys.npy", _npy(keys.astype(DIGEST_DTYPE)))
        self.seen.add(name)
        # Read back through a memory map: a long run does not keep what it wrote in memory.
        self._add(keys.copy(), np.load(self.path / f"{name}.vecs.npy", mmap_mode="r"))

    def read_list(self, data_key: str) -> np.ndarray | None:
        path = self._list_path(data_key)
        try:
            keys = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            return None  # a damaged list only loses the shortcut: the stream is read again
        return keys if keys.dtype == DIGEST_DTYPE and keys.ndim == 1 else None

    def write_list(self, data_key: str, keys: np.ndarray) -> None:
        path = self._list_path(data_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace_shared(path, _npy(keys.astype(DIGEST_DTYPE)))

    def _list_path(self, data_key: str) -> Path:
        digest = hashlib.sha256(data_key.encode("utf-8")).hexdigest()
        return self.path / "lists" / f"{digest}.npy"


def _replace_shared(path: Path, data: bytes) -> None:
    """Atomic write of a file other processes may write at the same time (own temporary)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


_STORES: dict[tuple[str, int], _Store] = {}
_STORES_LOCK = threading.Lock()


def _open_store(cache_dir: str | Path, bundle: LoadedModel, kind: str) -> _Store:
    path = store_dir(cache_dir, bundle, kind).resolve()
    dim = int(bundle.embed_dim)
    with _STORES_LOCK:
        store = _STORES.get((str(path), dim))
        if store is None or not path.is_dir():  # a deleted cache folder starts afresh
            store = _STORES[(str(path), dim)] = _Store(path, dim)
    _note_model(path.parent, bundle)
    return store


def _note_model(folder: Path, bundle: LoadedModel) -> None:
    """Write ``model.json`` once, so a person can tell which model a folder belongs to."""
    note = folder / "model.json"
    if note.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    record = {"name": bundle.name, "pretrained": bundle.pretrained,
              "fingerprint": bundle.fingerprint, "embed_dim": int(bundle.embed_dim)}  # fmt: skip
    _replace_shared(note, json.dumps(record, indent=2).encode())


# --------------------------------------------------------------------------------------------
# Encoding


def to_pil(item: ImageInput) -> Image.Image:
    """Turn any supported image input into an RGB PIL image (errors name the file)."""
    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else item.convert("RGB")
    if isinstance(item, (str, Path)):
        return read_rgb(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_rgb(bytes(item))
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 array, got {item.shape} {item.dtype}")
        return Image.fromarray(item, mode="RGB")
    raise TypeError(f"unsupported image input {type(item).__name__}")


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


class _Preprocessed(torch.utils.data.Dataset):
    """Map-style view decoding and transforming images in DataLoader workers."""

    def __init__(self, items: Sequence[ImageInput], transform: Callable) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(to_pil(self.items[i]))


def _image_tensors(
    bundle: LoadedModel, images: Iterable[ImageInput], batch_size: int, num_workers: int
) -> Iterator[torch.Tensor]:
    if num_workers > 0 and isinstance(images, Sequence):
        loader = torch.utils.data.DataLoader(
            _Preprocessed(images, bundle.preprocess),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=bundle.device.type == "cuda",
        )
        yield from loader
        return
    for batch in batched(images, batch_size):
        yield torch.stack([bundle.preprocess(to_pil(x)) for x in batch])


@torch.inference_mode()
def _embed_batches(
    bundle: LoadedModel,
    batches: Iterator[torch.Tensor],
    encode: Callable[[torch.Tensor], torch.Tensor],
    float_input: bool,
) -> Iterator[np.ndarray]:
    """Embed batch by batch: float32, L2-normalised rows."""
    dtype = _model_dtype(bundle.model)
    autocast = bundle.precision.startswith("amp") and bundle.device.type == "cuda"
    amp_dtype = torch.bfloat16 if bundle.precision == "amp_bf16" else torch.float16
    for batch in batches:
        batch = batch.to(bundle.device, non_blocking=True)
        if float_input:
            batch = batch.to(dtype)
        with torch.autocast(bundle.device.type, dtype=amp_dtype, enabled=autocast):
            feats = encode(batch)
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        yield feats.cpu().numpy().astype(np.float32, copy=False)


def _embed(
    bundle: LoadedModel,
    batches: Iterator[torch.Tensor],
    encode: Callable[[torch.Tensor], torch.Tensor],
    total: int | None,
    description: str,
    progress: bool,
    float_input: bool,
) -> np.ndarray:
    out: list[np.ndarray] = []
    with progress_bar(total, description, enabled=progress) as advance:
        for emb in _embed_batches(bundle, batches, encode, float_input):
            out.append(emb)
            advance(len(emb))
    if not out:
        return np.zeros((0, bundle.embed_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


# A function embedding a list of items batch by batch.
_BatchEmbedder = Callable[[list[Any]], Iterator[np.ndarray]]


def _fill_from_store(
    store: _Store,
    items: list[Any],
    digests: np.ndarray,
    embed: _BatchEmbedder,
    advance: Callable[[int], None] | None,
    description: str,
    progress: bool,
) -> np.ndarray:
    """Rows for ``items``: stored ones looked up, the rest embedded once each and appended.

    ``advance`` counts embedded items on the caller's bar; None opens a bar here whose total is
    the number of items to embed (hits are not counted: they cost nothing).
    """
    out = np.empty((len(items), store.dim), np.float32)
    with store.lock:
        store.refresh()
        found, chunk, row = store.lookup(digests)
        store.gather(chunk[found], row[found], out, np.flatnonzero(found))
    missing = np.flatnonzero(~found)
    if not len(missing):
        return out
    # Embed each distinct missing digest once, in input order; duplicates are copied after.
    _, first = np.unique(digests[missing], return_index=True)
    todo = missing[np.sort(first)]
    pending_keys: list[np.ndarray] = []
    pending_vecs: list[np.ndarray] = []

    def flush() -> None:
        if pending_keys:
            with store.lock:
                store.append(np.concatenate(pending_keys), np.concatenate(pending_vecs))
            pending_keys.clear()
            pending_vecs.clear()

    with progress_bar(len(todo), description, enabled=progress and advance is None) as own:
        step = advance or own
        done = 0
        try:
            for emb in embed([items[i] for i in todo]):
                idx = todo[done : done + len(emb)]
                out[idx] = emb
                pending_keys.append(digests[idx])
                pending_vecs.append(emb)
                done += len(emb)
                step(len(emb))
                if sum(len(k) for k in pending_keys) >= _FLUSH_ROWS:
                    flush()
        finally:
            flush()  # what was embedded before an error or an interruption is kept
    if len(todo) < len(missing):
        order = np.argsort(digests[todo])
        src = todo[order[np.searchsorted(digests[todo][order], digests[missing])]]
        out[missing] = out[src]
    return out


def _cached(
    bundle: LoadedModel,
    kind: str,
    items: Iterable[Any],
    digest: Callable[[Any], bytes],
    embed: _BatchEmbedder,
    *,
    cache_dir: str | Path,
    block: int,
    description: str,
    progress: bool,
    data_key: str | None,
) -> np.ndarray:
    """Embed through the per-item store: a sequence in one go, a stream block by block."""
    store = _open_store(cache_dir, bundle, kind)
    if data_key is not None:
        listed = store.read_list(data_key)
        if listed is not None:
            out = np.empty((len(listed), store.dim), np.float32)
            with store.lock:
                store.refresh()
                found, chunk, row = store.lookup(listed)
                if found.all():
                    store.gather(chunk, row, out, np.arange(len(listed)))
                    return out
    if isinstance(items, Sequence):
        digests = _digest_array(digest(x) for x in items)
        out = _fill_from_store(store, list(items), digests, embed, None, description, progress)
        keys = [digests]
        parts = [out]
    else:
        iterator = iter(items)
        keys, parts = [], []
        with progress_bar(None, description, enabled=progress) as advance:
            while part := list(islice(iterator, block)):
                digests = _digest_array(digest(x) for x in part)
                parts.append(_fill_from_store(store, part, digests, embed, advance, "", False))
                keys.append(digests)
        out = np.concatenate(parts) if parts else np.zeros((0, store.dim), np.float32)
    if data_key is not None:
        store.write_list(data_key, np.concatenate(keys) if keys else np.zeros(0, DIGEST_DTYPE))
    return out


def encode_images(
    bundle: LoadedModel,
    images: Iterable[ImageInput],
    *,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    num_workers: int = 0,
    total: int | None = None,
    data_key: str | None = None,
) -> np.ndarray:
    """Embed images with a loaded model.

    Args:
        bundle: A :class:`~terrascribe.models.zoo.LoadedModel`.
        images: PIL images, paths, encoded bytes or (H, W, 3) uint8 arrays. A sequence, or any
            iterable (streamed, never held in memory; give ``total`` for the progress bar).
        batch_size: Images per forward pass.
        cache_dir: Per-item embedding cache folder (None: no caching); tools pass
            :func:`default_cache_dir` to share one.
        progress: Show a progress bar (with a cache, it counts only the images embedded).
        num_workers: DataLoader workers decoding images (sequences only; 0 = main process).
        total: Number of images, for iterables without ``len()`` (uncached progress bar).
        data_key: Optional name of the data (e.g. a dataset fingerprint): with ``cache_dir``,
            a later call with the same key whose items are all cached returns without reading
            ``images`` (no need to hash or even decode a huge stream again).

    Returns:
        (N, D) float32 array of L2-normalised embeddings, in input order.
    """
    if cache_dir is None:
        is_seq = isinstance(images, Sequence)
        return _embed(
            bundle,
            _image_tensors(bundle, images, batch_size, num_workers),
            bundle.model.encode_image,
            len(images) if is_seq else total,  # type: ignore[arg-type]
            "embed images",
            progress,
            float_input=True,
        )
    workers = num_workers if isinstance(images, Sequence) else 0

    def embed(subset: list[ImageInput]) -> Iterator[np.ndarray]:
        tensors = _image_tensors(bundle, subset, batch_size, workers)
        return _embed_batches(bundle, tensors, bundle.model.encode_image, float_input=True)

    return _cached(
        bundle,
        "images",
        images,
        item_digest,
        embed,
        cache_dir=cache_dir,
        block=batch_size * 64,
        description="embed images",
        progress=progress,
        data_key=data_key,
    )


def encode_texts(
    bundle: LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embed texts with a loaded model.

    Args:
        bundle: A :class:`~terrascribe.models.zoo.LoadedModel`.
        texts: The strings (a bare ``str`` is rejected: wrap it in a list).
        batch_size: Texts per forward pass.
        cache_dir: Per-item embedding cache folder (None: no caching).
        progress: Show a progress bar (with a cache, it counts only the texts embedded).

    Returns:
        (N, D) float32 array of L2-normalised embeddings, in input order.
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts takes a sequence of strings; wrap a single text in a list")
    texts = list(texts)

    def embed(subset: list[str]) -> Iterator[np.ndarray]:
        tokens = (bundle.tokenizer(batch) for batch in batched(subset, batch_size))
        return _embed_batches(bundle, tokens, bundle.model.encode_text, float_input=False)

    if cache_dir is None:
        tokens = (bundle.tokenizer(batch) for batch in batched(texts, batch_size))
        return _embed(
            bundle, tokens, bundle.model.encode_text, len(texts), "embed texts", progress, False
        )
    return _cached(
        bundle,
        "texts",
        texts,
        text_digest,
        embed,
        cache_dir=cache_dir,
        block=len(texts) or 1,
        description="embed texts",
        progress=progress,
        data_key=None,
    )


__all__ = [
    "default_cache_dir",
    "encode_images",
    "encode_texts",
    "images_fingerprint",
    "item_digest",
    "store_dir",
    "text_digest",
    "texts_fingerprint",
    "to_pil",
]
