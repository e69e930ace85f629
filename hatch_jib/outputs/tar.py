"""A `docker load`-able archive that also carries an OCI image layout, as Docker 25+ writes."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hatch_jib.image.descriptor import Descriptor, MediaType, digest_hex
from hatch_jib.image.image import Image
from hatch_jib.image.manifest import serialize

__all__ = ["write_image_tar"]


def write_image_tar(
    image: Image,
    destination: Path,
    *,
    repo_tags: Sequence[str],
    blob_path: Callable[[str], Path],
    mtime: int = 1,
) -> Path:
    """Write `image` to `destination` atomically; `repo_tags` are `name:tag` strings."""
    # Docker's manifest.json points at blobs by path; the OCI index points at the manifest.
    docker_manifest = [
        {
            "Config": _blob_name(image.config.digest),
            "RepoTags": list(repo_tags),
            "Layers": [_blob_name(layer.descriptor.digest) for layer in image.layers],
        }
    ]
    manifest_desc = Descriptor(
        image.manifest_media_type,
        image.digest,
        len(image.manifest_bytes),
        annotations={
            "io.containerd.image.name": repo_tags[0],
            "org.opencontainers.image.ref.name": repo_tags[0].rpartition(":")[2],
        }
        if repo_tags
        else None,
    )
    index = {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_INDEX,
        "manifests": [manifest_desc.to_json()],
    }

    # Write to a temp file beside the destination and rename, so no half tar is left behind.
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(handle)
    try:
        with tarfile.open(temp_name, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_dir(tar, "blobs", mtime)
            _add_dir(tar, "blobs/sha256", mtime)
            written: set[str] = set()
            for layer in image.layers:
                digest = layer.descriptor.digest
                if digest not in written:
                    written.add(digest)
                    _add_file(tar, _blob_name(digest), blob_path(digest), mtime)
            _add_bytes(tar, _blob_name(image.config.digest), image.config_bytes, mtime)
            _add_bytes(tar, _blob_name(image.digest), image.manifest_bytes, mtime)
            _add_bytes(tar, "index.json", serialize(index), mtime)
            _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode(), mtime)
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', mtime)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return destination


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


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
