"""Run one function over many files in worker processes (preprocessing and galleries).

Contract shared by ``dataset/dxf_process.py`` and ``SimDeepDXF.py --gallery``:

- results arrive as soon as each task finishes (unordered), so callers can write
  manifest rows or cache entries as they come;
- a task that raises, runs past ``timeout`` seconds or whose worker process dies
  (the OOM killer, a crash in a C extension) costs that task only: it comes back as a
  :class:`TaskResult` with ``error`` set, and the other tasks go on;
- Ctrl-C (``KeyboardInterrupt``) stops the workers within seconds and re-raises in
  the caller, which reports what it kept.

How: one process per worker slot, each fed one task at a time over its own pipe.
The parent waits on the pipes and on the processes' sentinels together, so it sees a
result, a death or a deadline as soon as it happens. A worker that dies or passes its
deadline is killed (by the parent: a hang inside C code cannot dodge it) and replaced
by a fresh one. Workers ignore SIGINT (a Ctrl-C reaches the whole process group); the
parent terminates them when it stops. A worker whose parent disappeared (the parent was
killed) exits after its current task.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Generic, Iterator, Optional, Sequence, TypeVar

__all__ = ["WORKER_DIED", "TaskResult", "timeout_message", "error_message", "run_tasks"]

T = TypeVar("T")
R = TypeVar("R")

WORKER_DIED = "worker process died (killed, out of memory?)"
_PARENT_CHECK_S = 0.5  # how often an idle worker checks that its parent still lives
_TERMINATE_GRACE_S = 2.0  # SIGTERM, then SIGKILL after this long


@dataclass
class TaskResult(Generic[T, R]):
    """What became of one task: ``value`` when it finished, else ``error`` (a sentence)."""

    task: T
    value: Optional[R]
    error: Optional[str]
    seconds: float
    timed_out: bool = False


def timeout_message(timeout: float) -> str:
    """``"timed out after 300 s"`` (the error of a task that ran past ``timeout``)."""
    return f"timed out after {timeout:g} s"


def error_message(err: BaseException) -> str:
    """The error of a task that raised: ``"unexpected error (ValueError: ...)"`` (at most 300 chars)."""
    return f"unexpected error ({type(err).__name__}: {err})"[:300]


def _death_message(exitcode: Optional[int]) -> str:
    """Why a worker process ended while it held a task."""
    if exitcode is None or exitcode == -signal.SIGKILL:
        return WORKER_DIED
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process died ({name})"
    return f"worker process died (exit code {exitcode})"


# --------------------------------------------------------------------------- in this process


class _TaskTimeout(BaseException):
    """Raised by the alarm in this process; a BaseException so that no ``except Exception``
    inside the task swallows it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _TaskTimeout()


def _run_serial(fn: Callable[[T], R], tasks: Sequence[T], timeout: float) -> Iterator[TaskResult[T, R]]:
    """``workers=1``: every task in this process; the timeout needs SIGALRM and the main thread."""
    use_alarm = (timeout > 0 and hasattr(signal, "setitimer")
                 and threading.current_thread() is threading.main_thread())
    for task in tasks:
        start = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _on_alarm) if use_alarm else None
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            value = fn(task)
        except _TaskTimeout:
            result = TaskResult(task, None, timeout_message(timeout), time.perf_counter() - start, True)
        except Exception as err:  # one bad task must not stop the others: record what happened
            result = TaskResult(task, None, error_message(err), time.perf_counter() - start)
        else:
            result = TaskResult(task, value, None, time.perf_counter() - start)
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        yield result


# --------------------------------------------------------------------------- worker processes


def _on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds ``finally`` blocks: no half-written temporary files


def _die_with_parent() -> None:
    """Linux: ask the kernel to send this process SIGTERM when its parent dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # without it the worker still notices a lost parent when it is idle


def _worker_main(conn: Connection, fn: Callable[[Any], Any], parent_pid: int) -> None:
    """Loop of one worker: receive ``(index, task)``, send ``(index, value, error)``; ``None`` ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    _die_with_parent()
    if os.getppid() != parent_pid:
        return  # the parent died before the kernel could be told
    while True:
        try:
            if not conn.poll(_PARENT_CHECK_S):
                if os.getppid() != parent_pid:
                    return  # the parent is gone: nobody will read a result
                continue
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, task = message
        try:
            reply = (index, fn(task), None)
        except Exception as err:  # reported to the parent as this task's error
            reply = (index, None, error_message(err))
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as err:  # the value could not be pickled
            conn.send((index, None, f"result could not be sent back ({type(err).__name__}: {err})"[:300]))


class _Worker:
    """One worker process, its pipe, and the task it holds (``index`` None when idle)."""

    def __init__(self, ctx: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, fn, os.getpid()), daemon=True)
        self.process.start()
        child_conn.close()
        self.index: Optional[int] = None
        self.started = 0.0
        self.n_done = 0

    def give(self, index: int, task: Any) -> None:
        self.conn.send((index, task))
        self.index, self.started = index, time.perf_counter()

    def stop(self, kill: bool = False) -> None:
        """End the process: SIGKILL at once when ``kill``, else SIGTERM then SIGKILL after a grace."""
        if self.process.is_alive():
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
                self.process.join(_TERMINATE_GRACE_S)
                if self.process.is_alive():
                    self.process.kill()
        self.process.join()
        self.conn.close()

    def retire(self) -> None:
        """Ask an idle worker to exit and wait for it."""
        try:
            self.conn.send(None)
        except OSError:
            pass  # already gone
        self.process.join(_TERMINATE_GRACE_S)
        self.stop()


def _stop_all(pool: list[_Worker]) -> None:
    """Terminate every worker (SIGTERM to all first, then wait; SIGKILL the slow ones)."""
    for w in pool:
        if w.process.is_alive():
            w.process.terminate()
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for w in pool:
        w.process.join(max(0.0, deadline - time.monotonic()))
    for w in pool:
        w.stop(kill=True)


def _run_pool(fn: Callable[[T], R], tasks: Sequence[T], workers: int, timeout: float,
              max_tasks_per_worker: int, start_method: Optional[str]) -> Iterator[TaskResult[T, R]]:
    if start_method is None:
        start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(start_method)
    todo = list(enumerate(tasks))
    todo.reverse()  # pop() from the end keeps the callers' order
    pool: list[_Worker] = []
    interrupted = False
    try:
        pool = [_Worker(ctx, fn) for _ in range(min(workers, len(todo)))]
        while todo or any(w.index is not None for w in pool):
            for i, w in enumerate(pool):
                if w.index is None and todo:
                    if max_tasks_per_worker and w.n_done >= max_tasks_per_worker:
                        w.retire()
                        pool[i] = w = _Worker(ctx, fn)
                    index, task = todo.pop()
                    try:
                        w.give(index, task)
                    except OSError:  # it died while idle: a fresh one takes the task
                        w.stop(kill=True)
                        pool[i] = w = _Worker(ctx, fn)
                        w.give(index, task)
            busy = [w for w in pool if w.index is not None]
            now = time.perf_counter()
            wait_s = None
            if timeout > 0:
                wait_s = max(0.0, min(w.started + timeout for w in busy) - now)
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], wait_s))
            for i, w in enumerate(pool):
                if w.index is None:
                    continue
                index, task = w.index, tasks[w.index]
                seconds = time.perf_counter() - w.started
                if w.conn in ready:
                    try:
                        got, value, error = w.conn.recv()
                    except (EOFError, OSError):
                        got = None  # died while sending: handled as a death below
                    except Exception as err:  # the value cannot be unpickled here: this task's error
                        why = f"result could not be read back ({type(err).__name__}: {err})"[:300]
                        got, value, error = index, None, why
                    if got == index:
                        w.index, w.n_done = None, w.n_done + 1
                        yield TaskResult(task, value, error, seconds)
                        continue
                if w.process.sentinel in ready or not w.process.is_alive() or w.conn in ready:
                    w.process.join(1.0)
                    exitcode = w.process.exitcode
                    w.stop(kill=True)
                    pool[i] = _Worker(ctx, fn)
                    yield TaskResult(task, None, _death_message(exitcode), seconds)
                elif timeout > 0 and seconds >= timeout:
                    w.stop(kill=True)
                    pool[i] = _Worker(ctx, fn)
                    yield TaskResult(task, None, timeout_message(timeout), seconds, True)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        # A second Ctrl-C during the cleanup would leave workers behind: ignore it meanwhile.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if (in_main and interrupted) else None
        try:
            for w in pool:
                if w.index is None and w.process.is_alive():
                    try:
                        w.conn.send(None)  # idle workers leave on their own
                    except OSError:
                        pass  # already gone
            _stop_all(pool)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], workers: int = 1,
              timeout: float = 0, *, max_tasks_per_worker: int = 200,
              start_method: Optional[str] = None) -> Iterator[TaskResult[T, R]]:
    """Apply ``fn`` to every task, yielding one :class:`TaskResult` per task as it finishes.

    Args:
        fn: a picklable top-level function. Exceptions it raises become the task's
            ``error`` (``"unexpected error (Type: message)"``).
        tasks: picklable arguments, one call each.
        workers: worker processes; 1 runs every task in this process (tests, debugging;
            nothing survives a crash there), 0 means one per CPU core.
        timeout: seconds allowed per task (0: no limit). With workers the parent kills a
            task's worker at its deadline and starts a fresh one (``error`` =
            ``"timed out after N s"``, ``timed_out`` True); in this process the limit
            needs SIGALRM and the main thread, and is not enforced otherwise.
        max_tasks_per_worker: a worker is replaced after this many tasks (bounds the
            memory that a leaking library accumulates; 0: never).
        start_method: ``multiprocessing`` start method (default ``fork`` where it exists).

    Yields:
        one :class:`TaskResult` per task, in the order they finish. A worker that dies
        while it holds a task gives that task the error
        ``"worker process died (killed, out of memory?)"``.

    Stopping early (``break``, an exception in the caller's loop, Ctrl-C) stops the
    workers when the iterator is closed: use ``contextlib.closing(run_tasks(...))`` or
    call ``.close()`` in a ``finally``. A ``KeyboardInterrupt`` while waiting for
    results terminates the workers and is re-raised once.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    if workers == 0:
        workers = os.cpu_count() or 1
    if workers == 1:
        return _run_serial(fn, tasks, timeout)
    return _run_pool(fn, tasks, workers, timeout, max_tasks_per_worker, start_method)
