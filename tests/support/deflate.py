"""A deflate whose output shows how its input was split into calls, as zlib-ng's does.

Stock zlib deflates the same bytes alike whether they come in one call or many, so a test
run on it cannot tell whether code feeds a compressor the way zipfile was fed. With
`deflate_by_write` in place, every `compress` call ends in a sync flush, so each call's
boundary is in the output while the stream stays valid deflate.
"""

from __future__ import annotations

import zlib

import pytest

__all__ = ["deflate_by_write"]


def deflate_by_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `zlib.compressobj`, for zipfile and everyone else, flush after every call."""
    real = zlib.compressobj

    class ByWrite:
        def __init__(self, *args: int, **kwargs: bytes) -> None:
            self._real = real(*args, **kwargs)

        def compress(self, data: bytes) -> bytes:
            return self._real.compress(data) + self._real.flush(zlib.Z_SYNC_FLUSH)

        def flush(self, *args: int) -> bytes:
            return self._real.flush(*args)

    monkeypatch.setattr(zlib, "compressobj", ByWrite)
