"""The train-time evaluation hook: ``make_train_eval_fn`` for ``terrascribe.train``."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from terrascribe.evaluate.benchmarks import BenchmarkNotFoundError
from terrascribe.evaluate.runner import EvalOptions, EvaluationError, evaluate, make_train_eval_fn

CLASSES = ("forest", "lake", "desert")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A generated ``class/image`` folder: 3 classes x 6 images (RemoteCLIP split: 4 + 2)."""
    root = tmp_path_factory.mktemp("hook") / "scenes"
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(6):
            base = np.array([label * 80, 200 - label * 60, 40 + label * 70], np.float32)
            pixels = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def _perturbed(bundle, seed: int):
    """A copy of the bundle whose weights moved, as after some training steps."""
    model = copy.deepcopy(bundle.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return dataclasses.replace(bundle, model=model, fingerprint=f"perturbed-{seed}")


def test_hook_gives_the_runners_numbers_flat(scenes, tiny_model, tmp_path):
    eval_fn = make_train_eval_fn([scenes])
    got = eval_fn(*tiny_model)
    # acc5 is NaN with 3 classes: left out, the trainer logs floats
    assert set(got) == {"scenes/zeroshot/acc1", "scenes/zeroshot/mean_per_class_recall"}
    assert all(isinstance(v, float) for v in got.values())
    [path] = evaluate(tiny_model, scenes, "zeroshot", tmp_path, progress=False)
    ref = json.loads(path.read_text())["metrics"]
    assert got["scenes/zeroshot/acc1"] == ref["acc1"]
    assert got["scenes/zeroshot/mean_per_class_recall"] == ref["mean_per_class_recall"]


def test_hook_embeds_afresh_and_restores_train_mode(scenes, tiny_model, tmp_path, monkeypatch):
    from terrascribe.evaluate import runner

    embedded: list[np.ndarray] = []
    original = runner._Embedder.images

    def spy(self, items):
        embedded.append(original(self, items))
        return embedded[-1]

    monkeypatch.setattr(runner._Embedder, "images", spy)
    eval_fn = make_train_eval_fn([scenes], ("zeroshot", "knn"), max_per_class=3)
    moved = _perturbed(tiny_model, seed=1)
    moved.model.train()
    first = eval_fn(*tiny_model)
    assert len(embedded) == 2  # test split, then train split (shared by zeroshot and knn)
    second = eval_fn(*moved)
    assert moved.model.training  # the trainer's mode is left as it was
    assert {k.rsplit("/", 2)[1] for k in second} == {"zeroshot", "knn"}
    # each call embeds with the weights it is given: nothing carried over between calls
    assert len(embedded) == 4
    assert not np.allclose(embedded[0], embedded[2])
    opts = EvalOptions(max_per_class=3)
    for bundle, got, out in [(tiny_model, first, "a"), (moved, second, "b")]:
        [path] = evaluate(bundle, scenes, "knn", tmp_path / out, options=opts, progress=False)
        assert got["scenes/knn/acc1"] == json.loads(path.read_text())["metrics"]["acc1"]


def test_hook_fails_before_training_on_bad_benchmarks(scenes, tmp_path):
    with pytest.raises(BenchmarkNotFoundError, match="SIRI-WHU"):
        make_train_eval_fn(["siri-whu"], data_root=tmp_path)
    with pytest.raises(EvaluationError, match="none of the tasks retrieval applies"):
        make_train_eval_fn([scenes], "retrieval")
    with pytest.raises(EvaluationError, match="unknown task"):
        make_train_eval_fn([scenes], "zero-shot")
    with pytest.raises(EvaluationError, match="both called 'scenes'"):
        make_train_eval_fn([scenes, str(scenes) + "/"])
    with pytest.raises(EvaluationError, match="no benchmark"):
        make_train_eval_fn([])


def test_trainer_logs_the_hooks_metrics(scenes, tmp_path):
    """Two steps of real training with the hook: its numbers reach the trainer's log."""
    from terrascribe.records import Sample
    from terrascribe.shards import write_dataset
    from terrascribe.train import TrainConfig, train

    def items(job):
        rng = np.random.default_rng(job)
        for i in range(8):
            label = i % len(CLASSES)
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            yield Sample(f"s{job}-{i}", img, [f"a satellite image of {CLASSES[label]}"], "other")

    write_dataset(tmp_path / "data", [0], items, builder="test", progress=False)
    config = TrainConfig(
        data=[str(tmp_path / "data")],
        out=str(tmp_path / "run"),
        steps=2,
        batch_size=4,
        workers=0,
        warmup=1,
        eval_every=1,
        progress=False,
        tensorboard=False,
        export=False,
        device="cpu",
    )
    result = train(config, eval_fn=make_train_eval_fn([scenes]))
    assert set(result.evals) == {1, 2}
    for logged in result.evals.values():
        assert set(logged) == {
            "eval/scenes/zeroshot/acc1",
            "eval/scenes/zeroshot/mean_per_class_recall",
        }
        assert all(0 <= v <= 1 for v in logged.values())
