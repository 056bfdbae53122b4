"""Models: the zoo (any open_clip model or RS checkpoint) and batched, cached embedding.

Importing this package registers terrascribe's own architectures with open_clip (``ts-tiny``: a
64 px ViT and a small text tower, a few MB, so training, evaluation and the demo run on CPU in
seconds).
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).with_name("configs")
TINY_MODEL = "ts-tiny"


def register_architectures() -> list[str]:
    """Register the JSON configs in :data:`CONFIG_DIR` with open_clip; return their names."""
    import open_clip

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    missing = [n for n in names if n not in open_clip.list_models()]
    if missing:
        open_clip.add_model_config(CONFIG_DIR)
    return names


register_architectures()
