"""``terrascribe models ...`` (the zoo) and ``terrascribe train`` (continual CLIP pre-training)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

models_app = typer.Typer(help="The model zoo: RS CLIP checkpoints and open_clip models.")


@models_app.command("list")
def models_list(
    all_archs: bool = typer.Option(
        False, "--archs", help="Also list every open_clip architecture name."
    ),
) -> None:
    """Show the RS checkpoints terrascribe loads by name, and how each must be loaded."""
    from rich.console import Console
    from rich.table import Table

    from terrascribe.models.zoo import zoo_entries

    table = Table(title="terrascribe model zoo (load with --model NAME)")
    for col in ("name", "arch (activation)", "from", "download", "sha256", "licence"):
        table.add_column(col, overflow="fold")
    for e in zoo_entries().values():
        act = "QuickGELU" if e.quick_gelu else "GELU"
        sha = e.sha256[:12] + "…" if e.sha256 else "unverified"
        table.add_row(e.name, f"{e.arch} ({act})", e.initialised_from, e.location, sha, e.licence)
    console = Console()
    console.print(table)
    if all_archs:
        import open_clip

        import terrascribe.models  # noqa: F401  (registers ts-tiny)

        console.print(", ".join(open_clip.list_models()))


@models_app.command("export")
def models_export(
    checkpoint: Path = typer.Argument(..., help="A training checkpoint, or a run folder."),
    out: Path = typer.Argument(..., help="Folder for open_clip_config.json + safetensors."),
) -> None:
    """Export a training checkpoint in the hf-hub layout (load it with --model OUT)."""
    from terrascribe.train import export_hf

    typer.echo(export_hf(checkpoint, out))


def _pair(text: str | None) -> tuple[float, float] | None:
    if text is None or text.lower() == "none":
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"expected two numbers LO,HI (e.g. 0.67,1.0) or none, got {text!r}",
            param_hint="--crop-scale",
        ) from None
    if not 0 < lo <= hi <= 1:
        raise typer.BadParameter(
            f"need 0 < LO <= HI <= 1 (fractions of the image area), got {text!r}",
            param_hint="--crop-scale",
        )
    return (lo, hi)


def train_command(
    data: list[Path] = typer.Option(..., "--data", help="Dataset folder (repeat to mix several)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, metrics, export."),
    weights: list[float] = typer.Option(
        None, "--weights", help="Mixing weight per --data, in order (default: dataset sizes)."
    ),
    model: str = typer.Option("ts-tiny", help="open_clip architecture or zoo name."),
    pretrained: str = typer.Option(
        None, help="Starting weights: open_clip tag, file, hf-hub layout folder, hf-hub:..."
    ),
    steps: int = typer.Option(None, help="Optimizer steps."),
    epochs: float = typer.Option(None, help="Passes over the data (instead of --steps)."),
    batch_size: int = typer.Option(64, help="Samples per micro-batch per process."),
    accum_steps: int = typer.Option(1, help="Micro-batches per optimizer step."),
    lr: float = typer.Option(5e-5, help="Peak learning rate."),
    min_lr: float = typer.Option(0.0, help="Learning rate at the end of the cosine."),
    weight_decay: float = typer.Option(0.2, "--wd", help="AdamW weight decay."),
    warmup: int = typer.Option(100, help="Linear warm-up steps."),
    schedule: str = typer.Option("cosine", help="cosine or const."),
    grad_clip: float = typer.Option(1.0, help="Max gradient norm (0: off)."),
    precision: str = typer.Option("fp32", help="fp32, amp (fp16, GPU) or amp_bf16."),
    loss: str = typer.Option("clip", help="clip or siglip."),
    lock_image: bool = typer.Option(False, help="Freeze the image tower."),
    lock_image_unlocked_groups: int = typer.Option(
        0, help="With --lock-image: leave the last N layer groups trainable."
    ),
    lock_text: bool = typer.Option(False, help="Freeze the text tower."),
    lock_text_unlocked_layers: int = typer.Option(
        0, help="With --lock-text: leave the last N layers trainable."
    ),
    grad_checkpointing: bool = typer.Option(False, help="Save memory, spend compute."),
    rotate90: bool = typer.Option(True, help="Random 90-degree rotations."),
    flip: bool = typer.Option(True, help="Random horizontal/vertical flips."),
    crop_scale: str = typer.Option("0.67,1.0", help="RandomResizedCrop area range, or none."),
    color_jitter: float = typer.Option(0.0, help="Colour jitter strength (0: off)."),
    workers: int = typer.Option(2, help="Data-loading workers per process."),
    shuffle_shards: int = typer.Option(4, help="Shards shuffled together (shuffle window)."),
    seed: int = typer.Option(0, help="Seed of init, data order and augmentation."),
    save_every: int = typer.Option(1000, help="Checkpoint every N steps."),
    keep_last: int = typer.Option(2, help="Checkpoints to keep (0: all)."),
    log_every: int = typer.Option(10, help="Metrics line every N steps."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    resume_from: Path = typer.Option(None, help="Continue from this checkpoint file."),
    stop_at_step: int = typer.Option(None, help="End this run after that step (checkpointed)."),
    export: bool = typer.Option(True, help="Write the hf-hub layout to OUT/export at the end."),
    tensorboard: bool = typer.Option(True, help="Write TensorBoard logs to OUT/tensorboard."),
    eval_benchmark: list[str] = typer.Option(
        [], help="Benchmark (registry name or folder) scored during training (repeatable)."
    ),
    eval_task: list[str] = typer.Option(["zeroshot"], help="Tasks of the periodic evaluation."),
    eval_every: int = typer.Option(None, help="Evaluate every N steps (default: at the end)."),
    eval_max_per_class: int = typer.Option(None, help="Subsample evaluation images per class."),
    eval_data_root: Path = typer.Option(None, help="Root of registry benchmarks' files."),
) -> None:
    """Continually pre-train a CLIP model on terrascribe datasets (torchrun for DDP)."""
    from terrascribe.train import AugmentConfig, TrainConfig, train

    # Built before training so that a wrong benchmark fails now, not after the first N steps.
    eval_fn = None
    if eval_benchmark:
        from terrascribe.evaluate.runner import make_train_eval_fn

        eval_fn = make_train_eval_fn(
            eval_benchmark,
            tuple(eval_task),
            data_root=eval_data_root,
            max_per_class=eval_max_per_class,
        )

    config = TrainConfig(
        data=[str(d) for d in data],
        out=str(out),
        weights=list(weights) if weights else None,
        model=model,
        pretrained=pretrained,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        accum_steps=accum_steps,
        lr=lr,
        min_lr=min_lr,
        weight_decay=weight_decay,
        warmup=warmup,
        schedule=schedule,
        grad_clip=grad_clip or None,
        precision=precision,
        loss=loss,
        lock_image=lock_image,
        lock_image_unlocked_groups=lock_image_unlocked_groups,
        lock_text=lock_text,
        lock_text_unlocked_layers=lock_text_unlocked_layers,
        grad_checkpointing=grad_checkpointing,
        augment=AugmentConfig(
            rotate90=rotate90,
            flip=flip,
            crop_scale=_pair(crop_scale),
            color_jitter=color_jitter,
        ),
        workers=workers,
        shuffle_shards=shuffle_shards,
        seed=seed,
        save_every=save_every,
        keep_last=keep_last or None,
        log_every=log_every,
        device=device,
        resume=str(resume_from) if resume_from else resume,
        stop_at_step=stop_at_step,
        export=export,
        tensorboard=tensorboard,
        eval_every=eval_every,
    )
    result = train(config, eval_fn=eval_fn)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, one summary line (rank 0's)
    typer.echo(
        f"step {result.step}/{result.total_steps}  loss {result.final_loss:.4f}  "
        f"{result.samples_per_s:.1f} samples/s  checkpoint {result.checkpoint}"
        + (f"  export {result.export}" if result.export else "")
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(models_app, name="models")
    app.command("train")(train_command)
