"""terrascribe and CLIP_benchmark on the same tiny model and data must give identical numbers.

The test writes a small generated dataset in CLIP_benchmark's webdataset layout, runs
``clip_benchmark.metrics.zeroshot_classification.evaluate`` / ``zeroshot_retrieval.evaluate``
in-process with the tiny model, and runs ``terrascribe.evaluate.runner.evaluate`` on the same
folder.
"""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("clip_benchmark")

CLASSES = ["forest", "lake", "desert", "city", "farmland", "airport"]
TEMPLATES = ["a satellite photo of {c}.", "an aerial view of the {c}."]


def _image(rng: np.random.Generator, label: int) -> bytes:
    # Class-dependent colour + noise, so the random model sees varied inputs.
    base = np.array([(label * 40) % 256, (label * 90) % 256, (label * 150) % 256], np.float32)
    pixels = base + rng.normal(0, 60, size=(48, 48, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="png")
    return buf.getvalue()


def write_wds(root: Path, *, retrieval: bool, n: int = 36, seed: int = 0) -> Path:
    """A CLIP_benchmark webdataset folder (test split, one shard)."""
    import webdataset as wds

    rng = np.random.default_rng(seed)
    (root / "test").mkdir(parents=True)
    with wds.TarWriter(str(root / "test" / "0.tar")) as sink:
        for i in range(n):
            label = i % len(CLASSES)
            sample = {"__key__": f"s{i:07d}", "png": _image(rng, label)}
            if retrieval:
                words = rng.choice(["green", "small", "large", "dry", "busy", "quiet"], 2)
                sample["txt"] = "\n".join(
                    f"{w} {CLASSES[label]} number {i} view {j}" for j, w in enumerate(words)
                )
            else:
                sample["cls"] = label
            sink.write(sample)
    (root / "test" / "nshards.txt").write_text("1\n")
    if retrieval:
        (root / "dataset_type.txt").write_text("retrieval\n")
    else:
        (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    return root


def _cb_loader(root: Path, preprocess, retrieval: bool):
    import torch
    from clip_benchmark.datasets.builder import build_dataset

    task = "zeroshot_retrieval" if retrieval else "zeroshot_classification"
    ds = build_dataset("wds/tiny", root=str(root), transform=preprocess, split="test", task=task)
    # As clip_benchmark's CLI does for wds/ datasets.
    return ds, torch.utils.data.DataLoader(ds.batched(8), batch_size=None, shuffle=False)


def _ours(tiny_model, root: Path, out: Path, task: str, **kw) -> dict:
    from terrascribe.evaluate.runner import evaluate

    [path] = evaluate(tiny_model, root, task, out, progress=False, **kw)
    return json.loads(path.read_text())


def _numpy2_float(value):
    """float() that accepts the 1-element arrays clip_benchmark passes it (fails on NumPy 2)."""
    if isinstance(value, np.ndarray):
        return builtins.float(value.reshape(-1)[0])
    return builtins.float(value)


def test_zero_shot_matches_clip_benchmark(tiny_model, tmp_path, monkeypatch):
    from clip_benchmark.metrics import zeroshot_classification

    # clip_benchmark 1.6's accuracy() calls float() on a shape-(1,) array, an error on NumPy 2;
    # shim float() in its module only, so its own code runs unchanged otherwise.
    monkeypatch.setattr(zeroshot_classification, "float", _numpy2_float, raising=False)
    root = write_wds(tmp_path / "wds-cls", retrieval=False)
    model, preprocess, tokenizer = tiny_model
    ds, loader = _cb_loader(root, preprocess, retrieval=False)
    ref = zeroshot_classification.evaluate(
        model, loader, tokenizer, ds.classes, ds.templates, "cpu", amp=False
    )
    ours = _ours(tiny_model, root, tmp_path / "res", "zeroshot")
    assert ours["templates"] == TEMPLATES and ours["classnames"] == CLASSES
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert ours["metrics"][key] == pytest.approx(ref[key], abs=1e-12), key
    # Not a degenerate case: the random model is right sometimes and wrong sometimes.
    assert ref["acc5"] > 0 and ref["acc1"] < 1


def test_retrieval_matches_clip_benchmark(tiny_model, tmp_path):
    from clip_benchmark.metrics import zeroshot_retrieval

    root = write_wds(tmp_path / "wds-ret", retrieval=True)
    model, preprocess, tokenizer = tiny_model
    _, loader = _cb_loader(root, preprocess, retrieval=True)
    ref = zeroshot_retrieval.evaluate(
        model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10]
    )
    result = _ours(tiny_model, root, tmp_path / "res", "retrieval")
    ours, n_images, n_texts = result["metrics"], result["n_images"], result["n_texts"]
    assert (n_images, n_texts) == (36, 72)
    for k in (1, 5, 10):
        # CLIP_benchmark's "image retrieval" is text -> image; "text retrieval" is image -> text.
        # It averages in float32, so compare hit counts (exact) rather than the fractions.
        ref_t2i, ref_i2t = ref[f"image_retrieval_recall@{k}"], ref[f"text_retrieval_recall@{k}"]
        assert round(ours[f"t2i_R@{k}"] * n_texts) == round(ref_t2i * n_texts)
        assert round(ours[f"i2t_R@{k}"] * n_images) == round(ref_i2t * n_images)
        assert ours[f"t2i_R@{k}"] == pytest.approx(ref_t2i, abs=1e-6)
    assert 0 < ref["image_retrieval_recall@10"] < 1


def test_warm_cache_gives_same_result_without_the_model(tiny_model, tmp_path):
    """A second run with a warm embedding cache and saved embeddings re-scores identically."""
    from terrascribe.evaluate.runner import score_embeddings

    root = write_wds(tmp_path / "wds-cls", retrieval=False)
    cache = tmp_path / "cache"
    first = _ours(
        tiny_model,
        root,
        tmp_path / "a",
        "zeroshot",
        cache_dir=cache,
        save_embeddings=tmp_path / "emb",
    )
    assert any(cache.rglob("*.npy"))
    second = _ours(tiny_model, root, tmp_path / "b", "zeroshot", cache_dir=cache)
    assert second["metrics"] == first["metrics"]
    [path] = score_embeddings(tmp_path / "emb", "zeroshot", tmp_path / "c")
    rescored = json.loads(path.read_text())
    assert rescored["metrics"] == first["metrics"]
    assert rescored["model"]["fingerprint"] == tiny_model.fingerprint
    assert len(rescored["split_hash"]) == 64  # which rows were scored, as every result says
