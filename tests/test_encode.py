"""Batched, cached embedding of images and texts (the cache is per item, shared by tools)."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terrascribe.images import ImageError
from terrascribe.models import encode as encode_mod
from terrascribe.models.encode import (
    default_cache_dir,
    encode_images,
    encode_texts,
    images_fingerprint,
    store_dir,
)


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


def _count_embedded(monkeypatch, bundle) -> dict[str, int]:
    """Count the items that go through the model's towers."""
    counts = {"images": 0, "texts": 0}
    encode_image, encode_text = bundle.model.encode_image, bundle.model.encode_text

    def image(x, *args, **kwargs):
        counts["images"] += len(x)
        return encode_image(x, *args, **kwargs)

    def text(x, *args, **kwargs):
        counts["texts"] += len(x)
        return encode_text(x, *args, **kwargs)

    monkeypatch.setattr(bundle.model, "encode_image", image)
    monkeypatch.setattr(bundle.model, "encode_text", text)
    return counts


def _chunks(folder: Path) -> list[Path]:
    return sorted(folder.rglob("chunk-*.keys.npy"))


def test_cache_hits_skip_the_model(tiny_model, tmp_path: Path, monkeypatch) -> None:
    arrays = _images(4)
    texts = ["a satellite image of a forest", "a satellite image of a harbour"]
    first = encode_images(tiny_model, arrays, cache_dir=tmp_path, progress=False)
    first_t = encode_texts(tiny_model, texts, cache_dir=tmp_path, progress=False)
    # a cold cached call is the uncached call, byte for byte
    np.testing.assert_array_equal(first, encode_images(tiny_model, arrays, progress=False))
    np.testing.assert_array_equal(first_t, encode_texts(tiny_model, texts, progress=False))
    assert len(_chunks(tmp_path)) == 2 and not list(tmp_path.rglob("*.tmp"))
    assert (
        (store_dir(tmp_path, tiny_model, "images") / "..")
        .resolve()
        .joinpath("model.json")
        .is_file()
    )

    def boom(*args, **kwargs):
        raise AssertionError("embedded twice")

    monkeypatch.setattr(tiny_model.model, "encode_image", boom)
    monkeypatch.setattr(tiny_model.model, "encode_text", boom)
    np.testing.assert_array_equal(encode_images(tiny_model, arrays, cache_dir=tmp_path), first)
    np.testing.assert_array_equal(encode_texts(tiny_model, texts, cache_dir=tmp_path), first_t)
    # any subset, in any order, is a hit now: the cache is per item
    sub = encode_images(tiny_model, [arrays[3], arrays[1]], cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(sub, first[[3, 1]])
    np.testing.assert_array_equal(
        encode_texts(tiny_model, texts[::-1] + texts, cache_dir=tmp_path), first_t[[1, 0, 0, 1]]
    )
    # a new item is a miss
    with pytest.raises(AssertionError, match="embedded twice"):
        encode_images(tiny_model, arrays[:3] + _images(1, seed=9), cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="embedded twice"):
        encode_texts(tiny_model, ["a satellite image of a desert"], cache_dir=tmp_path)


def test_regrouped_items_are_embedded_once(tiny_model, tmp_path: Path, monkeypatch) -> None:
    arrays = _images(12)
    ref = encode_images(tiny_model, arrays, batch_size=4, progress=False)
    counts = _count_embedded(monkeypatch, tiny_model)
    rng = np.random.default_rng(0)
    order = rng.permutation(12)
    for group in np.array_split(order, 3):  # curation: shard by shard, in another order
        out = encode_images(
            tiny_model, [arrays[i] for i in group], batch_size=4, cache_dir=tmp_path
        )
        np.testing.assert_allclose(out, ref[group], atol=1e-6)
    assert counts["images"] == 12
    # evaluation: the whole list at once; search: chunks of 5; all hits, nothing embedded
    whole = encode_images(tiny_model, arrays, batch_size=4, cache_dir=tmp_path, progress=False)
    for start in range(0, 12, 5):
        part = encode_images(tiny_model, arrays[start : start + 5], cache_dir=tmp_path)
        np.testing.assert_array_equal(part, whole[start : start + 5])
    assert counts["images"] == 12
    np.testing.assert_allclose(whole, ref, atol=1e-6)
    # 10% new items: only those are embedded; duplicates inside a call are embedded once
    new = _images(2, seed=5)
    mixed = arrays[:6] + new + [new[0]] + arrays[6:]
    out = encode_images(tiny_model, mixed, batch_size=4, cache_dir=tmp_path, progress=False)
    assert counts["images"] == 14
    np.testing.assert_array_equal(out[6], out[8])
    np.testing.assert_array_equal(np.delete(out, [6, 7, 8], axis=0), whole)
    np.testing.assert_allclose(out[6:8], encode_images(tiny_model, new, progress=False), atol=1e-6)


def test_texts_regrouped_are_embedded_once(tiny_model, tmp_path: Path, monkeypatch) -> None:
    texts = [f"a satellite image of {n} houses" for n in range(10)]
    ref = encode_texts(tiny_model, texts, progress=False)
    counts = _count_embedded(monkeypatch, tiny_model)
    cold = encode_texts(tiny_model, texts, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(cold, ref)  # same batches as uncached: byte for byte
    again = encode_texts(tiny_model, texts[5:] + texts[:5] + ["ü ß"], cache_dir=tmp_path)
    assert counts["texts"] == 11
    np.testing.assert_array_equal(again[:10], np.concatenate([ref[5:], ref[:5]]))


def test_a_second_tool_hits_the_cache(tiny_model, tmp_path: Path, monkeypatch) -> None:
    from terrascribe.curate.score import score_samples

    arrays = _images(6)
    images = [_png(a) for a in arrays]
    captions = [[f"caption {i}", "a satellite image"] for i in range(6)]
    score_samples(tiny_model, images, captions, batch_size=4, cache_dir=tmp_path)
    counts = _count_embedded(monkeypatch, tiny_model)
    # evaluation or search on a subset of the same images and texts: nothing to embed
    sub = encode_images(tiny_model, images[4:] + images[:2], cache_dir=tmp_path, progress=False)
    txt = encode_texts(tiny_model, ["caption 3", "a satellite image"], cache_dir=tmp_path)
    assert counts == {"images": 0, "texts": 0}
    np.testing.assert_allclose(
        sub, encode_images(tiny_model, images[4:] + images[:2], progress=False), atol=1e-6
    )
    assert txt.shape == (2, 64)


def test_two_writers_merge(tiny_model, tmp_path: Path, monkeypatch) -> None:
    """Two stores appending to one folder (as two processes do) see each other's chunks."""
    arrays = _images(6)
    a = encode_images(tiny_model, arrays[:3], cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(encode_mod, "_STORES", {})  # a second process: its own store object
    b = encode_images(tiny_model, arrays[3:], cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(encode_mod, "_STORES", {})
    counts = _count_embedded(monkeypatch, tiny_model)
    both = encode_images(tiny_model, arrays[::-1], cache_dir=tmp_path, progress=False)
    assert counts["images"] == 0 and len(_chunks(tmp_path)) == 2
    np.testing.assert_array_equal(both, np.concatenate([a, b])[::-1])


@pytest.mark.slow
def test_two_processes_write_one_store(tiny_model, tmp_path: Path, monkeypatch) -> None:
    arrays = _images(8)
    np.save(tmp_path / "arrays.npy", np.stack([a[:40] for a in arrays]))
    script = (
        "import sys, numpy as np\n"
        "from terrascribe.models.zoo import load_model\n"
        "from terrascribe.models.encode import encode_images\n"
        "arr = np.load(sys.argv[1]); lo, hi = int(sys.argv[3]), int(sys.argv[4])\n"
        "m = load_model('ts-tiny', seed=0)\n"
        "encode_images(m, list(arr[lo:hi]), batch_size=2, cache_dir=sys.argv[2], progress=False)\n"
    )
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "arrays.npy"), str(cache), lo, hi]
        )
        for lo, hi in (("0", "6"), ("2", "8"))  # overlapping halves, written at the same time
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    counts = _count_embedded(monkeypatch, tiny_model)
    stacked = list(np.load(tmp_path / "arrays.npy"))
    out = encode_images(tiny_model, stacked, cache_dir=cache, progress=False)
    assert counts["images"] == 0 and len(_chunks(cache)) == 2
    np.testing.assert_allclose(out, encode_images(tiny_model, stacked, progress=False), atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "garbage_keys", "wrong_rows"])
def test_damaged_chunk_is_ignored_and_recomputed(
    tiny_model, tmp_path: Path, monkeypatch, damage: str
) -> None:
    arrays = _images(3)
    ref = encode_images(tiny_model, arrays, cache_dir=tmp_path, progress=False)
    (keys,) = _chunks(tmp_path)
    vecs = keys.with_name(keys.name.replace(".keys.npy", ".vecs.npy"))
    if damage == "truncate":
        vecs.write_bytes(vecs.read_bytes()[:-100])
    elif damage == "garbage_keys":
        keys.write_bytes(b"garbage")
    else:
        np.save(vecs, np.zeros((2, 64), np.float32))
    monkeypatch.setattr(encode_mod, "_STORES", {})  # a fresh process reads the damaged chunk
    counts = _count_embedded(monkeypatch, tiny_model)
    with pytest.warns(RuntimeWarning, match="damaged embedding cache chunk"):
        out = encode_images(tiny_model, arrays, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(out, ref)
    assert counts["images"] == 3 and len(_chunks(tmp_path)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not on every call
        np.testing.assert_array_equal(encode_images(tiny_model, arrays, cache_dir=tmp_path), ref)
    assert counts["images"] == 3


def test_an_interrupted_call_keeps_what_it_embedded(
    tiny_model, tmp_path: Path, monkeypatch
) -> None:
    arrays = _images(6)
    encode_image = tiny_model.model.encode_image
    calls = []

    def fails_second_time(x, *args, **kwargs):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode_image(x, *args, **kwargs)

    monkeypatch.setattr(tiny_model.model, "encode_image", fails_second_time)
    with pytest.raises(KeyboardInterrupt):
        encode_images(tiny_model, arrays, batch_size=2, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(tiny_model.model, "encode_image", encode_image)
    counts = _count_embedded(monkeypatch, tiny_model)
    encode_images(tiny_model, arrays, batch_size=2, cache_dir=tmp_path, progress=False)
    assert counts["images"] == 4  # the first batch was kept


def test_default_cache_dir_is_shared(monkeypatch, tmp_path: Path) -> None:
    from terrascribe.evaluate.runner import default_cache_dir as eval_default

    monkeypatch.setenv("TERRASCRIBE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "embeddings" == eval_default()
    monkeypatch.delenv("TERRASCRIBE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "terrascribe" / "embeddings"


def test_path_fingerprint_follows_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(_png(_images(1)[0]))
    before = images_fingerprint([p])
    p.write_bytes(_png(_images(1, seed=1)[0]) + b"\0")
    assert images_fingerprint([p]) != before


def test_streamed_iterable(tiny_model, tmp_path: Path, monkeypatch) -> None:
    arrays = _images(5)
    ref = encode_images(tiny_model, arrays, progress=False)
    gen = (a for a in arrays)
    out = encode_images(tiny_model, gen, total=5, batch_size=2, progress=False)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    cached = encode_images(
        tiny_model, iter(arrays), cache_dir=tmp_path, data_key="shards-abc", progress=False
    )
    np.testing.assert_allclose(cached, ref, atol=1e-6)
    # with a data_key the stream is not even read again
    again = encode_images(tiny_model, iter([]), cache_dir=tmp_path, data_key="shards-abc")
    np.testing.assert_array_equal(again, cached)
    # without one it is cached per item all the same (small blocks: several per stream)
    monkeypatch.setattr(encode_mod, "_FLUSH_ROWS", 1)
    counts = _count_embedded(monkeypatch, tiny_model)
    streamed = encode_images(
        tiny_model, (a for a in arrays[::-1]), batch_size=1, cache_dir=tmp_path, progress=False
    )
    assert counts["images"] == 0
    np.testing.assert_array_equal(streamed, cached[::-1])
    more = _images(2, seed=3) + arrays[:1]
    encode_images(tiny_model, iter(more), batch_size=1, cache_dir=tmp_path, progress=False)
    assert counts["images"] == 2
    # a key whose items are not all cached any more reads the stream
    other = tmp_path / "other"
    encode_images(tiny_model, iter(arrays), cache_dir=other, data_key="k", progress=False)
    for chunk in other.rglob("chunk-*"):
        chunk.unlink()
    monkeypatch.setattr(encode_mod, "_STORES", {})
    again = encode_images(tiny_model, iter(arrays), cache_dir=other, data_key="k", progress=False)
    assert counts["images"] == 2 + 5 + 5
    np.testing.assert_allclose(again, ref, atol=1e-6)


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
