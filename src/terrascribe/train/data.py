"""Training data: terrascribe shards streamed with webdataset, mixed, augmented, resumable.

The stream is a pure function of the seed, the number of *streams* (``world_size x workers``)
and the position, so an interrupted run resumes on exactly the batches it would have seen:

* each DataLoader worker of each rank is one stream ``s`` of ``S``; it builds whole batches, and
  the DataLoader hands them out round-robin (worker 0, 1, ..., 0, ...), so after ``k`` batches on
  a rank, worker ``w`` has produced ``len(range(w, k, W))`` of them;
* per dataset and epoch the shard order is a seeded permutation; stream ``s`` reads shards
  ``s, s+S, ...`` of it, or, when the dataset has fewer shards than streams, every shard and
  keeps samples ``s, s+S, ...`` of it. It reads them in windows of ``shuffle_shards`` shards
  whose samples are shuffled together with a seeded permutation (the window is the shuffle
  buffer: a few thousand encoded JPEGs);
* each draw picks a dataset with probability proportional to its weight, from a generator
  seeded by ``(seed, stream, draw)``; datasets cycle through epochs independently, so a small
  dataset mixed with a large one is repeated, never exhausted;
* caption choice and augmentation draw from generators seeded by ``(seed, stream, draw)``, so
  they do not depend on what other workers did.

Resuming replays the dataset choices (cheap: random numbers only), skips whole shards by their
sizes (``sizes.json``) and reads only the shard it stopped in. Changing the number of workers or
ranks changes the stream, so a resumed run must keep them (the trainer checks).
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from terrascribe.shards import Dataset


class TrainDataError(ValueError):
    """Training data that cannot be used (missing dataset, bad weights, empty shards...)."""


# --------------------------------------------------------------------------------------------
# Augmentation


@dataclass(frozen=True)
class AugmentConfig:
    """RS augmentations applied to training images (all optional).

    Attributes:
        rotate90: Random rotation by a multiple of 90 degrees (overhead imagery has no "up").
        flip: Random horizontal and vertical flips.
        crop_scale: Area range of RandomResizedCrop, e.g. ``(0.67, 1.0)`` (SkyScript's); None
            resizes and centre-crops instead.
        crop_ratio: Aspect-ratio range of the random crop.
        color_jitter: Strength of brightness/contrast/saturation jitter (0 = off; SkyScript 0.4).
    """

    rotate90: bool = True
    flip: bool = True
    crop_scale: tuple[float, float] | None = (0.67, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.333)
    color_jitter: float = 0.0

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation: resize + centre crop + normalise (the evaluation transform)."""
        return cls(rotate90=False, flip=False, crop_scale=None, color_jitter=0.0)


class _Rot90:
    """Rotate a PIL image by a random multiple of 90 degrees (torch RNG, so it is seeded)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        k = int(torch.randint(0, 4, ()).item())
        return img.rotate(90 * k, expand=True) if k else img

    def __repr__(self) -> str:
        return "RandomRot90()"


def build_transform(
    image_size: int | tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    augment: AugmentConfig | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """The training transform: PIL RGB image -> normalised float tensor.

    Random choices use the torch RNG; :class:`TrainStream` seeds it per sample.
    """
    from torchvision import transforms as T

    aug = augment or AugmentConfig.none()
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    steps: list[Any] = []
    if aug.rotate90:
        steps.append(_Rot90())
    if aug.crop_scale is not None:
        steps.append(
            T.RandomResizedCrop(
                size,
                scale=aug.crop_scale,
                ratio=aug.crop_ratio,
                interpolation=T.InterpolationMode.BICUBIC,
            )
        )
    else:
        steps += [T.Resize(size[0], interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    if aug.flip:
        steps += [T.RandomHorizontalFlip(), T.RandomVerticalFlip()]
    if aug.color_jitter > 0:
        j = aug.color_jitter
        steps.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
    steps += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    return T.Compose(steps)


# --------------------------------------------------------------------------------------------
# Sources and the deterministic stream plan


@dataclass(frozen=True)
class Source:
    """One training dataset: its shards (URLs or paths), their sample counts, its weight."""

    name: str
    shards: tuple[str, ...]
    sizes: tuple[int, ...]
    weight: float = 1.0

    @property
    def n_samples(self) -> int:
        """Samples in the dataset."""
        return sum(self.sizes)

    @classmethod
    def from_dataset(cls, path: str | Path, weight: float = 1.0) -> Source:
        """A source from a terrascribe dataset folder (reads ``sizes.json``)."""
        ds = Dataset(path)
        sizes = tuple(ds.sizes[p.name] for p in ds.shards)
        shards = tuple(str(p) for p in ds.shards)
        if not shards or sum(sizes) == 0:
            raise TrainDataError(f"{path}: dataset has no samples to train on")
        return cls(name=str(path), shards=shards, sizes=sizes, weight=float(weight))


def make_sources(
    paths: Sequence[str | Path], weights: Sequence[float] | None = None
) -> list[Source]:
    """Sources for several datasets; weights default to their sizes (plain concatenation)."""
    if not paths:
        raise TrainDataError("no training data given")
    if weights is not None and len(weights) != len(paths):
        raise TrainDataError(f"{len(weights)} weights for {len(paths)} datasets")
    sources = [Source.from_dataset(p) for p in paths]
    if weights is None:
        weights = [s.n_samples for s in sources]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise TrainDataError(f"weights must be non-negative and not all zero: {list(weights)}")
    return [
        Source(s.name, s.shards, s.sizes, float(w)) for s, w in zip(sources, weights, strict=True)
    ]


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(list(key))))


def _name_id(name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


class _SourceCursor:
    """The part of one source that one stream reads, epoch after epoch, from a given position.

    The read unit is a *window* of ``window`` shards: their samples are shuffled together, so a
    batch mixes several shards even when each shard holds correlated samples (one region, one
    class), as builders that write shards in input order produce.
    """

    def __init__(
        self, source: Source, index: int, stream: int, n_streams: int, seed: int, window: int = 1
    ):
        self.source, self.index = source, index
        self.stream, self.n_streams, self.seed = stream, n_streams, seed
        self.window = max(1, window)
        self.shard_split = len(source.shards) >= n_streams  # else: sample split in every shard

    def _epoch_windows(self, epoch: int) -> list[tuple[int, ...]]:
        order = _rng(self.seed, 1, self.index, epoch).permutation(len(self.source.shards))
        mine = order[self.stream :: self.n_streams] if self.shard_split else order
        mine = [int(i) for i in mine]
        return [tuple(mine[i : i + self.window]) for i in range(0, len(mine), self.window)]

    def _window_plan(self, epoch: int) -> Iterator[tuple[tuple[int, ...], list[int]]]:
        """(window, positions this stream keeps in its shuffled samples), in epoch order."""
        offset = 0
        for window in self._epoch_windows(epoch):
            size = sum(self.source.sizes[i] for i in window)
            if self.shard_split:
                kept = list(range(size))
            else:  # keep the epoch positions congruent to this stream
                kept = list(range((self.stream - offset) % self.n_streams, size, self.n_streams))
            yield window, kept
            offset += size

    def samples_per_epoch(self) -> int:
        """How many samples this stream reads in one epoch of the source."""
        return sum(len(kept) for _, kept in self._window_plan(0))

    def iterate(self, skip: int) -> Iterator[dict[str, Any]]:
        """Raw webdataset samples (dicts of bytes), forever, after skipping ``skip`` of them."""
        per_epoch = self.samples_per_epoch()
        if per_epoch == 0:
            raise TrainDataError(
                f"{self.source.name}: stream {self.stream} of {self.n_streams} gets no samples "
                "(fewer samples than data-loading streams): use fewer workers"
            )
        epoch, skip = divmod(skip, per_epoch)
        while True:
            for window, kept in self._window_plan(epoch):
                if skip >= len(kept):
                    skip -= len(kept)  # skipped without reading: sizes are known
                    continue
                yield from self._read(epoch, window, kept[skip:])
                skip = 0
            epoch += 1

    def _read_shard(self, shard: int) -> list[dict[str, Any]]:
        from webdataset.tariterators import tarfile_samples

        url = self.source.shards[shard]
        samples = list(tarfile_samples([{"url": url}]))
        expected = self.source.sizes[shard]
        if len(samples) != expected:
            raise TrainDataError(
                f"{url}: holds {len(samples)} samples but sizes.json says {expected}; the dataset "
                "changed since it was written: rebuild or fix sizes.json"
            )
        return samples

    def _read(
        self, epoch: int, window: tuple[int, ...], positions: list[int]
    ) -> Iterator[dict[str, Any]]:
        samples = [x for shard in window for x in self._read_shard(shard)]
        order = _rng(self.seed, 2, self.index, epoch, window[0]).permutation(len(samples))
        for pos in positions:
            yield samples[int(order[pos])]


def decode_size_for(image_size: int | Sequence[int], augment: AugmentConfig | None) -> int:
    """Smallest image side the transform needs to see at full resolution.

    JPEGs larger than twice this are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling),
    which costs a fraction of a full decode and resize and loses nothing the model can see.
    """
    side = image_size if isinstance(image_size, int) else max(image_size)
    scale = augment.crop_scale[0] if augment and augment.crop_scale else 1.0
    return math.ceil(side / math.sqrt(scale))


def _decode(
    sample: dict[str, Any], rng: np.random.Generator, min_side: int | None = None
) -> tuple[Image.Image, str]:
    key = sample.get("__key__", "?")
    try:
        image = Image.open(io.BytesIO(sample["jpg"]))
        if min_side and image.format == "JPEG":
            image.draft("RGB", (min_side, min_side))
        image = image.convert("RGB")
    except Exception as exc:
        raise TrainDataError(f"{sample.get('__url__')}: sample {key!r}: bad image ({exc})") from exc
    captions: list[str] = []
    if "json" in sample:
        try:
            captions = [c for c in json.loads(sample["json"]).get("captions", []) if c]
        except (ValueError, AttributeError) as exc:
            raise TrainDataError(f"{sample.get('__url__')}: sample {key!r}: bad json") from exc
    if not captions and "txt" in sample:
        captions = [sample["txt"].decode("utf-8")]
    if not captions:
        raise TrainDataError(f"{sample.get('__url__')}: sample {key!r} has no caption")
    return image, captions[int(rng.integers(len(captions)))]


class TrainStream(torch.utils.data.IterableDataset):
    """Batches ``(images, tokens)`` for one rank; each DataLoader worker is one stream.

    Args:
        sources: The datasets and their mixing weights.
        batch_size: Samples per batch (per rank).
        transform: PIL image -> tensor (see :func:`build_transform`).
        tokenizer: open_clip tokenizer.
        seed: Seed of everything random in the stream.
        rank: This process's rank. world_size: Number of ranks.
        workers: DataLoader workers (0 counts as one stream in the main process).
        start_batch: Batches this rank already consumed (resume position).
        decode_size: Decode JPEGs at reduced scale down to this side (see
            :func:`decode_size_for`); None decodes at full size.
        shuffle_shards: Shards shuffled together (the shuffle window; memory: this many shards
            of encoded samples per worker).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        batch_size: int,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        start_batch: int = 0,
        decode_size: int | None = None,
        shuffle_shards: int = 4,
    ) -> None:
        super().__init__()
        self.sources = list(sources)
        self.batch_size = batch_size
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.num_workers = workers
        self.workers = max(workers, 1)  # 0 workers: one stream in the main process
        self.start_batch = start_batch
        self.decode_size = decode_size
        self.shuffle_shards = shuffle_shards
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.probs = weights / weights.sum()
        self.skipped = 0

    def _choices(self, stream: int, start: int, count: int) -> np.ndarray:
        """Dataset index of draws ``start .. start+count`` of a stream (seeded per block)."""
        out = np.empty(count, dtype=np.int64)
        block = 4096
        i = 0
        while i < count:
            b, off = divmod(start + i, block)
            picks = _rng(self.seed, 3, stream, b).choice(len(self.sources), block, p=self.probs)
            take = min(block - off, count - i)
            out[i : i + take] = picks[off : off + take]
            i += take
        return out

    def _next_good(
        self, cursor: Iterator[dict[str, Any]], rng: np.random.Generator
    ) -> tuple[Image.Image, str]:
        """The next decodable sample; bad ones are skipped with a warning (deterministically)."""
        for _ in range(1000):
            try:
                return _decode(next(cursor), rng, self.decode_size)
            except TrainDataError as exc:
                self.skipped += 1
                if self.skipped <= 10:
                    warnings.warn(f"skipping a training sample: {exc}", stacklevel=2)
        raise TrainDataError("1000 bad samples in a row: the dataset looks broken")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.workers:
            msg = f"stream built for {self.workers} workers, run with {info.num_workers}"
            raise TrainDataError(msg)
        stream = self.rank * self.workers + worker
        n_streams = self.world_size * self.workers
        done_batches = len(range(worker, self.start_batch, self.workers))
        drawn = done_batches * self.batch_size
        past = np.bincount(self._choices(stream, 0, drawn), minlength=len(self.sources))
        cursors = [
            _SourceCursor(src, i, stream, n_streams, self.seed, self.shuffle_shards).iterate(
                int(past[i])
            )
            for i, src in enumerate(self.sources)
        ]
        while True:
            picks = self._choices(stream, drawn, self.batch_size)
            images, texts = [], []
            for j, d in enumerate(picks):
                rng = _rng(self.seed, 4, stream, drawn + j)
                image, caption = self._next_good(cursors[int(d)], rng)
                # Seed the augmentation per sample, without disturbing the caller's RNG.
                with torch.random.fork_rng(devices=[]):
                    # CPU generator only: torch.manual_seed would also (slowly) seed CUDA.
                    torch.default_generator.manual_seed(int(rng.integers(2**62)))
                    images.append(self.transform(image))
                texts.append(caption)
            drawn += self.batch_size
            yield torch.stack(images), self.tokenizer(texts)


def make_loader(stream: TrainStream, *, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over a :class:`TrainStream` (batches are built inside the workers)."""
    workers = stream.num_workers
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )


def samples_per_epoch(sources: Sequence[Source]) -> int:
    """Samples in one pass over all datasets (the unit of ``--epochs``)."""
    return sum(s.n_samples for s in sources)


def steps_for_epochs(epochs: float, sources: Sequence[Source], global_batch: int) -> int:
    """Optimizer steps that show the model ``epochs`` times the data, at least one."""
    return max(1, math.ceil(epochs * samples_per_epoch(sources) / global_batch))
