"""Merge result JSONs into a leaderboard (Markdown + CSV) and plots.

``write_report(RESULTS_DIR)`` writes ``RESULTS_DIR/report/``::

    leaderboard.md     one table per task: models x benchmarks, headline metric in %
    leaderboard.csv    long format: model, fingerprint, benchmark, task, metric, value
    plots/             confusion matrices, per-class recall, recall@k curves (PNG)

When a result names the model's training datasets (``--training-data``) and such a dataset holds
a ``contamination.json`` (written by ``terrascribe curate``), the leaderboard says whether the
training data was checked against benchmarks, and shows the file's summary numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from terrascribe.evaluate.runner import RESULT_FORMAT
from terrascribe.shards import atomic_write_bytes, atomic_write_text

# The metrics shown in the Markdown tables, per task (all metrics go to the CSV).
HEADLINE = {
    "zeroshot": ("acc1", "acc5", "mean_per_class_recall"),
    "linear-probe": ("acc1", "mean_per_class_recall"),
    "knn": ("acc1", "mean_per_class_recall"),
    "few-shot": ("1-shot_acc1", "4-shot_acc1", "8-shot_acc1", "16-shot_acc1", "32-shot_acc1"),
    "retrieval": (
        "i2t_R@1",
        "i2t_R@5",
        "i2t_R@10",
        "t2i_R@1",
        "t2i_R@5",
        "t2i_R@10",
        "mean_recall",
    ),
    "counting": ("acc1", "acc5", "words_acc1"),
}


class ReportError(ValueError):
    """A results folder is missing or holds a malformed result file."""


def load_results(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every result JSON in ``results_dir`` (other JSON files are ignored).

    Raises:
        ReportError: If the folder is missing or a result file is not valid JSON.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ReportError(f"{root}: no such results folder")
    results = []
    for path in sorted(root.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ReportError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict) and data.get("format") == RESULT_FORMAT:
            data["_file"] = path.name
            results.append(data)
    return results


def _model_label(result: dict[str, Any]) -> str:
    model = result.get("model", {})
    name = model.get("name", "?")
    pretrained = model.get("pretrained")
    label = f"{name} ({Path(str(pretrained)).name})" if pretrained else name
    return f"{label} [{(model.get('fingerprint') or '')[:8]}]"


def contamination_summary(training_data: list[str], benchmark: str | None = None) -> str:
    """One cell: was the training data checked for benchmark overlap, and what was found."""
    if not training_data:
        return "unknown"
    parts = []
    for entry in training_data:
        path = Path(entry)
        file = path if path.name == "contamination.json" else path / "contamination.json"
        if not file.is_file():
            parts.append(f"{path.name}: not checked")
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except ValueError:
            parts.append(f"{path.name}: unreadable contamination.json")
            continue
        numbers = {
            k: v
            for k, v in (data.items() if isinstance(data, dict) else [])
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        detail = ", ".join(f"{k}={v}" for k, v in sorted(numbers.items())[:4])
        if benchmark and isinstance(data, dict) and benchmark in json.dumps(data):
            detail = (detail + ", " if detail else "") + f"covers {benchmark}"
        parts.append(f"{path.name}: checked" + (f" ({detail})" if detail else ""))
    return "; ".join(parts)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def leaderboard_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-format rows: one per (model, benchmark, task, metric) with a numeric value."""
    rows = []
    for r in results:
        for metric, value in sorted(r.get("metrics", {}).items()):
            if (isinstance(value, int | float) and not isinstance(value, bool)) or value is None:
                rows.append(
                    {
                        "model": _model_label(r),
                        "fingerprint": r.get("model", {}).get("fingerprint"),
                        "benchmark": r.get("benchmark", {}).get("name"),
                        "task": r.get("task"),
                        "metric": metric,
                        "value": value,
                    }
                )
    return rows


def leaderboard_markdown(results: list[dict[str, Any]]) -> str:
    """Markdown: for each task, one row per (model, benchmark) with its headline metrics."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_task[r.get("task", "?")].append(r)
    lines = [
        "# Evaluation leaderboard",
        "",
        "Values in %. Protocol details are in each result file.",
        "",
    ]
    for task in sorted(by_task):
        rows = sorted(by_task[task], key=lambda r: (r["benchmark"]["name"], _model_label(r)))
        cols = [c for c in HEADLINE.get(task, ()) if any(c in r["metrics"] for r in rows)]
        if not cols:
            cols = sorted(
                {k for r in rows for k, v in r["metrics"].items() if not isinstance(v, list | dict)}
            )
        lines += [f"## {task}", ""]
        lines.append("| model | benchmark | " + " | ".join(cols) + " | training data checked |")
        lines.append("|---|---|" + "---|" * len(cols) + "---|")
        for r in rows:
            bench = r["benchmark"]["name"]
            cells = [_pct(r["metrics"].get(c)) for c in cols]
            check = contamination_summary(r.get("model", {}).get("training_data") or [], bench)
            lines.append(f"| {_model_label(r)} | {bench} | " + " | ".join(cells) + f" | {check} |")
        lines.append("")
    return "\n".join(lines)


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _plot_confusion(
    result: dict[str, Any], matrix: list[list[int]], labels: list[str], path: Path
) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(matrix, dtype=float)
    n = len(cm)
    size = min(20, 2 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xlabel="predicted",
        ylabel="true",
        title=f"{_model_label(result)}\n{result['benchmark']['name']} {result['task']}",
    )
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7)
    _save_figure(fig, path)


def _plot_per_class(
    result: dict[str, Any], recalls: list[float | None], labels: list[str], path: Path
) -> None:
    import matplotlib.pyplot as plt

    values = [0.0 if r is None else 100 * r for r in recalls]
    fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(values) + 2), 3.5))
    ax.bar(range(len(values)), values)
    ax.set(
        xticks=range(len(values)),
        ylabel="recall (%)",
        ylim=(0, 100),
        title=f"{result['benchmark']['name']} {result['task']}: per-class recall",
    )
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    _save_figure(fig, path)


def _plot_recall_curves(benchmark: str, results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, direction, title in zip(
        axes, ("i2t", "t2i"), ("image → text", "text → image"), strict=True
    ):
        for r in results:
            ks = sorted(
                int(k.split("@")[1]) for k in r["metrics"] if k.startswith(f"{direction}_R@")
            )
            ax.plot(
                ks,
                [100 * r["metrics"][f"{direction}_R@{k}"] for k in ks],
                marker="o",
                label=_model_label(r),
            )
        ax.set(xlabel="k", ylabel="recall@k (%)", title=f"{benchmark}: {title}", ylim=(0, 100))
    axes[0].legend(fontsize=7)
    _save_figure(fig, path)


def _stem(result: dict[str, Any]) -> str:
    return Path(result["_file"]).stem


def write_plots(results: list[dict[str, Any]], plot_dir: Path) -> list[Path]:
    """Confusion matrices, per-class recall bars and recall@k curves; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    retrieval: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        details = r.get("details") or {}
        labels = r.get("classnames") or [str(n) for n in details.get("numbers", [])]
        for key in ("confusion_matrix", "digits_confusion_matrix"):
            if key in details:
                names = labels or [str(i) for i in range(len(details[key]))]
                path = plot_dir / f"{_stem(r)}.confusion.png"
                _plot_confusion(r, details[key], names, path)
                written.append(path)
        if "per_class_recall" in details:
            path = plot_dir / f"{_stem(r)}.per-class.png"
            _plot_per_class(r, details["per_class_recall"], labels, path)
            written.append(path)
        if r.get("task") == "retrieval":
            retrieval[r["benchmark"]["name"]].append(r)
    for bench, rs in sorted(retrieval.items()):
        path = plot_dir / f"{bench}.recall-at-k.png"
        _plot_recall_curves(bench, rs, path)
        written.append(path)
    return written


def write_report(results_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the leaderboard (Markdown, CSV) and plots of every result in ``results_dir``.

    Returns:
        ``{"results": n, "markdown": path, "csv": path, "plots": [paths]}``.

    Raises:
        ReportError: If there are no results or a result file is malformed.
    """
    results = load_results(results_dir)
    if not results:
        raise ReportError(f"{results_dir}: no result files (run terrascribe eval first)")
    out = Path(out_dir) if out_dir else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    md_path = out / "leaderboard.md"
    atomic_write_text(md_path, leaderboard_markdown(results))
    csv_path = out / "leaderboard.csv"
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["model", "fingerprint", "benchmark", "task", "metric", "value"]
    )
    writer.writeheader()
    writer.writerows(leaderboard_rows(results))
    atomic_write_text(csv_path, buf.getvalue())
    plots = write_plots(results, out / "plots")
    return {"results": len(results), "markdown": md_path, "csv": csv_path, "plots": plots}
