"""The reproducible layer writer: sorted tar entries, fixed owners and times, fixed gzip."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from hatch_jib.cache import BlobStore

__all__ = [
    "DEFAULT_MTIME",
    "FORMAT_VERSION",
    "BuiltLayer",
    "LayerEntry",
    "LayerSpec",
    "ParallelGzip",
    "build_layer",
]

# One second past the epoch, as Jib does: some tools treat an mtime of 0 as "unset".
DEFAULT_MTIME = 1
GZIP_LEVEL = 6
# Compression block size: changing it changes every layer digest.
GZIP_BLOCK = 1 << 20
_WINDOW = 32 * 1024
FORMAT_VERSION = "2"  # bump when the bytes a spec produces change
_CHUNK = 1 << 20

EntryKind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class LayerEntry:
    """One path in a layer. `path` is relative to the image root, without a leading `/`."""

    path: str
    kind: EntryKind
    mode: int = 0o644
    source: Path | None = None
    link_target: str | None = None

    @classmethod
    def file(cls, path: str, source: Path, *, mode: int | None = None) -> LayerEntry:
        if mode is None:
            mode = 0o755 if source.stat().st_mode & 0o111 else 0o644
        return cls(path.strip("/"), "file", mode, source=source)

    @classmethod
    def directory(cls, path: str, *, mode: int = 0o755) -> LayerEntry:
        return cls(path.strip("/"), "dir", mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> LayerEntry:
        return cls(path.strip("/"), "symlink", 0o777, link_target=target)


@dataclass(frozen=True)
class LayerSpec:
    """A named layer and its entries; the order of entries does not matter."""

    name: str
    entries: tuple[LayerEntry, ...]


@dataclass(frozen=True)
class BuiltLayer:
    """A layer blob in the store: `digest` of the gzip bytes, `diff_id` of the tar."""

    name: str
    digest: str
    diff_id: str
    size: int
    reused: bool = False


def build_layer(spec: LayerSpec, store: BlobStore, *, mtime: int = DEFAULT_MTIME) -> BuiltLayer:
    """Write `spec` as a gzip tar blob, or reuse the blob built before from the same inputs."""
    # The selector key covers every input byte, so a wrong hit is impossible.
    entries = _with_parents(spec.entries)
    hashes = _ContentHashes(store, spec.name)
    key = _selector_key(entries, mtime, hashes)
    hashes.save()
    record = store.read_record("selectors", key)
    if record and store.verified_path(record["digest"]) is not None:
        return BuiltLayer(spec.name, record["digest"], record["diff_id"], record["size"], True)

    # Stream tar -> sha256 (diff_id) -> gzip -> blob writer (digest).
    with store.writer() as blob:
        diff_hash = hashlib.sha256()
        with ParallelGzip(blob) as gz:
            sink = _HashingSink(gz, diff_hash)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in entries:
                    _add(tar, entry, mtime)
        size = blob.size
        digest = blob.commit()

    diff_id = "sha256:" + diff_hash.hexdigest()
    store.write_record("selectors", key, {"digest": digest, "diff_id": diff_id, "size": size})
    return BuiltLayer(spec.name, digest, diff_id, size, False)


class ParallelGzip:
    """A gzip stream compressed in fixed blocks on several threads, with the same bytes on any
    machine whatever its core count.

    The input is cut into `GZIP_BLOCK` blocks. Each is deflated on its own, primed with the
    32 KiB before it, and ends with a sync flush (the last with a finish), as pigz does; the
    header has no name, mtime 0 and OS byte 255, like Python's own gzip. Only the block size
    and level fix the output, so they are part of the layer format.
    """

    _HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, target: Writable, *, workers: int | None = None) -> None:
        self._target = target
        self._workers = workers or min(8, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="jib-gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._buffer = bytearray()
        self._window = b""
        self._crc = 0
        self._size = 0
        target.write(self._HEADER)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= GZIP_BLOCK:
            block = bytes(self._buffer[:GZIP_BLOCK])
            del self._buffer[:GZIP_BLOCK]
            self._submit(block, last=False)
        return len(data)

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._size += len(block)
        self._pending.append(self._pool.submit(_deflate, block, self._window, last))
        self._window = block[-_WINDOW:]
        # Keep a few blocks in flight: enough to use every core, never the whole layer.
        while len(self._pending) > 2 * self._workers:
            self._target.write(self._pending.popleft().result())

    def close(self) -> None:
        """Compress what is left and write the trailer: CRC-32 and size mod 2**32."""
        self._submit(bytes(self._buffer), last=True)
        self._buffer.clear()
        while self._pending:
            self._target.write(self._pending.popleft().result())
        self._target.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        self._pool.shutdown()

    def __enter__(self) -> ParallelGzip:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._pool.shutdown(cancel_futures=True)


def _deflate(block: bytes, window: bytes, last: bool) -> bytes:
    """Raw deflate of one block, primed with the window before it."""
    if window:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=window)
    else:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    flush = zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    return compressor.compress(block) + compressor.flush(flush)


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _HashingSink(io.RawIOBase):
    """A write-only stream that hashes bytes on their way to `target`."""

    def __init__(self, target: Writable, digest: hashlib._Hash) -> None:
        self._target = target
        self._digest = digest

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._digest.update(data)
        self._target.write(data)
        return len(data)


def _with_parents(entries: tuple[LayerEntry, ...]) -> list[LayerEntry]:
    """Sort entries by path and add every missing parent directory."""
    by_path = {entry.path: entry for entry in entries}
    for path in list(by_path):
        parent = path.rpartition("/")[0]
        while parent and parent not in by_path:
            by_path[parent] = LayerEntry.directory(parent)
            parent = parent.rpartition("/")[0]
    return [by_path[path] for path in sorted(by_path)]


def _add(tar: tarfile.TarFile, entry: LayerEntry, mtime: int) -> None:
    info = tarfile.TarInfo(entry.path)
    info.mtime = mtime
    info.mode = entry.mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link_target or ""
        tar.addfile(info)
    else:
        assert entry.source is not None
        with open(entry.source, "rb") as handle:
            info.size = _size_of(handle)
            tar.addfile(info, handle)


def _size_of(handle: IO[bytes]) -> int:
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    return size


def _selector_key(entries: list[LayerEntry], mtime: int, hashes: _ContentHashes) -> str:
    rows = []
    for entry in entries:
        content = hashes.sha256(entry.source) if entry.kind == "file" and entry.source else ""
        rows.append([entry.path, entry.kind, entry.mode, entry.link_target or "", content])
    payload = {"format": FORMAT_VERSION, "gzip": GZIP_LEVEL, "mtime": mtime, "entries": rows}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# A file changed less than this long ago may change again within the same mtime tick.
_RACY_SECONDS = 2


class _ContentHashes:
    """File sha256s, reused from the last build of the same layer while the file's stat holds.

    The stat key is device, inode, size, mtime and ctime in nanoseconds. Content rewritten
    with its old mtime put back still moves the ctime, which no user call can set, and a
    file younger than `_RACY_SECONDS` is never remembered, as it may change within its tick.
    """

    def __init__(self, store: BlobStore, layer_name: str) -> None:
        self._store = store
        self._key = f"layer:{layer_name}"
        self._known: dict[str, list[Any]] = store.read_record("content-hashes", self._key) or {}
        self._seen: dict[str, list[Any]] = {}

    def sha256(self, path: Path) -> str:
        info = path.stat()
        stamp = [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
        name = str(path)
        known = self._known.get(name)
        unchanged = known is not None and known[:5] == stamp
        content = str(known[5]) if known and unchanged else _file_sha256(path)
        newest = max(info.st_mtime_ns, info.st_ctime_ns)
        if time.time_ns() - newest > _RACY_SECONDS * 1_000_000_000:
            self._seen[name] = [*stamp, content]
        return content

    def save(self) -> None:
        """Keep only this build's files, so the record stays the size of one layer."""
        if self._seen != self._known:
            self._store.write_record("content-hashes", self._key, self._seen)
