"""Training checkpoints (open_clip_train's layout, so open_clip loads them) and hf-hub export.

A checkpoint is one ``torch.save`` file::

    {"state_dict": model weights (no DDP prefix), "epoch": float, "step": int, "name": run name,
     "arch": open_clip architecture, "model_cfg": its config, "preprocess_cfg": ...,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": {...}, "data": {...},
     "config": the TrainConfig as a dict}

Everything in it is a tensor, number, string, list, tuple or dict, so it loads with
``torch.load(weights_only=True)`` and ``open_clip.create_model_and_transforms(arch,
pretrained=path)`` reads its ``state_dict``. Files are written to a temporary name and renamed;
``checkpoints/latest`` names the newest complete one.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from terrascribe.shards import atomic_write_text, dumps

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
HF_CONFIG = "open_clip_config.json"
HF_WEIGHTS = "open_clip_model.safetensors"


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint written after ``step`` optimizer steps."""
    return f"step_{step:08d}.pt"


def rng_state() -> dict[str, Any]:
    """The random states a resumed run must restore (torch CPU/CUDA, Python)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` output."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, step: int, payload: dict[str, Any], keep_last: int | None
) -> Path:
    """Write a checkpoint atomically, point ``latest`` at it, prune old ones; return its path."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / checkpoint_name(step)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    atomic_write_text(folder / LATEST, path.name + "\n")
    if keep_last:
        old = sorted(folder.glob("step_*.pt"))[:-keep_last]
        for p in old:
            p.unlink(missing_ok=True)
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    pointer = folder / LATEST
    if pointer.is_file():
        path = folder / pointer.read_text().strip()
        if path.is_file():
            return path
    found = sorted(folder.glob("step_*.pt"))
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``)."""
    from terrascribe.models.checkpoints import read_checkpoint

    ckpt = read_checkpoint(path)
    if "state_dict" not in ckpt or "step" not in ckpt:
        from terrascribe.models.checkpoints import CheckpointError

        raise CheckpointError(f"{path}: not a terrascribe training checkpoint (no step/state_dict)")
    return ckpt


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Export a training checkpoint in the ``hf-hub:`` layout open_clip and the Hub read.

    Writes ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
    ``open_clip_model.safetensors`` to ``out_dir``; load it back with
    ``load_model(out_dir)``, ``open_clip.create_model_and_transforms("local-dir:" + out_dir)``,
    or upload the folder to a Hub repo and use ``hf-hub:org/repo``.

    Args:
        checkpoint: A checkpoint file, or a run folder (its latest checkpoint).
        out_dir: Destination folder (created).

    Returns:
        ``out_dir``.
    """
    from safetensors.torch import save_file

    src = Path(checkpoint)
    if src.is_dir():
        found = latest_checkpoint(src)
        if found is None:
            raise FileNotFoundError(f"{src}: no checkpoint in {src / CHECKPOINT_DIR}")
        src = found
    ckpt = load_checkpoint(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in ckpt["state_dict"].items()}
    tmp = out / (HF_WEIGHTS + ".tmp")
    save_file(weights, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / HF_WEIGHTS)
    config = {
        "model_cfg": ckpt["model_cfg"],
        "preprocess_cfg": _jsonable(ckpt.get("preprocess_cfg") or {}),
        "terrascribe": {"source_checkpoint": src.name, "step": ckpt["step"], "arch": ckpt["arch"]},
    }
    atomic_write_text(out / HF_CONFIG, dumps(config))
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=list))
