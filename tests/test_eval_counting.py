"""Counting end to end: a benchmark written by ``build counting`` evaluates as it is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from terrascribe.build.counting import build_counting_benchmark
from terrascribe.evaluate import runner
from terrascribe.evaluate.benchmarks import BenchmarkError
from terrascribe.sources.annotations import Box, ImageAnnotations


def _boxes(label: str, n: int) -> tuple[Box, ...]:
    return tuple(Box(label, (4.0 + 7 * i, 4.0, 9.0 + 7 * i, 9.0)) for i in range(n))


def _built_benchmark(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    anns = []
    for name, label, n in [("a", "tree", 7), ("b", "tree", 1), ("c", "person", 2), ("d", "bus", 3)]:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            images / f"{name}.jpg"
        )
        anns.append(ImageAnnotations(f"{name}.jpg", 64, 64, _boxes(label, n)))
    out = tmp_path / "count-bench"
    build_counting_benchmark(out, annotations=anns, images=images, progress=False)
    return out


def test_built_counting_benchmark_evaluates_with_reinflected_prompts(
    tiny_model, tmp_path, monkeypatch
):
    bench = _built_benchmark(tmp_path)
    assert "images/" in (bench / "counting.csv").read_text()  # paths relative to the folder
    embedded: list[str] = []
    original = runner._Embedder.texts

    def spy(self, texts):
        embedded.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(runner._Embedder, "texts", spy)
    [path] = runner.evaluate(tiny_model, bench, "counting", tmp_path / "res", progress=False)
    result = json.loads(path.read_text())
    assert result["n_test"] == 4 and result["categories"] == ["bus", "person", "tree"]
    assert result["metrics"]["acc10"] == 1.0
    assert len(embedded) == 4 * 10 * 2  # 10 candidates per image, digits and words
    # nouns agree with every candidate number, irregular plurals included
    for prompt in (
        "a satellite image of one tree",
        "a satellite image of seven trees",
        "a satellite image of 1 person",
        "a satellite image of two people",
        "a satellite image of one bus",
        "a satellite image of 3 buses",
    ):
        assert prompt in embedded, prompt
    for wrong in ("one trees", "two tree", "1 people", "2 person", "1 buses", "two bus"):
        assert not any(p.endswith(wrong) for p in embedded), wrong


def test_counting_caption_without_its_category_is_a_clear_error(tiny_model, tmp_path):
    bench = _built_benchmark(tmp_path)
    table = bench / "counting.csv"
    table.write_text(table.read_text().replace("of seven trees", "of seven cars"))
    with pytest.raises(BenchmarkError, match=r"counting\.csv.*category 'tree'"):
        runner.evaluate(tiny_model, bench, "counting", tmp_path / "res", progress=False)
