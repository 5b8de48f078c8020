"""Run one function over many files in worker processes (preprocessing and galleries).

Contract shared by ``dataset/dxf_process.py`` and ``SimDeepDXF.py --gallery``:

- results arrive as soon as each task finishes (unordered), so callers can write
  manifest rows or cache entries as they come;
- a task that raises, runs past ``timeout`` seconds or whose worker process dies
  (the OOM killer, a crash in a C extension) costs that task only: it comes back as a
  :class:`TaskResult` with ``error`` set, and the other tasks go on;
- Ctrl-C (``KeyboardInterrupt``) stops the workers within seconds and re-raises in
  the caller, which reports what it kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Optional, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class TaskResult(Generic[T, R]):
    """What became of one task: ``value`` when it finished, else ``error`` (a sentence)."""

    task: T
    value: Optional[R]
    error: Optional[str]
    seconds: float
    timed_out: bool = False


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], workers: int = 1,
              timeout: float = 0) -> Iterator[TaskResult[T, R]]:
    """Apply ``fn`` to every task, yielding one :class:`TaskResult` per task.

    Args:
        fn: a picklable top-level function.
        tasks: picklable arguments, one call each.
        workers: worker processes (1: run in this process).
        timeout: seconds allowed per task (0: no limit).
    """
    for task in tasks:  # the serial reference path; worker processes come with the preprocessing rewrite
        start = time.perf_counter()
        try:
            value = fn(task)
        except Exception as err:  # one bad task must not stop the others: record what happened
            yield TaskResult(task, None, f"unexpected error ({type(err).__name__}: {err})"[:300],
                             time.perf_counter() - start)
        else:
            yield TaskResult(task, value, None, time.perf_counter() - start)
