"""Progress bars for long work (rich), one style across the package."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

T = TypeVar("T")


@cache
def _console() -> Console:
    """The one console every bar shares, on stderr so stdout stays clean for tables and JSON."""
    from rich.console import Console

    return Console(stderr=True)


def _progress() -> Progress:
    # rich.progress takes ~80 ms to import: only a bar that is shown pays for it.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(),
        transient=False,
    )


@contextmanager
def progress_bar(total: int | None, description: str, *, enabled: bool = True) -> Iterator:
    """Context manager yielding ``advance(n=1)``; a no-op when ``enabled`` is false."""
    if not enabled:
        yield lambda n=1: None
        return
    with _progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def track(
    items: Iterable[T], description: str, *, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """Iterate ``items`` with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, description, enabled=enabled) as advance:
        for item in items:
            yield item
            advance()
