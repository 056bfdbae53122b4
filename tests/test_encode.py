"""Batched, cached embedding of images and texts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terrascribe.images import ImageError
from terrascribe.models.encode import cache_path, encode_images, encode_texts, images_fingerprint


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8) for i in range(n)]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_embeddings_are_normalised_ordered_and_batch_independent(tiny_model) -> None:
    arrays = _images(5)
    a = encode_images(tiny_model, arrays, batch_size=2, progress=False)
    b = encode_images(tiny_model, arrays[::-1], batch_size=5, progress=False)
    assert a.shape == (5, 64) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)
    assert not np.allclose(a[0], a[1])


def test_all_input_kinds_agree(tiny_model, tmp_path: Path) -> None:
    arrays = _images(3)
    paths = []
    for i, arr in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(_png(arr))
    ref = encode_images(tiny_model, arrays, progress=False)
    for inputs in (
        [Image.fromarray(a) for a in arrays],
        [_png(a) for a in arrays],
        paths,
        [str(p) for p in paths],
    ):
        out = encode_images(tiny_model, inputs, progress=False)
        np.testing.assert_allclose(out, ref, atol=1e-6)
    # workers decode in other processes: same result
    out = encode_images(tiny_model, paths, num_workers=1, batch_size=2, progress=False)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_cache_hits_skip_the_model(tiny_model, tmp_path: Path, monkeypatch) -> None:
    arrays = _images(4)
    texts = ["a satellite image of a forest", "a satellite image of a harbour"]
    first = encode_images(tiny_model, arrays, cache_dir=tmp_path, progress=False)
    first_t = encode_texts(tiny_model, texts, cache_dir=tmp_path, progress=False)
    files = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert len(files) == 2 and not list(tmp_path.rglob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("embedded twice")

    monkeypatch.setattr(tiny_model.model, "encode_image", boom)
    monkeypatch.setattr(tiny_model.model, "encode_text", boom)
    np.testing.assert_array_equal(encode_images(tiny_model, arrays, cache_dir=tmp_path), first)
    np.testing.assert_array_equal(encode_texts(tiny_model, texts, cache_dir=tmp_path), first_t)
    # other data is a miss
    with pytest.raises(AssertionError, match="embedded twice"):
        encode_images(tiny_model, arrays[:3], cache_dir=tmp_path, progress=False)


def test_damaged_cache_is_recomputed(tiny_model, tmp_path: Path) -> None:
    arrays = _images(2)
    ref = encode_images(tiny_model, arrays, cache_dir=tmp_path, progress=False)
    path = cache_path(tmp_path, tiny_model, "images", images_fingerprint(arrays))
    path.write_bytes(b"garbage")
    np.testing.assert_array_equal(encode_images(tiny_model, arrays, cache_dir=tmp_path), ref)


def test_path_fingerprint_follows_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(_png(_images(1)[0]))
    before = images_fingerprint([p])
    p.write_bytes(_png(_images(1, seed=1)[0]) + b"\0")
    assert images_fingerprint([p]) != before


def test_streamed_iterable(tiny_model, tmp_path: Path) -> None:
    arrays = _images(5)
    ref = encode_images(tiny_model, arrays, progress=False)
    gen = (a for a in arrays)
    out = encode_images(tiny_model, gen, total=5, batch_size=2, progress=False)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    cached = encode_images(
        tiny_model, iter(arrays), cache_dir=tmp_path, data_key="shards-abc", progress=False
    )
    np.testing.assert_allclose(cached, ref, atol=1e-6)
    again = encode_images(tiny_model, iter([]), cache_dir=tmp_path, data_key="shards-abc")
    np.testing.assert_array_equal(again, cached)


def test_texts_and_edge_cases(tiny_model) -> None:
    emb = encode_texts(tiny_model, ["a", "b", "a"], batch_size=2, progress=False)
    assert emb.shape == (3, 64)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    assert encode_texts(tiny_model, [], progress=False).shape == (0, 64)
    assert encode_images(tiny_model, [], progress=False).shape == (0, 64)
    with pytest.raises(TypeError, match="wrap a single text"):
        encode_texts(tiny_model, "a forest")


def test_bad_image_names_the_file(tiny_model, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        encode_images(tiny_model, [bad], progress=False)
    with pytest.raises(TypeError, match="unsupported"):
        encode_images(tiny_model, [12345], progress=False)
