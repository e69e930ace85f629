"""The content-addressed blob store and the selectors that map layer inputs to blobs."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from hatch_jib.errors import BuildError
from hatch_jib.image.descriptor import DigestMismatch, check_digest, digest_hex

__all__ = [
    "LOCAL_WHEELS",
    "RECORD_KINDS",
    "BlobStore",
    "BlobWriter",
    "ContentHashes",
    "PruneReport",
    "PrunedBlob",
    "cache_in_use",
    "default_cache_dir",
    "explained_file_system_errors",
    "file_digest",
    "file_system_error",
    "file_type_name",
    "open_regular_file",
    "record_of",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("hatch-jib", appauthor=False))


class BlobWriter:
    """A temp file that hashes what is written and becomes a blob on `commit`."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        # The file outlives this call: commit() renames it, discard() removes it.
        self._file: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115
            dir=store.tmp_dir, prefix=_BLOB_PREFIX, delete=False
        )
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self, expected: str | None = None) -> str:
        """Move the finished file into place; raise DigestMismatch if it is not `expected`."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = self.digest
        if expected is not None and expected != digest:
            self.discard()
            raise DigestMismatch(expected, digest)
        target = self._store.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._file.name, target)
        return digest

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file.name)


class BlobStore:
    """Blobs stored by sha256 under `root/blobs/sha256/`, written atomically.

    Several builds may share one store: a blob only appears under its digest by an
    atomic rename of a fully written and hashed temp file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        self._verified: set[str] = set()

    def path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(check_digest(digest)).is_file()

    def scratch_directory(self) -> tempfile.TemporaryDirectory[str]:
        """A temporary directory for a build's installs and wheels, removed when it ends.

        It is made in the store's temp directory, not the system's: a build that is killed
        cannot remove it, and `prune` clears what such builds left there.
        """
        return tempfile.TemporaryDirectory(prefix=_SCRATCH_PREFIX, dir=self.tmp_dir)

    def verified_path(self, digest: str) -> Path | None:
        """The blob's path once its bytes are checked; a corrupt blob is evicted."""
        path = self.path(digest)
        if not path.is_file():
            return None
        if digest in self._verified:
            return path
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return None
        with handle:
            actual = _stream_digest(handle)
            read = os.fstat(handle.fileno())
        if actual == digest:
            self._verified.add(digest)
            return path

        # Evict only the copy that was read: another build may have just renamed a good one
        # into its place, which is checked in its turn.
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return None
        if (now.st_dev, now.st_ino) != (read.st_dev, read.st_ino):
            return self.verified_path(digest)
        log.warning("cache: evicting corrupt blob %s (its content hashes to %s)", digest, actual)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """Yield a BlobWriter; the caller must `commit` it, else it is discarded."""
        blob = BlobWriter(self)
        try:
            yield blob
        finally:
            blob.discard()

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        with self.writer() as blob:
            blob.write(data)
            digest = blob.commit(expected)
        self._verified.add(digest)
        return digest

    def put_file(self, source: Path, expected: str | None = None) -> str:
        with self.writer() as blob, open(source, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                blob.write(chunk)
            digest = blob.commit(expected)
        self._verified.add(digest)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        path = self.verified_path(digest)
        if path is None:
            raise FileNotFoundError(f"blob {digest} is not in the cache at {self.root}")
        return path.read_bytes()

    # Small JSON records (selectors, resolved dependency sets) keyed by a string. Each file
    # is the JSON, a newline and a sha256 of the JSON and of where the record is filed: a
    # layer's diff_id or size read from a damaged record, or from another key's record
    # copied over it, would be pushed in a manifest that does not match its blobs.
    def read_record(self, kind: str, key: str) -> Any | None:
        """The record's value; None if there is none, or it is damaged (with a warning)."""
        path = self._record_path(kind, key)
        raw = self._record_bytes(kind, path)
        if raw is None:
            return None
        payload, _, checksum = raw.rpartition(b"\n")
        if checksum != _record_checksum(path, payload):
            _drop_record(kind, path, "its checksum is wrong: it is damaged, or another key's")
            return None
        try:
            return json.loads(payload)
        except (ValueError, RecursionError):
            return None  # the checksum holds, so whoever wrote it wrote it so: not ours

    def _record_bytes(self, kind: str, path: Path) -> bytes | None:
        """A record file's bytes; None, with a warning, if it is no regular file or too big
        for a record: a FIFO would never answer, /dev/zero never end."""
        try:
            fd, info = open_regular_file(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            _drop_record(kind, path, error.strerror or str(error))
            return None
        with open(fd, "rb") as handle:
            if info.st_size > _MAX_RECORD:
                _drop_record(kind, path, f"it has {info.st_size} bytes, more than any record")
                return None
            return handle.read(_MAX_RECORD)

    def load_record(self, kind: str, key: str, parse: Callable[[Any], _T]) -> _T | None:
        """The record made into objects by `parse`; None, with a warning, if it has another
        shape than `parse` expects (written by another hatch-jib, or by hand)."""
        value = self.read_record(kind, key)
        if value is None:
            return None
        try:
            return parse(value)
        except (TypeError, KeyError, ValueError, AttributeError, OverflowError) as error:
            log.warning(
                "cache: ignoring the %s record %s: it has another shape (%s: %s)",
                kind,
                self._record_path(kind, key),
                type(error).__name__,
                error,
            )
            return None

    def write_record(self, kind: str, key: str, value: Any) -> None:
        path = self._record_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # dumps, not dump: dump runs the pure-Python encoder, slow for big records. Keys stay
        # in their order: only json.loads reads a record, and sorting the 10,000 files of a
        # content-hashes record costs more than encoding them. No record refers to itself, so
        # the encoder need not track what it is inside. The JSON has no raw newline.
        payload = json.dumps(value, check_circular=False).encode()
        with tempfile.NamedTemporaryFile(
            "wb", dir=self.tmp_dir, prefix=_RECORD_PREFIX, delete=False
        ) as handle:
            handle.write(payload + b"\n" + _record_checksum(path, payload))
        os.replace(handle.name, path)

    def blobs(self) -> list[PrunedBlob]:
        """Every stored blob with its size and when it was last written or read. A file
        not named by a digest (a `.DS_Store`, a sync tool's partial file) is not ours."""
        found = []
        for path in (self.root / "blobs" / "sha256").iterdir():
            if _SHA256_HEX.fullmatch(path.name) is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                last_used = max(info.st_mtime, info.st_atime)
                found.append(PrunedBlob(f"sha256:{path.name}", info.st_size, last_used))
        return found

    def prune(
        self,
        *,
        older_than: float | None = None,
        max_size: int | None = None,
        wait: float = 0,
        now: float | None = None,
    ) -> PruneReport:
        """Remove blobs unused for `older_than` seconds, then the least recently used ones
        until the rest fit in `max_size` bytes.

        Waits up to `wait` seconds for running builds to finish (BuildError after that), and
        holds the cache exclusively meanwhile. Records pointing at removed blobs stay: every
        reader verifies the blob and rebuilds or downloads it again.
        """
        with cache_in_use(self.root, exclusive=True, timeout=wait):
            # Ages count from when the prune runs, after any wait for builds.
            now = time.time() if now is None else now
            report = _prune_blobs(self, older_than=older_than, max_size=max_size, now=now)

            # Temp files: every build holds the cache shared while it runs, so under this
            # exclusive hold they are all left by builds that died (a SIGKILL mid-layer can
            # leave hundreds of MB); where there is no lock, those a day old. Then the
            # records and local dependencies' wheels nobody used for as long (by access
            # time, which relatime moves about daily).
            leftover = 0
            if _inside_cache(self.tmp_dir):
                before = None if _CAN_LOCK else now - _DAY
                leftover = _remove_leftovers(self.tmp_dir, before=before)
            if older_than is not None:
                for kind in (*RECORD_KINDS, LOCAL_WHEELS):
                    if _inside_cache(self.root / kind):
                        _remove_old_files(self.root / kind, cutoff=now - older_than, by_use=True)
        report = dataclasses.replace(report, leftover_bytes=leftover)
        self._verified.difference_update(blob.digest for blob in report.removed)
        # The CLI prints its own summary; this line is for library callers' logs.
        log.debug(
            "cache: removed %d blob(s), %d bytes; %d blob(s), %d bytes left in %s",
            len(report.removed),
            report.freed_bytes,
            report.kept,
            report.kept_bytes,
            self.root,
        )
        return report

    def _record_path(self, kind: str, key: str) -> Path:
        if kind not in RECORD_KINDS:
            raise ValueError(f"record kind {kind!r} is not in RECORD_KINDS, so prune misses it")
        name = hashlib.sha256(key.encode()).hexdigest()
        # `.v2`: records whose checksum covers their key. Older hatch-jibs, whose checksum did
        # not, never look for these names, nor these for theirs, so sharing a cache with one
        # costs misses, never warnings; prune ages the other's records out.
        return self.root / kind / name[:2] / f"{name}.v2.json"


# Far above any record a build writes: the content hashes of a million files take 200 MB.
_MAX_RECORD = 1 << 30


def _record_checksum(path: Path, payload: bytes) -> bytes:
    """The sha256 of a record's JSON after its kind and the hash of its key, which its path
    holds: a whole record copied under another key fails it like a damaged one."""
    where = f"{path.parent.parent.name}/{path.stem}\n".encode()
    return hashlib.sha256(where + payload).hexdigest().encode()


def _drop_record(kind: str, path: Path, reason: str) -> None:
    log.warning("cache: dropping damaged %s record %s (%s)", kind, path, reason)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cache: cannot remove %s (%s); remove it by hand", path, error.strerror)


# --- the machine's failures ---------------------------------------------------------------------

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
# What a file of the wrong type where the cache expects another gives.
_WRONG_TYPE = {errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ELOOP}


@contextlib.contextmanager
def explained_file_system_errors(
    *, cache_dir: Path, output_dir: Path | None = None
) -> Iterator[None]:
    """Raise what `file_system_error` makes of an OSError in the block, if anything."""
    try:
        yield
    except OSError as error:
        explained = file_system_error(error, cache_dir=cache_dir, output_dir=output_dir)
        if explained is None:
            raise
        raise explained from error


def file_system_error(
    error: OSError, *, cache_dir: Path, output_dir: Path | None = None
) -> BuildError | None:
    """What to tell the user of a file-system failure that is the machine's, not a bug in
    hatch-jib (a full disk, a file of another user, a damaged cache entry); None for others."""
    named = isinstance(error.filename, (str, bytes)) and error.filename
    # Absolute, not resolved: a symlink loop (ELOOP) must not fail the explanation itself.
    path = Path(os.path.abspath(os.fsdecode(error.filename))) if named else None
    cache = Path(os.path.abspath(cache_dir))
    in_cache = path is not None and path.is_relative_to(cache)
    if error.errno in _NO_SPACE:
        where = f" for {path}" if path else ""
        return BuildError(
            f"Out of disk space{where} ({error.strerror})",
            hint=f"free space there, or make the cache at {cache_dir} smaller: "
            "hatch-jib cache prune --max-size 2G",
        )
    if error.errno in _DENIED and path is not None:
        if in_cache:
            hint = (
                f"the cache {cache_dir} holds files this user may not change (made by another"
                " user, as with sudo?): give them to this user (chown -R), or set"
                " JIB_CACHE_DIR to a directory of your own"
            )
        elif output_dir is not None and path.is_relative_to(os.path.abspath(output_dir)):
            hint = (
                "make the output directory writable, or choose another with --output-dir"
                " (or hatch's -o)"
            )
        else:
            hint = "make it readable, and writable where hatch-jib writes, for this user"
        return BuildError(f"Cannot use {path}: {error.strerror}", hint=hint)
    # What a build makes in tmp/ is its own: a clash there is a bug, not damage to remove.
    scratch = path is not None and path.is_relative_to(cache / "tmp") and path != cache / "tmp"
    if error.errno in _WRONG_TYPE and in_cache and not scratch:
        return BuildError(
            f"The cache entry {path} is damaged ({error.strerror})",
            hint="remove it; hatch-jib downloads or builds again what is missing",
        )
    return None


# --- pruning ----------------------------------------------------------------------------------

_LOCK_NAME = "cache.lock"
# Without fcntl (Windows) builds take no lock, so prune cannot tell a dead build's temp
# files from a running one's.
_CAN_LOCK = importlib.util.find_spec("fcntl") is not None
_DAY = 86400
# The names of what builds make in the store's tmp/; prune removes these and nothing else.
_BLOB_PREFIX, _RECORD_PREFIX, _SCRATCH_PREFIX = "blob-", "record-", "build-"
_TEMP_PREFIXES = (_BLOB_PREFIX, _RECORD_PREFIX, _SCRATCH_PREFIX, "tmp")  # tmp: older records
# Every kind of record a build writes; `prune` ages out each, so a record of a kind not
# listed here would stay forever, and the store refuses to write one.
RECORD_KINDS = (
    "selectors",
    "targets",
    "resolutions",
    "content-hashes",
    "wheels",
    "last-wheels",
    "installed-layers",
    "manifests",
    "tags",
    "diff-ids",
)
# Wheels built from local dependencies, under their digest (see python/local.py).
LOCAL_WHEELS = "local-wheels"


@dataclass(frozen=True)
class PrunedBlob:
    digest: str
    size: int
    last_used: float  # seconds since the epoch


@dataclass(frozen=True)
class PruneReport:
    """What `BlobStore.prune` removed and what is left."""

    removed: tuple[PrunedBlob, ...]
    kept: int
    kept_bytes: int
    leftover_bytes: int = 0  # temp files and scratch directories of builds that were killed

    @property
    def freed_bytes(self) -> int:
        return sum(blob.size for blob in self.removed)


@contextlib.contextmanager
def cache_in_use(root: Path, *, exclusive: bool = False, timeout: float = -1) -> Iterator[None]:
    """Hold the cache's lock: shared for a build, exclusive for a prune.

    Builds share the cache freely; only a prune must wait until no build is running, since
    a build may have decided to reuse a blob that it has not read yet. An flock is released
    by the kernel if its holder dies, so a crashed build never blocks a prune for good.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        # TODO(#7): a shared lock on Windows (msvcrt has none); builds there are not guarded.
        yield
        return
    with open(root / _LOCK_NAME, "a+b") as handle:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = None if timeout < 0 else time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    # A build only waits for a prune; a prune waits for builds.
                    holder = "running builds" if exclusive else "a cache prune"
                    log.info("Waiting for %s to finish with the cache %s", holder, root)
                    told = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise BuildError(
                        f"The cache {root} is in use by a running build",
                        hint="prune again when the build has finished, or pass a longer --wait",
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _inside_cache(directory: Path) -> bool:
    """Whether prune may walk `directory`: a symlink in its place (`tmp -> /tmp`) would lead
    it to remove another tree's files, so it is left alone, with a warning."""
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(info.st_mode):
        return True
    kind = file_type_name(info.st_mode)
    log.warning(
        "cache: not pruning %s: it is %s, not a directory, and prune removes nothing outside"
        " the cache; replace it with a directory",
        directory,
        kind,
    )
    return False


def _prune_blobs(
    store: BlobStore, *, older_than: float | None, max_size: int | None, now: float
) -> PruneReport:
    blobs_dir = store.root / "blobs" / "sha256"
    if not (_inside_cache(store.root / "blobs") and _inside_cache(blobs_dir)):
        return PruneReport(removed=(), kept=0, kept_bytes=0)
    blobs = sorted(store.blobs(), key=lambda blob: blob.last_used)
    removed: list[PrunedBlob] = []
    kept: list[PrunedBlob] = []
    for blob in blobs:
        if older_than is not None and now - blob.last_used > older_than:
            removed.append(blob)
        else:
            kept.append(blob)

    # Then the least recently used, until what is left fits.
    total = sum(blob.size for blob in kept)
    while max_size is not None and kept and total > max_size:
        blob = kept.pop(0)
        total -= blob.size
        removed.append(blob)

    for blob in removed:
        with contextlib.suppress(FileNotFoundError):
            store.path(blob.digest).unlink()
        log.debug("cache: removed %s (%d bytes)", blob.digest, blob.size)
    return PruneReport(removed=tuple(removed), kept=len(kept), kept_bytes=total)


def _remove_leftovers(tmp_dir: Path, *, before: float | None = None) -> int:
    """Remove the temp files and scratch trees that builds made in `tmp_dir` (those last
    changed `before`, if given), and nothing else there; the bytes their files held. What
    cannot be removed is named in a warning."""
    held = 0
    for path in tmp_dir.iterdir():
        if not path.name.startswith(_TEMP_PREFIXES):
            continue
        try:
            if before is not None and path.lstat().st_mtime >= before:
                continue
            if path.is_dir() and not path.is_symlink():
                held += _tree_size(path)
                _make_writable(path)
                shutil.rmtree(path)
            else:
                held += path.lstat().st_size
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning(
                "cache: cannot remove %s, left by a build that was stopped (%s); remove it by"
                " hand, as its owner if another user's build made it",
                path,
                error.strerror or error,
            )
    return held


def _tree_size(root: Path) -> int:
    size = 0
    for top, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(top, name)).st_size
    return size


def _make_writable(root: Path) -> None:
    """Give every directory of the tree its owner's full rights, so `rmtree` can empty it:
    a build may install read-only package directories, as TemporaryDirectory allows for."""
    pending = [str(root)]
    while pending:
        directory = pending.pop()
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            pending.extend(item.path for item in entries if item.is_dir(follow_symlinks=False))


def _remove_old_files(directory: Path, *, cutoff: float, by_use: bool = False) -> None:
    """Remove files written before `cutoff`, or with `by_use` last read or written before it
    (a record read on every build is in use however long ago it was written), then the
    directories that left empty."""
    if not directory.is_dir():
        return
    for path in directory.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            info = path.lstat()
            last = max(info.st_mtime, info.st_atime) if by_use else info.st_mtime
            if stat.S_ISREG(info.st_mode) and last < cutoff:
                path.unlink()
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty


_FIELD_TYPES: dict[str, type] = {"str": str, "int": int, "bool": bool, "None": type(None)}


def record_of(cls: type[_T], record: dict[str, Any]) -> _T:
    """`cls(**record)` for a dataclass whose fields are str, int, bool or None, each value
    checked against its field's type (TypeError if not): a record loaded from the cache
    may be of another version's shape."""
    made = cls(**record)
    for item in dataclasses.fields(made):  # type: ignore[arg-type]
        names = [name.strip() for name in str(item.type).split("|")]
        types = tuple(_FIELD_TYPES[name] for name in names if name in _FIELD_TYPES)
        value = getattr(made, item.name)
        wrong_bool = isinstance(value, bool) and bool not in types
        if len(types) == len(names) and (not isinstance(value, types) or wrong_bool):
            raise TypeError(f"{item.name} is {value!r}, not {item.type}")
    return made


def file_digest(path: Path) -> str:
    """The `sha256:` digest of a file's bytes, read in chunks."""
    with open(path, "rb") as handle:
        return _stream_digest(handle)


def _stream_digest(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# --- content hashes ----------------------------------------------------------------------------

# A file changed less than this long ago may change again within the same mtime tick.
_RACY_SECONDS = 2
# Files up to this size are kept in memory after hashing, up to this much in all, so that
# a tree of many small files is read once; the budget keeps memory flat for any layer.
_KEEP_FILE = 256 * 1024
_KEEP_TOTAL = 32 * 1024 * 1024


class ContentHashes:
    """File sha256s and modes, reused from the last build that hashed the same set of files
    (record `name`) while each file's stat holds.

    The stat key is device, inode, size, mtime and ctime in nanoseconds. Content rewritten
    with its old mtime put back still moves the ctime, which no user call can set, and a
    file younger than `_RACY_SECONDS` is never remembered, as it may change within its tick.
    With `keep`, small files read for hashing are kept until `take` hands them out.
    """

    def __init__(self, store: BlobStore, name: str, *, keep: bool = False) -> None:
        self._store = store
        self._key = name
        known = store.read_record("content-hashes", name)
        # A record of another shape (a damaged cache) is as good as none.
        self._known: dict[str, list[Any]] = known if isinstance(known, dict) else {}
        self._seen: dict[str, list[Any]] = {}
        self._states: dict[str, tuple[int, str]] = {}
        self._kept: dict[str, bytes] = {}
        self._kept_size = 0
        self._keep_total = _KEEP_TOTAL if keep else -1
        # Files changed since then may change again within their mtime tick.
        self._racy_since = time.time_ns() - _RACY_SECONDS * 1_000_000_000

    def sha256(self, path: Path | str) -> str:
        """The hex sha256 of the file's bytes."""
        return self.state(path)[1]

    def state(self, path: Path | str) -> tuple[int, str]:
        """The file's `st_mode` and the hex sha256 of its bytes."""
        name = str(path)
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = self._stat_or_read(name)
        return state

    def take(self, path: Path | str) -> bytes | None:
        """The bytes hashed for `path` if they were kept; each is handed out once."""
        return self._kept.pop(str(path), None)

    def _stat_or_read(self, name: str) -> tuple[int, str]:
        # A file seen before needs its stat only; a new or changed one is opened once, for
        # its stat and its bytes together.
        known = self._known.get(name)
        if isinstance(known, list) and known and _is_sha256_hex(known[-1]):
            info = os.stat(name)
            if known[:-1] == _stamp(info):
                self._remember(name, info, known[-1])
                return info.st_mode, known[-1]
        budget = min(_KEEP_FILE, self._keep_total - self._kept_size)
        info, content, data = _read_file(name, budget)
        if data is not None and budget >= 0:
            self._kept[name] = data
            self._kept_size += len(data)
        self._remember(name, info, content)
        return info.st_mode, content

    def _remember(self, name: str, info: os.stat_result, content: str) -> None:
        if info.st_mtime_ns < self._racy_since and info.st_ctime_ns < self._racy_since:
            self._seen[name] = [*_stamp(info), content]

    def save(self) -> None:
        """Keep only this build's files, so the record stays the size of one file set."""
        if self._seen != self._known:
            self._store.write_record("content-hashes", self._key, self._seen)


def _is_sha256_hex(value: object) -> bool:
    # A compiled pattern: this runs once per file of every layer on a warm build.
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


_SHA256_HEX = re.compile("[0-9a-f]{64}")


def _stamp(info: os.stat_result) -> list[int]:
    return [
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_mode,
    ]


# Without O_NONBLOCK, opening a FIFO would wait for a writer; it is refused below instead.
_READ_FLAGS = os.O_RDONLY
for _flag in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC", "O_BINARY"):  # as this OS has them
    _READ_FLAGS |= getattr(os, _flag, 0)
_FILE_TYPES = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symlink",
    stat.S_IFREG: "a regular file",
}


def file_type_name(st_mode: int) -> str:
    """What kind of file a stat's mode says, as in "a FIFO"."""
    return _FILE_TYPES.get(stat.S_IFMT(st_mode), "a file of unknown type")


def open_regular_file(path: Path | str) -> tuple[int, os.stat_result]:
    """A read-only descriptor on `path` and its fstat; OSError (EINVAL) unless it is a
    regular file. A device or FIFO has no size to copy, and /dev/zero would never end."""
    fd = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = file_type_name(info.st_mode)
        raise OSError(errno.EINVAL, f"it is {kind}, not a regular file", os.fspath(path))
    return fd, info


def _read_file(path: str, keep_up_to: int) -> tuple[os.stat_result, str, bytes | None]:
    """The file's stat and sha256, and its bytes too when it is no larger than `keep_up_to`."""
    # Plain descriptors: a buffered file object costs more than reading a small file does.
    fd, info = open_regular_file(path)
    try:
        if info.st_size > keep_up_to:
            digest = hashlib.sha256()
            while chunk := os.read(fd, _CHUNK):
                digest.update(chunk)
            return info, digest.hexdigest(), None
        # Read to the end even if the file grew since its stat: the bytes and their hash
        # must agree, and a changed stat makes the next build read the file again. FUSE and
        # a read cut short by a signal may return less than asked before the end, so only
        # the size the stat gave, or an empty read, ends the file: one read for the common
        # file, and a file that grew but whose read stopped at that size is kept as it was.
        data = os.read(fd, info.st_size + 1)
        if len(data) != info.st_size:
            parts = [data]
            while parts[-1]:
                parts.append(os.read(fd, _CHUNK))
            data = b"".join(parts)
    finally:
        os.close(fd)
    return info, hashlib.sha256(data).hexdigest(), data
