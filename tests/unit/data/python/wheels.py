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
) -> Path:
    """Write `{name}-{version}-py3-none-any.whl` holding `files` and return its path."""
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: hatch-jib-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if console_scripts:
        lines = [f"{script} = {target}" for script, target in console_scripts.items()]
        contents[f"{dist_info}/entry_points.txt"] = "[console_scripts]\n" + "\n".join(lines) + "\n"

    # RECORD lists every file with its urlsafe-base64 sha256, then itself without one.
    record = [
        f"{path},{_record_hash(data)},{len(data.encode())}" for path, data in contents.items()
    ]
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"

    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in contents.items():
            info = zipfile.ZipInfo(path, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return wheel


def _record_hash(data: str) -> str:
    digest = hashlib.sha256(data.encode()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
