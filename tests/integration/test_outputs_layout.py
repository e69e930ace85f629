"""The tar and OCI layout outputs, read back by skopeo, umoci and podman."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.console import Terminated, report_failure, terminate_cleanly
from hatch_jib.image.descriptor import Descriptor, MediaType, sha256_digest
from hatch_jib.image.image import Image, ImageLayer
from hatch_jib.image.layer import LayerEntry, LayerSpec, build_layer
from hatch_jib.image.manifest import Manifest, serialize
from hatch_jib.image.platform import Platform
from hatch_jib.outputs.oci import write_oci_layout
from hatch_jib.outputs.tar import write_image_tar
from hatch_jib.pipeline.steps import assemble_index

REPO_TAGS = ["example.org/team/app:1.0", "example.org/team/app:latest"]


def make_image(store: BlobStore, tmp_path: Path, architecture: str, text: str) -> Image:
    """A one-layer OCI image for `architecture` whose layer holds `srv/message.txt`."""
    source = tmp_path / f"message-{architecture}-{len(text)}.txt"
    source.write_text(text)
    layer = build_layer(LayerSpec("code", (LayerEntry.file("srv/message.txt", source),)), store)
    config = serialize(
        {
            "architecture": architecture,
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Entrypoint": ["/bin/true"], "WorkingDir": "/srv"},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
    )
    config_desc = Descriptor(MediaType.OCI_CONFIG, store.put_bytes(config), len(config))
    layer_desc = Descriptor(MediaType.OCI_LAYER_GZIP, layer.digest, layer.size)
    manifest = Manifest(MediaType.OCI_MANIFEST, config_desc, (layer_desc,))
    return Image(
        platform=Platform("linux", architecture),
        manifest_media_type=MediaType.OCI_MANIFEST,
        manifest_bytes=manifest.to_bytes(),
        config=config_desc,
        config_bytes=config,
        layers=(ImageLayer(layer_desc, layer.diff_id, "code"),),
    )


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def run(*command: str) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_oci_layout_reads_with_skopeo_under_each_tag_and_unpacks_with_umoci(store, tmp_path):
    image = make_image(store, tmp_path, "amd64", "hello from the layout\n")
    layout = tmp_path / "dist" / "app-1.0.oci"

    write_oci_layout(image, layout, repo_tags=REPO_TAGS, blob_path=store.path)

    for tag in ("1.0", "latest"):
        assert json.loads(run("skopeo", "inspect", f"oci:{layout}:{tag}"))["Digest"] == image.digest
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:1.0", str(bundle))
    assert (bundle / "rootfs/srv/message.txt").read_text() == "hello from the layout\n"


def test_oci_layout_of_two_platforms_holds_the_index_and_each_image(store, tmp_path):
    amd64 = make_image(store, tmp_path, "amd64", "shared\n")
    arm64 = make_image(store, tmp_path, "arm64", "shared\n")
    index = assemble_index([amd64, arm64], image_format="oci")
    layout = tmp_path / "app.oci"

    write_oci_layout(index, layout, repo_tags=REPO_TAGS[:1], blob_path=store.path)

    raw = json.loads(run("skopeo", "inspect", "--raw", f"oci:{layout}:1.0"))
    assert raw["mediaType"] == MediaType.OCI_INDEX
    assert [item["platform"]["architecture"] for item in raw["manifests"]] == ["amd64", "arm64"]
    arm = json.loads(run("skopeo", "inspect", "--override-arch=arm64", f"oci:{layout}:1.0"))
    assert arm["Architecture"] == "arm64"
    assert arm["Layers"] == [arm64.layers[0].descriptor.digest]
    # The layer both platforms share is stored once.
    assert len(list((layout / "blobs/sha256").iterdir())) == 1 + 2 + 2 + 1


def test_oci_layout_is_replaced_whole_or_not_at_all(store, tmp_path):
    first = make_image(store, tmp_path, "amd64", "first\n")
    second = make_image(store, tmp_path, "amd64", "second, longer\n")
    layout = tmp_path / "dist" / "app.oci"
    write_oci_layout(first, layout, repo_tags=REPO_TAGS, blob_path=store.path)

    def broken_blob_path(digest: str) -> Path:
        raise OSError(f"blob {digest} vanished")

    with pytest.raises(OSError, match="vanished"):
        write_oci_layout(second, layout, repo_tags=REPO_TAGS, blob_path=broken_blob_path)
    assert json.loads(run("skopeo", "inspect", f"oci:{layout}:1.0"))["Digest"] == first.digest
    write_oci_layout(second, layout, repo_tags=REPO_TAGS, blob_path=store.path)

    assert json.loads(run("skopeo", "inspect", f"oci:{layout}:1.0"))["Digest"] == second.digest
    assert sorted(path.name for path in layout.parent.iterdir()) == ["app.oci"]
    assert not (layout / "blobs/sha256" / first.digest.split(":")[1]).exists()


def test_tar_reads_as_docker_archive_and_as_oci_archive(store, tmp_path):
    image = make_image(store, tmp_path, "amd64", "tar\n")
    archive = tmp_path / "app-1.0.image.tar"

    write_image_tar(image, archive, repo_tags=REPO_TAGS, blob_path=store.path)

    for repo_tag in REPO_TAGS:
        inspected = json.loads(run("skopeo", "inspect", f"docker-archive:{archive}:{repo_tag}"))
        assert inspected["Architecture"] == "amd64"
        assert inspected["Layers"] == [image.layers[0].diff_id]  # docker-archive: by diff_id
    assert json.loads(run("skopeo", "inspect", f"oci-archive:{archive}:1.0"))["Digest"] == (
        image.digest
    )


def test_tar_of_two_platforms_tags_the_first_and_indexes_both(store, tmp_path):
    amd64 = make_image(store, tmp_path, "amd64", "amd64 only\n")
    arm64 = make_image(store, tmp_path, "arm64", "arm64 only\n")
    index = assemble_index([amd64, arm64], image_format="oci")
    archive = tmp_path / "app.image.tar"

    write_image_tar(index, archive, repo_tags=REPO_TAGS, blob_path=store.path)

    with tarfile.open(archive) as tar:
        docker_manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        names = tar.getnames()
    assert len(docker_manifest) == 1 and docker_manifest[0]["RepoTags"] == REPO_TAGS
    assert json.loads(run("skopeo", "inspect", f"docker-archive:{archive}"))["Architecture"] == (
        "amd64"
    )
    raw = json.loads(run("skopeo", "inspect", "--raw", f"oci-archive:{archive}:latest"))
    assert raw["mediaType"] == MediaType.OCI_INDEX and len(raw["manifests"]) == 2
    assert f"blobs/sha256/{arm64.layers[0].descriptor.digest.split(':')[1]}" in names


def test_tar_is_byte_identical_when_written_twice(store, tmp_path):
    image = make_image(store, tmp_path, "amd64", "same\n")

    one = write_image_tar(image, tmp_path / "one.tar", repo_tags=REPO_TAGS, blob_path=store.path)
    two = write_image_tar(image, tmp_path / "two.tar", repo_tags=REPO_TAGS, blob_path=store.path)

    assert sha256_digest(one.read_bytes()) == sha256_digest(two.read_bytes())


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")
def test_tar_loads_with_podman(store, tmp_path):
    image = make_image(store, tmp_path, "amd64", "podman\n")
    archive = tmp_path / "app.image.tar"
    write_image_tar(image, archive, repo_tags=REPO_TAGS, blob_path=store.path)
    # A private store, so the test leaves the machine's podman images alone; podman wants
    # a short runroot path.
    runroot = Path(tempfile.mkdtemp(prefix="podman-", dir="/tmp"))
    podman = ["podman", "--root", str(tmp_path / "podman-root"), "--runroot", str(runroot)]
    podman += ["--storage-driver", "vfs"]

    try:
        output = run(*podman, "load", "--input", str(archive))
        listed = json.loads(run(*podman, "images", "--format", "json"))
    finally:
        shutil.rmtree(runroot, ignore_errors=True)

    assert "Loaded image" in output
    assert {name for item in listed for name in item.get("Names") or []} == set(REPO_TAGS)
    assert {item["Id"] for item in listed} == {image.config.digest.split(":")[1]}


def test_sigterm_mid_tar_leaves_no_partial_file(store, tmp_path):
    image = make_image(store, tmp_path, "amd64", "terminated\n")
    dist = tmp_path / "dist"

    def blob_path_then_sigterm(digest: str) -> Path:
        os.kill(os.getpid(), signal.SIGTERM)
        return store.path(digest)

    with pytest.raises(Terminated), terminate_cleanly():
        write_image_tar(
            image, dist / "app.image.tar", repo_tags=REPO_TAGS, blob_path=blob_path_then_sigterm
        )

    assert list(dist.iterdir()) == []
    assert report_failure(Terminated(), debug=False, stream=io.StringIO()) == 143
