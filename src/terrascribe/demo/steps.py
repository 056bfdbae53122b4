"""A small resumable step runner: a step's saved summary lets a re-run reuse it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from terrascribe.shards import atomic_write_text, dumps

console = Console(stderr=True)


@dataclass
class Step:
    """One unit of the demo: ``run(ctx)`` does the work and returns a JSON-serialisable summary."""

    name: str
    title: str
    run: Callable[[StepContext], dict[str, Any]]


@dataclass
class StepContext:
    """What steps share: the output folder, options, and the summaries of earlier steps."""

    out: Path
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        """A path inside the output folder (parents created)."""
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def run_steps(steps: list[Step], ctx: StepContext) -> dict[str, dict[str, Any]]:
    """Run ``steps`` in order; a step whose summary exists from an earlier run is reused."""
    done_dir = ctx.out / ".steps"
    done_dir.mkdir(parents=True, exist_ok=True)
    for i, step in enumerate(steps, 1):
        marker = done_dir / f"{step.name}.json"
        label = f"[{i}/{len(steps)}] {step.title}"
        if marker.exists():
            ctx.results[step.name] = json.loads(marker.read_text())
            console.print(f"[dim]{label}: done earlier, reused[/dim]")
            continue
        console.rule(label)
        start = time.perf_counter()
        summary = step.run(ctx)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        ctx.results[step.name] = summary
        atomic_write_text(marker, dumps(summary))
        console.print(f"[green]done[/green] in {summary['seconds']} s")
    return ctx.results
