"""RegistryClient against a scripted HTTP server: redirects, retries, odd Locations, realms."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import RegistryError
from hatch_jib.image.descriptor import MediaType, sha256_digest
from hatch_jib.image.manifest import parse_index
from hatch_jib.image.platform import Platform
from hatch_jib.registry import Credential, RegistryClient, TransportOptions
from tests.support.fake_registry import Answer, FakeRegistry, Reply, Script, Seen

pytestmark = pytest.mark.integration


@pytest.fixture
def serve() -> Iterator[Callable[[Script], FakeRegistry]]:
    started: list[FakeRegistry] = []

    def start(script: Script) -> FakeRegistry:
        started.append(FakeRegistry(script).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def client(host: str, *, credential: Credential | None = None, retries: int = 2) -> RegistryClient:
    options = TransportOptions(timeout=5.0, max_retries=retries)
    return RegistryClient(host, "team/app", credential=credential, options=options, push=True)


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST}).encode()


def test_blob_redirect_to_another_origin_drops_authorization(
    serve: Callable[[Script], FakeRegistry], tmp_path: Path
) -> None:
    blob = b"blob bytes behind a CDN"
    digest = sha256_digest(blob)
    cdn = serve(lambda r: (200, {}, blob))
    signed = f"http://{cdn.host}/store/x?X-Amz-Signature=abc%2Fdef&X-Amz-Expires=60"

    def registry_script(r: Seen) -> Reply:
        if r.path == "/v2/":
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        if "Authorization" not in r.headers:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        return 307, {"Location": signed}, b""

    registry = serve(registry_script)
    credential = Credential("user", "s3cret", source="test")

    with client(registry.host, credential=credential) as registry_client:
        path = registry_client.fetch_blob(digest, BlobStore(tmp_path / "cache"))

    assert path.read_bytes() == blob
    assert registry.seen[-1].headers["Authorization"].startswith("Basic ")
    [cdn_request] = cdn.seen
    assert "Authorization" not in cdn_request.headers
    assert cdn_request.path == "/store/x?X-Amz-Signature=abc%2Fdef&X-Amz-Expires=60"
    assert cdn_request.headers["Accept-Encoding"] == "identity"


def test_rate_limited_manifest_get_is_retried_after_retry_after(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    answers = iter(
        [
            (429, {"Retry-After": "0"}, b""),
            (200, {"Content-Type": MediaType.OCI_MANIFEST}, MANIFEST),
        ]
    )

    def script(r: Seen) -> Reply:
        return (200, {}, b"{}") if r.path == "/v2/" else next(answers)

    registry = serve(script)

    with client(registry.host) as registry_client:
        pulled = registry_client.get_manifest("v1")

    assert pulled.data == MANIFEST
    assert [r.path for r in registry.seen].count("/v2/team/app/manifests/v1") == 2


def test_persistent_rate_limit_raises_toomanyrequests(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}).encode()
    registry = serve(
        lambda r: (200, {}, b"{}") if r.path == "/v2/" else (429, {"Retry-After": "0"}, body)
    )

    with (
        client(registry.host, retries=1) as registry_client,
        pytest.raises(RegistryError) as caught,
    ):
        registry_client.get_manifest("v1")

    assert caught.value.code == "TOOMANYREQUESTS"
    assert caught.value.status == 429
    assert "slow down" in str(caught.value)


def test_failed_upload_put_restarts_the_session_and_keeps_the_location_query(
    serve: Callable[[Script], FakeRegistry], tmp_path: Path
) -> None:
    blob = b"upload me"
    digest = sha256_digest(blob)
    sessions = iter(["one", "two"])
    puts: list[int] = []

    def script(r: Seen) -> Reply:
        if r.method == "POST":
            return (
                202,
                {"Location": f"/v2/team/app/blobs/uploads/{next(sessions)}?_state=s%2B1"},
                b"",
            )
        if r.method == "PUT":
            puts.append(1)
            if len(puts) == 1:
                return 500, {}, b"storage hiccup"
            return 201, {"Docker-Content-Digest": digest}, b""
        if r.method == "HEAD":
            return 404, {}, b""
        return 200, {}, b"{}"

    registry = serve(script)
    source = tmp_path / "blob"
    source.write_bytes(blob)

    with client(registry.host) as registry_client:
        registry_client.upload_blob(digest, len(blob), source)

    put_paths = [r.path for r in registry.seen if r.method == "PUT"]
    assert put_paths == [
        f"/v2/team/app/blobs/uploads/one?_state=s%2B1&digest={digest}",
        f"/v2/team/app/blobs/uploads/two?_state=s%2B1&digest={digest}",
    ]
    assert [r.body for r in registry.seen if r.method == "PUT"] == [blob, blob]
    # A 500 after the PUT is ambiguous: the blob may be being stored, so its session is left
    # alone and the blob looked for before the new session.
    assert [r.method for r in registry.seen][1:] == ["POST", "PUT", "HEAD", "POST", "PUT"]


def test_failing_post_opens_a_bounded_number_of_new_sessions_each_sent_once(
    serve: Callable[[Script], FakeRegistry], tmp_path: Path
) -> None:
    registry = serve(lambda r: (200, {}, b"{}") if r.path == "/v2/" else (503, {}, b"busy"))
    source = tmp_path / "blob"
    source.write_bytes(b"x")

    with (
        client(registry.host, retries=1) as registry_client,
        pytest.raises(RegistryError) as caught,
    ):
        registry_client.upload_blob(sha256_digest(b"x"), 1, source)

    assert caught.value.status == 503
    assert "busy" in str(caught.value)
    assert [r.method for r in registry.seen] == ["GET", "POST", "POST"]


def test_token_realm_with_a_query_keeps_it_and_adds_service_and_scopes(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    auth = serve(lambda r: (200, {}, json.dumps({"access_token": "tok-1"}).encode()))
    challenge = f'Bearer realm="http://{auth.host}/token?account=me",service="fake"'

    def script(r: Seen) -> Reply:
        if r.headers.get("Authorization") != "Bearer tok-1":
            return 401, {"WWW-Authenticate": challenge}, b""
        return 200, {"Content-Type": MediaType.OCI_MANIFEST}, MANIFEST

    registry = serve(script)
    options = TransportOptions(timeout=5.0)

    with RegistryClient(
        registry.host, "team/app", credential=None, options=options, mount_from=("team/base",)
    ) as registry_client:
        registry_client.get_manifest("v1")

    [token_request] = auth.seen
    query = parse_qs(urlsplit(token_request.path).query)
    assert query == {
        "account": ["me"],
        "service": ["fake"],
        "scope": ["repository:team/app:pull", "repository:team/base:pull"],
    }
    assert "Authorization" not in token_request.headers


def test_expired_token_is_refetched_once_on_401(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    tokens = iter(["old", "new"])
    auth = serve(
        lambda r: (200, {}, json.dumps({"token": next(tokens), "expires_in": 300}).encode())
    )
    challenge = f'Bearer realm="http://{auth.host}/token",service="fake"'

    def script(r: Seen) -> Reply:
        if r.headers.get("Authorization") != "Bearer new":
            return 401, {"WWW-Authenticate": challenge}, b""
        return 200, {"Content-Type": MediaType.OCI_MANIFEST}, MANIFEST

    registry = serve(script)

    with client(registry.host) as registry_client:
        pulled = registry_client.get_manifest("v1")

    assert pulled.data == MANIFEST
    assert len(auth.seen) == 2


def test_manifest_pulled_by_digest_must_match_it(serve: Callable[[Script], FakeRegistry]) -> None:
    registry = serve(lambda r: (200, {"Content-Type": MediaType.OCI_MANIFEST}, MANIFEST))
    wrong = sha256_digest(b"something else")

    with client(registry.host) as registry_client, pytest.raises(RegistryError) as caught:
        registry_client.get_manifest(wrong)

    assert caught.value.code == "DIGEST_INVALID"


def test_generic_content_type_falls_back_to_the_documents_media_type(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    registry = serve(lambda r: (200, {"Content-Type": "application/json; charset=utf-8"}, MANIFEST))

    with client(registry.host) as registry_client:
        pulled = registry_client.get_manifest("v1")

    assert pulled.media_type == MediaType.OCI_MANIFEST


def test_corrupt_blob_download_is_retried_once_then_reported(
    serve: Callable[[Script], FakeRegistry], tmp_path: Path
) -> None:
    registry = serve(lambda r: (200, {}, b"{}") if r.path == "/v2/" else (200, {}, b"corrupt"))
    digest = sha256_digest(b"the real bytes")
    store = BlobStore(tmp_path / "cache")

    with (
        client(registry.host, retries=4) as registry_client,
        pytest.raises(RegistryError) as caught,
    ):
        registry_client.fetch_blob(digest, store)

    assert caught.value.code == "DIGEST_INVALID"
    assert not store.has(digest)
    assert len([r for r in registry.seen if r.path.endswith(digest)]) == 2


def test_debug_log_redacts_authorization_and_signed_url_secrets(
    serve: Callable[[Script], FakeRegistry], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blob = b"logged"
    cdn = serve(lambda r: (200, {}, blob))

    def script(r: Seen) -> Reply:
        if "Authorization" not in r.headers:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        return 307, {"Location": f"http://{cdn.host}/b?X-Amz-Signature=SIGSECRET"}, b""

    registry = serve(script)
    caplog.set_level(logging.DEBUG, logger="hatch_jib")

    with client(registry.host, credential=Credential("u", "PWSECRET", source="t")) as c:
        c.fetch_blob(sha256_digest(blob), BlobStore(tmp_path / "cache"))

    assert "Basic ***" in caplog.text
    assert "PWSECRET" not in caplog.text
    assert "SIGSECRET" not in caplog.text


def _open(r: Seen, reply: Reply) -> Reply:
    return (200, {}, b"{}") if r.path == "/v2/" else reply


def test_head_without_content_length_still_means_the_blob_exists(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    registry = serve(lambda r: _open(r, Answer(200, content_length=False)))

    with client(registry.host) as registry_client:
        size = registry_client.blob_exists(sha256_digest(b"x"))

    assert size == 0


@pytest.mark.parametrize("status", [401, 403, 405])
def test_head_the_registry_refuses_means_upload_it(
    serve: Callable[[Script], FakeRegistry], status: int
) -> None:
    registry = serve(lambda r: _open(r, (status, {}, b"")))

    with client(registry.host) as registry_client:
        size = registry_client.blob_exists(sha256_digest(b"x"))

    assert size is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405])
def test_mount_refused_with_any_4xx_reports_false_so_the_blob_is_uploaded(
    serve: Callable[[Script], FakeRegistry], status: int
) -> None:
    body = json.dumps({"errors": [{"code": "DENIED", "message": "no"}]}).encode()
    registry = serve(lambda r: _open(r, (status, {}, body)))

    with client(registry.host) as registry_client:
        mounted = registry_client.mount_blob(sha256_digest(b"x"), "team/base")

    assert mounted is False
    assert [r.method for r in registry.seen if r.path != "/v2/"] == ["POST"]


def test_insufficient_scope_widens_the_token_scope(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    auth = serve(
        lambda r: (
            200,
            {},
            json.dumps({"token": parse_qs(urlsplit(r.path).query)["scope"][-1]}).encode(),
        )
    )
    realm = f'Bearer realm="http://{auth.host}/token",service="fake"'
    wider = "repository:team/app:pull,push,delete"

    def script(r: Seen) -> Reply:
        if r.headers.get("Authorization") == f"Bearer {wider}":
            return 200, {"Content-Type": MediaType.OCI_MANIFEST}, MANIFEST
        scope = f'{realm},scope="{wider}",error="insufficient_scope"'
        return 401, {"WWW-Authenticate": scope}, b""

    registry = serve(script)

    with client(registry.host) as registry_client:
        registry_client.get_manifest("v1")

    scopes = [parse_qs(urlsplit(r.path).query)["scope"] for r in auth.seen]
    assert scopes == [["repository:team/app:pull,push"], ["repository:team/app:pull,push", wider]]


def test_rate_limit_error_shows_the_ratelimit_headers(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "pull limit"}]})
    headers = {"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "0;w=21600"}
    registry = serve(lambda r: _open(r, (429, {"Retry-After": "0", **headers}, body.encode())))

    with (
        client(registry.host, retries=0) as registry_client,
        pytest.raises(RegistryError) as caught,
    ):
        registry_client.get_manifest("v1")

    assert caught.value.code == "TOOMANYREQUESTS"
    assert "ratelimit-limit=100;w=21600" in caught.value.message
    assert "ratelimit-remaining=0;w=21600" in caught.value.message
    assert "log in" in str(caught.value.hint)


@pytest.mark.parametrize(
    ("media_type", "suggested"),
    [(MediaType.OCI_MANIFEST, '"docker"'), (MediaType.DOCKER_MANIFEST, '"oci"')],
)
def test_manifest_invalid_suggests_the_other_container_format(
    serve: Callable[[Script], FakeRegistry], media_type: str, suggested: str
) -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_INVALID", "message": "manifest invalid"}]})
    registry = serve(lambda r: _open(r, (400, {}, body.encode())))

    with client(registry.host) as registry_client, pytest.raises(RegistryError) as caught:
        registry_client.put_manifest("v1", MANIFEST, media_type)

    assert caught.value.code == "MANIFEST_INVALID"
    assert f"container.format = {suggested}" in str(caught.value.hint)
    assert registry.host in caught.value.registry


def test_unsupported_media_type_status_also_suggests_the_other_format(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    registry = serve(lambda r: _open(r, (415, {}, b"Unsupported Media Type")))

    with client(registry.host) as registry_client, pytest.raises(RegistryError) as caught:
        registry_client.put_manifest("v1", MANIFEST, MediaType.OCI_MANIFEST)

    assert caught.value.code == "UNSUPPORTED"
    assert 'container.format = "docker"' in str(caught.value.hint)


def _signed_schema1() -> tuple[bytes, bytes]:
    """A schema 1 manifest with a JWS signature block, and the payload it is named by."""
    payload = json.dumps({"schemaVersion": 1, "name": "team/app", "tag": "old"}, indent=3)
    head, tail = payload[:-2], payload[-2:]
    protected = {"formatLength": len(head), "formatTail": _b64(tail.encode())}
    signature = {"header": {"alg": "ES256"}, "signature": "c2ln", "protected": ""}
    signature["protected"] = _b64(json.dumps(protected).encode())
    signed = head + ',\n   "signatures": ' + json.dumps([signature]) + tail
    return signed.encode(), payload.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_schema1_manifest_is_read_with_its_payload_digest_but_never_pushed(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    signed, payload = _signed_schema1()
    digest = sha256_digest(payload)
    registry = serve(lambda r: _open(r, (200, {"Content-Type": "application/json"}, signed)))

    with client(registry.host) as registry_client:
        pulled = registry_client.get_manifest(digest)
        with pytest.raises(RegistryError) as caught:
            registry_client.put_manifest("v1", signed, MediaType.DOCKER_SCHEMA1_SIGNED)

    assert (pulled.digest, pulled.media_type) == (digest, MediaType.DOCKER_SCHEMA1_SIGNED)
    assert pulled.data == signed
    assert "read-only" in caught.value.message
    assert MediaType.DOCKER_SCHEMA1_SIGNED in registry.seen[1].headers["Accept"]
    assert "PUT" not in [r.method for r in registry.seen]


def test_index_with_artifact_type_annotations_and_attestations_is_tolerated(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    child = "sha256:" + "1" * 64
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_INDEX,
            "artifactType": "application/vnd.example+type",
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
            "subject": {"mediaType": MediaType.OCI_MANIFEST, "digest": child, "size": 1},
            "manifests": [
                {
                    "mediaType": MediaType.OCI_MANIFEST,
                    "digest": "sha256:" + "2" * 64,
                    "size": 10,
                    "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
                {
                    "mediaType": MediaType.OCI_MANIFEST,
                    "digest": child,
                    "size": 10,
                    "artifactType": "application/vnd.example+type",
                    "platform": {"os": "linux", "architecture": "arm64"},
                    "x-unknown-field": True,
                },
            ],
        }
    ).encode()
    registry = serve(lambda r: _open(r, (200, {"Content-Type": MediaType.OCI_INDEX}, index)))

    with client(registry.host) as registry_client:
        pulled = registry_client.get_manifest("v1")
    chosen = parse_index(pulled.data, pulled.media_type).find(Platform("linux", "arm64", "v8"))

    assert pulled.digest == sha256_digest(index)
    assert chosen is not None
    assert chosen.digest == child


def test_manifest_push_is_byte_exact_with_its_media_type_as_content_type(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    data = b'{"schemaVersion":2,  "mediaType":"' + MediaType.DOCKER_MANIFEST.encode() + b'"}'
    registry = serve(lambda r: _open(r, (201, {"Docker-Content-Digest": sha256_digest(data)}, b"")))

    with client(registry.host) as registry_client:
        digest = registry_client.put_manifest("v1", data, MediaType.DOCKER_MANIFEST)

    [put] = registry.requests("PUT")
    assert (put.body, put.headers["Content-Type"]) == (data, MediaType.DOCKER_MANIFEST)
    assert digest == sha256_digest(data)


def test_https_probe_that_times_out_never_falls_back_to_plain_http() -> None:
    # A server that reads what arrives and never answers: the TLS handshake times out.
    listener = socket.create_server(("127.0.0.1", 0))
    openings: list[bytes] = []
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                held.append(connection)
                openings.append(connection.recv(3))

    threading.Thread(target=accept, daemon=True).start()
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    options = TransportOptions(timeout=0.5, max_retries=0)

    try:
        with (
            RegistryClient(host, "team/app", credential=None, options=options) as c,
            pytest.raises(RegistryError) as caught,
        ):
            c.get_manifest("v1")
    finally:
        listener.close()
        for connection in held:
            connection.close()

    assert caught.value.code == "UNREACHABLE"
    assert "did not answer within 0.5s" in str(caught.value)
    assert f"https://{host}/v2/" in caught.value.message
    # One TLS handshake (0x16 0x03 ...) and no plain HTTP request after it.
    assert [opening[:1] for opening in openings] == [b"\x16"]


def test_a_registry_that_never_answers_is_reported_with_the_whole_wait(
    serve: Callable[[Script], FakeRegistry],
) -> None:
    def stall_manifests(r: Seen) -> Reply:
        return Answer(200, delay=1.5) if "/manifests/" in r.path else (200, {}, b"{}")

    registry = serve(stall_manifests)
    options = TransportOptions(timeout=0.3, max_retries=4)  # but two timeouts end it

    with (
        RegistryClient(registry.host, "team/app", credential=None, options=options) as c,
        pytest.raises(RegistryError) as caught,
    ):
        c.get_manifest("v1")

    assert caught.value.code == "UNREACHABLE"
    assert "the registry did not answer within 0.3s on the last of 2 tries" in str(caught.value)
    assert len([r for r in registry.seen if "/manifests/" in r.path]) == 2
