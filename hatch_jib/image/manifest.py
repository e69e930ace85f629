"""Image manifests and indexes (OCI and Docker v2.2): parsing, building, serializing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hatch_jib.image.descriptor import Descriptor, MediaType, sha256_digest
from hatch_jib.image.platform import Platform

__all__ = ["ImageFormat", "Index", "Manifest", "parse_index", "parse_manifest", "serialize"]

ImageFormat = str  # "oci" | "docker"


def serialize(document: dict[str, Any]) -> bytes:
    """The one canonical JSON encoding: these exact bytes are hashed and pushed."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Manifest:
    """A single-platform image manifest."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] | None = None

    @property
    def format(self) -> ImageFormat:
        return "docker" if self.media_type == MediaType.DOCKER_MANIFEST else "oci"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            data["annotations"] = self.annotations
        return data

    def to_bytes(self) -> bytes:
        return serialize(self.to_json())

    @property
    def digest(self) -> str:
        return sha256_digest(self.to_bytes())


@dataclass(frozen=True)
class Index:
    """A multi-platform index (OCI) or manifest list (Docker)."""

    media_type: str
    manifests: tuple[Descriptor, ...]

    def platforms(self) -> list[Platform]:
        """The runnable platforms listed, without attestation entries (`unknown/unknown`)."""
        found = [Platform.from_json(item.platform) for item in self.manifests if item.platform]
        return [platform for platform in found if platform.os != "unknown"]

    def find(self, wanted: Platform) -> Descriptor | None:
        """The manifest for `wanted`, skipping attestations (`unknown/unknown`)."""
        for item in self.manifests:
            if item.media_type in MediaType.INDEXES:
                continue
            if item.platform and Platform.from_json(item.platform).matches(wanted):
                return item
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [item.to_json() for item in self.manifests],
        }


def _media_type(data: dict[str, Any], fallback: str) -> str:
    return str(data.get("mediaType") or fallback)


def parse_manifest(raw: bytes, media_type: str = "") -> Manifest:
    data = json.loads(raw)
    kind = _media_type(data, media_type or MediaType.OCI_MANIFEST)
    return Manifest(
        media_type=kind,
        config=Descriptor.from_json(data["config"]),
        layers=tuple(Descriptor.from_json(item) for item in data.get("layers", [])),
        annotations=data.get("annotations"),
    )


def parse_index(raw: bytes, media_type: str = "") -> Index:
    data = json.loads(raw)
    kind = _media_type(data, media_type or MediaType.OCI_INDEX)
    return Index(kind, tuple(Descriptor.from_json(item) for item in data.get("manifests", [])))
