"""`hatch-jib inspect`: what a registry holds under a reference, read without pulling layers."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hatch_jib.cache import BlobStore
from hatch_jib.errors import RegistryError
from hatch_jib.image.descriptor import MediaType, human_size
from hatch_jib.image.manifest import parse_index, parse_manifest
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import Reference
from hatch_jib.registry.client import RegistryClient
from hatch_jib.registry.credentials import find_credential
from hatch_jib.registry.transport import TransportOptions

__all__ = ["ImageReport", "LayerRow", "PlatformReport", "format_report", "inspect_image"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerRow:
    digest: str
    size: int
    media_type: str
    comment: str  # the config history's comment for it (our layer names), if any


@dataclass(frozen=True)
class PlatformReport:
    platform: str
    digest: str
    media_type: str
    config_digest: str
    created: str
    layers: tuple[LayerRow, ...]


@dataclass(frozen=True)
class ImageReport:
    """A reference, the digest it resolves to, and each platform's manifest."""

    reference: str
    digest: str
    media_type: str
    platforms: tuple[PlatformReport, ...]
    raw: bytes  # the top manifest or index, byte for byte as the registry sent it


def inspect_image(reference: Reference, *, options: TransportOptions) -> ImageReport:
    """Fetch `reference`'s manifest (and each child manifest and config of an index)."""
    credential = find_credential(reference.registry)
    if credential is not None:
        log.info("Using credentials from %s for %s", credential.source, reference.registry)
    with (
        RegistryClient(
            reference.registry, reference.repository, credential=credential, options=options
        ) as client,
        tempfile.TemporaryDirectory(prefix="hatch-jib-inspect-") as scratch,
    ):
        store = BlobStore(Path(scratch))
        top = client.get_manifest(reference.identifier)
        platforms: list[PlatformReport] = []
        if top.media_type in MediaType.INDEXES:
            for child in parse_index(top.data, top.media_type).manifests:
                if child.media_type in MediaType.MANIFESTS:
                    platforms.append(_platform_report(client, store, child.digest))
        elif top.media_type in MediaType.MANIFESTS:
            platforms.append(_platform_report(client, store, top.digest, top.data))
        else:
            raise RegistryError(
                f"{reference} is a {top.media_type}, not an image manifest or index",
                hint="inspect an image reference",
                registry=reference.registry,
            )
    return ImageReport(str(reference), top.digest, top.media_type, tuple(platforms), top.data)


def _platform_report(
    client: RegistryClient, store: BlobStore, digest: str, data: bytes | None = None
) -> PlatformReport:
    # One platform: its manifest, then its config for the platform and layer comments.
    media_type = ""
    if data is None:
        pulled = client.get_manifest(digest)
        data, media_type = pulled.data, pulled.media_type
    manifest = parse_manifest(data, media_type)
    config = json.loads(client.fetch_blob(manifest.config.digest, store).read_bytes())
    platform = Platform(
        config.get("os", "linux"), config.get("architecture", "amd64"), config.get("variant")
    )
    comments = [
        str(entry.get("comment") or entry.get("created_by") or "")
        for entry in config.get("history") or []
        if not entry.get("empty_layer")
    ]
    if len(comments) != len(manifest.layers):
        comments = [""] * len(manifest.layers)
    layers = tuple(
        LayerRow(layer.digest, layer.size, layer.media_type, comment)
        for layer, comment in zip(manifest.layers, comments, strict=True)
    )
    return PlatformReport(
        platform=str(platform),
        digest=digest,
        media_type=manifest.media_type,
        config_digest=manifest.config.digest,
        created=str(config.get("created", "")),
        layers=layers,
    )


def format_report(report: ImageReport) -> str:
    """A plain-text summary: the reference and digest, then a layer table per platform."""
    lines = [
        f"Image      {report.reference}",
        f"Digest     {report.digest}",
        f"Type       {report.media_type}",
        f"Platforms  {', '.join(item.platform for item in report.platforms) or 'none'}",
    ]
    for item in report.platforms:
        total = sum(layer.size for layer in item.layers)
        lines += [
            "",
            f"{item.platform}  manifest {item.digest}",
            f"  config   {item.config_digest}  created {item.created}",
            f"  {'#':>3}  {'digest':<19}  {'size':>10}  layer",
        ]
        for number, layer in enumerate(item.layers, start=1):
            short = layer.digest.split(":", 1)[1][:12]
            name = _short_comment(layer.comment)
            lines.append(f"  {number:>3}  sha256:{short}  {human_size(layer.size):>10}  {name}")
        lines.append(f"  total {human_size(total)} in {len(item.layers)} layers")
    return "\n".join(lines) + "\n"


def _short_comment(comment: str) -> str:
    comment = " ".join(comment.split())
    return comment if len(comment) <= 60 else comment[:57] + "..."
