"""Transport rules over real sockets: clear-text credentials, proxies, secrets in logs."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from hatch_jib import cancel
from hatch_jib.errors import RegistryError
from hatch_jib.image.descriptor import MediaType, sha256_digest
from hatch_jib.registry import Credential, RegistryClient, TransportOptions, transport
from hatch_jib.registry.transport import Transport
from tests.support.fake_registry import ConnectProxy, Reply, Seen, fake_registry
from tests.support.registry import running_registry

pytestmark = pytest.mark.integration

# A name that is not loopback, resolved to 127.0.0.1 inside the test process only.
REMOTE_NAME = "registry.test"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST}).encode()


@pytest.fixture
def remote_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == REMOTE_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    yield REMOTE_NAME


def basic_registry(r: Seen) -> Reply:
    if "Authorization" not in r.headers:
        return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
    return 200, {"Content-Type": MediaType.OCI_MANIFEST}, MANIFEST


def remote_client(host: str, *, send_over_http: bool) -> RegistryClient:
    options = TransportOptions(
        insecure_hosts=frozenset({REMOTE_NAME}),
        send_credentials_over_http=send_over_http,
        timeout=5.0,
        max_retries=0,
    )
    credential = Credential("user", "PW-SECRET-71", source="the test")
    return RegistryClient(host, "team/app", credential=credential, options=options)


def test_credentials_are_not_sent_over_http_to_a_remote_host(remote_name: str) -> None:
    with fake_registry(basic_registry) as server:
        host = f"{remote_name}:{server.port}"
        with remote_client(host, send_over_http=False) as c, pytest.raises(RegistryError) as caught:
            c.get_manifest("v1")

    assert caught.value.code == "INSECURE_CREDENTIALS"
    assert "send-credentials-over-http" in str(caught.value)
    assert server.seen, "the registry was reached over plain HTTP"
    assert all("Authorization" not in r.headers for r in server.seen)


def test_credentials_go_over_http_when_the_user_opts_in_with_a_warning(
    remote_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hatch_jib")

    with fake_registry(basic_registry) as server:
        host = f"{remote_name}:{server.port}"
        with remote_client(host, send_over_http=True) as c:
            pulled = c.get_manifest("v1")

    assert pulled.data == MANIFEST
    assert server.seen[-1].headers["Authorization"].startswith("Basic ")
    assert f"over plain HTTP to http://{host}" in caplog.text
    assert "PW-SECRET-71" not in caplog.text


def test_token_realm_on_remote_plain_http_gets_no_credentials(remote_name: str) -> None:
    seen_tokens: list[Seen] = []

    def token_script(r: Seen) -> Reply:
        seen_tokens.append(r)
        return 200, {}, b'{"token": "t"}'

    with fake_registry(token_script) as auth:
        realm = f'Bearer realm="http://{remote_name}:{auth.port}/token",service="s"'
        with fake_registry(lambda r: (401, {"WWW-Authenticate": realm}, b"")) as server:
            host = f"{remote_name}:{server.port}"
            with (
                remote_client(host, send_over_http=False) as c,
                pytest.raises(RegistryError) as caught,
            ):
                c.get_manifest("v1")

    assert caught.value.code == "INSECURE_CREDENTIALS"
    assert seen_tokens == []


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    started = ConnectProxy().start()
    yield started
    started.stop()


@pytest.mark.parametrize("trust", ["ca-file", "ssl-cert-file"])
@pytest.mark.parametrize("bypass", [False, True], ids=["https-proxy", "no-proxy"])
def test_https_proxy_is_used_unless_no_proxy_names_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: ConnectProxy, bypass: bool, trust: str
) -> None:
    blob = b"through the proxy" * 4096
    path = tmp_path / "blob"
    path.write_bytes(blob)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    if bypass:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    else:
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

    with running_registry(tmp_path / "reg", "tls") as registry:
        assert registry.ca_file is not None
        # Without a CA file the trust store is loaded lazily, which must not skip the proxy.
        ca_file = str(registry.ca_file) if trust == "ca-file" else None
        if ca_file is None:
            monkeypatch.setenv("SSL_CERT_FILE", str(registry.ca_file))
        options = TransportOptions(ca_file=ca_file, timeout=10.0, max_retries=0)
        with RegistryClient(registry.host, "team/proxy", credential=None, options=options) as c:
            c.upload_blob(sha256_digest(blob), len(blob), path)
            size = c.blob_exists(sha256_digest(blob))

    assert size == len(blob)
    assert proxy.targets == ([] if bypass else [registry.host] * len(proxy.targets))
    # The upload itself went through the tunnel, not only the first probe.
    assert proxy.bytes_up >= (0 if bypass else len(blob))
    assert bypass or proxy.targets


def test_no_secret_reaches_the_debug_log_with_tokens_and_identity_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    blob = b"secrets stay secret"
    path = tmp_path / "blob"
    path.write_bytes(blob)

    with running_registry(tmp_path / "reg", "token") as registry:
        assert registry.token_server is not None and registry.password is not None
        secrets = [registry.password, registry.token_server.refresh_token]
        credentials = [
            Credential(registry.username or "", registry.password, source="a password"),
            Credential("<token>", registry.token_server.refresh_token, source="an identity"),
        ]
        tokens = []
        for credential in credentials:
            options = TransportOptions(timeout=10.0, max_retries=0)
            with RegistryClient(
                registry.host, "team/secret", credential=credential, options=options, push=True
            ) as c:
                c.upload_blob(sha256_digest(blob), len(blob), path)
                tokens.append(c.auth.authorization())

    assert "Bearer ***" in caplog.text
    for secret in [*secrets, *(t.split(" ", 1)[1] for t in tokens if t)]:
        assert secret not in caplog.text


def test_a_plain_http_loopback_registry_never_loads_a_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str | None] = []
    real = transport.tls_context

    def counting(ca_file: str | None) -> ssl.SSLContext:
        loaded.append(ca_file)
        return real(ca_file)

    monkeypatch.setattr(transport, "tls_context", counting)
    blob = b"no trust store needed"
    path = tmp_path / "blob"
    path.write_bytes(blob)
    with running_registry(tmp_path / "reg", "open") as registry:
        options = TransportOptions(timeout=10.0, max_retries=0)
        with RegistryClient(registry.host, "team/app", credential=None, options=options) as c:
            c.upload_blob(sha256_digest(blob), len(blob), path)
            assert c.blob_exists(sha256_digest(blob)) == len(blob)
            assert c.transport.scheme == "http"
    assert loaded == []

    # A TLS registry on loopback still gets one, and is verified with it.
    with running_registry(tmp_path / "tls", "tls") as registry:
        assert registry.ca_file is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(registry.ca_file))
        with closing(Transport(registry.host, TransportOptions(timeout=10.0, max_retries=0))) as t:
            assert t.scheme == "https"
    assert loaded == [None]


def test_clients_sharing_options_probe_a_host_once(tmp_path: Path) -> None:
    with running_registry(tmp_path / "reg", "tls") as registry:
        assert registry.ca_file is not None
        ca_file = str(registry.ca_file)
        options = TransportOptions(ca_file=ca_file, timeout=5.0, max_retries=0)
        with closing(Transport(registry.host, options)) as first:
            assert first.scheme == "https"

    # The registry is gone: a new probe finds no TLS on loopback and settles on plain HTTP,
    # so only a client that reuses the first one's finding still says HTTPS.
    with closing(Transport(registry.host, options)) as shared:
        assert shared.scheme == "https"
    fresh_options = TransportOptions(ca_file=ca_file, timeout=5.0, max_retries=0)
    with closing(Transport(registry.host, fresh_options)) as fresh:
        assert fresh.scheme == "http"


@dataclass
class SilentRegistry:
    """An HTTPS registry that answers its `/v2/` probe and holds every other request."""

    host: str
    ca_file: Path
    asked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def silent_registry(tmp_path: Path) -> Iterator[SilentRegistry]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    registry = SilentRegistry(f"127.0.0.1:{listener.getsockname()[1]}", tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(str(registry.ca_file))

    def serve(connection: socket.socket) -> None:
        with suppress(OSError), context.wrap_socket(connection, server_side=True) as tls:
            while request := tls.recv(65536):
                if not request.startswith(b"GET /v2/ "):
                    registry.asked.set()
                    registry.release.wait(15)
                    return
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def accept() -> None:
        with suppress(OSError):
            while True:
                connection, _ = listener.accept()
                threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield registry
    finally:
        registry.release.set()
        listener.close()


@pytest.mark.parametrize("route", ["direct", "https-proxy"])
def test_a_cancelled_build_stops_waiting_for_a_registry_that_holds_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: ConnectProxy, route: str
) -> None:
    stop, failures = threading.Event(), []

    with silent_registry(tmp_path) as registry:
        if route == "direct":
            monkeypatch.setenv("SSL_CERT_FILE", str(registry.ca_file))  # the lazy trust store
        else:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
        ca_file = None if route == "direct" else str(registry.ca_file)
        options = TransportOptions(ca_file=ca_file, timeout=20.0, max_retries=0)

        def fetch() -> None:
            with cancel.scope(stop):
                try:
                    c.get_manifest("v1")
                except BaseException as error:
                    failures.append(error)

        with RegistryClient(registry.host, "team/app", credential=None, options=options) as c:
            worker = threading.Thread(target=fetch)
            worker.start()
            assert registry.asked.wait(10)
            stop.set()
            worker.join(10)
            held = not registry.release.is_set()

    assert not worker.is_alive() and held
    assert [type(error) for error in failures] == [cancel.Cancelled]
    assert set(proxy.targets) == (set() if route == "direct" else {registry.host})
