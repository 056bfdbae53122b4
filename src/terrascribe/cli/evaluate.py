"""``terrascribe eval``: evaluate models on RS benchmarks; ``eval report``; ``eval list``.

The group itself runs evaluations (its options come before any sub-command)::

    terrascribe eval --model ts-tiny --benchmark siri-whu --task all --out results/
    terrascribe eval --embeddings emb/ --task zeroshot --out results/
    terrascribe eval report results/
    terrascribe eval list
"""

from __future__ import annotations

from pathlib import Path

import typer

TASK_HELP = "zeroshot, retrieval, linear-probe, knn, few-shot, counting or all (repeatable)."


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"{what} is empty")
    return values


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise typer.BadParameter(f"{what} needs positive numbers, got {text!r}")
    return values


eval_app = typer.Typer(
    help="Evaluate models on RS benchmarks (zero-shot, retrieval, probes, k-NN, few-shot, "
    "counting); 'report' merges results; 'list' shows the benchmark registry.",
    invoke_without_command=True,
    no_args_is_help=True,
)


@eval_app.callback()
def run(
    ctx: typer.Context,
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="open_clip architecture or zoo name (ts-tiny, ViT-B-32, remoteclip-vit-b-32...).",
    ),
    pretrained: str | None = typer.Option(
        None, "--pretrained", help="open_clip tag, weights file, folder or hf-hub:org/name."
    ),
    benchmark: list[str] = typer.Option(
        [],
        "--benchmark",
        "-b",
        help="Registry name, NAME:OSM_DATASET for attribute tasks, "
        "or a path (class folders, CLIP_benchmark webdataset, terrascribe dataset, caption "
        "table, counting folder). Repeatable.",
    ),
    task: list[str] = typer.Option(["all"], "--task", "-t", help=TASK_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", help="Results folder."),
    templates: str | None = typer.Option(
        None,
        "--templates",
        help="Template set (skyscript, remoteclip, rs-ensemble, "
        "clip-eurosat...) or a file with one template per line ({c} = class name).",
    ),
    classnames: str | None = typer.Option(
        None, "--classnames", help="Class-name variant (clean-v1, folder, clip...) or a file."
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Score precomputed embeddings in this folder (no model)."
    ),
    save_embeddings: Path | None = typer.Option(
        None, "--save-embeddings", help="Also write the embeddings here (--embeddings layout)."
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Skip tasks whose result file exists (resume sweeps)."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Folder holding registry benchmarks ($TERRASCRIBE_DATA)."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Embedding cache ($TERRASCRIBE_CACHE/embeddings)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not cache embeddings."),
    split: str = typer.Option(
        "test", "--split", help="Zero-shot on 'test' images or 'all' (SkyScript's habit)."
    ),
    split_rule: str | None = typer.Option(
        None, "--split-rule", help="Override: remoteclip-80-20, all-test, split-folders."
    ),
    max_per_class: int | None = typer.Option(
        None, "--max-per-class", help="Subsample images per class and split (seeded)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for subsampling and probes."),
    dedup: bool = typer.Option(
        False, "--dedup", help="Retrieval: SkyScript's de-duplicated caption protocol."
    ),
    caption_prefix: str | None = typer.Option(
        None,
        "--caption-prefix",
        help="Retrieval: text before each caption (SkyScript: 'a satellite image. ').",
    ),
    knn_k: int = typer.Option(20, "--knn-k", help="k of k-NN."),
    knn_temperature: float = typer.Option(0.07, "--knn-temperature", help="k-NN temperature."),
    probe_c_grid: str = typer.Option(
        "0.01,0.1,1,10,100,1000,10000",
        "--probe-c-grid",
        help="Regularisation strengths C the linear/few-shot probes choose from.",
    ),
    shots: str = typer.Option("1,4,8,16,32", "--shots", help="Few-shot k values."),
    few_shot_seeds: str = typer.Option("0,1,2", "--few-shot-seeds", help="Few-shot seeds."),
    training_data: list[Path] = typer.Option(
        [],
        "--training-data",
        help="Dataset(s) the model was trained on (the report shows "
        "their contamination.json). Repeatable.",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1..."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Evaluate a model (or precomputed embeddings) on benchmarks; one JSON per task."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from terrascribe.evaluate.runner import (
        EvalOptions,
        default_cache_dir,
        evaluate,
        score_embeddings,
    )

    if out is None:
        raise typer.BadParameter("--out RESULTS_DIR is required", param_hint="--out")
    options = EvalOptions(
        templates=templates,
        classnames=classnames,
        split=split,
        split_rule=split_rule,
        max_per_class=max_per_class,
        seed=seed,
        dedup=dedup,
        caption_prefix=caption_prefix,
        knn_k=knn_k,
        knn_temperature=knn_temperature,
        c_grid=_floats(probe_c_grid, "--probe-c-grid"),
        shots=_ints(shots, "--shots"),
        few_shot_seeds=_ints(few_shot_seeds, "--few-shot-seeds"),
        training_data=[str(p) for p in training_data],
    )
    console = Console(stderr=True)
    if embeddings is not None:
        if model is not None:
            raise typer.BadParameter("give --model or --embeddings, not both")
        paths = score_embeddings(
            embeddings,
            task,
            out,
            benchmark=benchmark[0] if benchmark else None,
            options=options,
            skip_existing=skip_existing,
        )
    else:
        if model is None or not benchmark:
            raise typer.BadParameter("--model and --benchmark are required (or --embeddings)")
        if save_embeddings is not None and len(benchmark) > 1:
            # one folder holds one benchmark's embeddings: a second would overwrite the first
            raise typer.BadParameter(
                "--save-embeddings takes one --benchmark; run once per benchmark"
            )
        from terrascribe.models.zoo import load_model

        bundle = load_model(model, pretrained, device=device, seed=seed)
        cache = None if no_cache else (cache_dir or default_cache_dir())
        paths = []
        for bench in benchmark:
            paths += evaluate(
                bundle,
                bench,
                task,
                out,
                options=options,
                data_root=data_root,
                cache_dir=cache,
                skip_existing=skip_existing,
                batch_size=batch_size,
                progress=not quiet,
                save_embeddings=save_embeddings,
            )
    _print_results(console, paths)


@eval_app.command("report")
def report(
    results_dir: Path = typer.Argument(..., help="Folder of result JSONs."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (RESULTS_DIR/report)."),
) -> None:
    """Merge results into a Markdown/CSV leaderboard and plots."""
    from terrascribe.evaluate.report import write_report

    info = write_report(results_dir, out)
    typer.echo(
        f"{info['results']} results -> {info['markdown']}, {info['csv']}, "
        f"{len(info['plots'])} plots"
    )


@eval_app.command("list")
def list_(
    task: str | None = typer.Option(
        None, "--task", help="Only classification, retrieval or counting benchmarks."
    ),
) -> None:
    """Show the benchmark registry and the template sets."""
    from rich.console import Console
    from rich.table import Table

    from terrascribe.evaluate.benchmarks import list_benchmarks, template_sets

    table = Table(title="terrascribe benchmark registry")
    table.add_column("name", no_wrap=True)
    for col in ("task", "classes", "layout", "split", "licence"):
        table.add_column(col)
    for b in list_benchmarks():
        if task and b.task != task:
            continue
        table.add_row(b.name, b.task, str(len(b.classes) or "-"), b.layout, b.split, b.licence)
    console = Console()
    console.print(table)
    sets = template_sets()
    console.print("template sets: " + ", ".join(f"{k} ({len(v)})" for k, v in sets.items()))


def _print_results(console, paths: list[Path]) -> None:
    import json

    from rich.table import Table

    table = Table(title="results")
    for col in ("benchmark", "task", "metrics", "file"):
        table.add_column(col)
    for path in paths:
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        shown = {
            k: v for k, v in result["metrics"].items() if isinstance(v, float) and "std" not in k
        }
        text = ", ".join(f"{k}={100 * v:.1f}" for k, v in list(shown.items())[:7])
        table.add_row(result["benchmark"]["name"], result["task"], text, path.name)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(eval_app, name="eval")
