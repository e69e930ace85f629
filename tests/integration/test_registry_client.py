"""RegistryClient against a real docker-registry in open, htpasswd, token and TLS modes."""

from __future__ import annotations

import gzip
import io
import json
import logging
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import RegistryError
from hatch_jib.image.descriptor import MediaType, sha256_digest
from hatch_jib.registry import Credential, RegistryClient, TransportOptions
from tests.support.registry import MODES, RunningRegistry, running_registry, start_registry

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TinyImage:
    """A valid single-layer image: its blobs and its manifest bytes."""

    layer: bytes
    config: bytes
    manifest: bytes

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)


def make_tiny_image(text: str = "hello from hatch-jib\n") -> TinyImage:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(data), 1, 0o644
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw.getvalue())]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
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
                    "digest": sha256_digest(layer),
                    "size": len(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    return TinyImage(layer=layer, config=config, manifest=manifest)


@pytest.fixture(scope="module", params=MODES)
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    running = start_registry(tmp_path_factory.mktemp(f"registry-{request.param}"), request.param)
    yield running
    running.stop()


def options_for(registry: RunningRegistry, *, chunk: int | None = None) -> TransportOptions:
    return TransportOptions(
        ca_file=str(registry.ca_file) if registry.ca_file else None,
        timeout=10.0,
        max_retries=1,
        upload_chunk_size=chunk,
    )


def client_for(
    registry: RunningRegistry,
    repository: str,
    *,
    password: str | None = None,
    push: bool = True,
    mount_from: tuple[str, ...] = (),
    chunk: int | None = None,
) -> RegistryClient:
    credential = None
    if registry.username:
        credential = Credential(
            registry.username, password or registry.password or "", source="the test harness"
        )
    return RegistryClient(
        registry.host,
        repository,
        credential=credential,
        options=options_for(registry, chunk=chunk),
        push=push,
        mount_from=mount_from,
    )


def write_blob(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / sha256_digest(data).replace(":", "-")
    path.write_bytes(data)
    return path


def push_image(client: RegistryClient, image: TinyImage, tmp_path: Path, tag: str) -> str:
    for blob in (image.layer, image.config):
        client.upload_blob(sha256_digest(blob), len(blob), write_blob(tmp_path, blob))
    return client.put_manifest(tag, image.manifest, MediaType.OCI_MANIFEST)


def test_upload_blob_makes_head_report_its_size(registry: RunningRegistry, tmp_path: Path) -> None:
    data = b"a blob for " + registry.mode.encode()
    digest = sha256_digest(data)

    with client_for(registry, "team/blobs") as client:
        before = client.blob_exists(digest)
        client.upload_blob(digest, len(data), write_blob(tmp_path, data))
        after = client.blob_exists(digest)

    assert (before, after) == (None, len(data))


def test_manifest_pushed_by_tag_pulls_back_byte_exact_by_tag_and_digest(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    image = make_tiny_image()

    with client_for(registry, "team/app") as client:
        pushed = push_image(client, image, tmp_path, "v1")
        by_tag = client.get_manifest("v1")
        by_digest = client.get_manifest(pushed)

    assert pushed == image.manifest_digest
    assert by_tag.data == image.manifest
    assert by_tag.media_type == MediaType.OCI_MANIFEST
    assert by_tag.digest == pushed
    assert by_digest == by_tag


def test_chunked_upload_is_stored_byte_exact(registry: RunningRegistry, tmp_path: Path) -> None:
    data = bytes(range(256)) * 41 + registry.mode.encode()
    digest = sha256_digest(data)
    store = BlobStore(tmp_path / "cache")

    with client_for(registry, "team/chunks", chunk=4096) as client:
        client.upload_blob(digest, len(data), write_blob(tmp_path, data))
        fetched = client.fetch_blob(digest, store)

    assert fetched.read_bytes() == data


def test_fetch_blob_streams_into_the_store_verified(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    image = make_tiny_image("fetch me\n")
    store = BlobStore(tmp_path / "cache")

    with client_for(registry, "team/fetch") as client:
        push_image(client, image, tmp_path, "latest")
        path = client.fetch_blob(sha256_digest(image.layer), store)
        again = client.fetch_blob(sha256_digest(image.layer), store)

    assert path.read_bytes() == image.layer
    assert again == path


def test_mount_links_a_blob_from_another_repository(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    data = b"shared layer bytes in " + registry.mode.encode()
    digest = sha256_digest(data)
    with client_for(registry, "team/source") as source:
        source.upload_blob(digest, len(data), write_blob(tmp_path, data))

    with client_for(registry, "team/target", mount_from=("team/source",)) as target:
        mounted = target.mount_blob(digest, "team/source")
        size = target.blob_exists(digest)

    assert mounted is True
    assert size == len(data)


def test_mount_of_a_blob_the_source_lacks_reports_false(
    registry: RunningRegistry,
) -> None:
    missing = sha256_digest(b"never pushed " + registry.mode.encode())

    with client_for(registry, "team/target2", mount_from=("team/source",)) as target:
        mounted = target.mount_blob(missing, "team/source")
        size = target.blob_exists(missing)

    assert (mounted, size) == (False, None)


def test_unknown_tag_raises_manifest_unknown(registry: RunningRegistry) -> None:
    client = client_for(registry, "team/app", push=False)
    with client, pytest.raises(RegistryError) as caught:
        client.get_manifest("no-such-tag")

    assert caught.value.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert caught.value.registry == registry.host
    assert "team/app" in str(caught.value)


def test_token_is_fetched_once_and_reused(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", "token") as registry:
        data = b"token reuse"
        digest = sha256_digest(data)
        with client_for(registry, "team/reuse") as client:
            client.upload_blob(digest, len(data), write_blob(tmp_path, data))
            client.blob_exists(digest)
            client.blob_exists(digest)
            fetches = client.auth.token_fetches

    assert fetches == 1


def test_identity_token_gets_a_token_by_oauth2_refresh_grant(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", "token") as registry:
        assert registry.token_server is not None
        credential = Credential(
            "<token>", registry.token_server.refresh_token, source="an identity token"
        )
        data = b"identity token push"
        digest = sha256_digest(data)
        with RegistryClient(
            registry.host,
            "team/idt",
            credential=credential,
            options=options_for(registry),
            push=True,
        ) as client:
            client.upload_blob(digest, len(data), write_blob(tmp_path, data))
            size = client.blob_exists(digest)
        methods = [request["method"] for request in registry.token_server.requests]

    assert size == len(data)
    assert methods == ["POST"]


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_wrong_password_raises_unauthorized_and_never_logs_the_password(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "WRONG-pass-5f2c9e"
    caplog.set_level(logging.DEBUG)

    with running_registry(tmp_path / "reg", mode) as registry:
        client = client_for(registry, "team/app", password=wrong)
        with client, pytest.raises(RegistryError) as caught:
            client.get_manifest("latest")

    assert caught.value.code == "UNAUTHORIZED"
    assert "the test harness" in str(caught.value)
    assert "JIB_TO_AUTH_USERNAME" in str(caught.value)
    assert wrong not in str(caught.value)
    assert caplog.records, "DEBUG logging of the exchange is expected"
    assert wrong not in caplog.text
    assert "Basic ***" in caplog.text or "Authorization" not in caplog.text


def test_refused_base_image_credentials_name_the_from_variables(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", "htpasswd") as registry:
        client = client_for(registry, "team/base", password="not-it", push=False)
        with client, pytest.raises(RegistryError) as caught:
            client.get_manifest("latest")

    assert caught.value.code == "UNAUTHORIZED"
    assert "JIB_FROM_AUTH_USERNAME" in str(caught.value)
    assert "JIB_TO_AUTH" not in str(caught.value)


def test_refused_credentials_from_the_environment_are_not_asked_for_again(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", "htpasswd") as registry:
        credential = Credential(
            registry.username or "",
            "not-it",
            source="JIB_FROM_AUTH_USERNAME/JIB_FROM_AUTH_PASSWORD",
        )
        client = RegistryClient(
            registry.host, "team/app", credential=credential, options=options_for(registry)
        )
        with client, pytest.raises(RegistryError) as caught:
            client.get_manifest("latest")

    assert caught.value.code == "UNAUTHORIZED"
    assert caught.value.hint == (
        "the credentials from JIB_FROM_AUTH_USERNAME/JIB_FROM_AUTH_PASSWORD were refused: check"
        f" their values, or unset them and run `docker login {registry.host}`"
    )


def test_missing_credentials_raise_unauthorized_saying_how_to_log_in(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", "htpasswd") as registry:
        client = RegistryClient(
            registry.host, "team/app", credential=None, options=options_for(registry)
        )
        with client, pytest.raises(RegistryError) as caught:
            client.get_manifest("latest")

    assert caught.value.code == "UNAUTHORIZED"
    assert "no credentials were found" in str(caught.value)
    assert "docker login" in str(caught.value)


def test_a_push_without_credentials_to_a_basic_registry_fails_when_it_logs_in(
    tmp_path: Path,
) -> None:
    with running_registry(tmp_path / "reg", "htpasswd") as registry:
        client = RegistryClient(
            registry.host, "team/app", credential=None, options=options_for(registry), push=True
        )
        with client, pytest.raises(RegistryError) as caught:
            client.authenticate()

    assert caught.value.code == "UNAUTHORIZED"
    assert (
        caught.value.message
        == f"{registry.host} asks for a login (Basic) before team/app can be used"
    )
    assert "no credentials were found" in str(caught.value)


def test_tls_registry_is_untrusted_without_its_ca(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", "tls") as registry:
        client = RegistryClient(
            registry.host, "team/app", credential=None, options=TransportOptions(max_retries=0)
        )
        with client, pytest.raises(RegistryError) as caught:
            client.get_manifest("latest")

    assert caught.value.code == "UNREACHABLE"
    assert "certificate" in str(caught.value)


def test_registry_that_is_not_running_raises_unreachable_with_a_hint(tmp_path: Path) -> None:
    registry = start_registry(tmp_path / "reg", "open")
    host = registry.host
    registry.stop()

    with (
        RegistryClient(
            host, "team/app", credential=None, options=TransportOptions(max_retries=0)
        ) as client,
        pytest.raises(RegistryError) as caught,
    ):
        client.get_manifest("latest")

    assert caught.value.code == "UNREACHABLE"
    assert f"Cannot reach registry {host} to pull team/app (" in str(caught.value)
    assert "is it running?" in str(caught.value)
    # Loopback may use plain HTTP already; suggesting allow-insecure-registries would mislead.
    assert "allow-insecure-registries" not in str(caught.value)


def test_registry_whose_name_does_not_resolve_is_named_as_a_dns_failure() -> None:
    # .invalid is reserved (RFC 2606): no resolver answers for it.
    with (
        RegistryClient(
            "registry.invalid", "team/app", credential=None, options=TransportOptions(max_retries=0)
        ) as client,
        pytest.raises(RegistryError) as caught,
    ):
        client.get_manifest("latest")

    assert caught.value.code == "UNREACHABLE"
    assert caught.value.hint == (
        "a host name did not resolve (registry.invalid, or a proxy's): check the registry in"
        " the image reference, and this machine's DNS and proxy settings"
    )


@pytest.mark.parametrize("mode", ["open", "htpasswd"])
def test_skopeo_copies_the_image_pushed_in_chunks(tmp_path: Path, mode: str) -> None:
    image = make_tiny_image("for skopeo\n" * 50)
    with running_registry(tmp_path / "reg", mode) as registry:
        with client_for(registry, "team/skopeo", chunk=64) as client:
            digest = push_image(client, image, tmp_path, "v2")
        command = ["skopeo", "--insecure-policy"]
        source = f"docker://{registry.host}/team/skopeo:v2"
        creds = (
            [f"--src-creds={registry.username}:{registry.password}"] if registry.username else []
        )
        inspected = subprocess.run(
            [
                *command,
                "inspect",
                "--tls-verify=false",
                *[c.replace("src-", "") for c in creds],
                source,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # skopeo copy verifies every blob it downloads against its digest.
        copied = subprocess.run(
            [
                *command,
                "copy",
                "--src-tls-verify=false",
                *creds,
                source,
                f"dir:{tmp_path / 'copy'}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert inspected.returncode == 0, inspected.stderr
    assert copied.returncode == 0, copied.stderr
    info = json.loads(inspected.stdout)
    assert info["Digest"] == digest
    assert info["Layers"] == [sha256_digest(image.layer)]
    assert info["Architecture"] == "amd64"
    assert (tmp_path / "copy" / sha256_digest(image.layer).split(":")[1]).read_bytes() == (
        image.layer
    )


@pytest.mark.parametrize("keep", ["first", "last"])
def test_push_with_mount_survives_a_token_server_that_keeps_one_scope(
    tmp_path: Path, keep: str
) -> None:
    data = b"one scope per token: " + keep.encode()
    digest = sha256_digest(data)
    with running_registry(tmp_path / "reg", "token") as registry:
        assert registry.token_server is not None
        registry.token_server.keep_scopes = keep
        with client_for(registry, "team/base") as source:
            source.upload_blob(digest, len(data), write_blob(tmp_path, data))
        other = b"not in the source " + keep.encode()

        with client_for(registry, "team/app", mount_from=("team/base",)) as target:
            target.mount_blob(digest, "team/base")
            if target.blob_exists(digest) is None:
                target.upload_blob(digest, len(data), write_blob(tmp_path, data))
            target.upload_blob(sha256_digest(other), len(other), write_blob(tmp_path, other))
            sizes = [target.blob_exists(d) for d in (digest, sha256_digest(other))]

    assert sizes == [len(data), len(other)]


def test_ca_file_from_ssl_cert_file_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = make_tiny_image("trusted through SSL_CERT_FILE\n")
    with running_registry(tmp_path / "reg", "tls") as registry:
        assert registry.ca_file is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(registry.ca_file))
        options = TransportOptions(timeout=10.0, max_retries=0)
        with RegistryClient(registry.host, "team/ca", credential=None, options=options) as c:
            digest = push_image(c, image, tmp_path, "v1")
            scheme = c.transport.scheme

    assert (scheme, digest) == ("https", image.manifest_digest)


@pytest.mark.parametrize("anonymous_pull", [False, True], ids=["private", "public"])
def test_base_pull_tries_anonymous_first_then_the_credential(
    tmp_path: Path, anonymous_pull: bool
) -> None:
    image = make_tiny_image("anonymous first\n")
    with running_registry(tmp_path / "reg", "token") as registry:
        assert registry.token_server is not None
        with client_for(registry, "team/base") as pusher:
            push_image(pusher, image, tmp_path, "v1")
        registry.token_server.anonymous_actions = ("pull",) if anonymous_pull else ()
        registry.token_server.requests.clear()
        credential = Credential(registry.username or "", registry.password or "", source="t")

        with RegistryClient(
            registry.host,
            "team/base",
            credential=credential,
            options=options_for(registry),
            anonymous_first=True,
        ) as puller:
            pulled = puller.get_manifest("v1")

        sent_basic = [request["basic"] for request in registry.token_server.requests]

    assert pulled.data == image.manifest
    assert sent_basic == ([None] if anonymous_pull else [None, True])


def test_base_pull_from_a_basic_registry_sends_the_credential_after_a_refusal(
    tmp_path: Path,
) -> None:
    image = make_tiny_image("basic after anonymous\n")
    with running_registry(tmp_path / "reg", "htpasswd") as registry:
        with client_for(registry, "team/base") as pusher:
            push_image(pusher, image, tmp_path, "v1")
        credential = Credential(registry.username or "", registry.password or "", source="t")

        with RegistryClient(
            registry.host,
            "team/base",
            credential=credential,
            options=options_for(registry),
            anonymous_first=True,
        ) as puller:
            pulled = puller.get_manifest("v1")

    assert pulled.data == image.manifest
