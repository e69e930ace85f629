"""An OCI image-layout directory, written beside the result files and swapped in atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hatch_jib.image.image import BuiltImage
from hatch_jib.outputs.layout import LAYOUT_VERSION, blob_name, layout_blobs, layout_index

__all__ = ["write_oci_layout"]


def write_oci_layout(
    built: BuiltImage,
    destination: Path,
    *,
    repo_tags: Sequence[str],
    blob_path: Callable[[str], Path],
) -> Path:
    """Write `built` as an image layout at `destination`, replacing what was there.

    The layout is built in a temp directory beside `destination` and renamed into place, so
    a reader sees the old layout or the new one, never a half-written one.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        _fill(staging, built, repo_tags, blob_path)
        _swap_into_place(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _fill(
    root: Path, built: BuiltImage, repo_tags: Sequence[str], blob_path: Callable[[str], Path]
) -> None:
    os.chmod(root, 0o755)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in layout_blobs(built, blob_path):
        target = root / blob_name(blob.digest)
        if blob.source is not None:
            # A copy, not a link: the layout must outlive a cache clean.
            shutil.copyfile(blob.source, target)
        else:
            target.write_bytes(blob.data or b"")
        os.chmod(target, 0o644)
    (root / "index.json").write_bytes(layout_index(built, repo_tags))
    (root / "oci-layout").write_bytes(LAYOUT_VERSION)


def _swap_into_place(staging: Path, destination: Path) -> None:
    # Directories cannot be replaced by one rename: move the old one aside first.
    if not destination.exists() and not destination.is_symlink():
        os.replace(staging, destination)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old.", dir=destination.parent))
    os.replace(destination, retired / "layout")
    try:
        os.replace(staging, destination)
    except BaseException:
        os.replace(retired / "layout", destination)
        raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(retired)
