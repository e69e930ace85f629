"""A `docker load`-able archive that also carries an OCI image layout, as Docker 25+ writes."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hatch_jib.image.image import BuiltImage
from hatch_jib.outputs.layout import LAYOUT_VERSION, blob_name, layout_blobs, layout_index

__all__ = ["write_image_tar"]


def write_image_tar(
    built: BuiltImage,
    destination: Path,
    *,
    repo_tags: Sequence[str],
    blob_path: Callable[[str], Path],
    mtime: int = 1,
) -> Path:
    """Write `built` to `destination` atomically; `repo_tags` are `name:tag` strings.

    For a multi-platform image the OCI `index.json` points at the whole index, while
    Docker's `manifest.json` names only the first platform's image: Docker tags one image
    per name, and readers of docker-archive expect a single entry.
    """
    image = built.images[0]
    docker_manifest = [
        {
            "Config": blob_name(image.config.digest),
            "RepoTags": list(repo_tags),
            "Layers": [blob_name(layer.descriptor.digest) for layer in image.layers],
        }
    ]

    # Write to a temp file beside the destination and rename, so no half tar is left behind.
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(handle)
    try:
        with tarfile.open(temp_name, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_dir(tar, "blobs", mtime)
            _add_dir(tar, "blobs/sha256", mtime)
            for blob in layout_blobs(built, blob_path):
                if blob.source is not None:
                    _add_file(tar, blob_name(blob.digest), blob.source, mtime)
                else:
                    _add_bytes(tar, blob_name(blob.digest), blob.data or b"", mtime)
            _add_bytes(tar, "index.json", layout_index(built, repo_tags), mtime)
            _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode(), mtime)
            _add_bytes(tar, "oci-layout", LAYOUT_VERSION, mtime)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return destination


def _info(name: str, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def _add_dir(tar: tarfile.TarFile, name: str, mtime: int) -> None:
    info = _info(name, mtime)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = _info(name, mtime)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path, mtime: int) -> None:
    info = _info(name, mtime)
    info.size = path.stat().st_size
    with open(path, "rb") as handle:
        tar.addfile(info, handle)
