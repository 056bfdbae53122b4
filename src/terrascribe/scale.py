"""One executor interface for embarrassingly parallel jobs: in-process, local processes, or Ray.

Jobs are independent and write their own outputs (shards), so the executor only moves small task
descriptions and small results. A task that raises does not stop the others: its exception is
returned in its place, so the caller can report it and a re-run can retry just that task.
``KeyboardInterrupt`` always propagates.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from terrascribe.progress import progress_bar

EXECUTORS = ("local", "ray")


def _call(fn: Callable[..., Any], args: Any, star: bool) -> Any:
    return fn(*args) if star else fn(args)


def _call_safely(fn: Callable[..., Any], args: Any, star: bool) -> Any:
    try:
        return _call(fn, args, star)
    except Exception as err:  # reported per task by the caller
        return err


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[Any],
    *,
    workers: int = 1,
    executor: str = "local",
    description: str = "working",
    progress: bool = True,
    star: bool = False,
    ray_address: str | None = None,
) -> list[Any]:
    """Run ``fn`` on every task and return the results (or exceptions) in task order.

    Args:
        fn: A picklable callable (module-level function or ``functools.partial`` of one).
        tasks: Task arguments; with ``star`` each is unpacked as positional arguments.
        workers: 1 runs in this process; more uses a process pool (or that many Ray tasks at once).
        executor: ``"local"`` or ``"ray"``.
        description: Progress bar label.
        progress: Show a progress bar.
        star: Call ``fn(*task)`` instead of ``fn(task)``.
        ray_address: Ray cluster address for ``ray.init``; default starts or joins a local one.

    Returns:
        One entry per task: the return value, or the exception it raised.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results: list[Any] = [None] * len(tasks)
    with progress_bar(len(tasks), description, enabled=progress) as advance:
        if executor == "ray":
            _run_ray(fn, tasks, results, workers, star, ray_address, advance)
        elif workers == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                results[i] = _call_safely(fn, task, star)
                advance()
        else:
            # spawn: workers must not inherit torch/OpenMP threads or open handles from the parent.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
                futures = {pool.submit(_call_safely, fn, t, star): i for i, t in enumerate(tasks)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    advance()
    return results


def _run_ray(fn, tasks, results, workers, star, address, advance) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("executor 'ray' needs Ray: pip install 'terrascribe[scale]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(_call_safely)
    pending: dict[Any, int] = {}
    queue = list(enumerate(tasks))
    while queue or pending:
        while queue and len(pending) < max(workers, 1):
            i, task = queue.pop(0)
            pending[remote.remote(fn, task, star)] = i
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            results[pending.pop(ref)] = ray.get(ref)
            advance()
