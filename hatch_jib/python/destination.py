"""The installer destination behind `install_wheel`: it writes into the staging tree.

A module of its own so that installer is imported only when a wheel is installed.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import zipfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from installer.destinations import SchemeDictionaryDestination
from installer.records import Hash, RecordEntry
from installer.utils import Scheme

from hatch_jib import cancel
from hatch_jib.python.install import record_hash, record_hash_hex, without_file_references

__all__ = ["LazyMember", "RecordedZip", "StagingDestination"]

_KEEP_FILE = 256 * 1024


@dataclass
class StagingDestination(SchemeDictionaryDestination):
    """Remembers every file it writes and writes a sorted RECORD."""

    written: set[str] = field(default_factory=set)
    write: Callable[[str], bool] | None = None
    unwritten: list[tuple[str, str, int, bool]] = field(default_factory=list)
    # Bytes of unwritten files, each up to `_KEEP_FILE`, while `keep_budget` lasts.
    keep_budget: int = 0
    kept: dict[str, bytes] = field(default_factory=dict)
    # Wheel paths (root scheme) kept from installer altogether: their RECORD entries, as the
    # wheel's RECORD gives them, are added when RECORD is written (see `pass_over`).
    passed_over: dict[str, tuple[str, str, int, bool]] = field(default_factory=dict)

    def write_to_fs(
        self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool
    ) -> RecordEntry:
        cancel.checkpoint()
        # As pip does: whatever mode the zip recorded, a script is meant to be run.
        is_executable = is_executable or scheme == "scripts"
        if path.endswith(".dist-info/METADATA"):
            stream = io.BytesIO(without_file_references(stream.read()))
        image_path = posixpath.normpath(posixpath.join(self.scheme_dict[scheme], path)).lstrip("/")
        if self.write is not None and not self.write(image_path):
            if isinstance(stream, LazyMember) and stream.unread and self.keep_budget <= 0:
                return self._as_recorded(image_path, path, stream, is_executable)
            return self._hash_only(image_path, path, stream, is_executable)
        entry = super().write_to_fs(scheme, path, stream, is_executable)
        self.written.add(image_path)
        return entry

    def pass_over(self, recorded: Iterable[tuple[str, str, int, bool]]) -> set[str]:
        """The wheel paths among `recorded` (path, RECORD hash, size, executable) that this
        destination would neither write nor read: installer need not see them at all.

        Only files of the wheel's root, outside `.data` and `.dist-info`, whichever of purelib
        and platlib the root is; a wheel with 10,000 resources then costs installer only its
        code. Each stays in RECORD and in `unwritten`, as if installer had handed it over.
        """
        root = self.scheme_dict["purelib"]
        if self.write is None or self.keep_budget > 0 or self.scheme_dict["platlib"] != root:
            return set()
        for path, encoded, size, executable in recorded:
            # installer skips (with a warning) a file in any `__pycache__`: it must see those.
            parts = path.split("/")
            if parts[0].endswith((".data", ".dist-info")) or "__pycache__" in parts[:-1]:
                continue
            image_path = posixpath.normpath(posixpath.join(root, path)).lstrip("/")
            if not self.write(image_path):
                self.passed_over[path] = (image_path, encoded, size, executable)
        return set(self.passed_over)

    def _hash_only(
        self, image_path: str, path: str, stream: BinaryIO, is_executable: bool
    ) -> RecordEntry:
        """The RECORD entry installer would write for the file, without writing it."""
        digest = hashlib.sha256()
        size = 0
        chunks: list[bytes] | None = [] if self.keep_budget > 0 else None
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            if chunks is not None and size <= min(_KEEP_FILE, self.keep_budget):
                chunks.append(chunk)
            else:
                chunks = None
        if chunks is not None:
            self.kept[image_path] = b"".join(chunks)
            self.keep_budget -= size
        self.unwritten.append((image_path, digest.hexdigest(), size, is_executable))
        encoded = record_hash(digest.digest())
        return RecordEntry(path, Hash(self.hash_algorithm, encoded), size)

    def _as_recorded(
        self, image_path: str, path: str, stream: LazyMember, is_executable: bool
    ) -> RecordEntry:
        """The RECORD entry of a file neither written nor read, as the wheel's RECORD has it."""
        encoded, size = stream.recorded
        self.unwritten.append((image_path, record_hash_hex(encoded), size, is_executable))
        return RecordEntry(path, Hash(self.hash_algorithm, encoded), size)

    def finalize_installation(
        self,
        scheme: Scheme,
        record_file_path: str,
        records: Iterable[tuple[Scheme, RecordEntry]],
    ) -> None:
        # installer sorts RECORD by each path within its own scheme, so scripts and data
        # land out of order; re-base every path on the RECORD's scheme to sort the final text.
        root = self.scheme_dict[scheme]
        rebased = []
        records = list(records)
        handed_over = {entry.path for file_scheme, entry in records if file_scheme == scheme}
        for path, (image_path, encoded, size, executable) in self.passed_over.items():
            if path in handed_over:  # installer saw it after all: it is recorded already
                continue
            self.unwritten.append((image_path, record_hash_hex(encoded), size, executable))
            records.append((scheme, RecordEntry(path, Hash(self.hash_algorithm, encoded), size)))
        for file_scheme, entry in records:
            if self.scheme_dict[file_scheme] == root:  # most files: nothing to re-base
                rebased.append((scheme, entry))
                continue
            path = posixpath.join(self.scheme_dict[file_scheme], entry.path)
            rebased.append(
                (scheme, RecordEntry(posixpath.relpath(path, root), entry.hash_, entry.size))
            )
        super().finalize_installation(scheme, record_file_path, rebased)


class LazyMember:
    """A zip member opened on first use; until then it is only its RECORD hash and size."""

    def __init__(self, opener: Callable[[], IO[bytes]], recorded: tuple[str, int]) -> None:
        self._opener = opener
        self._member: IO[bytes] | None = None
        self.recorded = recorded

    @property
    def unread(self) -> bool:
        return self._member is None

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class lacks: read, seek and the rest of a file's API.
        if self._member is None:
            self._member = self._opener()
        return getattr(self._member, name)

    def close(self) -> None:
        if self._member is not None:
            self._member.close()

    def __enter__(self) -> LazyMember:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RecordedZip(zipfile.ZipFile):
    """A wheel whose members named in `recorded` (path: RECORD hash, size) open lazily.

    installer opens every member as it goes; one that the destination leaves unwritten is
    then never decompressed nor hashed, and its RECORD entry is taken as the wheel lists it.
    Only for a wheel whose RECORD is known to be right: the project's, just built by
    hatchling or checked by its digest in the cache.
    """

    def __init__(
        self,
        file: IO[bytes],
        recorded: Mapping[str, tuple[str, int]],
        hidden: Collection[str] = frozenset(),
    ) -> None:
        super().__init__(file)
        self.recorded = recorded
        self.hidden = hidden

    def infolist(self) -> list[zipfile.ZipInfo]:
        # installer walks the members by this list; `hidden` ones it is never shown.
        members = super().infolist()
        return (
            [info for info in members if info.filename not in self.hidden]
            if self.hidden
            else members
        )

    def open(self, name: Any, mode: Any = "r", pwd: Any = None, **kwargs: Any) -> Any:
        filename = name.filename if isinstance(name, zipfile.ZipInfo) else name
        recorded = self.recorded.get(filename)
        if mode != "r" or recorded is None:
            return super().open(name, mode, pwd, **kwargs)
        return LazyMember(lambda: super(RecordedZip, self).open(name, mode, pwd), recorded)
