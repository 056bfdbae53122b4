"""Trainer: data stream, exact resume, checkpoints that open_clip loads, hf-hub export, errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from terrascribe.models.zoo import load_model
from terrascribe.records import Sample
from terrascribe.shards import write_dataset
from terrascribe.train import (
    AugmentConfig,
    TrainConfig,
    TrainError,
    TrainStream,
    build_transform,
    export_hf,
    make_sources,
    train,
)
from terrascribe.train.data import TrainDataError
from terrascribe.train.trainer import lr_factor

COLOURS = ("red", "green", "blue")


def make_items(job: tuple[str, int, int]):
    """Coloured squares with two captions each; key carries the dataset name."""
    name, shard, n = job
    rng = np.random.default_rng(shard)
    for i in range(n):
        c = i % 3
        img = rng.integers(0, 40, (40, 40, 3), dtype=np.uint8)
        img[..., c] += 180
        yield Sample(
            key=f"{name}-{shard}-{i}",
            image=img,
            captions=[f"a {COLOURS[c]} field", f"{COLOURS[c]} land from above"],
            source="other",
        )


def make_dataset(path: Path, name: str, shards: int, per_shard: int) -> Path:
    jobs = [(name, s, per_shard) for s in range(shards)]
    write_dataset(path, jobs, make_items, builder="test", seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train-data")
    return make_dataset(root / "a", "a", 3, 10), make_dataset(root / "b", "b", 1, 8)


def _config(datasets, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=[str(d) for d in datasets],
        weights=[1.0, 1.0],
        out=str(out),
        steps=6,
        batch_size=8,
        workers=0,
        warmup=2,
        lr=1e-3,
        save_every=2,
        log_every=1,
        progress=False,
        tensorboard=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ---------------------------------------------------------------------------------------------
# Data


def _stream(datasets, *, workers=0, start_batch=0, seed=0, rank=0, world_size=1, keys=None):
    sources = make_sources(datasets, [1.0, 1.0])
    bundle = load_model("ts-tiny")
    transform = build_transform(64, (0.5,) * 3, (0.5,) * 3, AugmentConfig())

    def tokenizer(texts):
        if keys is not None:
            keys.append(list(texts))
        return bundle.tokenizer(texts)

    return TrainStream(
        sources,
        batch_size=4,
        transform=transform,
        tokenizer=tokenizer,
        seed=seed,
        rank=rank,
        world_size=world_size,
        workers=workers,
        start_batch=start_batch,
    )


def _take(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_stream_is_seeded_and_resumes_at_any_batch(datasets) -> None:
    full = _take(_stream(datasets), 9)  # 36 draws: more than one epoch of b (8 samples)
    again = _take(_stream(datasets), 9)
    for (i1, t1), (i2, t2) in zip(full, again, strict=True):
        assert torch.equal(i1, i2) and torch.equal(t1, t2)
    other = _take(_stream(datasets, seed=1), 1)
    assert not torch.equal(other[0][0], full[0][0])
    for start in (1, 5, 8):
        resumed = _take(_stream(datasets, start_batch=start), 9 - start)
        for (i1, t1), (i2, t2) in zip(full[start:], resumed, strict=True):
            assert torch.equal(i1, i2) and torch.equal(t1, t2)


def test_mixing_weights_and_captions(datasets) -> None:
    texts: list[list[str]] = []
    stream = _stream(datasets, keys=texts)
    _take(stream, 50)
    flat = [t for batch in texts for t in batch]
    # both captions of a sample are used
    assert any(t.startswith("a ") for t in flat) and any("from above" in t for t in flat)
    # equal weights: the 8-sample dataset b is drawn about as often as the 30-sample a
    picks = stream._choices(0, 0, 2000)
    assert 0.45 < (picks == 1).mean() < 0.55


def test_streams_split_the_data(datasets) -> None:
    from terrascribe.train.data import _SourceCursor

    a, b = make_sources(datasets)
    # shard split (3 shards), sample split (1 shard); windows of 1 and 2 shards
    for source, n_streams, window in ((a, 2, 1), (a, 1, 2), (b, 3, 2)):
        seen = []
        for s in range(n_streams):
            cursor = _SourceCursor(source, 0, s, n_streams, 0, window)
            it = cursor.iterate(0)
            seen.append({next(it)["__key__"] for _ in range(cursor.samples_per_epoch())})
        assert sum(len(x) for x in seen) == source.n_samples
        assert len(set().union(*seen)) == source.n_samples  # disjoint and complete
    # a window shuffles several shards together: the first samples come from all three
    it = _SourceCursor(a, 0, 0, 1, 0, 3).iterate(0)
    assert len({next(it)["__key__"].split("-")[1] for _ in range(10)}) == 3


def test_bad_data_is_reported(datasets, tmp_path: Path) -> None:
    with pytest.raises(TrainDataError, match="2 weights for 1 datasets"):
        make_sources(datasets[:1], [1.0, 2.0])
    with pytest.raises(TrainDataError, match="not all zero"):
        make_sources(datasets, [0.0, 0.0])
    with pytest.raises(Exception, match="no such dataset folder"):
        make_sources([tmp_path / "missing"])


def test_lr_schedule() -> None:
    f = [lr_factor(s, warmup=2, total=10, schedule="cosine", min_ratio=0.1) for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(f[2:])) and f[-1] > 0.1
    assert lr_factor(5, warmup=0, total=10, schedule="const", min_ratio=0) == 1.0


# ---------------------------------------------------------------------------------------------
# Training


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights(datasets, tmp_path: Path) -> None:
    straight = train(_config(datasets, tmp_path / "straight"))
    assert straight.step == 6 and np.isfinite(straight.final_loss)

    first = train(_config(datasets, tmp_path / "resumed", stop_at_step=3))
    assert first.step == 3 and first.export is None
    second = train(_config(datasets, tmp_path / "resumed", resume=True))
    assert second.step == 6

    a, b = _weights(straight.checkpoint), _weights(second.checkpoint)
    assert a.keys() == b.keys()
    # CPU kernels are deterministic and every random draw is restored: bitwise equal.
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged"
    lines = [
        json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    ref = [
        json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [x["loss"] for x in lines] == [x["loss"] for x in ref]
    # keep_last=2 pruned the older checkpoints
    names = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").glob("*.pt"))
    assert names == ["step_00000004.pt", "step_00000006.pt"]


@pytest.mark.slow
def test_resume_with_workers_and_accumulation(datasets, tmp_path: Path) -> None:
    kw = dict(workers=2, accum_steps=2, steps=4, batch_size=4)
    straight = train(_config(datasets, tmp_path / "s", **kw))
    train(_config(datasets, tmp_path / "r", stop_at_step=1, **kw))
    resumed = train(_config(datasets, tmp_path / "r", resume=True, **kw))
    a, b = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_output_loads_in_open_clip_and_exports(datasets, tmp_path: Path) -> None:
    calls = []

    def eval_fn(model, preprocess, tokenizer):
        calls.append(model.training)
        return {"zeroshot_top1": 0.5}

    result = train(_config(datasets, tmp_path / "run", steps=2, eval_every=1), eval_fn=eval_fn)
    assert calls == [False, False]
    assert result.evals == {1: {"eval/zeroshot_top1": 0.5}, 2: {"eval/zeroshot_top1": 0.5}}
    trained = _weights(result.checkpoint)

    # straight into open_clip, checkpoint file as `pretrained`
    model, _, _ = open_clip.create_model_and_transforms(
        "ts-tiny", pretrained=str(result.checkpoint)
    )
    # (open_clip reads the checkpoint's "state_dict" with weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())

    # the hf-hub layout, through open_clip and through the zoo
    assert result.export is not None
    assert {p.name for p in result.export.iterdir()} == {
        "open_clip_config.json",
        "open_clip_model.safetensors",
    }
    hub_model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{result.export}")
    assert all(torch.equal(hub_model.state_dict()[k], v) for k, v in trained.items())
    bundle = load_model(str(result.export))
    assert bundle.embed_dim == 64
    assert all(torch.equal(bundle.model.state_dict()[k], v) for k, v in trained.items())
    again = load_model("ts-tiny", pretrained=str(result.export))
    assert again.fingerprint == bundle.fingerprint

    # continue training from the trained checkpoint as `pretrained`
    warm = train(_config(datasets, tmp_path / "warm", steps=1, pretrained=str(result.checkpoint)))
    assert warm.step == 1

    # the metrics log
    lines = [json.loads(x) for x in result.metrics.read_text().splitlines()]
    assert {"loss", "lr", "logit_scale", "samples_per_s"} <= lines[0].keys()
    assert any("eval/zeroshot_top1" in x for x in lines)

    # export of a run folder
    out = export_hf(tmp_path / "run", tmp_path / "exported")
    assert (out / "open_clip_model.safetensors").is_file()


def test_siglip_locked_towers_and_checkpointing(datasets, tmp_path: Path) -> None:
    result = train(
        _config(
            datasets,
            tmp_path / "sig",
            steps=2,
            loss="siglip",
            lock_text=True,
            grad_checkpointing=True,
            augment=AugmentConfig(color_jitter=0.3),
        )
    )
    weights = _weights(result.checkpoint)
    start = load_model("ts-tiny", seed=0).model.state_dict()
    assert "logit_bias" in weights
    assert torch.equal(weights["token_embedding.weight"], start["token_embedding.weight"])
    assert not torch.equal(weights["visual.conv1.weight"], start["visual.conv1.weight"])


def test_run_folder_guards(datasets, tmp_path: Path) -> None:
    train(_config(datasets, tmp_path / "run", steps=1))
    with pytest.raises(TrainError, match="already holds checkpoints"):
        train(_config(datasets, tmp_path / "run", steps=1))
    with pytest.raises(TrainError, match=r"settings differ.*batch_size"):
        train(_config(datasets, tmp_path / "run", steps=2, batch_size=4, resume=True))
    with pytest.raises(TrainError, match="loss must be"):
        _config(datasets, tmp_path / "x", loss="triplet")
    with pytest.raises(TrainError, match="not both"):
        _config(datasets, tmp_path / "x", epochs=1.0)
