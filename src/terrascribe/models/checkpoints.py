"""Reading CLIP weight files safely, whatever layout their authors saved them in.

RS checkpoints come in several layouts: a plain state dict (RemoteCLIP, GeoRSCLIP), an
``open_clip_train`` checkpoint (``{"epoch", "name", "state_dict", "optimizer"}`` with ``module.``
prefixes left by DDP: SkyCLIP, and terrascribe's own trainer), or safetensors (the ``hf-hub:``
layout). Every one is read with ``weights_only=True`` or safetensors, so a file cannot run code.

A state dict that does not match the architecture is an error that names the first missing and
unexpected keys and says what usually causes it, instead of torch's wall of key names.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

# How many key names an error shows of each kind.
_SHOWN_KEYS = 5
# Wrappers around the weights in training checkpoints, looked up in this order.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_DDP_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile


class CheckpointError(ValueError):
    """A weights file that cannot be read or does not fit the architecture."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a weights file (``.safetensors`` or a torch pickle) without executing code.

    Args:
        path: The file.

    Returns:
        The raw object saved in the file (a dict).

    Raises:
        CheckpointError: The file is missing, unreadable, needs unsafe unpickling (e.g. an OpenAI
            TorchScript archive), or holds something other than a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        hint = ""
        if "TorchScript" in str(exc) or "constants.pkl" in str(exc):
            hint = (
                " It looks like a TorchScript archive (OpenAI's original CLIP files): load it "
                "with its open_clip tag instead (e.g. pretrained='openai')."
            )
        raise CheckpointError(
            f"{path}: cannot be read safely with torch.load(weights_only=True): {exc}.{hint}"
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def extract_state_dict(checkpoint: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
    """Return the model weights of a checkpoint in any of the supported layouts.

    Unwraps ``{"state_dict": ...}`` (open_clip_train, Lightning) and ``{"model": ...}``, and strips
    the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes.
    """
    sd: Mapping[str, Any] = checkpoint
    for key in _WRAPPER_KEYS:
        inner = sd.get(key) if isinstance(sd, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            sd = inner
            break
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source or 'checkpoint'}: no tensors found (keys: {list(sd)[:8]})")
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        for prefix in _DDP_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _fit_to_model(model: torch.nn.Module, sd: dict[str, Any]) -> dict[str, Any]:
    """Apply the harmless conversions open_clip also applies (scalar/1-d logit scale, etc.)."""
    from open_clip.factory import convert_to_custom_text_state_dict
    from open_clip.model import resize_pos_embed, resize_text_pos_embed

    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    for name in ("logit_scale", "logit_bias"):
        param = getattr(model, name, None)
        if name in sd and isinstance(param, torch.Tensor) and param.ndim != sd[name].ndim:
            sd[name] = sd[name].reshape(param.shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None:
        sd["logit_bias"] = model.logit_bias.detach().clone()  # keep the model's initial bias
    try:  # other input sizes / context lengths: interpolate, as open_clip does
        resize_pos_embed(sd, model)
        resize_text_pos_embed(sd, model)
    except (AssertionError, RuntimeError, KeyError, ValueError):
        pass  # not resizable: the shape check below reports it
    return sd


def _mismatch_message(
    source: str, arch: str, missing: list[str], unexpected: list[str], shapes: list[str]
) -> str:
    parts = [f"{source}: weights do not fit architecture {arch!r}."]
    if missing:
        parts.append(f"Missing {len(missing)} keys, e.g. {missing[:_SHOWN_KEYS]}.")
    if unexpected:
        parts.append(f"Unexpected {len(unexpected)} keys, e.g. {unexpected[:_SHOWN_KEYS]}.")
    if shapes:
        parts.append(f"{len(shapes)} tensors differ in shape, e.g. {shapes[:_SHOWN_KEYS]}.")
    visual_only = all(k.startswith("visual.") for k in missing + unexpected) and (
        missing or unexpected
    )
    if visual_only:
        parts.append(
            "Only image-tower keys differ: the image encoder is another family "
            "(e.g. a ResNet checkpoint such as RN50 loaded into a ViT, or the reverse)."
        )
    else:
        parts.append(
            "This usually means the checkpoint was trained with another architecture "
            "(e.g. ViT-L-14 weights in ViT-B-32): pass the matching model name. QuickGELU vs "
            "GELU does not change keys, so it is never the cause of this error."
        )
    return " ".join(parts)


def load_weights(
    model: torch.nn.Module, path: str | Path, *, arch: str = "?", strict: bool = True
) -> None:
    """Load a weights file into ``model`` (in place), with a clear error on any mismatch.

    Args:
        model: An open_clip model of the architecture the weights were trained with.
        path: A weights file in any supported layout (see module docstring).
        arch: The architecture name, used in error messages.
        strict: Fail on missing or unexpected keys (the default; RS checkpoints are complete).

    Raises:
        CheckpointError: The file cannot be read, or its keys or shapes do not match the model.
    """
    source = str(path)
    sd = extract_state_dict(read_checkpoint(path), source=source)
    sd = _fit_to_model(model, sd)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if shapes or (strict and (missing or unexpected)):
        raise CheckpointError(_mismatch_message(source, arch, missing, unexpected, shapes))
    model.load_state_dict(sd, strict=strict)


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:  # size, mtime: memo keys
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) so repeated loads hash once."""
    path = Path(path).resolve()
    stat = os.stat(path)
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def verify_sha256(path: str | Path, expected: str | None) -> str:
    """Return the file's SHA-256; raise :class:`CheckpointError` if it is not ``expected``."""
    actual = file_sha256(path)
    if expected and actual != expected.lower():
        raise CheckpointError(
            f"{path}: SHA-256 {actual} differs from the expected {expected}: the download is "
            "corrupt or the file was replaced upstream. Delete it and download again."
        )
    return actual
