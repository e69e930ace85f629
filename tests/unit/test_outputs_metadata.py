"""Image metadata and formats: OCI labels and annotations, index media types, git revision."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hatch_jib.image.descriptor import Descriptor, MediaType
from hatch_jib.image.image import Image
from hatch_jib.image.platform import Platform
from hatch_jib.pipeline.steps import assemble_index, git_revision, project_metadata
from hatch_jib.project import Project

PREFIX = "org.opencontainers.image"


def project(root: Path, **fields: object) -> Project:
    values: dict = {
        "root": root,
        "name": "app",
        "version": "1.2.0",
        "dependencies": (),
        "optional_dependencies": {},
        "scripts": {},
    }
    values.update(fields)
    return Project(**values)


def image(architecture: str, media_type: str = MediaType.OCI_MANIFEST) -> Image:
    config = Descriptor(MediaType.OCI_CONFIG, "sha256:" + "a" * 64, 2)
    body = json.dumps({"architecture": architecture}).encode()
    return Image(Platform("linux", architecture), media_type, body, config, b"{}", ())


def test_project_metadata_maps_project_fields_to_oci_keys(tmp_path):
    metadata = project_metadata(
        project(
            tmp_path,
            description="An app",
            license="MIT",
            urls={"Homepage": "https://example.org", "Source Code": "https://git.example.org"},
        )
    )

    assert metadata == {
        f"{PREFIX}.title": "app",
        f"{PREFIX}.version": "1.2.0",
        f"{PREFIX}.description": "An app",
        f"{PREFIX}.licenses": "MIT",
        f"{PREFIX}.url": "https://example.org",
        f"{PREFIX}.source": "https://git.example.org",
    }


def test_project_metadata_carries_the_git_revision_of_a_checkout(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()

    metadata = project_metadata(project(tmp_path))

    assert metadata[f"{PREFIX}.revision"] == head == git_revision(tmp_path)


def test_outside_git_there_is_no_revision(tmp_path):
    assert git_revision(tmp_path) is None
    assert f"{PREFIX}.revision" not in project_metadata(project(tmp_path))


def test_index_in_oci_format_lists_platforms_and_carries_annotations():
    amd64, arm64 = image("amd64"), image("arm64")

    index = assemble_index([amd64, arm64], image_format="oci", annotations={"k": "v"})

    document = json.loads(index.manifest_bytes)
    assert index.manifest_media_type == document["mediaType"] == MediaType.OCI_INDEX
    assert [item["digest"] for item in document["manifests"]] == [amd64.digest, arm64.digest]
    assert document["manifests"][1]["platform"] == {"architecture": "arm64", "os": "linux"}
    assert document["annotations"] == {"k": "v"}
    assert index.image_id == amd64.image_id


def test_index_in_docker_format_is_a_manifest_list_without_annotations():
    images = [image(arch, MediaType.DOCKER_MANIFEST) for arch in ("amd64", "arm64")]

    index = assemble_index(images, image_format="docker", annotations={"k": "v"})

    document = json.loads(index.manifest_bytes)
    assert document["mediaType"] == MediaType.DOCKER_LIST
    assert "annotations" not in document
    assert {item["mediaType"] for item in document["manifests"]} == {MediaType.DOCKER_MANIFEST}
