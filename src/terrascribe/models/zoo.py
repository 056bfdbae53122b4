"""The model zoo: any open_clip model or remote-sensing CLIP checkpoint, loaded one way.

A model is an open_clip architecture plus weights. ``load_model`` accepts:

* an open_clip architecture (``"ts-tiny"``, ``"ViT-B-32"``) with ``pretrained`` one of: nothing
  (random init, seeded), an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``), a local weights
  file in any layout RS projects publish (see :mod:`terrascribe.models.checkpoints`), a folder in
  the ``hf-hub:`` layout (``open_clip_config.json`` + weights, e.g. a terrascribe training export),
  ``hf-hub:org/repo`` (that layout on the Hugging Face hub) or ``hf-hub:org/repo/file.pt`` (one
  weights file on the hub);
* a zoo name (``"remoteclip-vit-b-32"``, ``"skyclip-vit-l-14"``, ``"georsclip-vit-b-32"``, see
  ``terrascribe models list``): the zoo knows the architecture and activation the weights need
  (QuickGELU for OpenAI-initialised ones) and where to download them; ``pretrained`` may point to
  a copy you already have;
* ``"hf-hub:org/repo"`` or ``"local-dir:/path"`` as the name, as in open_clip.

Nothing is downloaded at import. Downloads go to the Hugging Face cache or
``$TERRASCRIBE_CACHE/models`` (default ``~/.cache/terrascribe/models``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from terrascribe.models import register_architectures
from terrascribe.models.checkpoints import (
    CheckpointError,
    file_sha256,
    load_weights,
    verify_sha256,
)

ZOO_FILE = Path(__file__).with_name("zoo.json")
PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16", "amp", "amp_bf16")
_HF_PREFIX = "hf-hub:"
_LOCAL_DIR_PREFIX = "local-dir:"
_OPEN_CLIP_CONFIG = "open_clip_config.json"


class ModelError(ValueError):
    """An unknown model name, an unusable ``pretrained`` value, or a failed download."""


@dataclass(frozen=True)
class ZooEntry:
    """A published RS CLIP checkpoint: where it lives and how it must be loaded.

    Attributes:
        name: The zoo name (``remoteclip-vit-b-32``).
        family: The project that trained it (RemoteCLIP, SkyCLIP, GeoRSCLIP).
        arch: The open_clip architecture to load it into, activation included
            (``ViT-B-32-quickgelu`` for OpenAI-initialised weights).
        base: The architecture without the activation suffix.
        initialised_from: The weights the authors started from (``openai``, ``laion2b_e16``).
        source: ``{"hf_hub": repo, "filename": path}`` or ``{"url": url, "archive_member": glob}``.
        layout: How the file stores its weights (for the docs; loading detects it).
        mean: Normalisation mean. std: Normalisation standard deviation.
        sha256: The expected file hash, or None when it could not be verified.
        licence: The licence as stated by the authors. paper: Citation. notes: Caveats.
    """

    name: str
    family: str
    arch: str
    base: str
    initialised_from: str
    source: dict[str, str]
    layout: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    sha256: str | None
    licence: str
    paper: str = ""
    notes: str = ""

    @property
    def quick_gelu(self) -> bool:
        """Whether the weights need QuickGELU (OpenAI-initialised)."""
        return self.arch.endswith("-quickgelu")

    @property
    def location(self) -> str:
        """Human-readable download location."""
        if "hf_hub" in self.source:
            return f"hf-hub:{self.source['hf_hub']}/{self.source['filename']}"
        return self.source["url"]


_EXTRA_ENTRIES: dict[str, ZooEntry] = {}


def _entry_from_dict(raw: dict[str, Any]) -> ZooEntry:
    return ZooEntry(
        **{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])}  # type: ignore[arg-type]
    )


@lru_cache(maxsize=1)
def _builtin_entries() -> dict[str, ZooEntry]:
    raw = json.loads(ZOO_FILE.read_text(encoding="utf-8"))
    return {item["name"]: _entry_from_dict(item) for item in raw["models"]}


def zoo_entries() -> dict[str, ZooEntry]:
    """All known zoo entries by name (built-in ones and those added with :func:`register_entry`)."""
    return {**_builtin_entries(), **_EXTRA_ENTRIES}


def register_entry(entry: ZooEntry) -> None:
    """Add (or replace) a zoo entry for this process, e.g. a lab's own checkpoint."""
    _EXTRA_ENTRIES[entry.name] = entry


def cache_root() -> Path:
    """Where non-hub downloads are kept: ``$TERRASCRIBE_CACHE/models``."""
    base = os.environ.get("TERRASCRIBE_CACHE") or Path.home() / ".cache" / "terrascribe"
    return Path(base) / "models"


def _download_url(url: str, dest: Path) -> Path:
    """Stream ``url`` to ``dest`` (write to a temporary file, then rename)."""
    from terrascribe.progress import progress_bar

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(total, f"download {dest.name}") as advance:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    advance(len(block))
        os.replace(tmp, dest)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ModelError(f"download of {url} failed: {exc}") from exc
    return dest


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _extract_member(archive: Path, pattern: str, dest_dir: Path) -> Path:
    """Extract the weights file matching ``pattern`` (the last epoch when several match)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if fnmatch.fnmatch(Path(n).name, pattern)]
            if not names:
                raise ModelError(f"{archive}: no member matches {pattern!r} ({zf.namelist()[:10]})")
            member = sorted(names, key=lambda n: _natural_key(Path(n).name))[-1]
            # Never trust archive paths: keep only the base name (no traversal).
            target = dest_dir / Path(member).name
            if not target.exists():
                fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".part")
                with zf.open(member) as src, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.replace(tmp, target)
            return target
    except zipfile.BadZipFile as exc:
        msg = f"{archive}: not a valid zip archive ({exc}); delete it and retry"
        raise ModelError(msg) from exc


def download_weights(entry: ZooEntry, *, cache_dir: str | Path | None = None) -> Path:
    """Download (once) the weights file of a zoo entry and check its hash when one is known.

    Args:
        entry: The zoo entry.
        cache_dir: Where to keep the file (default: the Hugging Face cache for hub files,
            :func:`cache_root` for URLs).

    Returns:
        The local path of the weights file.
    """
    if "hf_hub" in entry.source:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(
                hf_hub_download(
                    repo_id=entry.source["hf_hub"],
                    filename=entry.source["filename"],
                    cache_dir=str(cache_dir) if cache_dir else None,
                )
            )
        except Exception as exc:
            raise ModelError(
                f"{entry.name}: could not download {entry.location} ({exc}). Download it by hand "
                f"and pass pretrained=<file> (CLI: --pretrained FILE)."
            ) from exc
    else:
        url = entry.source["url"]
        folder = Path(cache_dir) if cache_dir else cache_root()
        folder = folder / entry.name
        folder.mkdir(parents=True, exist_ok=True)
        local = folder / Path(urllib.request.urlparse(url).path).name
        if not local.exists():
            _download_url(url, local)
        member = entry.source.get("archive_member")
        path = _extract_member(local, member, folder) if member else local
    verify_sha256(path, entry.sha256)
    return path


@dataclass
class LoadedModel:
    """A model ready for inference; unpacks as ``model, preprocess, tokenizer``.

    Attributes:
        model: The open_clip model, in eval mode on ``device``.
        preprocess: The inference image transform (PIL image -> tensor).
        tokenizer: Callable turning a list of strings into a token tensor.
        name: The name it was loaded by (architecture or zoo name).
        pretrained: The weights it was loaded with (tag, path, hub id), None for random init.
        arch: The open_clip architecture (or ``hf-hub:``/``local-dir:`` identifier).
        fingerprint: A SHA-256 that changes whenever the weights, architecture, preprocessing or
            precision change; the key of every embedding cache.
        embed_dim: Embedding size. image_size: Input size in pixels (int, or (h, w) if not square).
        device: Where the model lives. precision: The open_clip precision it was created with.
        weights_path: The local weights file, when there is one.
        entry: The zoo entry, when loaded by a zoo name.
    """

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    name: str
    pretrained: str | None
    arch: str
    fingerprint: str
    embed_dim: int
    image_size: int | tuple[int, int]
    device: torch.device
    precision: str = "fp32"
    weights_path: Path | None = None
    entry: ZooEntry | None = None
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.preprocess, self.tokenizer))

    def __repr__(self) -> str:
        return (
            f"LoadedModel(name={self.name!r}, pretrained={self.pretrained!r}, arch={self.arch!r}, "
            f"embed_dim={self.embed_dim}, image_size={self.image_size}, device={self.device}, "
            f"fingerprint={self.fingerprint[:12]}...)"
        )


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _is_hf_layout_dir(path: Path) -> bool:
    return path.is_dir() and (path / _OPEN_CLIP_CONFIG).is_file()


def _hub_weights_file(spec: str) -> tuple[str, str] | None:
    """``org/repo/sub/file.pt`` -> (``org/repo``, ``sub/file.pt``); None for ``org/repo``."""
    parts = spec.strip("/").split("/")
    if len(parts) < 3:
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


@dataclass
class _Plan:
    """What to create and which weights to load, decided before touching torch."""

    arch: str  # open_clip model name handed to create_model (maybe with a schema)
    tag: str | None = None  # open_clip pretrained tag
    weights_file: Path | None = None  # loaded by terrascribe's strict loader
    identity: dict[str, Any] = field(default_factory=dict)  # what the weights are (fingerprint)
    entry: ZooEntry | None = None


def _plan_pretrained(arch: str, pretrained: str | None, seed: int) -> _Plan:
    import open_clip

    if pretrained is None:
        return _Plan(arch, identity={"random_init": seed, "open_clip": open_clip.__version__})
    if pretrained.startswith(_HF_PREFIX):
        spec = pretrained[len(_HF_PREFIX) :]
        repo_file = _hub_weights_file(spec)
        if repo_file is None:  # a whole repo in the hf-hub layout: open_clip reads its config
            return _Plan(pretrained, identity={"hf_hub": spec})
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(repo_id=repo_file[0], filename=repo_file[1]))
        except Exception as exc:
            raise ModelError(f"could not download {pretrained}: {exc}") from exc
        return _Plan(arch, weights_file=path, identity={"hf_hub": spec})
    path = Path(pretrained).expanduser()
    if _is_hf_layout_dir(path):
        return _Plan(_LOCAL_DIR_PREFIX + str(path.resolve()), identity={"local_dir": True})
    if path.is_file():
        return _Plan(arch, weights_file=path)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained in tags:
        cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        source = cfg.get("hf_hub") or cfg.get("url") or ""
        return _Plan(arch, tag=pretrained, identity={"tag": pretrained, "source": source})
    raise ModelError(
        f"pretrained={pretrained!r} is neither a file, a folder with {_OPEN_CLIP_CONFIG}, an "
        f"'hf-hub:' id, nor an open_clip tag of {arch!r} (tags: {tags or 'none'})"
    )


def _plan(name: str, pretrained: str | None, seed: int, cache_dir: str | Path | None) -> _Plan:
    import open_clip

    register_architectures()
    entries = zoo_entries()
    if name in entries:
        entry = entries[name]
        if pretrained is None:
            weights = download_weights(entry, cache_dir=cache_dir)
        else:
            weights = Path(pretrained).expanduser()
            if not weights.is_file():
                raise ModelError(f"{name}: pretrained file {weights} not found")
        return _Plan(entry.arch, weights_file=weights, entry=entry, identity={"zoo": name})
    if name.startswith((_HF_PREFIX, _LOCAL_DIR_PREFIX)):
        if pretrained is not None:
            raise ModelError(f"{name} names its own weights; do not pass pretrained={pretrained!r}")
        if name.startswith(_LOCAL_DIR_PREFIX):  # the folder may move: its content is what counts
            return _Plan(name, identity={"local_dir": True})
        return _Plan(name, identity={"hf_hub": name[len(_HF_PREFIX) :]})
    if _is_hf_layout_dir(Path(name)):
        return _plan(_LOCAL_DIR_PREFIX + str(Path(name).resolve()), pretrained, seed, cache_dir)
    if name.replace("/", "-") not in open_clip.list_models():
        raise ModelError(
            f"unknown model {name!r}: not a zoo name ({', '.join(entries)}) nor an open_clip "
            f"architecture (see open_clip.list_models())"
        )
    return _plan_pretrained(name.replace("/", "-"), pretrained, seed)


def _schema_weights_file(arch: str) -> Path | None:
    """The weights file open_clip loaded for a ``local-dir:``/``hf-hub:`` model (for hashing)."""
    from open_clip.factory import _find_checkpoint_in_dir
    from open_clip.pretrained import download_pretrained_from_hf

    if arch.startswith(_LOCAL_DIR_PREFIX):
        found = _find_checkpoint_in_dir(Path(arch[len(_LOCAL_DIR_PREFIX) :]))
        return Path(found) if found else None
    if arch.startswith(_HF_PREFIX):
        return Path(download_pretrained_from_hf(arch[len(_HF_PREFIX) :]))  # cached by now
    return None


def _image_size(model: torch.nn.Module) -> int | tuple[int, int]:
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, (tuple, list)):
        return int(size[0]) if size[0] == size[1] else (int(size[0]), int(size[1]))
    return int(size) if size is not None else 224


def _fingerprint(
    plan: _Plan, precision: str, preprocess_cfg: dict[str, Any], model_kwargs: dict[str, Any]
) -> str:
    identity = dict(plan.identity)
    if plan.weights_file is not None:
        identity["sha256"] = file_sha256(plan.weights_file)
    if plan.tag is None and plan.arch.startswith((_HF_PREFIX, _LOCAL_DIR_PREFIX)):
        found = _schema_weights_file(plan.arch)
        identity["sha256"] = file_sha256(found) if found else None
    arch = plan.arch if not plan.arch.startswith(_LOCAL_DIR_PREFIX) else _LOCAL_DIR_PREFIX
    payload = {
        "arch": arch,
        "weights": identity,
        "precision": precision,
        "preprocess": {k: preprocess_cfg.get(k) for k in sorted(preprocess_cfg)},
    }
    if model_kwargs:  # absent otherwise, so fingerprints of plain loads stay as they were
        payload["model_kwargs"] = model_kwargs
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class _DropRandomInitWarning(logging.Filter):
    # open_clip warns "initialized randomly" even when terrascribe loads the weights right after.
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    root = logging.getLogger()
    flt = _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def load_model(
    name: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    **model_kwargs: Any,
) -> LoadedModel:
    """Load an open_clip model or zoo checkpoint for inference.

    Args:
        name: An open_clip architecture (``"ts-tiny"``, ``"ViT-B-32"``), a zoo name
            (``"remoteclip-vit-b-32"``), ``"hf-hub:org/repo"``, ``"local-dir:/path"`` or a folder
            in the hf-hub layout.
        pretrained: Weights (see the module docstring); None means random init for an
            architecture and the published file for a zoo name.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"``.
        seed: Seed of the random initialisation (used when no weights cover the model).
        precision: An open_clip precision (``fp32``, ``fp16``, ``bf16``, ``amp``...).
        cache_dir: Download folder for zoo weights.
        **model_kwargs: Passed to the open_clip model constructor (e.g. ``init_logit_bias=-10``
            to train a CLIP checkpoint with the SigLIP loss); part of the fingerprint.

    Returns:
        A :class:`LoadedModel` (unpacks as ``model, preprocess, tokenizer``), in eval mode.

    Raises:
        ModelError: Unknown name, unusable ``pretrained``, or a failed download.
        CheckpointError: A weights file that cannot be read safely or does not fit.
    """
    import open_clip

    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    plan = _plan(name, pretrained, seed, cache_dir)
    dev = _resolve_device(device)
    norm: dict[str, Any] = {}
    if plan.entry is not None:
        norm = {"image_mean": plan.entry.mean, "image_std": plan.entry.std}
    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(
            plan.arch,
            pretrained=plan.tag,
            precision=precision,
            device=dev,
            **norm,
            **model_kwargs,
        )
    if plan.weights_file is not None:
        load_weights(model, plan.weights_file, arch=plan.arch)
    model.eval()
    tokenizer = open_clip.get_tokenizer(plan.arch)
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    cfg = open_clip.get_model_config(plan.arch) or {}
    embed_dim = int(cfg.get("embed_dim") or model.text_projection.shape[-1])
    weights_path = plan.weights_file
    if weights_path is None and plan.tag is None:
        weights_path = _schema_weights_file(plan.arch)
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        name=name,
        pretrained=pretrained if plan.entry is None else str(plan.weights_file),
        arch=plan.arch,
        fingerprint=_fingerprint(plan, precision, preprocess_cfg, model_kwargs),
        embed_dim=embed_dim,
        image_size=_image_size(model),
        device=dev,
        precision=precision,
        weights_path=weights_path,
        entry=plan.entry,
        preprocess_cfg=preprocess_cfg,
    )


__all__ = [
    "CheckpointError",
    "LoadedModel",
    "ModelError",
    "ZooEntry",
    "download_weights",
    "load_model",
    "register_entry",
    "zoo_entries",
]
