"""Batched image and text embedding, cached on disk so nothing is embedded twice.

Embeddings are float32, L2-normalised, one row per input, in input order. With ``cache_dir``
they are stored as ``<cache_dir>/<model fingerprint[:16]>/<kind>-<data fingerprint>.npy`` (written
atomically), so evaluation, curation and search share them.

Data fingerprints (SHA-256 over one digest per item, in order):

* ``bytes``: the SHA-256 of the bytes; PIL images and arrays: of their pixels, mode and size;
* paths: the resolved path, file size and modification time (not the content: hashing a large
  image archive on every call would cost as much as decoding it). A file rewritten in place
  with the same size and timestamp would not be noticed; touch it or clear the cache;
* texts: the strings themselves.

An iterable that is not a sequence (e.g. a generator over a huge archive) is streamed batch by
batch, never held in memory; it is cached only under a ``data_key`` you give (the fingerprint of
whatever it is drawn from), since it cannot be fingerprinted without reading it first.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from terrascribe.images import decode_rgb, read_rgb
from terrascribe.models.zoo import LoadedModel
from terrascribe.progress import progress_bar
from terrascribe.shards import atomic_write_bytes

ImageInput = Image.Image | str | Path | bytes | np.ndarray


# --------------------------------------------------------------------------------------------
# Fingerprints


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


def cache_path(cache_dir: str | Path, bundle: LoadedModel, kind: str, data_fp: str) -> Path:
    """Where the embeddings of ``kind`` (``images``/``texts``) of some data live in the cache."""
    return Path(cache_dir) / bundle.fingerprint[:16] / f"{kind}-{data_fp}.npy"


def _cache_load(path: Path | None, n: int | None, dim: int) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged cache file is recomputed, never trusted
    if arr.ndim != 2 or arr.shape[1] != dim or (n is not None and arr.shape[0] != n):
        return None
    return arr


def _cache_store(path: Path | None, arr: np.ndarray) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


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


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    for batch in _batches(images, batch_size):
        yield torch.stack([bundle.preprocess(to_pil(x)) for x in batch])


@torch.inference_mode()
def _embed(
    bundle: LoadedModel,
    batches: Iterator[torch.Tensor],
    encode: Callable[[torch.Tensor], torch.Tensor],
    total: int | None,
    description: str,
    progress: bool,
    float_input: bool,
) -> np.ndarray:
    dtype = _model_dtype(bundle.model)
    autocast = bundle.precision.startswith("amp") and bundle.device.type == "cuda"
    amp_dtype = torch.bfloat16 if bundle.precision == "amp_bf16" else torch.float16
    out: list[np.ndarray] = []
    with progress_bar(total, description, enabled=progress) as advance:
        for batch in batches:
            batch = batch.to(bundle.device, non_blocking=True)
            if float_input:
                batch = batch.to(dtype)
            with torch.autocast(bundle.device.type, dtype=amp_dtype, enabled=autocast):
                feats = encode(batch)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
            out.append(feats.cpu().numpy())
            advance(len(batch))
    if not out:
        return np.zeros((0, bundle.embed_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


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
        cache_dir: Embedding cache folder (None: no caching).
        progress: Show a progress bar.
        num_workers: DataLoader workers decoding images (sequences only; 0 = main process).
        total: Number of images, for iterables without ``len()``.
        data_key: Identity of the data to cache under, instead of fingerprinting it (required to
            cache a non-sequence iterable).

    Returns:
        (N, D) float32 array of L2-normalised embeddings, in input order.
    """
    is_seq = isinstance(images, Sequence)
    n = len(images) if is_seq else total  # type: ignore[arg-type]
    path = None
    if cache_dir is not None and (is_seq or data_key):
        key = data_key or images_fingerprint(images)  # type: ignore[arg-type]
        path = cache_path(cache_dir, bundle, "images", key)
        cached = _cache_load(path, len(images) if is_seq else None, bundle.embed_dim)
        if cached is not None:
            return cached
    arr = _embed(
        bundle,
        _image_tensors(bundle, images, batch_size, num_workers),
        bundle.model.encode_image,
        n,
        "embed images",
        progress,
        float_input=True,
    )
    _cache_store(path, arr)
    return arr


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
        cache_dir: Embedding cache folder (None: no caching).
        progress: Show a progress bar.

    Returns:
        (N, D) float32 array of L2-normalised embeddings, in input order.
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts takes a sequence of strings; wrap a single text in a list")
    texts = list(texts)
    path = None
    if cache_dir is not None:
        path = cache_path(cache_dir, bundle, "texts", texts_fingerprint(texts))
        cached = _cache_load(path, len(texts), bundle.embed_dim)
        if cached is not None:
            return cached
    batches = (bundle.tokenizer(batch) for batch in _batches(texts, batch_size))
    arr = _embed(
        bundle,
        batches,
        bundle.model.encode_text,
        len(texts),
        "embed texts",
        progress,
        float_input=False,
    )
    _cache_store(path, arr)
    return arr


__all__ = [
    "cache_path",
    "encode_images",
    "encode_texts",
    "images_fingerprint",
    "item_digest",
    "texts_fingerprint",
    "to_pil",
]
