"""Continual pre-training of CLIP on terrascribe datasets.

``train(TrainConfig(data=[...], out="runs/x", model="ts-tiny", steps=100))`` streams the
datasets' shards (mixed by weight, augmented, resumable), optimises open_clip's contrastive loss,
writes checkpoints that open_clip loads directly, and exports the ``hf-hub:`` layout.
"""

from __future__ import annotations

from terrascribe.train.checkpoint import export_hf, latest_checkpoint
from terrascribe.train.data import AugmentConfig, Source, TrainStream, build_transform, make_sources
from terrascribe.train.trainer import EvalFn, TrainConfig, TrainError, TrainResult, train

__all__ = [
    "AugmentConfig",
    "EvalFn",
    "Source",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainStream",
    "build_transform",
    "export_hf",
    "latest_checkpoint",
    "make_sources",
    "train",
]
