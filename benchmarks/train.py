"""Training throughput: ``terrascribe train`` vs ``open_clip_train`` on the same shards, same run.

    python benchmarks/train.py                                  # ts-tiny on CPU
    python benchmarks/train.py --model ViT-B-32 --device cuda --precision amp \\
        --batch-size 256 --workers 12 --steps 40                # a GPU

Both trainers run as subprocesses with the same model, batch size, precision, workers, thread
count, gradient clipping and augmentation strength (random resized crop, scale 0.9-1.0, which
is open_clip_train's default; terrascribe's RS rotations/flips off), from random init, on the
same generated terrascribe shards. Throughput = samples / wall time of steps 3..N (the first two
pay start-up costs), from each trainer's own per-step log. Also reported: the rate of
terrascribe's data stream alone (decode, augment, tokenize; no model).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from terrascribe.records import Sample
from terrascribe.shards import Dataset, write_dataset

SKIP_STEPS = 2


def make_items(job: tuple[int, int, int]):
    """Smooth random 256 px images (realistic JPEG sizes) with two captions."""
    shard, n, size = job
    rng = np.random.default_rng(shard)
    for i in range(n):
        small = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        yield Sample(
            key=f"bench-{shard:04d}-{i:05d}",
            image=img,
            captions=[f"synthetic scene {i % 50}", f"an aerial image, tile {i}"],
            source="other",
        )


def ensure_data(path: Path, samples: int, per_shard: int, size: int, workers: int) -> Dataset:
    n_shards = max(1, samples // per_shard)
    jobs = [(s, per_shard, size) for s in range(n_shards)]
    write_dataset(
        path, jobs, make_items, builder="benchmark", seed=0, workers=workers, progress=False
    )
    return Dataset(path)


def _rate(step_times: list[float], batch: int) -> float:
    times = step_times[SKIP_STEPS:]
    return batch * len(times) / sum(times) if times else float("nan")


def run_terrascribe(args, ds: Dataset, out: Path, env: dict) -> float:
    run = out / "terrascribe"
    cmd = [
        sys.executable, "-m", "terrascribe.train",
        "--data", str(ds.path), "--out", str(run), "--model", args.model,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--workers", str(args.workers), "--precision", args.precision,
        "--device", args.device, "--lr", "1e-4", "--warmup", "2", "--grad-clip", "1.0",
        "--no-rotate90", "--no-flip", "--crop-scale", "0.9,1.0",
        "--log-every", "1", "--save-every", str(10**9), "--no-export", "--no-tensorboard",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"terrascribe train failed:\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return _rate([x["step_s"] for x in lines], args.batch_size)


_OC_LINE = re.compile(r"Train Epoch: .*Batch \(t\): [0-9.]+, ([0-9.e+]+)/s,")


def run_open_clip(args, ds: Dataset, out: Path, env: dict) -> float:
    cmd = [
        sys.executable, "-m", "terrascribe.models.openclip_train",
        "--train-data", ds.shard_urls(), "--dataset-type", "webdataset",
        "--train-num-samples", str(args.steps * args.batch_size), "--epochs", "1",
        "--model", args.model, "--batch-size", str(args.batch_size),
        "--workers", str(args.workers), "--precision", args.precision,
        "--lr", "1e-4", "--warmup", "2", "--grad-clip-norm", "1.0",
        "--log-every-n-steps", "1", "--save-frequency", "0", "--report-to", "",
        "--logs", str(out / "open_clip"), "--name", "bench",
    ]  # fmt: skip
    if args.device == "cpu":
        env = {**env, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log = out / "open_clip" / "bench" / "out.log"
    if proc.returncode != 0 or not log.exists():
        raise RuntimeError(f"open_clip_train failed:\n{proc.stderr[-3000:]}")
    rates = [float(m.group(1)) for m in _OC_LINE.finditer(log.read_text())]
    return _rate([args.batch_size / r for r in rates], args.batch_size)


def data_only(args, ds: Dataset) -> float:
    import torch

    from terrascribe.models.zoo import load_model
    from terrascribe.train import AugmentConfig, TrainStream, build_transform, make_sources
    from terrascribe.train.data import decode_size_for, make_loader

    bundle = load_model(args.model)
    augment = AugmentConfig(rotate90=False, flip=False, crop_scale=(0.9, 1.0))
    stream = TrainStream(
        make_sources([ds.path]),
        batch_size=args.batch_size,
        transform=build_transform(
            bundle.image_size,
            bundle.preprocess_cfg["mean"],
            bundle.preprocess_cfg["std"],
            augment,
        ),
        tokenizer=bundle.tokenizer,
        workers=args.workers,
        decode_size=decode_size_for(bundle.image_size, augment),
    )
    loader = iter(make_loader(stream, pin_memory=torch.cuda.is_available()))
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        next(loader)
        times.append(time.perf_counter() - t0)
    return _rate(times, args.batch_size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="ts-tiny")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of each trainer")
    ap.add_argument("--samples", type=int, default=4096, help="generated samples")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("out/bench_train"))
    ap.add_argument("--build-workers", type=int, default=1, help="processes writing the data")
    ap.add_argument("--skip-open-clip", action="store_true")
    args = ap.parse_args(argv)

    ds = ensure_data(args.out / "data", args.samples, 256, args.image_size, args.build_workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    import shutil

    for sub in ("terrascribe", "open_clip"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
    results = {"terrascribe train": run_terrascribe(args, ds, args.out, env)}
    if not args.skip_open_clip:
        results["open_clip_train"] = run_open_clip(args, ds, args.out, env)
    results["terrascribe data only"] = data_only(args, ds)

    ref = results.get("open_clip_train")
    print(
        f"\nmodel {args.model}, device {args.device}, precision {args.precision}, batch "
        f"{args.batch_size}, workers {args.workers}, threads {args.threads}, steps {args.steps} "
        f"(first {SKIP_STEPS} excluded), {len(ds)} samples of {args.image_size} px"
    )
    print(f"{'trainer':<24} {'samples/s':>10} {'vs open_clip_train':>19}")
    for name, rate in results.items():
        ratio = f"{rate / ref:.2f}x" if ref else "-"
        print(f"{name:<24} {rate:>10.1f} {ratio:>19}")
    (args.out / "results.json").write_text(
        json.dumps({**vars(args), "out": str(args.out), "results": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
