"""Proof on real data: train ts-tiny on a scene dataset, watch held-out zero-shot accuracy rise.

    python benchmarks/train_scenes.py --data ../shared/data/scenes/rsscn7 --steps 600

Builds a terrascribe dataset from the training files of a ``<class>/<image>`` folder (captions
"a satellite image of a {class}" and two paraphrases), splits by file (a hash of the relative
path: deterministic, 80/20), trains the tiny CLIP on CPU from random init, and scores zero-shot
classification of the held-out files ("a satellite image of a {class}" per class, nearest text)
every ``--eval-every`` steps. Writes ``curve.json`` and ``curve.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from terrascribe.images import read_rgb
from terrascribe.models.zoo import load_model
from terrascribe.records import Sample, make_key
from terrascribe.shards import batched, write_dataset
from terrascribe.train import AugmentConfig, TrainConfig, train

TEMPLATES = (
    "a satellite image of a {}",
    "an aerial photograph of {} seen from above",
    "{} in a remote sensing image",
)
PROMPT = "a satellite image of a {}"


def split_files(root: Path, test_fraction: float = 0.2) -> tuple[list[Path], list[Path]]:
    """Deterministic split by file: the first hash byte of the relative path decides."""
    train_files, test_files = [], []
    for path in sorted(root.glob("*/*.jpg")):
        rel = path.relative_to(root).as_posix().encode()
        in_test = hashlib.sha256(rel).digest()[0] < 256 * test_fraction
        (test_files if in_test else train_files).append(path)
    return train_files, test_files


def class_name(path: Path) -> str:
    return path.parent.name.replace("_", " ")


def make_items(files: list[str], size: int):
    """Scene files -> samples (image downsized to ``size`` to keep CPU decoding cheap)."""
    for name in files:
        path = Path(name)
        img = read_rgb(path).resize((size, size), Image.BICUBIC)
        cls = class_name(path)
        yield Sample(
            key=make_key("scene", path.parent.name, path.stem),
            image=np.asarray(img),
            captions=[t.format(cls) for t in TEMPLATES],
            source="scenes",
            extra={"label": cls},
        )


def zero_shot_eval(test_files: list[Path], classes: list[str], preprocess):
    """An ``eval_fn`` scoring held-out zero-shot accuracy (images preprocessed once)."""
    images = torch.stack([preprocess(read_rgb(p)) for p in test_files])
    labels = torch.tensor([classes.index(class_name(p)) for p in test_files])

    @torch.no_grad()
    def eval_fn(model, _preprocess, tokenizer) -> dict[str, float]:
        img = torch.cat([model.encode_image(b) for b in images.split(256)])
        txt = model.encode_text(tokenizer([PROMPT.format(c) for c in classes]))
        img = torch.nn.functional.normalize(img, dim=-1)
        txt = torch.nn.functional.normalize(txt, dim=-1)
        pred = (img @ txt.T).argmax(dim=1)
        return {"zeroshot_top1": float((pred == labels).float().mean())}

    return eval_fn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/scenes/rsscn7"))
    ap.add_argument("--out", type=Path, default=Path("out/train_scenes"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--size", type=int, default=96, help="stored image size (px)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if not args.data.is_dir():
        print(f"{args.data}: scene folder not found", file=sys.stderr)
        return 2
    train_files, test_files = split_files(args.data)
    classes = sorted({class_name(p) for p in train_files})
    print(
        f"{args.data.name}: {len(classes)} classes, {len(train_files)} train / "
        f"{len(test_files)} held-out files; chance = {1 / len(classes):.3f}"
    )

    data_dir = args.out / "data"
    # Shards in shuffled order (seeded): files sorted by class would make class-pure shards.
    shuffled = [train_files[i] for i in np.random.default_rng(0).permutation(len(train_files))]
    jobs = [[str(p) for p in chunk] for chunk in batched(shuffled, 250)]
    write_dataset(
        data_dir,
        jobs,
        partial(make_items, size=args.size),
        builder="benchmark-scenes",
        params={"size": args.size, "templates": TEMPLATES},
        seed=0,
        inputs=[args.data],
        progress=False,
    )

    start = load_model("ts-tiny", seed=args.seed)
    eval_fn = zero_shot_eval(test_files, classes, start.preprocess)
    curve = {0: eval_fn(start.model.eval(), start.preprocess, start.tokenizer)["zeroshot_top1"]}
    print(f"step 0: held-out zero-shot top-1 {curve[0]:.3f}")

    run_dir = args.out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time: the curve is the point
    t0 = time.perf_counter()
    result = train(
        TrainConfig(
            data=[str(data_dir)],
            out=str(run_dir),
            model="ts-tiny",
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup=min(50, args.steps // 10),
            weight_decay=0.1,
            workers=args.workers,
            seed=args.seed,
            eval_every=args.eval_every,
            save_every=args.steps,
            log_every=10,
            augment=AugmentConfig(rotate90=True, flip=True, crop_scale=(0.67, 1.0)),
            tensorboard=False,
        ),
        eval_fn=eval_fn,
    )
    seconds = time.perf_counter() - t0
    curve.update({s: r["eval/zeroshot_top1"] for s, r in result.evals.items()})
    steps = sorted(curve)
    chance = 1 / len(classes)
    summary = {
        "dataset": args.data.name,
        "classes": classes,
        "train_files": len(train_files),
        "heldout_files": len(test_files),
        "chance": chance,
        "steps": steps,
        "zeroshot_top1": [curve[s] for s in steps],
        "final_top1": curve[steps[-1]],
        "best_top1": max(curve.values()),
        "train_seconds": seconds,
        "samples_per_s": result.samples_per_s,
        "config": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "curve.json").write_text(json.dumps(summary, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, summary["zeroshot_top1"], marker="o", label="held-out zero-shot top-1")
    ax.axhline(chance, color="grey", linestyle="--", label=f"chance ({chance:.3f})")
    ax.set_xlabel(f"optimizer step (batch {args.batch_size})")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ts-tiny on {args.data.name} (CPU, {seconds / 60:.1f} min)")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "curve.png", dpi=120)

    print(f"{'step':>6} {'top-1':>7}")
    for s in steps:
        print(f"{s:>6} {curve[s]:>7.3f}")
    print(
        f"final {summary['final_top1']:.3f} (best {summary['best_top1']:.3f}) vs chance "
        f"{chance:.3f}; {seconds:.0f} s of training, {result.samples_per_s:.0f} samples/s; "
        f"curve: {args.out / 'curve.png'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
