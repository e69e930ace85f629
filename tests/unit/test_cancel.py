"""Cooperative cancellation: the first failure, or Ctrl-C in the owning thread, stops the rest."""

from __future__ import annotations

import threading
import time

import pytest

from hatch_jib import cancel


def _work_until_cancelled(started: threading.Event, checks: list[int]) -> None:
    started.set()
    for _ in range(500):  # 5 s if nothing cancels it
        cancel.checkpoint()
        checks.append(1)
        time.sleep(0.01)


def test_the_first_failure_stops_the_other_tasks_and_is_the_error_raised():
    started, checks = threading.Event(), []

    def fail_once_the_other_runs() -> None:
        started.wait()
        raise ValueError("the registry refused the config")

    with (
        pytest.raises(ValueError, match="refused the config"),
        cancel.CancellingPool(2, name="test") as pool,
    ):
        pool.submit(_work_until_cancelled, started, checks)
        pool.submit(fail_once_the_other_runs)
        pool.wait_all()

    assert len(checks) < 100


def test_an_interrupt_in_the_owning_thread_stops_the_tasks_before_the_pool_is_left():
    started, checks = threading.Event(), []

    with pytest.raises(KeyboardInterrupt), cancel.CancellingPool(2, name="test") as pool:
        pool.submit(_work_until_cancelled, started, checks)
        started.wait()
        raise KeyboardInterrupt

    done = len(checks)
    time.sleep(0.05)
    assert done < 100 and len(checks) == done  # stopped, and no thread outlived the pool


def test_an_interrupt_inside_submit_still_waits_for_the_task_it_started(monkeypatch):
    started, stopped = threading.Event(), []
    pool = cancel.CancellingPool(1, name="test")
    start_thread = pool._executor._adjust_thread_count

    def task() -> None:
        started.set()
        try:
            while True:
                cancel.checkpoint()
                time.sleep(0.2)
        except cancel.Cancelled:
            stopped.append("task")
            raise

    def interrupted_once_the_thread_runs() -> None:
        start_thread()
        started.wait()
        # Ctrl-C between the thread's start and the executor's note of it.
        pool._executor._threads.clear()
        raise KeyboardInterrupt

    monkeypatch.setattr(pool._executor, "_adjust_thread_count", interrupted_once_the_thread_runs)
    with pytest.raises(KeyboardInterrupt), pool:
        pool.submit(task)

    assert stopped == ["task"]  # the pool was left only once its task had stopped


def test_a_failure_the_owner_catches_cancels_nothing_beyond_its_pool():
    def outer_task() -> str:
        try:
            with cancel.CancellingPool(1, name="inner") as inner:
                inner.submit(_fail)
                inner.wait_all()
        except ValueError:
            pass  # the owner falls back
        cancel.checkpoint()
        return "went on"

    with cancel.CancellingPool(2, name="outer") as outer:
        outcome = outer.submit(outer_task)
        outer.wait_all()

    assert outcome.result() == "went on"


def test_a_pool_inside_a_task_stops_when_the_outer_pool_is_cancelled():
    started, checks, went_on = threading.Event(), [], []

    def task_with_its_own_pool() -> None:
        with cancel.CancellingPool(1, name="inner") as inner:
            inner.submit(_work_until_cancelled, started, checks)
            inner.wait_all()
            went_on.append("as if its tasks had finished")

    def fail_once_the_inner_task_runs() -> None:
        started.wait()
        raise ValueError("the registry refused the config")

    with (
        pytest.raises(ValueError, match="refused the config"),
        cancel.CancellingPool(2, name="outer") as outer,
    ):
        outer.submit(task_with_its_own_pool)
        outer.submit(fail_once_the_inner_task_runs)
        outer.wait_all()

    assert len(checks) < 100
    assert went_on == []


def test_sleep_and_wait_are_cut_short_by_a_cancelled_outer_scope():
    outer = threading.Event()
    threading.Timer(0.1, outer.set).start()
    start = time.monotonic()

    with cancel.scope(outer), cancel.scope(threading.Event()), pytest.raises(cancel.Cancelled):
        cancel.sleep(30)
    with cancel.scope(outer), cancel.scope(threading.Event()), pytest.raises(cancel.Cancelled):
        cancel.wait(threading.Event())

    assert time.monotonic() - start < 5


def test_an_interrupt_while_the_pool_waits_leaves_no_cancelled_scope_behind(monkeypatch):
    pool = cancel.CancellingPool(1, name="test")

    def interrupted(**kwargs: object) -> None:
        raise KeyboardInterrupt  # a second Ctrl-C while the tasks are waited for

    with pytest.raises(KeyboardInterrupt), pool:
        monkeypatch.setattr(pool._executor, "shutdown", interrupted)
        raise KeyboardInterrupt

    cancel.checkpoint()  # this thread's later work is not cancelled


def _fail() -> None:
    raise ValueError("refused")


def test_sleep_is_cut_short_by_a_cancellation():
    event = threading.Event()
    threading.Timer(0.1, event.set).start()
    start = time.monotonic()

    with cancel.scope(event), pytest.raises(cancel.Cancelled):
        cancel.sleep(30)

    assert time.monotonic() - start < 5


def test_waiting_for_an_event_ends_when_it_is_set_or_the_build_is_cancelled():
    done, cancelled = threading.Event(), threading.Event()
    threading.Timer(0.1, done.set).start()
    with cancel.scope(cancelled):
        cancel.wait(done)  # returns once set
    assert done.is_set()

    never = threading.Event()
    threading.Timer(0.1, cancelled.set).start()
    start = time.monotonic()
    with cancel.scope(cancelled), pytest.raises(cancel.Cancelled):
        cancel.wait(never)
    assert time.monotonic() - start < 5
