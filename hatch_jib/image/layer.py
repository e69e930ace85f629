"""The reproducible layer writer: sorted tar entries, fixed owners and times, fixed gzip."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import sys
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from hatch_jib import cancel
from hatch_jib.cache import BlobStore, ContentHashes, open_regular_file, record_of
from hatch_jib.errors import BuildError
from hatch_jib.image.descriptor import check_digest

__all__ = [
    "DEFAULT_MTIME",
    "FORMAT_VERSION",
    "STOCK_DEFLATE",
    "BuiltLayer",
    "LayerEntry",
    "LayerSpec",
    "ParallelGzip",
    "build_layer",
    "deflate_fingerprint",
    "is_stored",
    "layer_format",
    "recorded_layer",
    "tar_header",
]

# One second past the epoch, as Jib does: some tools treat an mtime of 0 as "unset".
DEFAULT_MTIME = 1
GZIP_LEVEL = 6
# Compression block size: changing it changes every layer digest.
GZIP_BLOCK = 1 << 20
_WINDOW = 32 * 1024
FORMAT_VERSION = "2"  # bump when the bytes a spec produces change
_CHUNK = 1 << 20
# `deflate_fingerprint` with stock zlib, 1.2.13 and 1.3.1 alike; zlib-ng's differs.
STOCK_DEFLATE = "3050564296363ced"
_PROBE_PART = 4096

EntryKind = Literal["file", "dir", "symlink"]


class _SelectorRow(NamedTuple):
    """One entry as its layer's selector key lists it, with the mode its file gave."""

    path: str
    kind: str
    mode: int
    link_target: str
    sha256: str  # of the bytes; "" for a directory or symlink


@dataclass(frozen=True)
class LayerEntry:
    """One path in a layer. `path` is relative to the image root, without a leading `/`."""

    path: str
    kind: EntryKind
    # None, for a file on disk only: 0o755 or 0o644 by the source's executable bits, as the
    # stat the layer's selector key takes of it says.
    mode: int | None = 0o644
    source: Path | str | None = None
    link_target: str | None = None
    data: bytes | None = field(default=None, repr=False)  # a file's bytes, when not on disk

    @classmethod
    def file(cls, path: str, source: Path | str, *, mode: int | None = None) -> LayerEntry:
        return cls(path.strip("/"), "file", mode, source=source)

    @classmethod
    def content(cls, path: str, data: bytes, *, mode: int = 0o644) -> LayerEntry:
        """A file whose bytes are held in memory: the same tar entry as from a file."""
        return cls(path.strip("/"), "file", mode, data=data)

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
    hashes = ContentHashes(store, f"layer:{spec.name}", keep=True)
    rows = [_selector_row(entry, hashes) for entry in entries]
    key = _selector_key(rows, mtime)
    hashes.save()
    # Threads asking for the same layer (platforms of one build) wait for the first to write
    # it, then reuse it; different layers are written side by side.
    with _selector_lock(store, key):
        reused = store.load_record("selectors", key, functools.partial(recorded_layer, spec.name))
        if reused is not None and is_stored(reused, store):
            return reused
        return _write_layer(spec.name, entries, rows, key, store, mtime, hashes)


def recorded_layer(name: str, record: dict[str, Any]) -> BuiltLayer:
    """A layer remembered in a record (`digest`, `diff_id`, `size`), as reused; TypeError or
    ValueError if the record is of another shape."""
    fields = {key: record[key] for key in ("digest", "diff_id", "size")}
    layer = record_of(BuiltLayer, {"name": name, **fields, "reused": True})
    check_digest(layer.digest)
    check_digest(layer.diff_id)
    if layer.size < 0:
        raise ValueError(f"size {layer.size} is negative")
    return layer


def is_stored(layer: BuiltLayer, store: BlobStore) -> bool:
    """Whether the layer's blob is in the store, intact and of the size its record says."""
    path = store.verified_path(layer.digest)
    return path is not None and path.stat().st_size == layer.size


_SELECTOR_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_SELECTOR_LOCKS_GUARD = threading.Lock()


def _selector_lock(store: BlobStore, key: str) -> threading.Lock:
    # A process keeps its locks: one a layer key, which is a sha256, so they stay small.
    name = (str(store.root), key)
    with _SELECTOR_LOCKS_GUARD:
        return _SELECTOR_LOCKS.setdefault(name, threading.Lock())


def _write_layer(
    name: str,
    entries: list[LayerEntry],
    rows: list[_SelectorRow],
    key: str,
    store: BlobStore,
    mtime: int,
    hashes: ContentHashes,
) -> BuiltLayer:
    # Stream tar -> sha256 (diff_id) -> gzip -> blob writer (digest).
    with store.writer() as blob:
        diff_hash = hashlib.sha256()
        with ParallelGzip(blob) as gz:
            tar = _TarStream(_HashingSink(gz, diff_hash))
            for entry, row in zip(entries, rows, strict=True):
                cancel.checkpoint()
                _add(tar, entry, row, mtime, hashes)
            tar.close()
        size = blob.size
        digest = blob.commit()

    diff_id = "sha256:" + diff_hash.hexdigest()
    store.write_record("selectors", key, {"digest": digest, "diff_id": diff_id, "size": size})
    return BuiltLayer(name, digest, diff_id, size, False)


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
            with memoryview(self._buffer) as view:  # one copy of the block, not two
                block = bytes(view[:GZIP_BLOCK])
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


def deflate_fingerprint() -> str:
    """How this process's zlib deflates: a short hash of two blocks of a fixed probe
    compressed as `ParallelGzip` compresses them.

    Deflate fixes what a stream means, not its bytes: zlib-ng (Fedora's zlib, CPython's on
    Windows) picks other matches than stock zlib for the same input. Layer bytes, and so
    their digests, match across machines only where this fingerprint does.
    """
    return _fingerprint(zlib.compressobj)


@functools.cache
def _fingerprint(compressobj: Callable[..., Any]) -> str:
    # Cached by the compressor factory, so a deflate swapped in is probed anew.
    words = (b"site-packages/", b"__init__.py", b"\0" * 9, b"0000644\0", b"import ", b"def ")
    probe, state = bytearray(), 1
    while len(probe) < 3 * _PROBE_PART:
        state = (state * 1103515245 + 12345) % 2**31  # a fixed LCG: the same probe everywhere
        probe += words[state % len(words)] + bytes([32 + state % 95])
    head, window = bytes(probe[: 2 * _PROBE_PART]), bytes(probe[_PROBE_PART : 2 * _PROBE_PART])
    first = _deflate(head, b"", False, compressobj)
    second = _deflate(bytes(probe[2 * _PROBE_PART :]), window, True, compressobj)
    return hashlib.sha256(first + second).hexdigest()[:16]


def layer_format() -> str:
    """What fixes a layer's bytes besides its entries: the format version and the deflate."""
    return f"{FORMAT_VERSION}/{deflate_fingerprint()}"


def _deflate(
    block: bytes, window: bytes, last: bool, compressobj: Callable[..., Any] | None = None
) -> bytes:
    """Raw deflate of one block, primed with the window before it."""
    make = compressobj or zlib.compressobj
    if window:
        compressor = make(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=window)
    else:
        compressor = make(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    flush = zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    return compressor.compress(block) + compressor.flush(flush)


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _HashingSink:
    """A write-only stream that hashes bytes on their way to `target`."""

    def __init__(self, target: Writable, digest: hashlib._Hash) -> None:
        self._target = target
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self._target.write(data)
        return len(data)


def _with_parents(entries: tuple[LayerEntry, ...]) -> list[LayerEntry]:
    """Sort entries by path and add every missing parent directory."""
    # A layer must never reach outside the image root, whatever a caller computed.
    for entry in entries:
        parts = entry.path.split("/")
        if not entry.path or entry.path.startswith("/") or ".." in parts or "" in parts:
            raise ValueError(f"layer entry path {entry.path!r} is not inside the image root")
        on_disk = entry.kind == "file" and entry.source is not None and entry.data is None
        if entry.mode is None and not on_disk:
            raise ValueError(f"layer entry {entry.path!r} has no mode and no file to take it from")
    by_path = {entry.path: entry for entry in entries}
    for path in list(by_path):
        parent = path.rpartition("/")[0]
        while parent and parent not in by_path:
            by_path[parent] = LayerEntry.directory(parent)
            parent = parent.rpartition("/")[0]
    return [by_path[path] for path in sorted(by_path)]


# TODO(#4): a tree of 10,000 tiny files takes about 3 times as long as tar | gzip | sha256sum
# as a whole process and about 2 to 2.3 times in process. In one run taken apart: the bare
# system calls that read the files 37 ms (tar pays those too), hashing and rows 30 ms, the
# key and content-hash JSON 30 ms, the tar headers 25 ms, all on this thread while gzip has
# the other core. For the whole process, the interpreter's start and imports (50 ms) plus
# the bare reads already match tar's whole run; in process, the interpreter's work per
# file is what is left. A checksum thread beside the deflate and a single pass that hashes
# and tars gave nothing (both cores are busy), and reading on two threads is slower (GIL).
# A prototype with no Python loop per file, compressing while it read, still took 1.4
# times tar's time in process: the diff_id, the per-file sha256s and the selector's JSON
# are work the peer does not do (benchmarks/README.md). What is left needs native code.
def _add(
    tar: _TarStream, entry: LayerEntry, row: _SelectorRow, mtime: int, hashes: ContentHashes
) -> None:
    """Write one entry, with the mode and content hash of its selector row."""
    mode = row.mode
    if entry.kind != "file":
        link = entry.link_target or ""
        tar.write(tar_header(entry.path, entry.kind, mode, 0, mtime, link))
        return
    if entry.data is not None:
        tar.member(tar_header(entry.path, "file", mode, len(entry.data), mtime), entry.data)
        return
    assert entry.source is not None

    # Small files were read once, when the selector hashed them; larger ones stream again.
    data = hashes.take(entry.source)
    if data is not None:
        tar.member(tar_header(entry.path, "file", mode, len(data), mtime), data)
        return
    try:
        fd, info = open_regular_file(entry.source)
    except OSError as error:
        raise _unreadable(entry, error) from error
    try:
        tar.write(tar_header(entry.path, "file", mode, info.st_size, mtime))
        content = _copy_exactly(fd, tar, info.st_size, entry)
    finally:
        os.close(fd)
    tar.pad(info.st_size)

    # The selector key holds the hash read before; bytes that differ now must not be stored
    # under it, or a later build would reuse a layer that does not match its inputs.
    if content != row.sha256:
        raise BuildError(
            f"{entry.source} changed while layer {entry.path!r} was being written",
            hint="build again once nothing is writing to the project's files",
        )


def _unreadable(entry: LayerEntry, error: OSError) -> BuildError:
    return BuildError(
        f"cannot read {entry.source} for /{entry.path} in the image: {error.strerror or error}",
        hint="make it a regular file the build's user can read, or leave it out of the image",
    )


def _copy_exactly(fd: int, tar: _TarStream, size: int, entry: LayerEntry) -> str:
    """Copy `size` bytes of `fd` into the tar; the sha256 of what was copied."""
    digest = hashlib.sha256()
    left = size
    while left:
        try:
            chunk = os.read(fd, min(left, _CHUNK))
        except OSError as error:
            raise _unreadable(entry, error) from error
        if not chunk:
            raise BuildError(
                f"{entry.source} shrank while it was being written into a layer",
                hint="build again once nothing is writing to the project's files",
            )
        digest.update(chunk)
        tar.write(chunk)
        left -= len(chunk)
    return digest.hexdigest()


_BLOCK = 512
_RECORD = 20 * _BLOCK
_NUL_BLOCK = bytes(_BLOCK)
_TYPE_FLAGS = {"file": b"0", "dir": b"5", "symlink": b"2", "pax": b"x"}
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")
_USTAR_MAGIC = b"ustar\x0000"
_OCTAL_LIMIT = {8: 8**7, 12: 8**11}
_FS_ENCODING = sys.getfilesystemencoding()


def tar_header(path: str, kind: str, mode: int, size: int, mtime: int, link: str = "") -> bytes:
    """The header blocks of one entry, the very bytes Python's tarfile writes in PAX format
    for a `TarInfo` with uid and gid 0 and empty owner names.

    A name or link target that is longer than its ustar field, or not ASCII, goes into a PAX
    record before the ustar block, and so does a number too big for its octal field.
    """
    name = path + "/" if kind == "dir" else path
    limit = _OCTAL_LIMIT[12]
    if not link and len(name) <= 100 and name.isascii() and size < limit and 0 <= mtime < limit:
        return _plain_ustar_block(name.encode("ascii"), mode, size, mtime, _TYPE_FLAGS[kind])
    records: dict[str, str] = {}
    for value, keyword in ((name, "path"), (link, "linkpath")):
        if len(value) > 100 or not value.isascii():
            records[keyword] = value
    if size >= _OCTAL_LIMIT[12]:
        records["size"], size = str(size), 0
    if mtime >= _OCTAL_LIMIT[12] or mtime < 0:
        records["mtime"], mtime = str(mtime), 0
    block = _ustar_block(name, mode, size, mtime, _TYPE_FLAGS[kind], link)
    return _pax_blocks(records) + block if records else block


# The ustar fields after the type flag for an entry without a link target: linkname, magic,
# version, empty owner names, device numbers and prefix, and the padding to 512 bytes.
_PLAIN_TAIL = bytes(100) + _USTAR_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)
_PLAIN_TAIL_SUM = sum(_PLAIN_TAIL) + 8 * ord(" ")  # with the checksum field as spaces


def _plain_ustar_block(name: bytes, mode: int, size: int, mtime: int, flag: bytes) -> bytes:
    """`_ustar_block` for the common entry, an ASCII name that fits and no link, built
    without packing and summing a whole block: a tree of small files has one per file."""
    head = b"%b%07o\x000000000\x000000000\x00%011o\x00%011o\x00" % (
        name.ljust(100, b"\0"),
        mode & 0o7777,
        size,
        mtime,
    )
    checksum = _byte_sum(head) + flag[0] + _PLAIN_TAIL_SUM
    return b"%b%06o\x00 %b%b" % (head, checksum, flag, _PLAIN_TAIL)


def _byte_sum(data: bytes) -> int:
    """`sum(data)` without a Python loop over the bytes: the low half of an Adler-32 is one
    plus the bytes' sum modulo 65521, which is exact for up to 256 bytes."""
    return (zlib.adler32(data) & 0xFFFF) - 1


def _ustar_block(name: str, mode: int, size: int, mtime: int, flag: bytes, link: str) -> bytes:
    # tarfile writes the names' ASCII form, each other character as "?", truncated to fit.
    block = bytearray(
        _USTAR.pack(
            name.encode("ascii", "replace"),
            b"%07o\0" % (mode & 0o7777),
            b"0000000\0",
            b"0000000\0",
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b"        ",
            flag,
            link.encode("ascii", "replace"),
            _USTAR_MAGIC,
            b"",
            b"",
            b"",
            b"",
            b"",
        )
    )
    # The checksum counts its own field as spaces; it is written as six digits, NUL, space.
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def _pax_blocks(records: dict[str, str]) -> bytes:
    """A PAX extended header (`././@PaxHeader`, type x) carrying `records`."""
    # A value that is not valid UTF-8 (an undecodable file name) is kept as raw bytes.
    binary = any(not _utf8_encodable(value) for value in records.values())
    payload = b"21 hdrcharset=BINARY\n" if binary else b""
    for keyword, value in records.items():
        raw = value.encode(_FS_ENCODING, "surrogateescape") if binary else value.encode()
        payload += _pax_record(keyword.encode(), raw)
    header = _ustar_block("././@PaxHeader", 0, len(payload), 0, _TYPE_FLAGS["pax"], "")
    return header + payload + bytes(-len(payload) % _BLOCK)


def _pax_record(keyword: bytes, value: bytes) -> bytes:
    # The leading length counts its own digits, so find the fixed point.
    body = len(keyword) + len(value) + 3
    length = previous = 0
    while True:
        length = body + len(str(previous))
        if length == previous:
            break
        previous = length
    return b"%d %s=%s\n" % (length, keyword, value)


def _utf8_encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class _TarStream:
    """Tar bytes gathered into large writes, so hashing and gzip see few big chunks."""

    def __init__(self, target: Writable) -> None:
        self._target = target
        # Pieces are joined once a chunk: growing one buffer by every small member costs more.
        self._parts: list[bytes] = []
        self._buffered = 0
        self._flushed = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= _CHUNK:
            self._flush()

    def member(self, header: bytes, data: bytes) -> None:
        """A whole member: its header blocks, its data and the NULs that end its last block."""
        padding = _NUL_BLOCK[: -len(data) % _BLOCK]
        self._parts += (header, data, padding)
        self._buffered += len(header) + len(data) + len(padding)
        if self._buffered >= _CHUNK:
            self._flush()

    def pad(self, size: int) -> None:
        """Fill the last block of a member's data with NULs."""
        if size % _BLOCK:
            self.write(_NUL_BLOCK[: _BLOCK - size % _BLOCK])

    def close(self) -> None:
        """Two empty blocks end the archive, then NULs up to a whole record, as tar pads."""
        self.write(_NUL_BLOCK * 2)
        self.write(bytes(-(self._flushed + self._buffered) % _RECORD))
        self._flush()

    def _flush(self) -> None:
        if self._parts:
            self._target.write(b"".join(self._parts))
            self._flushed += self._buffered
            self._parts.clear()
            self._buffered = 0


def _selector_row(entry: LayerEntry, hashes: ContentHashes) -> _SelectorRow:
    """An entry's path, kind, mode, link target and the sha256 of its bytes."""
    cancel.checkpoint()
    content, st_mode = "", 0
    if entry.data is not None:
        content = hashlib.sha256(entry.data).hexdigest()
    elif entry.kind == "file" and entry.source is not None:
        try:
            st_mode, content = hashes.state(entry.source)
        except OSError as error:
            raise _unreadable(entry, error) from error
    # Only a file on disk may leave its mode to its executable bits (see `_with_parents`).
    mode = entry.mode if entry.mode is not None else 0o755 if st_mode & 0o111 else 0o644
    return _SelectorRow(entry.path, entry.kind, mode, entry.link_target or "", content)


def _selector_key(rows: list[_SelectorRow], mtime: int) -> str:
    """The sha256 of everything the layer is made of. Its JSON lists every entry, a megabyte
    for 10,000 files: hashed once here, not again by the lock and each record lookup."""
    payload = {"format": layer_format(), "gzip": GZIP_LEVEL, "mtime": mtime, "entries": rows}
    # The rows are flat tuples: there is no cycle for the encoder to look for.
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), check_circular=False)
    return hashlib.sha256(encoded.encode()).hexdigest()
