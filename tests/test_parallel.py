"""dataset.parallel.run_tasks: streaming results, dead workers, hangs, errors."""
from __future__ import annotations

import os
import signal
import time

import pytest

from dataset.parallel import WORKER_DIED, run_tasks

TEST_PID = os.getpid()


def _not_in_the_test_process(what: str) -> None:
    """Guard: a task that would kill or hang the test runner itself fails instead."""
    if os.getpid() == TEST_PID:
        raise AssertionError(f"{what} ran in the test process, not in a worker")


def square_or_die(x: int) -> int:
    """Squares ``x``; task 3 SIGKILLs its own worker process (what the OOM killer does)."""
    if x == 3:
        _not_in_the_test_process("SIGKILL")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.02)
    return x * x


def square_or_hang(x: int) -> int:
    """Squares ``x``; task 2 hangs with SIGALRM blocked, so only the parent can stop it."""
    if x == 2:
        _not_in_the_test_process("the hang")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    return x * x


def slow_then_fast(x: float) -> float:
    time.sleep(x)
    return x


def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def sleep_in_process(x: float) -> float:
    time.sleep(x)
    return x


def test_a_killed_worker_costs_its_task_only():
    results = {r.task: r for r in run_tasks(square_or_die, list(range(8)), workers=2, timeout=30)}
    assert sorted(results) == list(range(8))
    assert results[3].value is None and results[3].error == WORKER_DIED and not results[3].timed_out
    for x in (0, 1, 2, 4, 5, 6, 7):
        assert results[x].error is None and results[x].value == x * x


def test_a_hanging_task_is_timed_out_by_the_parent():
    start = time.perf_counter()
    results = {r.task: r for r in run_tasks(square_or_hang, [0, 1, 2, 3, 4], workers=2, timeout=1)}
    assert time.perf_counter() - start < 20
    assert results[2].timed_out and results[2].error == "timed out after 1 s" and results[2].value is None
    assert 1.0 <= results[2].seconds < 10
    assert [results[x].value for x in (0, 1, 3, 4)] == [0, 1, 9, 16]


def test_one_worker_runs_in_process_and_still_times_out():
    start = time.perf_counter()
    results = list(run_tasks(sleep_in_process, [0.0, 3.0, 0.0], workers=1, timeout=0.5))
    assert time.perf_counter() - start < 2.5
    assert [r.timed_out for r in results] == [False, True, False]
    assert results[1].error == "timed out after 0.5 s"


def test_results_stream_in_the_order_they_finish():
    results = list(run_tasks(slow_then_fast, [1.5, 0.0, 0.0, 0.0], workers=2))
    assert [r.task for r in results][-1] == 1.5  # the slow first task does not hold the others back
    assert all(r.error is None for r in results)


@pytest.mark.parametrize("workers", [1, 2])
def test_exceptions_become_errors_and_the_rest_go_on(workers):
    results = {r.task: r for r in run_tasks(fail_on_odd, list(range(6)), workers=workers)}
    assert results[3].error == "unexpected error (ValueError: odd 3)"
    assert [results[x].value for x in (0, 2, 4)] == [0, 2, 4]


def worker_pid(_: int) -> int:
    return os.getpid()


def _alive(pid: int) -> bool:
    """True when ``pid`` is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_workers_are_replaced_after_max_tasks_and_none_are_left_behind():
    pids = {r.value for r in run_tasks(worker_pid, list(range(6)), workers=2, max_tasks_per_worker=1)}
    assert len(pids) == 6 and TEST_PID not in pids
    assert not any(_alive(pid) for pid in pids)


class Unpicklable:
    """Pickles in the worker, fails to unpickle in the parent."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise RuntimeError("cannot rebuild")


def unpicklable_for_one(x: int) -> object:
    return Unpicklable() if x == 1 else x


def test_a_result_that_cannot_come_back_costs_its_task_only():
    results = {r.task: r for r in run_tasks(unpicklable_for_one, [0, 1, 2], workers=2)}
    assert results[1].value is None and "could not be read back" in results[1].error
    assert results[0].value == 0 and results[2].value == 2
