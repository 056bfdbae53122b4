"""Wall time of terrascribe eval vs CLIP_benchmark, same model, same data, same run.

Zero-shot classification and retrieval on a generated CLIP_benchmark webdataset folder
(classification: N images, 10 classes, 2 templates; retrieval: N images x 5 captions), with the
tiny registered model on CPU. terrascribe runs cold (empty embedding cache) and warm (cache
filled by the cold run). CLIP_benchmark has no embedding cache, so it is cold every time.

    .venv/bin/python benchmarks/eval.py [--n 600]

Timings are not tests and never fail; the machine is shared, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import builtins
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _float(value):
    # clip_benchmark 1.6 calls float() on 1-element arrays, an error on NumPy 2.
    if isinstance(value, np.ndarray):
        return builtins.float(value.reshape(-1)[0])
    return builtins.float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=600, help="images per dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    from terrascribe.evaluate.runner import evaluate
    from terrascribe.models.zoo import load_model
    from test_eval_reference import write_wds

    zeroshot_classification.float = _float
    torch.set_num_threads(1)
    bundle = load_model("ts-tiny", seed=0)
    model, preprocess, tokenizer = bundle
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for task, retrieval in (("zeroshot", False), ("retrieval", True)):
            root = write_wds(tmp / task, retrieval=retrieval, n=args.n)
            kind = "zeroshot_retrieval" if retrieval else "zeroshot_classification"

            t0 = time.perf_counter()
            ds = build_dataset(
                "wds/b", root=str(root), transform=preprocess, split="test", task=kind
            )
            loader = torch.utils.data.DataLoader(ds.batched(args.batch_size), batch_size=None)
            if retrieval:
                zeroshot_retrieval.evaluate(
                    model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10]
                )
            else:
                zeroshot_classification.evaluate(
                    model, loader, tokenizer, ds.classes, ds.templates, "cpu", amp=False
                )
            ref = time.perf_counter() - t0

            cache = tmp / f"cache-{task}"
            times = []
            for run in ("cold", "warm"):
                t0 = time.perf_counter()
                evaluate(
                    bundle,
                    root,
                    task,
                    tmp / f"res-{run}",
                    cache_dir=cache,
                    batch_size=args.batch_size,
                    progress=False,
                )
                times.append(time.perf_counter() - t0)
            rows.append((task, ref, *times))

    print(
        f"{'task':<10} {'clip_benchmark s':>17} {'ts cold s':>10} {'ts warm s':>10} "
        f"{'cold ratio':>11} {'warm speed-up':>14}"
    )
    for task, ref, cold, warm in rows:
        print(
            f"{task:<10} {ref:>17.2f} {cold:>10.2f} {warm:>10.2f} {cold / ref:>10.2f}x "
            f"{ref / warm:>13.1f}x"
        )
    print(f"({args.n} images, ts-tiny on CPU, 1 torch thread; ratio < 1 means terrascribe faster)")


if __name__ == "__main__":
    main()
