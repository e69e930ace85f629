"""A built image: its manifest, config and layers, as every output consumes it."""

from __future__ import annotations

from dataclasses import dataclass

from hatch_jib.image.descriptor import Descriptor, sha256_digest
from hatch_jib.image.platform import Platform

__all__ = ["BuiltImage", "Image", "ImageIndex", "ImageLayer"]


@dataclass(frozen=True)
class ImageLayer:
    """One layer of an image; `name` is `base` for layers passed through from the base."""

    descriptor: Descriptor
    diff_id: str
    name: str

    @property
    def from_base(self) -> bool:
        return self.name == "base"


@dataclass(frozen=True)
class Image:
    """A single-platform image whose manifest and config bytes are final."""

    platform: Platform
    manifest_media_type: str
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: tuple[ImageLayer, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def image_id(self) -> str:
        return self.config.digest

    @property
    def format(self) -> str:
        return "oci" if ".oci." in self.manifest_media_type else "docker"

    @property
    def images(self) -> tuple[Image, ...]:
        """The single-platform images this stands for: itself."""
        return (self,)


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform image: an OCI index or Docker manifest list over finished images."""

    manifest_media_type: str
    manifest_bytes: bytes
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def image_id(self) -> str:
        # An index has no config; like Jib, report the first platform's.
        return self.images[0].image_id


# What a build produces and every output accepts: one image, or an index over several.
BuiltImage = Image | ImageIndex
