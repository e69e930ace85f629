"""The result files beside the artifacts: jib-image.digest, jib-image.id and jib-image.json."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["remove_result_files", "write_atomically", "write_result_files"]

_RESULT_FILES = ("jib-image.digest", "jib-image.id", "jib-image.json")


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def remove_result_files(directory: Path) -> None:
    """Remove the result files an earlier build left, so they never pass for a failed one's."""
    for name in _RESULT_FILES:
        (directory / name).unlink(missing_ok=True)


def write_result_files(directory: Path, summary: Mapping[str, Any]) -> Path:
    """Write the three result files; return the path of jib-image.json."""
    write_atomically(directory / "jib-image.digest", str(summary["imageDigest"]).encode())
    write_atomically(directory / "jib-image.id", str(summary["imageId"]).encode())
    result = directory / "jib-image.json"
    write_atomically(result, (json.dumps(summary, indent=2) + "\n").encode())
    return result
