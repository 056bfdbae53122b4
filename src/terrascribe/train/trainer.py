"""The training loop: continual contrastive pre-training of an open_clip model on terrascribe data.

One function, :func:`train`, runs on a CPU, one GPU, or many GPUs/nodes under ``torchrun`` (DDP;
gloo on CPU, NCCL on GPU). Losses come from open_clip (``ClipLoss`` with ``local_loss`` and
``gather_with_grad``, or ``SigLipLoss``). Gradient accumulation caches the features of every
micro-batch first, so the contrastive loss sees the whole accumulated batch (as open_clip_train
does), not a sum of small-batch losses.

``resume`` restores model, optimiser, scheduler, grad scaler, random states and the data position,
so an interrupted run that is resumed ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from terrascribe.shards import atomic_write_text
from terrascribe.train.checkpoint import (
    export_hf,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from terrascribe.train.data import (
    AugmentConfig,
    TrainStream,
    build_transform,
    decode_size_for,
    make_loader,
    make_sources,
    samples_per_epoch,
    steps_for_epochs,
)

EvalFn = Callable[[torch.nn.Module, Any, Any], dict[str, float]]
LOSSES = ("clip", "siglip")
PRECISIONS = ("fp32", "amp", "amp_bf16")
# Config fields that define the data stream and the optimisation: a resumed run must keep them.
_RESUME_FIXED = (
    "data",
    "weights",
    "model",
    "pretrained",
    "batch_size",
    "accum_steps",
    "workers",
    "shuffle_shards",
    "seed",
    "augment",
    "loss",
    "lr",
    "warmup",
    "schedule",
)


class TrainError(ValueError):
    """A training configuration that cannot work, or a run folder in the way."""


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in every checkpoint.

    Attributes:
        data: terrascribe dataset folders. weights: Mixing weight of each (default: their sizes).
        out: Run folder (checkpoints, metrics.jsonl, tensorboard/, export/).
        model: open_clip architecture or zoo name. pretrained: Weights to start from.
        steps: Optimizer steps; or ``epochs`` (passes over the data; 1 when neither is given).
        batch_size: Samples per micro-batch per process. accum_steps: Micro-batches per step.
        lr, min_lr, weight_decay, beta1, beta2, eps: AdamW and its schedule.
        warmup: Linear warm-up steps. schedule: ``cosine`` (to ``min_lr``) or ``const``.
        grad_clip: Max gradient norm (None: no clipping).
        precision: ``fp32``, ``amp`` (fp16 autocast + grad scaler, GPU) or ``amp_bf16``.
        loss: ``clip`` (InfoNCE) or ``siglip`` (sigmoid; adds a logit bias to CLIP models).
        lock_image, lock_image_unlocked_groups: Freeze the image tower (but its last N groups).
        lock_text, lock_text_unlocked_layers: Freeze the text tower (but its last N layers).
        grad_checkpointing: Trade compute for memory.
        augment: RS augmentations (see :class:`~terrascribe.train.data.AugmentConfig`).
        workers: DataLoader workers per process. seed: Seed of init, data order, augmentation.
        shuffle_shards: Shards whose samples are shuffled together (per worker).
        save_every: Checkpoint period in steps (a final one is always written).
        keep_last: Checkpoints kept (None: all). eval_every: Period of ``eval_fn`` (None: end only).
        log_every: Period of metric lines. device: ``auto``, ``cpu``, ``cuda``.
        resume: False, True (the run folder's latest checkpoint, if any) or a checkpoint path.
        stop_at_step: End this run after that step with a checkpoint (for time-limited queues).
        export: Write the hf-hub layout to ``out/export`` at the end.
        tensorboard: Write TensorBoard logs. progress: Show a progress bar.
    """

    data: list[str]
    out: str
    model: str = "ts-tiny"
    pretrained: str | None = None
    weights: list[float] | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 5e-5
    min_lr: float = 0.0
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: int = 100
    schedule: str = "cosine"
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    loss: str = "clip"
    lock_image: bool = False
    lock_image_unlocked_groups: int = 0
    lock_text: bool = False
    lock_text_unlocked_layers: int = 0
    grad_checkpointing: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 2
    shuffle_shards: int = 4
    seed: int = 0
    save_every: int = 1000
    keep_last: int | None = 2
    eval_every: int | None = None
    log_every: int = 10
    device: str = "auto"
    resume: bool | str = False
    stop_at_step: int | None = None
    export: bool = True
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.data = [str(d) for d in self.data]
        self.out = str(self.out)
        if isinstance(self.augment, dict):
            aug = dict(self.augment)
            for key in ("crop_scale", "crop_ratio"):
                if aug.get(key) is not None:
                    aug[key] = tuple(aug[key])
            self.augment = AugmentConfig(**aug)
        if self.loss not in LOSSES:
            raise TrainError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise TrainError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.schedule not in ("cosine", "const"):
            raise TrainError(f"schedule must be 'cosine' or 'const', not {self.schedule!r}")
        if self.batch_size < 1 or self.accum_steps < 1:
            raise TrainError("batch_size and accum_steps must be at least 1")
        if self.steps is not None and self.epochs is not None:
            raise TrainError("give steps or epochs, not both")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (saved in checkpoints, which load with ``weights_only=True``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        out: Run folder. checkpoint: The last checkpoint. export: The hf-hub folder, if written.
        step: Optimizer steps done. total_steps: Steps of the whole run.
        final_loss: Loss of the last step. samples_per_s: Mean training throughput of this
            process's run (all ranks together), excluding the first step.
        metrics: Path of metrics.jsonl. evals: Results of ``eval_fn`` by step.
    """

    out: Path
    checkpoint: Path
    export: Path | None
    step: int
    total_steps: int
    final_loss: float
    samples_per_s: float
    metrics: Path
    evals: dict[int, dict[str, float]]


# --------------------------------------------------------------------------------------------
# Distributed setup


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this call created the process group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return _Dist(dist.get_rank(), dist.get_world_size(), local, owns)


def _device(config: TrainConfig, dist: _Dist) -> torch.device:
    kind = config.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        torch.cuda.set_device(dist.local_rank)
        # TF32 matmuls, as open_clip_train sets them: ~fp32 accuracy at tensor-core speed.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", dist.local_rank)
    return torch.device(kind)


# --------------------------------------------------------------------------------------------
# Optimisation pieces


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on gains, biases, embeddings of size 1-d and the temperature (open_clip's rule).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or any(s in name for s in ("bn", "ln", "bias", "logit_scale"))
        (no_decay if exclude else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def lr_factor(step: int, *, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step`` (linear warm-up, then cosine/const)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "const":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _make_loss(config: TrainConfig, dist: _Dist) -> torch.nn.Module:
    from open_clip.loss import ClipLoss, SigLipLoss

    if config.loss == "siglip":
        return SigLipLoss(rank=dist.rank, world_size=dist.world_size)
    return ClipLoss(
        local_loss=dist.world_size > 1,
        gather_with_grad=dist.world_size > 1,
        cache_labels=True,
        rank=dist.rank,
        world_size=dist.world_size,
    )


def _loss_value(loss_fn: torch.nn.Module, out: dict[str, torch.Tensor]) -> torch.Tensor:
    args = [out["image_features"], out["text_features"], out["logit_scale"]]
    if "logit_bias" in out and out["logit_bias"] is not None:
        args.append(out["logit_bias"])
    return loss_fn(*args)


def _autocast(config: TrainConfig, device: torch.device):
    if config.precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if config.precision == "amp" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Logging


class _Logger:
    """metrics.jsonl (+ TensorBoard) on the main process; nothing elsewhere."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, start_step: int) -> None:
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # drop lines past the resume point: no duplicates after resume
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step
            ]
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **values}, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------------------------
# The loop


def _resume_source(config: TrainConfig, out: Path) -> Path | None:
    if config.resume is False or config.resume is None:
        existing = latest_checkpoint(out)
        if existing is not None:
            raise TrainError(
                f"{out} already holds checkpoints ({existing.name}): pass resume=True (--resume) "
                "to continue that run, or choose another output folder"
            )
        return None
    if config.resume is True:
        return latest_checkpoint(out)  # nothing yet: start from scratch
    path = Path(config.resume)
    if not path.is_file():
        raise TrainError(f"resume checkpoint {path} not found")
    return path


def _check_resumable(config: TrainConfig, saved: dict[str, Any], world_size: int, path: Path):
    old = TrainConfig.from_dict(saved["config"]).to_dict()
    new = config.to_dict()
    changed = [k for k in _RESUME_FIXED if old.get(k) != new.get(k)]
    if saved["data"]["world_size"] != world_size:
        changed.append(f"world_size ({saved['data']['world_size']} -> {world_size})")
    if changed:
        raise TrainError(
            f"cannot resume {path}: these settings differ from the interrupted run, so it would "
            f"not continue the same run: {changed}. Use the original values or a new --out."
        )


def _step_accumulated(
    model: torch.nn.Module,
    micro: list[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: torch.nn.Module,
    scaler: torch.amp.GradScaler,
    autocast: Callable[[], Any],
) -> float:
    """One optimizer step's backward passes over ``micro`` batches; returns the loss."""
    if len(micro) == 1:
        images, texts = micro[0]
        with autocast():
            loss = _loss_value(loss_fn, model(images, texts))
        scaler.scale(loss).backward()
        return float(loss.detach())
    # Features of every micro-batch without gradients, then each micro-batch again with
    # gradients in its slot: the loss sees the whole accumulated batch.
    cached: list[dict[str, torch.Tensor]] = []
    with torch.no_grad(), autocast():
        for images, texts in micro:
            cached.append(model(images, texts))
    total = 0.0
    for j, (images, texts) in enumerate(micro):
        sync = nullcontext() if j == len(micro) - 1 or not hasattr(model, "no_sync") else None
        with sync or model.no_sync(), autocast():
            out = model(images, texts)
            merged = {
                k: torch.cat([out[k] if i == j else c[k] for i, c in enumerate(cached)])
                for k in ("image_features", "text_features")
            }
            merged["logit_scale"] = out["logit_scale"]
            if out.get("logit_bias") is not None:
                merged["logit_bias"] = out["logit_bias"]
            loss = _loss_value(loss_fn, merged)
        scaler.scale(loss).backward()
        total = float(loss.detach())
    return total


def train(config: TrainConfig, eval_fn: EvalFn | None = None) -> TrainResult:
    """Train (or continue training) a CLIP model on terrascribe datasets.

    Args:
        config: The run's settings.
        eval_fn: Optional ``eval_fn(model, preprocess, tokenizer) -> dict`` (e.g. zero-shot
            accuracy on a benchmark), called on the main process every ``eval_every`` steps and
            at the end, with the model in eval mode; its numbers go to the metrics log.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainError: Inconsistent settings, or a run folder that cannot be resumed.
    """
    from terrascribe.models.zoo import load_model
    from terrascribe.progress import progress_bar

    kind = "cuda" if config.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    dist = _init_distributed(kind)
    device = _device(config, dist)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    sources = make_sources(config.data, config.weights)
    global_batch = config.batch_size * config.accum_steps * dist.world_size
    total_steps = config.steps or steps_for_epochs(config.epochs or 1.0, sources, global_batch)

    resume_from = _resume_source(config, out)
    saved = load_checkpoint(resume_from) if resume_from else None
    if saved is not None:
        _check_resumable(config, saved, dist.world_size, resume_from)

    model_kwargs = {"init_logit_bias": -10.0} if config.loss == "siglip" else {}
    # A resumed run rebuilds the architecture only: its weights come from the checkpoint.
    bundle = load_model(
        config.model if saved is None else str(saved["arch"]),
        config.pretrained if saved is None else None,
        device=device,
        seed=config.seed,
        **model_kwargs,
    )
    preprocess_cfg = dict(bundle.preprocess_cfg if saved is None else saved["preprocess_cfg"])
    model = bundle.model
    if saved is not None:
        model.load_state_dict(saved["state_dict"])
    model.output_dict = True  # forward returns features + logit scale/bias by name
    model.train()
    if config.lock_image:
        model.lock_image_tower(unlocked_groups=config.lock_image_unlocked_groups)
    if config.lock_text:
        model.lock_text_tower(unlocked_layers=config.lock_text_unlocked_layers)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)

    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
    min_ratio = config.min_lr / config.lr if config.lr > 0 else 0.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(
            s,
            warmup=config.warmup,
            total=total_steps,
            schedule=config.schedule,
            min_ratio=min_ratio,
        ),
    )
    scaler = torch.amp.GradScaler(
        "cuda", enabled=config.precision == "amp" and device.type == "cuda"
    )
    start_step = 0
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        start_step = int(saved["step"])

    train_model: torch.nn.Module = model
    if dist.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    mean, std = preprocess_cfg["mean"], preprocess_cfg["std"]
    stream = TrainStream(
        sources,
        batch_size=config.batch_size,
        transform=build_transform(bundle.image_size, mean, std, config.augment),
        tokenizer=bundle.tokenizer,
        seed=config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        workers=config.workers,
        start_batch=start_step * config.accum_steps,
        decode_size=decode_size_for(bundle.image_size, config.augment),
        shuffle_shards=config.shuffle_shards,
    )
    loader = make_loader(stream, pin_memory=device.type == "cuda")
    loss_fn = _make_loss(config, dist)
    logger = _Logger(out, dist.main, config.tensorboard, start_step)
    autocast = lambda: _autocast(config, device)  # noqa: E731
    end_step = min(total_steps, config.stop_at_step or total_steps)
    run_name = out.name
    epoch_samples = samples_per_epoch(sources)

    def payload(step: int) -> dict[str, Any]:
        import open_clip

        model_cfg = open_clip.get_model_config(bundle.arch) or saved_cfg
        return {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "step": step,
            "epoch": step * global_batch / epoch_samples,
            "name": run_name,
            "arch": bundle.arch,
            "model_cfg": {**model_cfg, **model_kwargs},
            "preprocess_cfg": {k: _plain(v) for k, v in preprocess_cfg.items()},
            "fingerprint_start": bundle.fingerprint,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rng_state(),
            "data": {
                "batches": step * config.accum_steps,
                "workers": config.workers,
                "world_size": dist.world_size,
            },
            "config": config.to_dict(),
            "total_steps": total_steps,
        }

    saved_cfg = saved["model_cfg"] if saved is not None else {}
    evals: dict[int, dict[str, float]] = {}

    def run_eval(step: int) -> None:
        if eval_fn is None or not dist.main:
            return
        model.eval()
        with torch.no_grad():
            raw = eval_fn(model, bundle.preprocess, bundle.tokenizer)
        result = {f"eval/{k}": float(v) for k, v in raw.items()}
        model.train()
        evals[step] = result
        logger.log(step, result)

    last_ckpt = resume_from
    loss_value = float("nan")
    step = start_step
    timed_samples, timed_seconds = 0, 0.0
    batches = iter(loader)
    try:
        with progress_bar(
            end_step - start_step, f"train {run_name}", enabled=config.progress and dist.main
        ) as advance:
            while step < end_step:
                t0 = time.perf_counter()
                micro = []
                for _ in range(config.accum_steps):
                    images, texts = next(batches)
                    micro.append((images.to(device, non_blocking=True), texts.to(device)))
                t_data = time.perf_counter() - t0
                optimizer.zero_grad(set_to_none=True)
                loss_value = _step_accumulated(train_model, micro, loss_fn, scaler, autocast)
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                lr_used = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                step += 1
                dt = time.perf_counter() - t0
                if step > start_step + 1:  # the first step pays start-up costs
                    timed_samples += global_batch
                    timed_seconds += dt
                if dist.main and (step % config.log_every == 0 or step == end_step):
                    logger.log(
                        step,
                        {
                            "loss": loss_value,
                            "lr": lr_used,
                            "logit_scale": float(model.logit_scale.detach().exp()),
                            "epoch": step * global_batch / epoch_samples,
                            "samples_per_s": global_batch / dt,
                            "data_s": t_data,
                            "step_s": dt,
                        },
                    )
                if dist.main and (step % config.save_every == 0 or step == end_step):
                    last_ckpt = save_checkpoint(out, step, payload(step), config.keep_last)
                if config.eval_every and step % config.eval_every == 0 and step != end_step:
                    run_eval(step)
                advance()
    except KeyboardInterrupt:
        already = last_ckpt is not None and last_ckpt.name == f"step_{step:08d}.pt"
        if dist.main and step > start_step and not already:
            save_checkpoint(out, step, payload(step), config.keep_last)
        raise
    finally:
        logger.close()
    run_eval(step)
    export_dir = None
    if config.export and dist.main and step == total_steps and last_ckpt is not None:
        export_dir = export_hf(last_ckpt, out / "export")
    if dist.world_size > 1:
        torch.distributed.barrier()
        if dist.owns_group:
            torch.distributed.destroy_process_group()
    return TrainResult(
        out=out,
        checkpoint=last_ckpt if last_ckpt is not None else out,
        export=export_dir,
        step=step,
        total_steps=total_steps,
        final_loss=loss_value,
        samples_per_s=timed_samples / timed_seconds if timed_seconds else float("nan"),
        metrics=out / "metrics.jsonl",
        evals=evals,
    )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
