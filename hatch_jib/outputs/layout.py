"""The OCI image layout's content, shared by the layout directory and the image tar."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hatch_jib.image.descriptor import Descriptor, MediaType, digest_hex
from hatch_jib.image.image import BuiltImage, ImageIndex
from hatch_jib.image.manifest import serialize

__all__ = ["LAYOUT_VERSION", "LayoutBlob", "blob_name", "layout_blobs", "layout_index"]

LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass(frozen=True)
class LayoutBlob:
    """One blob of the layout: its bytes in memory (manifests, configs) or a file (layers)."""

    digest: str
    data: bytes | None = None
    source: Path | None = None


def blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


def layout_blobs(built: BuiltImage, blob_path: Callable[[str], Path]) -> Iterator[LayoutBlob]:
    """Every blob of `built` once: layers shared by several platforms are written once."""
    seen: set[str] = set()
    for image in built.images:
        for layer in image.layers:
            digest = layer.descriptor.digest
            if digest not in seen:
                seen.add(digest)
                yield LayoutBlob(digest, source=blob_path(digest))
        for digest, data in (
            (image.config.digest, image.config_bytes),
            (image.digest, image.manifest_bytes),
        ):
            if digest not in seen:
                seen.add(digest)
                yield LayoutBlob(digest, data=data)
    if isinstance(built, ImageIndex):
        yield LayoutBlob(built.digest, data=built.manifest_bytes)


def layout_index(built: BuiltImage, repo_tags: Sequence[str]) -> bytes:
    """`index.json`: one entry per `name:tag`, each pointing at the image or its index.

    `org.opencontainers.image.ref.name` holds the tag, so `skopeo ... oci:DIR:TAG` and
    `umoci --image DIR:TAG` find it; `io.containerd.image.name` holds the full name, as
    Docker and containerd write it.
    """

    def entry(repo_tag: str | None) -> dict[str, object]:
        annotations = None
        if repo_tag:
            annotations = {
                "io.containerd.image.name": repo_tag,
                "org.opencontainers.image.ref.name": repo_tag.rpartition(":")[2],
            }
        size = len(built.manifest_bytes)
        return Descriptor(
            built.manifest_media_type, built.digest, size, None, annotations
        ).to_json()

    entries = [entry(repo_tag) for repo_tag in repo_tags] or [entry(None)]
    return serialize({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": entries})
