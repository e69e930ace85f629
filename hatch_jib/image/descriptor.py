"""Digests, media types and content descriptors shared by every image format."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Descriptor",
    "DigestMismatch",
    "MediaType",
    "check_digest",
    "digest_hex",
    "human_size",
    "sha256_digest",
    "short_digest",
]

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


class MediaType:
    """The media types we read and write."""

    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
    DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

    MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
    INDEXES = (OCI_INDEX, DOCKER_LIST)


class DigestMismatch(ValueError):
    """Content did not hash to the digest it was fetched or stored under."""

    def __init__(self, expected: str, actual: str, what: str = "content") -> None:
        super().__init__(f"{what} should have digest {expected} but has {actual}")
        self.expected = expected
        self.actual = actual


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed sha256 digest, else raise ValueError."""
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"unsupported or malformed digest {digest!r} (expected sha256:<64 hex>)")
    return digest


def digest_hex(digest: str) -> str:
    return check_digest(digest).split(":", 1)[1]


def short_digest(digest: str) -> str:
    """The first 12 hex digits, as logs and tables show a digest."""
    return digest.split(":", 1)[-1][:12]


def human_size(size: int) -> str:
    """1536 -> `1.5 KiB`: binary units, named as such, one decimal."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest and size, plus optional platform."""

    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None
    urls: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            data["urls"] = list(self.urls)
        if self.platform:
            data["platform"] = self.platform
        if self.annotations:
            data["annotations"] = self.annotations
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        size = data["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"descriptor size {size!r} is not a byte count")
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=check_digest(str(data["digest"])),
            size=size,
            platform=data.get("platform"),
            annotations=data.get("annotations"),
            urls=tuple(data.get("urls") or ()),
        )
