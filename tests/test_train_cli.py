"""``terrascribe train`` from the command line, with periodic evaluation on a benchmark folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from terrascribe.cli import app
from tests.test_train import make_dataset

runner = CliRunner()


@pytest.mark.slow
def test_train_cli_logs_periodic_zero_shot(tmp_path, sample_region):
    data = make_dataset(tmp_path / "data", "a", 2, 8)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "4"]
    args += ["--workers", "0", "--device", "cpu", "--no-tensorboard", "--no-export"]
    args += ["--eval-benchmark", str(sample_region.scenes_dir), "--eval-every", "1"]
    args += ["--eval-max-per-class", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scores = [r[k] for r in rows for k in r if k.endswith("zeroshot/acc1")]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)


def test_train_cli_refuses_a_missing_benchmark_before_training(tmp_path):
    data = make_dataset(tmp_path / "data", "a", 1, 4)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--steps",
            "1",
            "--eval-benchmark",
            str(tmp_path / "nope"),
        ],
    )
    assert result.exit_code != 0
    assert not (out / "checkpoints").exists()


def test_bad_crop_scale_names_the_option(tmp_path):
    data = make_dataset(tmp_path / "data", "a", 1, 4)
    for bad in ("a,b", "0.9,0.5", "0.5"):
        result = runner.invoke(
            app,
            ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--crop-scale", bad],
        )
        assert result.exit_code != 0
        assert "--crop-scale" in result.output
