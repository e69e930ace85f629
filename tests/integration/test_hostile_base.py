"""A base image whose registry sends garbage fails with one error naming the base."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.image.descriptor import MediaType, sha256_digest
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import parse_reference
from hatch_jib.pipeline import steps
from hatch_jib.pipeline.steps import check_base_layers, obtain_base_layers, pull_base_image
from hatch_jib.registry import RegistryClient, TransportOptions
from tests.support.fake_registry import fake_registry


def _layer() -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return gzip.compress(raw.getvalue(), mtime=0), sha256_digest(raw.getvalue())


LAYER, DIFF_ID = _layer()
GOOD_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/bin"]},
    "rootfs": {"type": "layers", "diff_ids": [DIFF_ID]},
}


def _manifest(config: bytes, *, layer_size: int = len(LAYER)) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_MANIFEST,
            "config": {
                "mediaType": MediaType.OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": MediaType.OCI_LAYER_GZIP,
                    "digest": sha256_digest(LAYER),
                    "size": layer_size,
                }
            ],
        }
    ).encode()


def _serve(manifest: bytes, config: bytes):
    blobs = {sha256_digest(config): config, sha256_digest(LAYER): LAYER}

    def script(seen):
        if seen.path == "/v2/":
            return 200, {}, b"{}"
        if "/manifests/" in seen.path:
            return 200, {"Content-Type": MediaType.OCI_MANIFEST}, manifest
        digest = seen.path.rsplit("/", 1)[-1]
        if digest in blobs:
            return 200, {}, blobs[digest]
        return 404, {}, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}'

    return fake_registry(script)


def _pull(host: str, store: BlobStore):
    reference = parse_reference(f"{host}/hostile/base:1")
    client = RegistryClient(
        host, "hostile/base", credential=None, options=TransportOptions(max_retries=0)
    )
    with client:
        base = pull_base_image(reference, client, store, Platform())
        obtain_base_layers(base, store)
        check_base_layers(base, store)


@pytest.mark.parametrize(
    ("manifest", "config", "culprit"),
    [
        (b"{not json", json.dumps(GOOD_CONFIG).encode(), "invalid manifest"),
        (b'{"schemaVersion":2,"config":5,"layers":"x"}', b"{}", "invalid manifest"),
        (None, json.dumps({**GOOD_CONFIG, "config": {"Env": "PATH=/x"}}).encode(), "Env"),
        (None, json.dumps({**GOOD_CONFIG, "config": {"Entrypoint": 5}}).encode(), "Entrypoint"),
        (None, b"[1, 2]", "invalid config"),
    ],
)
def test_garbage_from_the_registry_names_the_base_image(tmp_path, manifest, config, culprit):
    manifest = manifest if manifest is not None else _manifest(config)

    with _serve(manifest, config) as fake, pytest.raises(BuildError) as caught:
        _pull(fake.host, BlobStore(tmp_path / "cache"))

    assert "hostile/base:1" in str(caught.value)
    assert culprit in str(caught.value)


@pytest.mark.parametrize("size", [-1, 10**18])
def test_layer_size_that_disagrees_with_the_bytes_is_refused(tmp_path, size):
    config = json.dumps(GOOD_CONFIG).encode()

    with (
        _serve(_manifest(config, layer_size=size), config) as fake,
        pytest.raises(BuildError) as caught,
    ):
        _pull(fake.host, BlobStore(tmp_path / "cache"))

    assert "hostile/base:1" in str(caught.value)


def test_manifest_without_media_type_or_content_type_is_read_by_its_shape(tmp_path):
    config = json.dumps(GOOD_CONFIG).encode()
    bare = json.loads(_manifest(config))
    del bare["mediaType"]
    blobs = {sha256_digest(config): config, sha256_digest(LAYER): LAYER}

    def script(seen):
        if seen.path == "/v2/":
            return 200, {}, b"{}"
        if "/manifests/" in seen.path:
            return 200, {"Content-Type": "application/json"}, json.dumps(bare).encode()
        return 200, {}, blobs[seen.path.rsplit("/", 1)[-1]]

    with fake_registry(script) as fake:
        client = RegistryClient(
            fake.host, "hostile/base", credential=None, options=TransportOptions(max_retries=0)
        )
        with client:
            pulled = client.get_manifest("1")

    assert pulled.media_type == MediaType.OCI_MANIFEST


def test_layer_whose_bytes_do_not_unpack_to_the_configs_diff_id_is_refused(tmp_path):
    lying = {**GOOD_CONFIG, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}
    config = json.dumps(lying).encode()

    with _serve(_manifest(config), config) as fake, pytest.raises(BuildError) as caught:
        _pull(fake.host, BlobStore(tmp_path / "cache"))

    assert "hostile/base:1" in str(caught.value)
    assert "diff_id" in str(caught.value) and DIFF_ID in str(caught.value)


def test_a_layer_checked_against_its_diff_id_once_is_not_unpacked_again(tmp_path, monkeypatch):
    config = json.dumps(GOOD_CONFIG).encode()
    store = BlobStore(tmp_path / "cache")
    with _serve(_manifest(config), config) as fake:
        _pull(fake.host, store)
        unpacked = []
        real = steps._uncompressed_digest
        monkeypatch.setattr(
            steps, "_uncompressed_digest", lambda *args: unpacked.append(args) or real(*args)
        )

        _pull(fake.host, store)

    assert unpacked == []
