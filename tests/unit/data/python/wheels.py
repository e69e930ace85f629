"""A builder for small, valid wheels that the python/ tests install and resolve."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["build_wheel"]

# A fixed zip timestamp keeps the bytes, and so the sha256, the same on every run.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def build_wheel(
    directory: Path,
    name: str,
    version: str,
    files: Mapping[str, str],
    *,
    console_scripts: Mapping[str, str] | None = None,
    gui_scripts: Mapping[str, str] | None = None,
    tag: str = "py3-none-any",
    requires: tuple[str, ...] = (),
) -> Path:
    """Write `{name}-{version}-{tag}.whl` holding `files` and return its path."""
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{dist_info}/METADATA"] = metadata + "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires
    )
    purelib = "true" if tag.endswith("-any") else "false"
    contents[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: hatch-jib-tests\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n"
    )
    sections = {"console_scripts": console_scripts, "gui_scripts": gui_scripts}
    entry_points = "".join(
        f"[{section}]\n" + "".join(f"{script} = {target}\n" for script, target in scripts.items())
        for section, scripts in sections.items()
        if scripts
    )
    if entry_points:
        contents[f"{dist_info}/entry_points.txt"] = entry_points

    # RECORD lists every file with its urlsafe-base64 sha256, then itself without one.
    record = [
        f"{path},{_record_hash(data)},{len(data.encode())}" for path, data in contents.items()
    ]
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"

    wheel = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in contents.items():
            info = zipfile.ZipInfo(path, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return wheel


def _record_hash(data: str) -> str:
    digest = hashlib.sha256(data.encode()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
