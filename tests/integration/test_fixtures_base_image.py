"""The test base image: what the fixture script builds, caches and pushes."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import base_image as support
from tests.support.registry import RunningRegistry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _manifest_and_config(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    return manifest, json.loads(_blob(layout, manifest["config"]["digest"]))


@pytest.fixture(scope="module")
def layout() -> Path:
    return support.base_image_layout()


def test_base_image_is_a_tagged_oci_layout_with_one_manifest(layout: Path) -> None:
    index = json.loads((layout / "index.json").read_text())

    [entry] = index["manifests"]
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert entry["mediaType"] == OCI_MANIFEST
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "bookworm"


def test_base_image_config_is_amd64_linux_python3_with_the_standard_env(layout: Path) -> None:
    _manifest, config = _manifest_and_config(layout)

    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["config"]["Cmd"] == ["python3"]
    assert config["config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
    ]


def test_base_image_blobs_match_their_digests_and_the_layer_its_diff_id(layout: Path) -> None:
    manifest, config = _manifest_and_config(layout)
    [layer] = manifest["layers"]

    compressed = _blob(layout, layer["digest"])

    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert len(compressed) == layer["size"]
    assert f"sha256:{hashlib.sha256(compressed).hexdigest()}" == layer["digest"]
    diff_id = f"sha256:{hashlib.sha256(gzip.decompress(compressed)).hexdigest()}"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}


def test_base_image_layer_is_stripped_normalised_and_free_of_device_nodes(layout: Path) -> None:
    manifest, _config = _manifest_and_config(layout)
    path = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")

    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()

    names = {member.name.removeprefix("./") for member in members}
    assert {"usr/bin/python3", "usr/lib/locale/C.utf8", "dev", "proc", "tmp"} <= names
    assert not [m.name for m in members if m.ischr() or m.isblk() or m.isfifo()]
    for emptied in ("dev/", "proc/", "sys/", "usr/share/doc/", "var/lib/apt/lists/"):
        assert not [name for name in names if name.startswith(emptied)], emptied
    assert not [n for n in names if n.startswith("usr/lib/python3") and "__pycache__" in n]
    assert {member.mtime for member in members} == {1}


def test_base_image_layout_is_reused_from_the_cache_without_rebuilding(
    layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache holding a complete layout under the current key must be returned as is.
    script = support._script()
    cached = tmp_path / script.FIXTURE_VERSION / "oci"
    shutil.copytree(layout, cached)
    stamp = (cached / "index.json").stat().st_mtime_ns
    monkeypatch.setenv("HATCH_JIB_FIXTURE_CACHE", str(tmp_path))

    found = support.base_image_layout()

    assert found == cached
    assert (cached / "index.json").stat().st_mtime_ns == stamp
    assert not [path for path in tmp_path.iterdir() if path.name.startswith("build-")]


def _registry_manifest(registry: RunningRegistry, reference: str) -> httpx.Response:
    repository, tag = reference.split("/", 1)[1].rsplit(":", 1)
    accept = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
    return httpx.get(f"{registry.url}/v2/{repository}/manifests/{tag}", headers={"Accept": accept})


def test_base_image_fixture_is_pushed_with_an_oci_manifest(
    registry: RunningRegistry, base_image: str, layout: Path
) -> None:
    response = _registry_manifest(registry, base_image)

    assert base_image == f"{registry.host}/base/debian-python:bookworm"
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_MANIFEST
    index = json.loads((layout / "index.json").read_text())
    assert response.headers["docker-content-digest"] == index["manifests"][0]["digest"]


def test_docker_variant_has_docker_media_types_and_the_same_layer_blob(
    registry: RunningRegistry, base_image_docker: str, layout: Path
) -> None:
    response = _registry_manifest(registry, base_image_docker)

    manifest = response.json()
    oci_manifest, _config = _manifest_and_config(layout)
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    ]
    assert manifest["layers"][0]["digest"] == oci_manifest["layers"][0]["digest"]


def test_push_rejects_an_unknown_manifest_format(registry: RunningRegistry) -> None:
    with pytest.raises(ValueError, match="manifest_format"):
        support.push_base_image(registry.host, manifest_format="v1")
