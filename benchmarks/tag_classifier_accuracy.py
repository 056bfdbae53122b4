"""Held-out accuracy of the two-stage tag classifier on splits of the packaged tag table.

Stage I: is the tag visible from above; stage II: its coarsest visible GSD class (5 classes).
Each line is compared with the majority-class baseline of the same split. Embeddings: hashed
character n-grams (no model) and, with ``--model``, a terrascribe model's text tower (``ts-tiny``
has random weights unless ``--pretrained`` is given: its figures show the plumbing, not a result).

Usage::

    python benchmarks/tag_classifier_accuracy.py
    python benchmarks/tag_classifier_accuracy.py --model ts-tiny
    python benchmarks/tag_classifier_accuracy.py --model remoteclip-vit-b-32 --pretrained ...
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from terrascribe.text.osm_tags import TagTable
from terrascribe.text.tag_classifier import (
    HashedNgramEmbedder,
    evaluate_tag_classifier,
    model_embedder,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="also embed with this model (e.g. ts-tiny)")
    parser.add_argument("--pretrained", default=None, help="weights for --model")
    parser.add_argument("--seeds", type=int, default=3, help="random splits per setting")
    args = parser.parse_args(argv)
    table = TagTable.load()
    embedders = {"hashed char 2-4-grams": HashedNgramEmbedder()}
    if args.model:
        from terrascribe.models.zoo import load_model

        bundle = load_model(args.model, args.pretrained, seed=0)
        label = args.model + ("" if args.pretrained else " (random weights)")
        embedders[label] = model_embedder(bundle)
    out = Table(title=f"tag classifier on table {table.version} ({len(table)} rows), 20% held out")
    for col in (
        "embedding",
        "split",
        "stage I acc",
        "majority",
        "stage II acc",
        "majority",
        "II within 1 level",
        "seconds",
    ):
        out.add_column(col, justify="left" if col in ("embedding", "split") else "right")
    for name, embed in embedders.items():
        for split in ("random", "key"):
            start = time.perf_counter()
            reports = [
                evaluate_tag_classifier(table, embed, split=split, seed=s)
                for s in range(args.seeds)
            ]
            seconds = (time.perf_counter() - start) / len(reports)

            def mean(field: str, reports=reports) -> str:
                return f"{sum(r[field] for r in reports) / len(reports):.3f}"

            out.add_row(
                name,
                split,
                mean("stage1_accuracy"),
                mean("stage1_majority"),
                mean("stage2_accuracy"),
                mean("stage2_majority"),
                mean("stage2_within_one_level"),
                f"{seconds:.1f}",
            )
    Console(width=160).print(out)


if __name__ == "__main__":
    main()
