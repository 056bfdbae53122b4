"""Image-caption similarity (CLIP score) of every sample, with any zoo model, as a manifest view.

SkyScript ranked its pairs by the cosine similarity of CLIP image and caption embeddings and kept
the top fraction; :mod:`terrascribe.curate.filter` does that cut. The scores are written as a view
(``scores.parquet``: ``key, clip_score, clip_score_mean``) whose parquet metadata names the model
and its fingerprint, so a score is never compared with one from another model by accident.

Embedding goes shard by shard through :func:`terrascribe.models.encode.encode_images` /
``encode_texts`` with the per-item embedding cache every tool shares (by default
:func:`terrascribe.models.encode.default_cache_dir`), so an interrupted run resumes where it
stopped, and images or captions that evaluation or search already embedded with the same model
(in any grouping) are not embedded again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from terrascribe.curate.views import open_dataset, write_view
from terrascribe.progress import track
from terrascribe.shards import Dataset, iter_shard

if TYPE_CHECKING:
    from terrascribe.models.zoo import LoadedModel


def score_samples(
    bundle: LoadedModel,
    images: list[bytes],
    captions: list[list[str]],
    *,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of each image with its first caption and, averaged, with all of them.

    Returns:
        ``(clip_score, clip_score_mean)``, float32 arrays of length ``len(images)``.
    """
    from terrascribe.models.encode import encode_images, encode_texts

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} caption lists")
    if not images:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    img = encode_images(bundle, images, batch_size=batch_size, cache_dir=cache_dir, progress=False)
    flat = [c for cs in captions for c in cs]
    owner = np.repeat(np.arange(len(captions)), [len(cs) for cs in captions])
    txt = encode_texts(bundle, flat, batch_size=batch_size * 4, cache_dir=cache_dir, progress=False)
    sims = np.einsum("ij,ij->i", img[owner], txt).astype(np.float32)
    first = np.concatenate(([0], np.cumsum([len(cs) for cs in captions])[:-1]))
    mean = np.bincount(owner, weights=sims) / np.bincount(owner)
    return sims[first], mean.astype(np.float32)


def score_dataset(
    dataset: Dataset | str | Path,
    bundle: LoadedModel,
    out: str | Path | None = None,
    *,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every sample of a dataset and (optionally) write the view.

    Args:
        dataset: The dataset.
        bundle: A loaded model (:func:`terrascribe.models.zoo.load_model`).
        out: View path (``scores.parquet``); None: only return the scores.
        batch_size: Images per forward pass.
        cache_dir: Embedding cache (default: the shared
            :func:`~terrascribe.models.encode.default_cache_dir`), which also makes an
            interrupted run resume.
        progress: Show a progress bar (one step per shard).

    Returns:
        ``key, clip_score, clip_score_mean`` in manifest order.
    """
    from terrascribe.models.encode import default_cache_dir

    ds = open_dataset(dataset)
    if cache_dir is None:
        cache_dir = default_cache_dir()
    frames = []
    for shard in track(ds.shards, "score shards", enabled=progress):
        keys, images, captions = [], [], []
        for sample in iter_shard(shard):
            keys.append(sample.key)
            images.append(sample.image)
            captions.append(sample.captions)
        first, mean = score_samples(
            bundle, images, captions, batch_size=batch_size, cache_dir=cache_dir
        )
        frames.append(pd.DataFrame({"key": keys, "clip_score": first, "clip_score_mean": mean}))
    scores = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({"key": [], "clip_score": [], "clip_score_mean": []})
    )
    order = ds.manifest(columns=["key"])["key"]
    scores = scores.set_index("key").reindex(order).reset_index()
    if out is not None:
        write_view(out, scores, meta=score_meta(ds, bundle))
    return scores


def score_meta(ds: Dataset, bundle: LoadedModel) -> dict[str, Any]:
    """What a score view records about how it was made."""
    return {
        "kind": "clip_score",
        "dataset": str(ds.path),
        "model": bundle.name,
        "pretrained": bundle.pretrained,
        "fingerprint": bundle.fingerprint,
        "columns": {
            "clip_score": "cosine(image, first caption)",
            "clip_score_mean": "mean cosine(image, caption) over all captions",
        },
    }
