"""Wheel installation into a staging tree that mirrors the image, and the venv skeleton."""

from __future__ import annotations

import base64
import csv
import io
import logging
import os
import posixpath
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from hatch_jib.errors import BuildError
from hatch_jib.image.layer import LayerEntry
from hatch_jib.python.target import TargetProfile

__all__ = [
    "INSTALLER",
    "VENV",
    "InstalledDist",
    "RecordedFile",
    "create_venv",
    "install_wheel",
    "record_hash_hex",
    "venv_scheme",
    "wheel_record",
    "without_file_references",
]

log = logging.getLogger(__name__)

VENV = "/app/.venv"
INSTALLER = "hatch-jib"


@dataclass(frozen=True)
class InstalledDist:
    """A distribution installed into the staging tree; `files` are image paths, no leading `/`."""

    name: str
    version: str
    files: tuple[str, ...]
    # Files left out by `install_wheel(write=...)`: (path, sha256 hex, size, executable).
    unwritten: tuple[tuple[str, str, int, bool], ...] = ()
    # The bytes of those of them `install_wheel(keep=...)` held in memory: (path, bytes).
    kept: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)


def venv_scheme(target: TargetProfile, venv: str = VENV) -> dict[str, str]:
    """The install scheme of the image's venv: absolute paths inside the image."""
    site_packages = f"{venv}/lib/python{target.python_version}/site-packages"
    return {
        "purelib": site_packages,
        "platlib": site_packages,
        "scripts": f"{venv}/bin",
        "data": venv,
        "headers": f"{venv}/include/site/python{target.python_version}",
    }


def install_wheel(
    wheel: Path,
    *,
    filename: str,
    target: TargetProfile,
    root: Path,
    venv: str = VENV,
    write: Callable[[str], bool] | None = None,
    keep: int = 0,
    recorded: Sequence[RecordedFile] | None = None,
) -> InstalledDist:
    """Install `wheel` (named `filename` on its index) into `root` + `venv` for `target`.

    The wheel may sit under any name, such as its digest in the blob store: installer reads
    the distribution name, version and tags from `filename` instead of the path. With `write`,
    only the image paths it accepts are written; the others are hashed into `unwritten`, and
    RECORD still lists every file, as a full install would; up to `keep` bytes of the
    small ones among them are kept in memory, in `kept`. Given `recorded`, the wheel's own
    RECORD (see `wheel_record`; only for a wheel whose RECORD is known to be right), files
    left out are not even read: their hashes and sizes are taken from it.
    """
    # installer is imported only here: a build whose layers are all cached installs nothing.
    from installer import install
    from installer.exceptions import InstallerError
    from installer.sources import WheelFile

    from hatch_jib.python.destination import RecordedZip, StagingDestination

    destination = StagingDestination(
        write=write,
        keep_budget=keep,
        scheme_dict=venv_scheme(target, venv),
        # The venv's own python: absolute, since distroless images have no /usr/bin/env.
        interpreter=f"{venv}/bin/python",
        script_kind="posix",
        destdir=os.fspath(root),
    )
    try:
        with open(wheel, "rb") as handle:
            # One of the two, not both: reading the central directory of a wheel of 10,000
            # files costs about 0.06 s.
            if recorded is None:
                archive = zipfile.ZipFile(handle)
            else:
                hidden = destination.pass_over(recorded)
                archive = RecordedZip(
                    handle, {path: (h, size) for path, h, size, _ in recorded}, hidden
                )
            with archive:
                archive.filename = filename
                source = WheelFile(archive)
                # INSTALLER names us; no direct_url.json, so no host path reaches the image.
                install(source, destination, {"INSTALLER": f"{INSTALLER}\n".encode()})
                name, version = source.distribution, source.version
    except (InstallerError, zipfile.BadZipFile, ValueError, KeyError) as error:
        raise BuildError(
            f"cannot install wheel {filename}: {error}",
            hint="the wheel is damaged or not a valid wheel; rebuild it or pin another version",
        ) from error
    except FileExistsError as error:
        raise BuildError(
            f"cannot install wheel {filename}: {error.args[0]}",
            hint="two distributions ship the same file; remove one of them from the dependencies",
        ) from error

    files = tuple(sorted(destination.written))
    log.debug("installed %s %s (%d files)", name, version, len(files))
    unwritten = tuple(sorted(destination.unwritten))
    kept = tuple(sorted(destination.kept.items()))
    return InstalledDist(name, version, files, unwritten=unwritten, kept=kept)


# A file as a wheel's RECORD lists it: path, urlsafe-base64 sha256, size, executable.
RecordedFile = tuple[str, str, int, bool]


def record_hash(digest: bytes) -> str:
    """A sha256 `digest` as RECORD writes it: urlsafe base64, unpadded."""
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def record_hash_hex(encoded: str) -> str:
    """A RECORD hash (urlsafe base64, unpadded) as hex."""
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


def wheel_record(wheel: Path) -> tuple[RecordedFile, ...] | None:
    """Every file of `wheel` as its RECORD lists it, with the zip's executable bit; None when
    RECORD is not CSV in UTF-8, gives a file no sha256 or size, or lists files the wheel lacks
    or the reverse, or when the wheel holds a name twice or one that reaches outside its
    tree."""
    with zipfile.ZipFile(wheel) as archive:
        members = [info for info in archive.infolist() if info.filename[-1:] != "/"]
        infos = {info.filename: info for info in members}
        names = [n for n in infos if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
        # installer refuses a member twice over or outside the tree; only it may say so.
        if len(names) != 1 or len(infos) != len(members) or any(map(_escapes, infos)):
            return None
        try:
            rows = list(csv.reader(io.StringIO(archive.read(names[0]).decode("utf-8"))))
        except (csv.Error, UnicodeDecodeError):
            return None
    files = []
    for row in rows:
        if not row or row[0] == names[0]:
            continue
        if len(row) != 3 or not row[1].startswith("sha256=") or not row[2].isdigit():
            return None
        info = infos.get(row[0])
        if info is None:
            return None
        # As installer reads it: an x bit of a regular file's mode.
        mode = info.external_attr >> 16
        executable = bool(stat.S_ISREG(mode) and mode & 0o111)
        files.append((row[0], row[1].removeprefix("sha256="), int(row[2]), executable))
    if len(files) != len(infos) - 1:
        return None
    return tuple(sorted(files))


def _escapes(name: str) -> bool:
    return name.startswith("/") or ".." in name.split("/")


def without_file_references(metadata: bytes) -> bytes:
    """METADATA with `Requires-Dist: name @ file:///host/path` reduced to `name`.

    A path dependency (`{root:uri}/libs/x`) names the build machine's checkout; the image must
    not, and the dependency is installed next to it anyway.
    """
    lines = metadata.split(b"\n")
    for index, line in enumerate(lines):
        if not line.startswith(b"Requires-Dist:") or b"file:" not in line:
            continue
        try:
            requirement = Requirement(line.partition(b":")[2].decode("utf-8").strip())
        except (InvalidRequirement, UnicodeDecodeError):
            continue
        if (requirement.url or "").startswith("file:"):
            requirement.url = None
            lines[index] = f"Requires-Dist: {requirement}".encode()
    return b"\n".join(lines)


def create_venv(root: Path, target: TargetProfile, venv: str = VENV) -> list[LayerEntry]:
    """The venv skeleton as layer entries; `pyvenv.cfg` is written under `root`."""
    venv_dir = venv.strip("/")
    version = target.python_version
    site_packages = f"{venv_dir}/lib/python{version}/site-packages"

    # pyvenv.cfg tells the interpreter where its home is and that this is a venv.
    config = root / venv_dir / "pyvenv.cfg"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(_pyvenv_cfg(target, venv), encoding="utf-8")
    (root / site_packages).mkdir(parents=True, exist_ok=True)

    return [
        LayerEntry.directory(venv_dir),
        LayerEntry.directory(f"{venv_dir}/bin"),
        LayerEntry.symlink(f"{venv_dir}/bin/python", target.interpreter),
        LayerEntry.symlink(f"{venv_dir}/bin/python3", "python"),
        LayerEntry.symlink(f"{venv_dir}/bin/python{version}", "python"),
        LayerEntry.file(f"{venv_dir}/pyvenv.cfg", config, mode=0o644),
        LayerEntry.directory(site_packages),
        # venv makes lib64 point at lib on 64-bit POSIX systems; so do we, for any tool that looks.
        LayerEntry.symlink(f"{venv_dir}/lib64", "lib"),
    ]


def _pyvenv_cfg(target: TargetProfile, venv: str) -> str:
    home = posixpath.dirname(target.interpreter)
    lines = [
        f"home = {home}",
        "include-system-site-packages = false",
        f"version = {target.python_version}",
        f"executable = {target.interpreter}",
        f"command = {target.interpreter} -m venv {venv}",
    ]
    return "\n".join(lines) + "\n"
