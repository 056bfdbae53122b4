"""The demo's HTML report: one static page with relative links to images written beside it."""

from __future__ import annotations

import csv
import html
import json
import shutil
from pathlib import Path
from typing import Any

from terrascribe.demo.steps import StepContext
from terrascribe.shards import Dataset, atomic_write_text, package_versions

SAMPLES_PER_DATASET = 6

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2733;
padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #dde3ea;padding-bottom:.3rem;margin-top:2.4rem}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #dde3ea;padding:.3rem .6rem;
text-align:left;font-size:.92rem}th{background:#f3f6f9}.muted{color:#6b7a89}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.8rem}
.card{border:1px solid #dde3ea;border-radius:6px;padding:.4rem;font-size:.82rem;background:#fff}
.card img{width:100%;image-rendering:pixelated;border-radius:4px}
figure{margin:.6rem 0}figure img{max-width:100%;border:1px solid #dde3ea}
code{background:#f3f6f9;padding:.1rem .3rem;border-radius:3px}
"""


def write_html_report(ctx: StepContext) -> Path:
    """Write ``report.html`` (and its images under ``report/``) from the steps' summaries."""
    assets = ctx.out / "report"
    assets.mkdir(parents=True, exist_ok=True)
    r = ctx.results
    parts = [
        "<h1>terrascribe demo</h1>",
        f'<p class="muted">seed {ctx.seed} · {_versions()} · re-run <code>terrascribe demo '
        f"--out {html.escape(str(ctx.out))}</code> to reuse finished steps</p>",
        _steps_table(r),
        _datasets_section(ctx, assets),
        _curation_section(r.get("curate")),
        _training_section(r.get("train"), assets),
        _evaluation_section(r.get("evaluate"), ctx.out, assets),
        _search_section(r.get("search"), ctx.out, assets),
        _map_section(r.get("map"), ctx.out, assets),
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>terrascribe demo report</title><style>{STYLE}</style></head><body>"
        + "\n".join(p for p in parts if p)
        + "</body></html>\n"
    )
    path = ctx.out / "report.html"
    atomic_write_text(path, page)
    return path


def _versions() -> str:
    v = package_versions(("terrascribe", "torch", "open_clip_torch"))
    return ", ".join(f"{k} {val}" for k, val in v.items())


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _steps_table(results: dict[str, dict[str, Any]]) -> str:
    rows = [[name, f"{s.get('seconds', '?')} s"] for name, s in results.items()]
    return "<h2>Steps</h2>" + _table(["step", "time"], rows)


def _copy(src: Path, assets: Path, name: str) -> str:
    dest = assets / name
    shutil.copyfile(src, dest)
    return f"report/{name}"


def _datasets_section(ctx: StepContext, assets: Path) -> str:
    root = ctx.out / "datasets"
    names = [n for n in ("osm", "boxes", "masks", "llm", "real-osm") if (root / n).is_dir()]
    if not names:
        return ""
    out = ["<h2>Datasets</h2>"]
    rows = []
    for name in names:
        ds = Dataset(root / name)
        info = ds.info.get("counts", {})
        rows.append(
            [name, info.get("samples", len(ds)), info.get("skipped", 0), ds.info["builder"]]
        )
    out.append(_table(["dataset", "samples", "skipped", "builder"], rows))
    for name in names:
        out.append(f"<h3>{html.escape(name)}: sample images and captions</h3><div class='grid'>")
        for i, sample in enumerate(_diverse_samples(Dataset(root / name))):
            img = assets / f"{name}-{i}.jpg"
            img.write_bytes(sample.image)
            captions = "".join(f"<li>{html.escape(c)}</li>" for c in sample.captions[:3])
            out.append(
                f"<div class='card'><img src='report/{img.name}' alt='{html.escape(sample.key)}'>"
                f"<div class='muted'>{html.escape(sample.key)}</div><ul>{captions}</ul></div>"
            )
        out.append("</div>")
    return "\n".join(out)


def _diverse_samples(ds: Dataset, n: int = SAMPLES_PER_DATASET) -> list:
    """Up to ``n`` samples with different object labels (first seen wins), in shard order."""
    df = ds.manifest(columns=["key", "labels", "caption"])
    chosen, seen = [], set()
    for key, labels, caption in zip(df["key"], df["labels"], df["caption"], strict=True):
        kind = tuple(labels) if len(labels) else caption.split()[-1]
        if kind not in seen:
            seen.add(kind)
            chosen.append(key)
    chosen = (chosen + [k for k in df["key"] if k not in set(chosen)])[:n]
    by_key = {s.key: s for s in ds.samples(keys=chosen)}
    return [by_key[k] for k in chosen]


def _curation_section(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    dedup, kept = summary.get("dedup", {}), summary.get("filter", {})
    rows = [
        ["merged (4 datasets)", summary["merged"]["samples"], ""],
        [
            "de-duplicated",
            dedup.get("kept", "?"),
            f"{dedup.get('removed', '?')} duplicates removed",
        ],
        ["filtered by CLIP score", kept.get("kept", "?"), "top 90% per label"],
        ["train split", summary["train"]["samples"], "whole 100 m cells"],
        ["test split", summary["test"]["samples"], "no cell shared with train"],
    ]
    detail = json.dumps(
        {k: summary[k] for k in ("dedup", "filter", "split") if k in summary}, indent=1
    )
    return (
        "<h2>Curation</h2>"
        + _table(["stage", "samples", ""], rows)
        + f"<details><summary>de-duplication, filter and split reports</summary>"
        f"<pre>{html.escape(detail[:6000])}</pre></details>"
    )


def _training_section(summary: dict[str, Any] | None, assets: Path) -> str:
    if not summary:
        return ""
    curve = _plot_training_curve(Path(summary["metrics"]), assets / "training-loss.png")
    figure = f"<figure><img src='{curve}' alt='training loss'></figure>" if curve else ""
    return (
        "<h2>Training</h2>"
        + _table(
            ["steps", "final loss", "samples/s"],
            [[summary["steps"], f"{summary['final_loss']:.3f}", f"{summary['samples_per_s']:.1f}"]],
        )
        + figure
    )


def _plot_training_curve(metrics: Path, dest: Path) -> str | None:
    if not metrics.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [], []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row and "step" in row:
            steps.append(row["step"])
            losses.append(row["loss"])
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.plot(steps, losses, color="#2a6f97")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dest)
    plt.close(fig)
    return f"report/{dest.name}"


# Metrics worth a row in the demo's comparison table (the full leaderboard is linked).
MAIN_METRICS = {"acc1", "mean_per_class_recall", "mean_recall", "i2t_R@1", "t2i_R@1"}


def _evaluation_section(summary: dict[str, Any] | None, out: Path, assets: Path) -> str:
    if not summary:
        return ""
    csv_path = Path(summary["markdown"]).with_suffix(".csv")
    values: dict[tuple[str, str, str], dict[str, float]] = {}
    models: list[str] = []
    if csv_path.exists():
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                if row["metric"] not in MAIN_METRICS:
                    continue
                label = "trained" if "(" in row["model"] else "untrained"
                if label not in models:
                    models.append(label)
                cell = (row["benchmark"], row["task"], row["metric"])
                values.setdefault(cell, {})[label] = 100 * float(row["value"])
    models.sort(key=lambda m: m != "untrained")
    rows = [
        [*cell, *(f"{v[m]:.1f}" if m in v else "" for m in models)]
        for cell, v in sorted(values.items())
    ]
    figures = "".join(
        f"<figure><img src='{_copy(Path(p), assets, 'eval-' + Path(p).name)}' "
        f"alt='{html.escape(Path(p).stem)}'></figure>"
        for p in summary.get("plots", [])[:8]
    )
    leaderboard = _copy(Path(summary["markdown"]), assets, "leaderboard.md")
    return (
        "<h2>Evaluation</h2><p class='muted'>Values in %. The same tiny model before and after "
        "training; the scene benchmark scores its held-out 20% (RemoteCLIP's split rule), "
        "retrieval scores the geographic test split. Chance on the 6 scene classes is 16.7%. "
        f"Full leaderboard: <a href='{leaderboard}'>leaderboard.md</a>.</p>"
        + _table(["benchmark", "task", "metric", *models], rows)
        + figures
    )


def _search_section(summary: dict[str, Any] | None, out: Path, assets: Path) -> str:
    if not summary:
        return ""
    parts = ["<h2>Text search</h2>"]
    for q in summary.get("queries", []):
        parts.append(f"<h3>“{html.escape(q['query'])}”</h3>")
        if q.get("contact_sheet"):
            src = _copy(Path(q["contact_sheet"]), assets, f"search-{q['slug']}.png")
            parts.append(
                f"<figure><img src='{src}' alt='results for {html.escape(q['query'])}'></figure>"
            )
    return "\n".join(parts)


def _map_section(summary: dict[str, Any] | None, out: Path, assets: Path) -> str:
    if not summary or not summary.get("preview"):
        return ""
    src = _copy(Path(summary["preview"]), assets, "map-preview.png")
    classes = ", ".join(summary.get("classes", []))
    return (
        f"<h2>Zero-shot map</h2><p>classes: {html.escape(classes)}</p>"
        f"<figure><img src='{src}' alt='zero-shot map preview'></figure>"
    )
