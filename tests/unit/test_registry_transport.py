"""Transport rules that need no network: loopback, credential safety, redaction, Retry-After."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import trustme

from hatch_jib.config import load_config
from hatch_jib.errors import ConfigError
from hatch_jib.pipeline.steps import transport_options
from hatch_jib.registry.client import _with_digest
from hatch_jib.registry.transport import (
    Transport,
    TransportOptions,
    is_loopback,
    redact_headers,
    redact_url,
    retry_after,
    tls_context,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.9.9.9", True),
        ("[::1]:5000", True),
        ("registry.localhost", True),
        ("10.0.0.1:5000", False),
        ("registry.example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts_are_recognised(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_credentials_go_over_https_or_to_loopback_only() -> None:
    transport = Transport("reg.example", TransportOptions())

    allowed = [
        transport.credentials_allowed(url)
        for url in ("https://reg.example/v2/", "http://127.0.0.1:5000/t", "http://reg.example/v2/")
    ]
    transport.close()

    assert allowed == [True, True, False]


def test_user_may_opt_in_to_credentials_over_http() -> None:
    transport = Transport("reg.example", TransportOptions(send_credentials_over_http=True))

    allowed = transport.credentials_allowed("http://reg.example/v2/")
    transport.close()

    assert allowed is True


def test_plain_http_is_allowed_for_listed_hosts_with_or_without_port() -> None:
    options = TransportOptions(insecure_hosts=frozenset({"reg.internal"}))

    transports = [Transport(host, options) for host in ("reg.internal:5000", "other")]
    verdicts = [transport.plain_http_allowed for transport in transports]
    for transport in transports:
        transport.close()

    assert verdicts == [True, False]


def test_authorization_and_cookies_are_redacted_but_keep_the_scheme() -> None:
    headers = {"Authorization": "Bearer abc.def", "Cookie": "s=1", "Accept": "x"}

    assert redact_headers(headers) == {
        "Authorization": "Bearer ***",
        "Cookie": "***",
        "Accept": "x",
    }


def test_signed_url_query_secrets_are_redacted() -> None:
    url = "https://s3.example/b?X-Amz-Signature=abc&X-Amz-Credential=k&X-Amz-Expires=60"

    assert redact_url(url) == (
        "https://s3.example/b?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Expires=60"
    )


def test_an_upload_sessions_signed_state_is_masked_and_its_digest_kept() -> None:
    state = "zo1TawJfLVjTJxir2pIOamj_kaMdFL5XQSuHos" * 8
    url = f"http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state={state}&digest={DIGEST}"

    assert (
        redact_url(url) == f"http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=***&digest={DIGEST}"
    )


def test_retry_after_accepts_seconds_and_dates_and_is_capped() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after(answer("3")) == 3.0
    assert retry_after(answer("100000")) == 60.0
    assert retry_after(answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0
    assert retry_after(answer("soon")) is None
    assert retry_after(httpx.Response(429)) is None


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://r/v2/a/blobs/uploads/u", f"https://r/v2/a/blobs/uploads/u?digest={DIGEST}"),
        (
            "/v2/a/blobs/uploads/u?_state=x%2By",
            f"/v2/a/blobs/uploads/u?_state=x%2By&digest={DIGEST}",
        ),
        ("/u?", f"/u?digest={DIGEST}"),
    ],
)
def test_digest_is_merged_into_the_upload_location_query(location: str, expected: str) -> None:
    assert _with_digest(location, DIGEST) == expected


def test_ca_file_is_trusted_in_addition_to_the_system_store(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))

    system = tls_context(None).cert_store_stats()["x509_ca"]
    with_ca = tls_context(str(ca_file)).cert_store_stats()["x509_ca"]

    assert with_ca == system + 1


def test_unreadable_ca_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        tls_context(str(tmp_path / "missing.pem"))

    assert "missing.pem" in caught.value.message
    assert "registry-ca-file" in str(caught.value)


def test_registry_ca_file_key_and_env_reach_the_transport_options(tmp_path: Path) -> None:
    table = {"from": {"image": "python:3.12-slim"}, "registry-ca-file": "certs/ca.pem"}

    from_table = transport_options(load_config(table, project_root=tmp_path, environ={}))
    from_env = transport_options(
        load_config(
            {"from": {"image": "python:3.12-slim"}},
            project_root=tmp_path,
            environ={"JIB_REGISTRY_CA_FILE": "/etc/pki/ca.pem"},
        )
    )

    assert from_table.ca_file == str(tmp_path / "certs" / "ca.pem")
    assert from_env.ca_file == "/etc/pki/ca.pem"


def test_upload_chunk_size_key_and_env_reach_the_transport_options(tmp_path: Path) -> None:
    base = {"from": {"image": "python:3.12-slim"}}

    from_table = load_config({**base, "upload-chunk-size": 4096}, project_root=tmp_path, environ={})
    from_env = load_config(base, project_root=tmp_path, environ={"JIB_UPLOAD_CHUNK_SIZE": "8192"})

    assert transport_options(from_table).upload_chunk_size == 4096
    assert transport_options(from_env).upload_chunk_size == 8192
    assert (
        transport_options(load_config(base, project_root=tmp_path, environ={})).upload_chunk_size
        is None
    )


@pytest.mark.parametrize("value", [0, -1, "1MB", True])
def test_upload_chunk_size_must_be_a_positive_integer(tmp_path: Path, value: object) -> None:
    table = {"from": {"image": "python:3.12-slim"}, "upload-chunk-size": value}

    with pytest.raises(ConfigError) as caught:
        load_config(table, project_root=tmp_path, environ={})

    assert "`tool.jib.upload-chunk-size` must be a positive integer" in caught.value.message


def test_threads_asking_at_once_for_the_unverified_client_share_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = Transport("127.0.0.1:5000", TransportOptions())
    made: list[httpx.Client] = []
    second_arrived = threading.Event()
    real_new_client = transport._new_client

    def slow_new_client(*, verify: bool) -> httpx.Client:
        client = real_new_client(verify=verify)
        made.append(client)
        if len(made) == 1:
            # The first maker waits a little for a second one: unguarded, both make a client.
            second_arrived.wait(0.5)
        else:
            second_arrived.set()
        return client

    monkeypatch.setattr(transport, "_new_client", slow_new_client)
    with ThreadPoolExecutor(2) as pool:
        clients = list(pool.map(lambda _: transport._unverified_client(), range(2)))

    assert clients[0] is clients[1]
    assert len(made) == 1
    transport.close()
