"""`wheelzip`: members replaced in a zip give the archive zipfile would have written."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hatch_jib.wheelzip import (
    Replacement,
    UnsupportedZip,
    read_member,
    read_members,
    replace_members,
)
from tests.support.deflate import deflate_by_write

TIME = (2020, 2, 2, 0, 0, 0)


def _zip(path: Path, members: dict[str, bytes], *, stored: frozenset[str] = frozenset()) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, TIME)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


MEMBERS = {
    "pkg/__init__.py": b"print('one')\n" * 50,
    "pkg/data/ünï.txt": b"data\n",
    "pkg/empty.txt": b"",
    "pkg-1.0.dist-info/RECORD": b"rows\n",
}


@pytest.mark.parametrize(
    "replacements",
    [
        {"pkg/__init__.py": b"print('two, a little longer')\n" * 70},  # the first member
        {"pkg/data/ünï.txt": b"", "pkg/empty.txt": b"now with bytes\n"},  # side by side
        {"pkg-1.0.dist-info/RECORD": b"other rows\n"},  # the last member
        {},
    ],
)
def test_replaced_members_give_the_archive_zipfile_writes(
    tmp_path: Path, replacements: dict[str, bytes]
) -> None:
    source = _zip(tmp_path / "old.zip", MEMBERS)
    new = {name: Replacement(data) for name, data in replacements.items()}

    digest = replace_members(source, read_members(source), tmp_path / "new.zip", new)

    expected = _zip(tmp_path / "expected.zip", {**MEMBERS, **replacements}).read_bytes()
    written = (tmp_path / "new.zip").read_bytes()
    assert written == expected
    assert digest == "sha256:" + hashlib.sha256(written).hexdigest()


def test_member_bytes_are_read_back(tmp_path: Path) -> None:
    source = _zip(tmp_path / "old.zip", MEMBERS, stored=frozenset({"pkg/empty.txt"}))

    members = read_members(source)

    assert [member.name for member in members] == list(MEMBERS)
    assert [read_member(source, member) for member in members] == list(MEMBERS.values())


def _with_comment(path: Path) -> None:
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = b"made elsewhere"


def _streamed(path: Path) -> None:
    # Written to a stream that cannot seek: each member gets a data descriptor.
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, chunk) -> int:  # type: ignore[no-untyped-def]
            self.data += chunk
            return len(chunk)

    stream = Unseekable()
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pkg/__init__.py", b"print('one')\n")
    path.write_bytes(bytes(stream.data))


def _prefixed(path: Path) -> None:
    path.write_bytes(b"#!/bin/sh\n" + path.read_bytes())


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


@pytest.mark.parametrize("spoil", [_with_comment, _streamed, _prefixed, _truncated])
def test_archive_zipfile_would_not_write_is_refused(
    tmp_path: Path, spoil: Callable[[Path], None]
) -> None:
    source = _zip(tmp_path / "old.zip", MEMBERS)
    spoil(source)

    with pytest.raises(UnsupportedZip):
        read_members(source)


def test_stored_member_is_not_replaced(tmp_path: Path) -> None:
    source = _zip(tmp_path / "old.zip", MEMBERS, stored=frozenset({"pkg/empty.txt"}))

    with pytest.raises(UnsupportedZip, match=r"pkg/empty\.txt"):
        replace_members(
            source, read_members(source), tmp_path / "new.zip", {"pkg/empty.txt": Replacement(b"x")}
        )


def test_archive_that_would_pass_the_zip64_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # zipfile gives members past 2 GiB ZIP64 fields, which a copied record does not have;
    # a lower limit stands in for 2 GiB of test data.
    source = _zip(tmp_path / "old.zip", MEMBERS)
    members = read_members(source)
    monkeypatch.setattr("hatch_jib.wheelzip._ZIP64_LIMIT", members[-1].end + 10)
    grown = {"pkg/__init__.py": Replacement(bytes(range(200)))}  # deflates to more than it was

    with pytest.raises(UnsupportedZip, match="ZIP64"):
        replace_members(source, members, tmp_path / "new.zip", grown)


def test_bytes_are_deflated_in_the_writes_zipfile_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stock zlib deflates alike however the bytes come; zlib-ng does not.
    deflate_by_write(monkeypatch)
    data = bytes(range(256)) * 200  # 51,200 bytes: three full writes and a short one
    source = _zip(tmp_path / "old.zip", MEMBERS)

    replace_members(
        source,
        read_members(source),
        tmp_path / "new.zip",
        {"pkg/__init__.py": Replacement(data, write_size=16384)},
    )

    expected = tmp_path / "expected.zip"
    with zipfile.ZipFile(expected, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, old in MEMBERS.items():
            info = zipfile.ZipInfo(name, TIME)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            if name != "pkg/__init__.py":
                archive.writestr(info, old)
                continue
            with archive.open(info, "w") as member:
                for start in range(0, len(data), 16384):
                    member.write(data[start : start + 16384])
    assert (tmp_path / "new.zip").read_bytes() == expected.read_bytes()


def _overcounted(path: Path) -> None:
    # The end record claims one member more than the directory holds.
    raw = bytearray(path.read_bytes())
    for at in (len(raw) - 14, len(raw) - 12):
        raw[at : at + 2] = (int.from_bytes(raw[at : at + 2], "little") + 1).to_bytes(2, "little")
    path.write_bytes(bytes(raw))


def test_end_record_counting_more_members_than_there_are_is_refused(tmp_path: Path) -> None:
    source = _zip(tmp_path / "old.zip", MEMBERS)
    _overcounted(source)

    with pytest.raises(UnsupportedZip, match="shorter than it says"):
        read_members(source)
