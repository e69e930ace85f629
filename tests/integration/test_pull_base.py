"""Pulling the base image: indexes, platforms and formats, against a real registry."""

from __future__ import annotations

import json

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.image.descriptor import MediaType
from hatch_jib.image.manifest import serialize
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import parse_reference
from hatch_jib.pipeline.steps import pull_base_image
from hatch_jib.registry import RegistryClient, TransportOptions


def client(reference) -> RegistryClient:
    return RegistryClient(
        reference.registry, reference.repository, credential=None, options=TransportOptions()
    )


@pytest.fixture(scope="module")
def base_index(registry, base_image) -> str:
    """An OCI index over the base: amd64, an arm64 entry and an attestation entry."""
    reference = parse_reference(base_image)
    with client(reference) as base:
        pulled = base.get_manifest(reference.identifier)
        entry = {"mediaType": pulled.media_type, "digest": pulled.digest, "size": len(pulled.data)}
        index = {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_INDEX,
            "manifests": [
                {**entry, "platform": {"os": "unknown", "architecture": "unknown"}},
                {**entry, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {**entry, "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }
        base.put_manifest("multi", serialize(index), MediaType.OCI_INDEX)
    return f"{reference.context}:multi"


def test_index_resolves_to_the_requested_platform(base_index, base_image, tmp_path):
    reference = parse_reference(base_index)

    with client(reference) as base:
        pulled = pull_base_image(reference, base, BlobStore(tmp_path), Platform("linux", "amd64"))

    expected = parse_reference(base_image)
    with client(expected) as direct:
        assert pulled.manifest_digest == direct.get_manifest(expected.identifier).digest
    assert pulled.platform == Platform("linux", "amd64")
    assert pulled.config["architecture"] == "amd64"


def test_platform_missing_from_the_index_lists_the_available_ones(base_index, tmp_path):
    reference = parse_reference(base_index)

    with client(reference) as base, pytest.raises(BuildError) as caught:
        pull_base_image(reference, base, BlobStore(tmp_path), Platform("linux", "s390x"))

    message = str(caught.value)
    assert "linux/s390x" in message and "linux/amd64" in message and "linux/arm64" in message
    assert "tool.jib.from.platforms" in message
    assert "unknown" not in message


def test_index_entry_whose_config_disagrees_with_its_platform_is_rejected(base_index, tmp_path):
    reference = parse_reference(base_index)

    with client(reference) as base, pytest.raises(BuildError, match="is for linux/amd64"):
        pull_base_image(reference, base, BlobStore(tmp_path), Platform("linux", "arm64"))


def test_docker_format_base_is_read_as_docker(base_image_docker, tmp_path):
    reference = parse_reference(base_image_docker)

    with client(reference) as base:
        pulled = pull_base_image(reference, base, BlobStore(tmp_path), Platform())

    assert pulled.manifest.media_type == MediaType.DOCKER_MANIFEST
    assert pulled.manifest.format == "docker"
    assert json.loads(BlobStore(tmp_path).read_bytes(pulled.manifest.config.digest))["os"]
