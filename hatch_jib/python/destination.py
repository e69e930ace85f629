"""The installer destination behind `install_wheel`: it writes into the staging tree.

A module of its own so that installer is imported only when a wheel is installed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from installer.destinations import SchemeDictionaryDestination
from installer.records import Hash, RecordEntry
from installer.utils import Scheme

from hatch_jib import cancel
from hatch_jib.python.install import without_file_references

__all__ = ["StagingDestination"]

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
            return self._hash_only(image_path, path, stream, is_executable)
        entry = super().write_to_fs(scheme, path, stream, is_executable)
        self.written.add(image_path)
        return entry

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
        encoded = base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")
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
        for file_scheme, entry in records:
            path = posixpath.join(self.scheme_dict[file_scheme], entry.path)
            rebased.append(
                (scheme, RecordEntry(posixpath.relpath(path, root), entry.hash_, entry.size))
            )
        super().finalize_installation(scheme, record_file_path, rebased)
