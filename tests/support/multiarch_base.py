"""A two-platform base for tests: the real amd64 base plus a synthetic arm64 image, indexed.

Nothing here runs arm64 code. The arm64 image is a config and one layer holding what
target detection reads (``usr/bin/python3.11`` and a dpkg status listing libc6 2.36), so a
build resolves aarch64 wheels for it; its layer is never executed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hatch_jib.cache import BlobStore
from hatch_jib.image.descriptor import Descriptor, MediaType, sha256_digest
from hatch_jib.image.layer import LayerEntry, LayerSpec, build_layer
from hatch_jib.image.manifest import Manifest, parse_manifest, serialize
from hatch_jib.registry.client import RegistryClient
from hatch_jib.registry.transport import TransportOptions

__all__ = ["push_multiarch_base"]

_DPKG_STATUS = """\
Package: libc6
Status: install ok installed
Architecture: arm64
Version: 2.36-9+deb12u4

Package: python3.11-minimal
Status: install ok installed
Architecture: arm64
Version: 3.11.2-6

"""
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def push_multiarch_base(amd64_reference: str, tag: str = "multiarch") -> str:
    """Push an OCI index over `amd64_reference` and a synthetic arm64 image into the same
    repository under `tag`; return ``HOST/REPOSITORY:TAG``."""
    host, _, rest = amd64_reference.partition("/")
    repository, _, amd64_tag = rest.rpartition(":")
    with (
        RegistryClient(
            host, repository, credential=None, options=TransportOptions(), push=True
        ) as client,
        tempfile.TemporaryDirectory(prefix="multiarch-base-") as scratch,
    ):
        amd64 = client.get_manifest(amd64_tag)
        amd64_config = json.loads(_fetch(client, parse_manifest(amd64.data).config.digest))
        arm64_manifest = _push_arm64_image(client, Path(scratch))
        index = {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_INDEX,
            "manifests": [
                _entry(amd64.media_type, amd64.data, amd64_config["architecture"], None),
                _entry(MediaType.OCI_MANIFEST, arm64_manifest, "arm64", "v8"),
            ],
        }
        client.put_manifest(tag, serialize(index), MediaType.OCI_INDEX)
    return f"{host}/{repository}:{tag}"


def _push_arm64_image(client: RegistryClient, scratch: Path) -> bytes:
    store = BlobStore(scratch / "store")
    files = scratch / "files"
    files.mkdir()
    (files / "python3.11").write_bytes(b"\x7fELF synthetic arm64 python, never run\n")
    (files / "status").write_text(_DPKG_STATUS)
    layer = build_layer(
        LayerSpec(
            "base-arm64",
            (
                LayerEntry.file("usr/bin/python3.11", files / "python3.11", mode=0o755),
                LayerEntry.symlink("usr/bin/python3", "python3.11"),
                LayerEntry.file("var/lib/dpkg/status", files / "status"),
            ),
        ),
        store,
    )
    config = serialize(
        {
            "architecture": "arm64",
            "variant": "v8",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Env": [f"PATH={_PATH}"], "Cmd": ["/usr/bin/python3"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "synthetic arm64"}],
        }
    )
    config_desc = Descriptor(MediaType.OCI_CONFIG, sha256_digest(config), len(config))
    store.put_bytes(config)
    client.upload_blob(layer.digest, layer.size, store.path(layer.digest))
    client.upload_blob(config_desc.digest, config_desc.size, store.path(config_desc.digest))
    layer_desc = Descriptor(MediaType.OCI_LAYER_GZIP, layer.digest, layer.size)
    manifest = Manifest(MediaType.OCI_MANIFEST, config_desc, (layer_desc,)).to_bytes()
    client.put_manifest(sha256_digest(manifest), manifest, MediaType.OCI_MANIFEST)
    return manifest


def _fetch(client: RegistryClient, digest: str) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        return client.fetch_blob(digest, BlobStore(Path(scratch))).read_bytes()


def _entry(media_type: str, manifest: bytes, architecture: str, variant: str | None) -> dict:
    platform = {"architecture": architecture, "os": "linux"}
    if variant:
        platform["variant"] = variant
    return Descriptor(
        media_type, sha256_digest(manifest), len(manifest), platform=platform
    ).to_json()
