"""Image metadata and formats: OCI labels and annotations, index media types, git revision."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

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


def _commit(root: Path) -> str:
    """A git checkout at `root` with one commit; its revision."""
    root.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


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
    head = _commit(tmp_path)

    metadata = project_metadata(project(tmp_path))

    assert metadata[f"{PREFIX}.revision"] == head == git_revision(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the checkout to another user needs root")
def test_a_checkout_owned_by_another_user_still_gives_its_revision(tmp_path, monkeypatch):
    head = _commit(tmp_path / "app")
    subprocess.run(["chown", "-R", "nobody", str(tmp_path / "app")], check=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no safe.directory of the user's

    revision = git_revision(tmp_path / "app")

    assert revision == head


def test_git_variables_of_the_environment_do_not_choose_the_revision(tmp_path, monkeypatch):
    _commit(tmp_path / "other")
    (tmp_path / "app").mkdir()
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "other" / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path / "other"))

    revision = git_revision(tmp_path / "app")

    assert revision is None


def test_a_ceiling_directory_still_stops_the_search_for_the_checkout(tmp_path, monkeypatch):
    _commit(tmp_path)
    (tmp_path / "app").mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    revision = git_revision(tmp_path / "app")

    assert revision is None


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
