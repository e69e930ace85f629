"""Progress events: what the library reports while it moves blobs, for a display to draw."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["BlobEvent", "publish", "sent", "subscribe"]


@dataclass(frozen=True)
class BlobEvent:
    """One blob's state: `checking`, `uploading` (again when an upload restarts), then
    `pushed`, `skipped`, `mounted`, `failed`, or `cancelled` when another blob failed.

    `sent` events carry only `digest` and the bytes just sent in `done`.
    """

    digest: str
    state: str
    name: str = ""
    size: int = 0
    done: int = 0


Listener = Callable[[BlobEvent], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call `listener` for every event from any thread; returns the function that stops it."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def publish(event: BlobEvent) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event)


def sent(digest: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass `chunks` through, reporting each one as sent for `digest`."""
    for chunk in chunks:
        if _listeners:
            publish(BlobEvent(digest, "sent", done=len(chunk)))
        yield chunk
