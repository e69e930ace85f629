"""A zip archive written again with new bytes for some members and every other byte copied.

This is how a code change gets the project's new wheel without a hatchling build. A member
that did not change keeps its local header and compressed bytes. A replaced member is
deflated as zipfile deflates it, in writes of the size it was given them in, so the archive is
the one zipfile would have written. Only archives laid out the way zipfile writes them are
read; anything else is `UnsupportedZip`.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "Replacement",
    "UnsupportedZip",
    "ZipMember",
    "read_member",
    "read_members",
    "replace_members",
]

_LOCAL = struct.Struct("<4s5H3I2H")
_CENTRAL = struct.Struct("<4s6H3I5HII")
_END = struct.Struct("<4s4H2IH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_END_SIGNATURE = b"PK\x05\x06"
_DEFLATED = 8
_DATA_DESCRIPTOR = 0x08
_UTF8_NAME = 0x800
_NO_VALUE = 0xFFFFFFFF  # a ZIP64 field stands in
# zipfile switches a member to ZIP64 once its size may pass 2 GiB; such members are not ours.
_ZIP64_LIMIT = (1 << 31) - 1
_CHUNK = 1 << 20


class UnsupportedZip(ValueError):
    """An archive this module does not rewrite: ZIP64, a comment, data descriptors, extra
    fields, spanned disks, or members that are not laid out one after another."""


@dataclass(frozen=True)
class ZipMember:
    """One member as the central directory lists it; its bytes are `start` to `end`."""

    name: str
    start: int  # its local header
    end: int  # past its compressed data
    method: int
    external_attr: int
    central: bytes  # its central directory record, name included


@dataclass(frozen=True)
class Replacement:
    """A member's new bytes, and the size of the writes zipfile was handed them in (0: all
    in one). Stock zlib deflates the same whatever the writes; zlib-ng does not."""

    data: bytes = field(repr=False)
    write_size: int = 0


def read_members(path: Path) -> list[ZipMember]:
    """The members of the zip at `path`, in archive order."""
    with open(path, "rb") as handle:
        total = handle.seek(0, 2)
        if total < _END.size:
            raise UnsupportedZip(f"{path} is too short to be a zip archive")
        handle.seek(total - _END.size)
        signature, disk, first_disk, on_disk, count, size, offset, comment = _END.unpack(
            handle.read(_END.size)
        )
        if signature != _END_SIGNATURE or comment or disk or first_disk or on_disk != count:
            raise UnsupportedZip(f"{path} does not end in a plain zip end record")
        if count == 0xFFFF or offset + size != total - _END.size:
            raise UnsupportedZip(f"{path} has a ZIP64 or misplaced central directory")
        handle.seek(offset)
        directory = handle.read(size)
    try:
        return _parse_directory(directory, count, offset, path)
    except struct.error as error:  # a record cut short
        raise UnsupportedZip(f"{path} has a central directory shorter than it says") from error


def _parse_directory(directory: bytes, count: int, end: int, path: Path) -> list[ZipMember]:
    members: list[ZipMember] = []
    position = 0
    for _ in range(count):
        fields = _CENTRAL.unpack_from(directory, position)
        signature, flags, method = fields[0], fields[3], fields[4]
        compressed, size, name_length, extra, comment = fields[8:13]
        start = fields[16]
        if signature != _CENTRAL_SIGNATURE or flags & _DATA_DESCRIPTOR or extra or comment:
            raise UnsupportedZip(f"{path} has a central record zipfile would not write")
        if _NO_VALUE in (compressed, size, start):
            raise UnsupportedZip(f"{path} has ZIP64 members")
        record_end = position + _CENTRAL.size + name_length
        raw_name = directory[position + _CENTRAL.size : record_end]
        name = raw_name.decode("utf-8" if flags & _UTF8_NAME else "cp437")
        stop = start + _LOCAL.size + name_length + compressed
        members.append(
            ZipMember(name, start, stop, method, fields[15], directory[position:record_end])
        )
        position = record_end

    # zipfile writes members back to back from the start, then the directory: any gap or
    # overlap means a layout whose bytes this module cannot account for.
    bounds = [0] + [b for member in members for b in (member.start, member.end)] + [end]
    if position != len(directory) or bounds[::2] != bounds[1::2]:
        raise UnsupportedZip(f"{path} has members that are not laid out one after another")
    return members


def read_member(path: Path, member: ZipMember) -> bytes:
    """The uncompressed bytes of a stored or deflated `member`."""
    with open(path, "rb") as handle:
        handle.seek(member.start)
        raw = handle.read(member.end - member.start)
    if len(raw) != member.end - member.start:
        raise UnsupportedZip(f"{path} ends inside member {member.name}")
    name_length = _LOCAL.unpack_from(raw)[9]
    data = raw[_LOCAL.size + name_length :]
    if member.method == _DEFLATED:
        return zlib.decompress(data, -zlib.MAX_WBITS)
    if member.method == 0:
        return data
    raise UnsupportedZip(f"{path}: member {member.name} uses compression method {member.method}")


def replace_members(
    source: Path,
    members: list[ZipMember],
    target: Path,
    replacements: Mapping[str, Replacement],
) -> str:
    """Write the zip at `source`, whose `members` were read with `read_members`, to `target`
    with new bytes for the deflated members named in `replacements`; the sha256 digest of
    what was written."""
    digest = hashlib.sha256()
    central: list[bytes] = []
    shift = 0  # how far a member has moved: what the replaced ones before it grew by
    copied_to = 0
    with open(source, "rb") as original, open(target, "wb") as out:

        def emit(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        for member in members:
            replacement = replacements.get(member.name)
            if replacement is None:
                # A member that has not moved keeps its record as it is.
                offset = member.start + shift
                central.append(
                    _moved(member.central, offset=_below_zip64(offset)) if shift else member.central
                )
                continue

            # The members since the last replaced one are copied in one run.
            _copy(original, copied_to, member.start, emit)
            copied_to = member.end
            offset = _below_zip64(member.start + shift)
            entry, record = _replaced(original, member, replacement, offset=offset)
            emit(entry)
            central.append(record)
            shift += len(entry) - (member.end - member.start)
        members_end = members[-1].end if members else 0
        _copy(original, copied_to, members_end, emit)

        # The directory follows, its records as they were but for moved offsets and sizes.
        directory = b"".join(central)
        emit(directory)
        count = len(central)
        offset = _below_zip64(members_end + shift)
        size = _below_zip64(len(directory))
        emit(_END.pack(_END_SIGNATURE, 0, 0, count, count, size, offset, 0))
    return "sha256:" + digest.hexdigest()


def _replaced(
    handle: BinaryIO, member: ZipMember, replacement: Replacement, *, offset: int
) -> tuple[bytes, bytes]:
    """A member's new local entry (header and deflated bytes) and central record."""
    data = replacement.data
    # zipfile would give a member this large ZIP64 fields, which these records do not have.
    if member.method != _DEFLATED or len(data) * 1.05 > _ZIP64_LIMIT:
        raise UnsupportedZip(f"{member.name} is not a deflated member below 2 GiB")
    name_length = _CENTRAL.unpack_from(member.central)[10]
    handle.seek(member.start)
    header = handle.read(_LOCAL.size + name_length)
    fields = list(_LOCAL.unpack_from(header))
    if fields[0] != _LOCAL_SIGNATURE or fields[10]:
        raise UnsupportedZip(f"{member.name} has a local header zipfile would not write")

    # As zipfile deflates: the default level, a raw stream, one call per write it was given.
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    step = replacement.write_size or len(data) or 1
    parts = [compressor.compress(data[at : at + step]) for at in range(0, len(data), step)]
    packed = b"".join(parts) + compressor.flush()
    crc = zlib.crc32(data)
    fields[6:9] = crc, len(packed), len(data)
    entry = _LOCAL.pack(*fields) + header[_LOCAL.size :] + packed
    return entry, _moved(member.central, offset=offset, sizes=(crc, len(packed), len(data)))


def _below_zip64(value: int) -> int:
    """`value`, an offset or size, if zipfile would write it without ZIP64 fields."""
    if value > _ZIP64_LIMIT:
        raise UnsupportedZip(f"the archive would pass {_ZIP64_LIMIT} bytes and need ZIP64")
    return value


def _moved(record: bytes, *, offset: int, sizes: tuple[int, int, int] | None = None) -> bytes:
    """A central record with a new local header offset and, if given, CRC and sizes."""
    fields = list(_CENTRAL.unpack_from(record))
    if sizes is not None:
        fields[7:10] = sizes
    fields[16] = offset
    return _CENTRAL.pack(*fields) + record[_CENTRAL.size :]


def _copy(handle: BinaryIO, start: int, end: int, emit: Callable[[bytes], None]) -> None:
    handle.seek(start)
    left = end - start
    while left:
        chunk = handle.read(min(left, _CHUNK))
        if not chunk:
            raise UnsupportedZip(f"{handle.name} ended before its members did")
        emit(chunk)
        left -= len(chunk)
