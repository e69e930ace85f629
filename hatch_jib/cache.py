"""The content-addressed blob store and the selectors that map layer inputs to blobs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hatch_jib.image.descriptor import DigestMismatch, check_digest, digest_hex

__all__ = ["BlobStore", "BlobWriter", "default_cache_dir"]

log = logging.getLogger(__name__)

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
            dir=store.tmp_dir, prefix="blob-", delete=False
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

    def verified_path(self, digest: str) -> Path | None:
        """The blob's path once its bytes are checked; a corrupt blob is evicted."""
        path = self.path(digest)
        if not path.is_file():
            return None
        if digest in self._verified:
            return path
        actual = _hash_file(path)
        if actual != digest:
            log.warning(
                "cache: evicting corrupt blob %s (its content hashes to %s)", digest, actual
            )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        self._verified.add(digest)
        return path

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

    # Small JSON records (selectors, resolved dependency sets) keyed by a string.
    def read_record(self, kind: str, key: str) -> Any | None:
        path = self._record_path(kind, key)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_record(self, kind: str, key: str, value: Any) -> None:
        path = self._record_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.tmp_dir, delete=False) as handle:
            json.dump(value, handle, sort_keys=True)
        os.replace(handle.name, path)

    def _record_path(self, kind: str, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()
        return self.root / kind / name[:2] / f"{name}.json"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
