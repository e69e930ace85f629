"""Cooperative cancellation: when one step of a build fails, its other threads stop soon.

A thread cannot be interrupted from outside, only asked. The runner opens a `scope`; code
that runs long (a layer's files, a download's or an upload's chunks, a wheel's files) calls
`checkpoint()`, which raises `Cancelled` once the scope is cancelled, and waits between
retries with `sleep`, which a cancellation cuts short. Scopes nest: work is cancelled when
any scope around it is, so a pool inside a pool stops with either. Work handed to another
thread carries its scopes with it through `bind`, or runs in a `CancellingPool`.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

__all__ = ["Cancelled", "CancellingPool", "bind", "checkpoint", "scope", "sleep", "wait"]

P = ParamSpec("P")
T = TypeVar("T")

# The signals of the scopes around the current work, innermost last.
_CURRENT: ContextVar[tuple[threading.Event, ...]] = ContextVar("hatch_jib_cancel", default=())
# How often a wait looks at the signals of the outer scopes.
_POLL = 0.05


class Cancelled(Exception):
    """Raised at a checkpoint of a cancelled build; the failure that caused it is reported."""


@contextmanager
def scope(event: threading.Event) -> Iterator[threading.Event]:
    """Make `event` a cancellation signal of this thread's work until the block ends, beside
    those of the scopes around it."""
    token = _CURRENT.set((*_CURRENT.get(), event))
    try:
        yield event
    finally:
        _CURRENT.reset(token)


def checkpoint() -> None:
    """Raise `Cancelled` if the current build was cancelled; cheap enough to call per file."""
    for event in _CURRENT.get():  # a loop, not any(): this runs once per file of a layer
        if event.is_set():
            raise Cancelled("the build was cancelled")


def bind(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn`, run under the caller's scopes in whatever thread calls it."""
    events = _CURRENT.get()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        token = _CURRENT.set(events)
        try:
            return fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)

    return run


def sleep(seconds: float) -> None:
    """`time.sleep` that a cancellation of the current build cuts short with `Cancelled`."""
    events = _CURRENT.get()
    if not events:
        time.sleep(seconds)
        return
    # The innermost signal wakes the wait at once; the outer ones are looked at each _POLL.
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        checkpoint()
        events[-1].wait(min(left, _POLL))
    checkpoint()


def wait(event: threading.Event) -> None:
    """Wait until `event` is set; a cancellation of the current build cuts it short with
    `Cancelled`. (Only one event can be waited on at a time, so the scopes' are polled.)"""
    while not event.wait(_POLL):
        checkpoint()


class CancellingPool:
    """Threads for work beside the caller's, where the first failure cancels the rest.

    Tasks run under a scope of the pool's own, inside the owner's: a failure in a task, or
    in the thread that owns the pool (Ctrl-C), cancels it, so tasks not yet started never
    start and running ones stop at their next checkpoint; so does a cancelled outer scope.
    A failure that the owner catches cancels nothing beyond the pool. Every task is waited
    for, so no thread outlives the pool, and only the first real error is raised.
    """

    def __init__(self, workers: int, *, name: str) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._futures: list[Future[Any]] = []
        self._event = threading.Event()
        self._scope = scope(self._event)
        # Tasks at work, counted by the tasks themselves: a Ctrl-C that lands in `submit`
        # after the executor started a thread but before it recorded it leaves a thread that
        # its shutdown does not wait for. Once closed, the pool starts no task.
        self._running = 0
        self._closed = False
        self._idle = threading.Condition()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future = self._executor.submit(self._run, bind(fn), *args)
        future.add_done_callback(self._cancel_on_failure)
        self._futures.append(future)
        return future

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._idle:
            if self._closed:
                raise Cancelled("the build was cancelled")
            self._running += 1
        try:
            return fn(*args)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def wait_all(self) -> None:
        """Wait for every task; raise the first failure, or `Cancelled` when a scope around
        the pool stopped the tasks: the owner must not go on as if they had finished."""
        concurrent.futures.wait(self._futures)
        failure = self._first_failure()
        if failure is not None:
            raise failure
        checkpoint()

    def _cancel_on_failure(self, future: Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._event.set()

    def _first_failure(self) -> BaseException | None:
        """The first task's error that is not just a consequence of the cancellation."""
        for future in self._futures:
            if future.done() and not future.cancelled():
                error = future.exception()
                if error is not None and not isinstance(error, Cancelled):
                    return error
        return None

    def __enter__(self) -> CancellingPool:
        self._scope.__enter__()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._event.set()
        try:
            self._executor.shutdown(wait=True, cancel_futures=True)
            with self._idle:
                self._closed = True
                self._idle.wait_for(lambda: self._running == 0)
        finally:
            # Even when a second Ctrl-C breaks the wait: a scope left set would cancel every
            # checkpoint of this thread from then on.
            self._scope.__exit__(None, None, None)
        # A checkpoint here raised only because a task failed: report that task's error.
        if isinstance(exc, Cancelled):
            failure = self._first_failure()
            if failure is not None:
                raise failure
