"""open_clip_train (shipped in open_clip_torch) trains on shards our writer produced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from terrascribe.models.zoo import load_model
from terrascribe.records import Sample
from terrascribe.shards import Dataset, write_dataset


def make_items(shard: int):
    rng = np.random.default_rng(shard)
    for i in range(8):
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        yield Sample(key=f"s{shard}-{i}", image=img, captions=[f"scene {i % 2}"], source="other")


@pytest.mark.slow
def test_open_clip_train_runs_on_terrascribe_shards(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", [0, 1], make_items, builder="test", seed=0, progress=False)
    ds = Dataset(tmp_path / "ds")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "terrascribe.models.openclip_train",
        "--train-data",
        ds.shard_urls(),
        "--dataset-type",
        "webdataset",
        "--train-num-samples",
        str(len(ds)),
        "--model",
        "ts-tiny",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--warmup",
        "1",
        "--lr",
        "1e-3",
        "--logs",
        str(tmp_path / "logs"),
        "--name",
        "interop",
        "--report-to",
        "",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "logs" / "interop" / "checkpoints" / "epoch_1.pt"
    assert ckpt.is_file(), proc.stderr[-3000:]
    assert "Train Epoch: 0 [16/16" in (tmp_path / "logs" / "interop" / "out.log").read_text()

    # ...and its checkpoint (open_clip_train layout) loads back through the zoo
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    loaded = load_model("ts-tiny", pretrained=str(ckpt))
    sd = loaded.model.state_dict()
    for key, value in raw["state_dict"].items():
        assert torch.equal(sd[key.removeprefix("module.")], value)
    assert not torch.equal(sd["text_projection"], load_model("ts-tiny").model.text_projection)
