"""Cooperative cancellation: when one step of a build fails, its other threads stop soon.

A thread cannot be interrupted from outside, only asked. The runner opens a `scope`; code
that runs long (a layer's files, a download's chunks, a wheel's files) calls `checkpoint()`,
which raises `Cancelled` once the scope is cancelled. Work handed to another thread carries
the scope with it through `bind`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

__all__ = ["Cancelled", "bind", "checkpoint", "scope"]

P = ParamSpec("P")
T = TypeVar("T")

_CURRENT: ContextVar[threading.Event | None] = ContextVar("hatch_jib_cancel", default=None)


class Cancelled(Exception):
    """Raised at a checkpoint of a cancelled build; the failure that caused it is reported."""


@contextmanager
def scope(event: threading.Event) -> Iterator[threading.Event]:
    """Make `event` the cancellation signal of this thread's work until the block ends."""
    token = _CURRENT.set(event)
    try:
        yield event
    finally:
        _CURRENT.reset(token)


def checkpoint() -> None:
    """Raise `Cancelled` if the current build was cancelled; cheap enough to call per file."""
    event = _CURRENT.get()
    if event is not None and event.is_set():
        raise Cancelled("the build was cancelled")


def bind(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn`, run under the caller's scope in whatever thread calls it."""
    event = _CURRENT.get()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        token = _CURRENT.set(event)
        try:
            return fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)

    return run
