"""``terrascribe demo``: build, curate, train, evaluate, search and map the sample region.

Every step is resumable: a re-run reuses what is done and ends with ``report.html``.
"""

from __future__ import annotations

from pathlib import Path

from terrascribe.demo.pipeline import all_steps
from terrascribe.demo.report import write_html_report
from terrascribe.demo.steps import StepContext, run_steps


def run_demo(
    out: str | Path = "demo",
    *,
    seed: int = 0,
    real_data: str | Path | None = None,
    train_steps: int | None = None,
    size_px: int = 2048,
) -> Path:
    """Run the whole story on the generated sample region; return the HTML report's path.

    Args:
        out: Output folder (re-running reuses finished steps).
        seed: Seed of every random choice.
        real_data: Optional ``../shared/data``-style folder: also evaluates on its scene
            folders and builds from its real tiles.
        train_steps: Override the number of training steps.
        size_px: Side of the generated GeoTIFF in pixels.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options: dict = {"size_px": size_px}
    if train_steps is not None:
        options["train_steps"] = train_steps
    if real_data is not None:
        options["real_data"] = str(Path(real_data).resolve())
    ctx = StepContext(out=out, seed=seed, options=options)
    run_steps(all_steps(real_data is not None), ctx)
    return write_html_report(ctx)
