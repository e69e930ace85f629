"""Blob uploads against a scripted registry: chunks, lost answers, sessions that break."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from hatch_jib import cancel, progress
from hatch_jib.errors import RegistryError
from hatch_jib.image.descriptor import Descriptor, MediaType, sha256_digest
from hatch_jib.image.image import Image, ImageLayer
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import parse_reference
from hatch_jib.outputs.registry import push_image
from hatch_jib.registry import RegistryClient, TransportOptions
from tests.support.fake_registry import Answer, FakeRegistry, Reply, Seen, fake_registry

pytestmark = pytest.mark.integration

UPLOADS = "/v2/team/app/blobs/uploads/"
BLOB = b"0123456789"
DIGEST = sha256_digest(BLOB)

Fault = Callable[[Seen, int], Reply | None]


@dataclass
class UploadRegistry:
    """A registry that implements uploads properly, unless `fault` answers first.

    `fault(request, n)` sees each request with its 1-based count among requests of that
    method, and may return an answer to inject. Each PATCH answer moves the session to a
    new `_state`, as Distribution does, so a client that reuses a stale Location fails.
    """

    fault: Fault = lambda request, n: None
    post_headers: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, bytearray] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    _sessions: Iterator[int] = field(default_factory=itertools.count)
    _states: Iterator[int] = field(default_factory=itertools.count)

    def __call__(self, request: Seen) -> Reply:
        self.counts[request.method] = self.counts.get(request.method, 0) + 1
        injected = self.fault(request, self.counts[request.method])
        if injected is not None:
            return injected
        path = urlsplit(request.path).path
        if path == "/v2/":
            return 200, {}, b"{}"
        if request.method == "HEAD":
            blob = self.blobs.get(path.rsplit("/", 1)[-1])
            return (404, {}, b"") if blob is None else (200, {}, blob)
        if request.method == "POST":
            return self._open()
        return self._continue(request)

    def _open(self) -> Reply:
        session = f"s{next(self._sessions)}"
        self.sessions[session] = bytearray()
        return 202, {"Location": self._location(session), **self.post_headers}, b""

    def _continue(self, request: Seen) -> Reply:
        parts = urlsplit(request.path)
        session = parts.path.rsplit("/", 1)[-1]
        query = parse_qs(parts.query)
        if session not in self.sessions or query.get("_state") != [self.states[session]]:
            return 404, {}, _errors("BLOB_UPLOAD_UNKNOWN")
        data = self.sessions[session]
        if request.method == "DELETE":
            del self.sessions[session]
            return 204, {}, b""
        if request.method == "PATCH":
            start = int(request.headers["Content-Range"].split("-")[0])
            if start != len(data):
                return 416, {}, _errors("BLOB_UPLOAD_INVALID")
            data += request.body
            headers = {"Location": self._location(session), "Range": f"0-{len(data) - 1}"}
            return 202, headers, b""
        data += request.body
        digest = query["digest"][0]
        if sha256_digest(bytes(data)) != digest:
            return 400, {}, _errors("DIGEST_INVALID")
        self.blobs[digest] = bytes(data)
        del self.sessions[session]
        return 201, {"Docker-Content-Digest": digest}, b""

    def _location(self, session: str) -> str:
        self.states[session] = f"{session}-{next(self._states)}"
        return f"{UPLOADS}{session}?_state={self.states[session]}"


def _errors(code: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()


@pytest.fixture
def blob_file(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(BLOB)
    return path


def upload(
    emulator: UploadRegistry, blob_file: Path, *, chunk: int | None = 4, timeout: float = 5.0
) -> FakeRegistry:
    options = TransportOptions(timeout=timeout, max_retries=2, upload_chunk_size=chunk)
    with fake_registry(emulator) as server:
        with RegistryClient(server.host, "team/app", credential=None, options=options) as c:
            c.upload_blob(DIGEST, len(BLOB), blob_file)
        return server


def test_chunked_upload_sends_content_ranges_to_the_latest_location(blob_file: Path) -> None:
    emulator = UploadRegistry()

    server = upload(emulator, blob_file)

    patches = server.requests("PATCH")
    assert [p.headers["Content-Range"] for p in patches] == ["0-3", "4-7", "8-9"]
    assert [p.body for p in patches] == [b"0123", b"4567", b"89"]
    [put] = server.requests("PUT")
    assert put.body == b""
    assert put.path.endswith(f"&digest={DIGEST}")
    assert emulator.blobs == {DIGEST: BLOB}


def test_chunks_grow_to_the_registrys_minimum_chunk_length(blob_file: Path) -> None:
    emulator = UploadRegistry(post_headers={"OCI-Chunk-Min-Length": "6"})

    server = upload(emulator, blob_file)

    assert [p.headers["Content-Range"] for p in server.requests("PATCH")] == ["0-5", "6-9"]
    assert emulator.blobs == {DIGEST: BLOB}


def test_small_blob_goes_in_one_put_when_chunking_is_not_configured(blob_file: Path) -> None:
    emulator = UploadRegistry()

    server = upload(emulator, blob_file, chunk=None)

    assert server.requests("PATCH") == []
    assert [put.body for put in server.requests("PUT")] == [BLOB]
    assert emulator.blobs == {DIGEST: BLOB}


def test_patch_that_times_out_is_never_resent_and_a_new_session_starts(blob_file: Path) -> None:
    def slow_second_patch(request: Seen, n: int) -> Reply | None:
        return Answer(202, delay=1.5) if request.method == "PATCH" and n == 2 else None

    emulator = UploadRegistry(fault=slow_second_patch)

    server = upload(emulator, blob_file, timeout=0.5)

    assert emulator.blobs == {DIGEST: BLOB}
    assert len(server.requests("POST")) == 2
    # Each (session, range) pair went out once: the timed-out PATCH was not replayed.
    sent = [(urlsplit(p.path).path, p.headers["Content-Range"]) for p in server.requests("PATCH")]
    assert len(sent) == len(set(sent))
    assert sent[:2] == [(f"{UPLOADS}s0", "0-3"), (f"{UPLOADS}s0", "4-7")]


@pytest.mark.parametrize(
    "answer",
    [
        (404, {}, _errors("BLOB_UPLOAD_UNKNOWN")),
        (500, {}, b"storage driver error"),
        (502, {}, b"<html>bad gateway</html>"),
    ],
    ids=["blob-upload-unknown", "500", "502"],
)
def test_patch_failure_restarts_the_upload_in_a_new_session(blob_file: Path, answer: Reply) -> None:
    emulator = UploadRegistry(
        fault=lambda request, n: answer if request.method == "PATCH" and n == 1 else None
    )

    server = upload(emulator, blob_file)

    assert emulator.blobs == {DIGEST: BLOB}
    assert [urlsplit(p.path).path for p in server.requests("PATCH")] == [
        f"{UPLOADS}s0",
        *[f"{UPLOADS}s1"] * 3,
    ]
    # The broken session was ended, not left to expire.
    assert [urlsplit(d.path).path for d in server.requests("DELETE")] == [f"{UPLOADS}s0"]
    assert emulator.sessions == {}


def test_an_upload_whose_sessions_time_out_twice_gives_the_registry_up(blob_file: Path) -> None:
    def stall_puts(request: Seen, n: int) -> Reply | None:
        return Answer(201, delay=1.0) if request.method == "PUT" else None

    emulator = UploadRegistry(fault=stall_puts)

    with pytest.raises(RegistryError) as caught:
        upload(emulator, blob_file, chunk=None, timeout=0.3)  # with 2 retries, 3 sessions

    assert caught.value.code == "UNREACHABLE"
    assert emulator.counts["POST"] == 2


def test_put_whose_answer_is_lost_is_checked_with_head_and_not_resent(blob_file: Path) -> None:
    emulator = UploadRegistry()

    def store_then_drop(request: Seen, n: int) -> Reply | None:
        if request.method != "PUT":
            return None
        emulator.fault = lambda request, n: None
        emulator(request)  # the registry stores the blob, then the answer is lost
        return Answer(drop=True)

    emulator.fault = store_then_drop

    server = upload(emulator, blob_file, chunk=None)

    assert emulator.blobs == {DIGEST: BLOB}
    assert [r.method for r in server.seen] == ["GET", "POST", "PUT", "HEAD"]


def test_range_that_disagrees_with_the_bytes_sent_restarts_the_upload(blob_file: Path) -> None:
    def short_range(request: Seen, n: int) -> Reply | None:
        if request.method == "PATCH" and n == 1:
            return 202, {"Location": f"{UPLOADS}lost", "Range": "0-1"}, b""
        return None

    emulator = UploadRegistry(fault=short_range)

    server = upload(emulator, blob_file)

    assert emulator.blobs == {DIGEST: BLOB}
    assert len(server.requests("POST")) == 2
    assert all("lost" not in p.path for p in server.requests("PATCH"))


def test_upload_that_keeps_failing_raises_the_registrys_error(blob_file: Path) -> None:
    emulator = UploadRegistry(
        fault=lambda request, n: (503, {}, b"") if request.method == "PATCH" else None
    )

    with pytest.raises(RegistryError) as caught:
        upload(emulator, blob_file)

    assert caught.value.status == 503
    assert "PATCH blob" in caught.value.message
    assert "team/app" in caught.value.message
    assert emulator.counts["POST"] == 3


def test_digest_rejected_by_the_registry_is_not_retried(blob_file: Path) -> None:
    emulator = UploadRegistry(
        fault=lambda request, n: (
            (400, {}, _errors("DIGEST_INVALID")) if request.method == "PUT" else None
        )
    )

    with pytest.raises(RegistryError) as caught:
        upload(emulator, blob_file)

    assert caught.value.code == "DIGEST_INVALID"
    assert emulator.counts["POST"] == 1


def test_upload_continues_the_session_a_refused_mount_opened(blob_file: Path) -> None:
    emulator = UploadRegistry()
    options = TransportOptions(timeout=5.0, max_retries=0)

    with (
        fake_registry(emulator) as server,
        RegistryClient(server.host, "team/app", credential=None, options=options) as c,
    ):
        mounted = c.mount_blob(DIGEST, "team/base")
        c.upload_blob(DIGEST, len(BLOB), blob_file)

    assert mounted is False
    assert emulator.blobs == {DIGEST: BLOB}
    [post] = server.requests("POST")
    assert "mount=" in post.path
    assert server.requests("DELETE") == []


def test_session_a_refused_mount_opened_is_cancelled_when_unused(blob_file: Path) -> None:
    emulator = UploadRegistry()
    options = TransportOptions(timeout=5.0, max_retries=0)

    with (
        fake_registry(emulator) as server,
        RegistryClient(server.host, "team/app", credential=None, options=options) as c,
    ):
        c.mount_blob(DIGEST, "team/base")

    [delete] = server.requests("DELETE")
    assert urlsplit(delete.path).path == f"{UPLOADS}s0"
    assert emulator.sessions == {}


def test_a_cancelled_build_closes_a_client_whose_registry_is_slow_to_end_a_session(
    blob_file: Path,
) -> None:
    release = threading.Event()

    def hold_deletes(request: Seen, n: int) -> Reply | None:
        if request.method == "DELETE" and release.wait(10):
            return Answer(drop=True)  # the client has gone
        return None

    emulator = UploadRegistry(fault=hold_deletes)
    options = TransportOptions(timeout=5.0, max_retries=0)
    cancelled = threading.Event()
    with fake_registry(emulator) as server:
        try:
            c = RegistryClient(server.host, "team/app", credential=None, options=options)
            c.mount_blob(DIGEST, "team/base")
            cancelled.set()
            with cancel.scope(cancelled):
                c.close()  # its cleanup is cut short, not its closing
        finally:
            release.set()

    [delete] = server.requests("DELETE")
    assert urlsplit(delete.path).path == f"{UPLOADS}s0"


def test_config_goes_up_beside_the_layers_and_the_manifest_after_every_blob(
    tmp_path: Path,
) -> None:
    layer, config = b"layer bytes", b'{"architecture": "amd64"}'
    paths = _blob_files(tmp_path, layer, config)
    config_arrived = threading.Event()

    def hold_layer_until_config(request: Seen, n: int) -> Reply | None:
        digest = _digest_param(request)
        if request.method == "PUT" and "/manifests/" in request.path:
            return 201, {"Docker-Content-Digest": sha256_digest(request.body)}, b""
        if request.method == "PUT" and digest == sha256_digest(config):
            config_arrived.set()
        # Pushed one after the other, the layer would wait here for a config never sent.
        layer_put = request.method == "PUT" and digest == sha256_digest(layer)
        if layer_put and not config_arrived.wait(10):
            return 500, {}, _errors("CONFIG_NEVER_CAME")
        return None

    image = _image(layer, config)
    emulator = UploadRegistry(fault=hold_layer_until_config)
    options = TransportOptions(timeout=20.0, max_retries=0)
    with fake_registry(emulator) as server:
        _push(server, options, image, paths)

    assert set(emulator.blobs) == set(paths)
    puts = [urlsplit(request.path).path for request in server.requests("PUT")]
    assert puts[-1] == "/v2/team/app/manifests/v1"
    assert all("/manifests/" not in path for path in puts[:-1])


def test_a_blob_that_fails_stops_the_other_uploads_and_no_manifest_is_pushed(
    tmp_path: Path,
) -> None:
    layer, config = bytes(range(256)) * 2, b'{"architecture": "amd64"}'
    paths = _blob_files(tmp_path, layer, config)
    patches_when_config_failed: list[int] = []

    def slow_layer_refused_config(request: Seen, n: int) -> Reply | None:
        digest = _digest_param(request)
        if request.method == "PUT" and digest == sha256_digest(config):
            patches_when_config_failed.append(emulator.counts.get("PATCH", 0))
            return 403, {}, _errors("DENIED")
        if request.method == "PATCH":
            time.sleep(0.05)  # 128 chunks of 4 bytes: about 6 s if nothing stopped the layer
        return None

    emulator = UploadRegistry(fault=slow_layer_refused_config)
    options = TransportOptions(timeout=20.0, max_retries=0, upload_chunk_size=4)
    states: dict[str, str] = {}
    stop_listening = progress.subscribe(
        lambda event: states.update({event.digest: event.state}) if event.state != "sent" else None
    )
    with fake_registry(emulator) as server, pytest.raises(RegistryError) as caught:
        _push(server, options, _image(layer, config), paths)
    stop_listening()

    assert caught.value.code == "DENIED"
    assert states == {sha256_digest(config): "failed", sha256_digest(layer): "cancelled"}
    # The layer stopped at its next chunk instead of sending the other hundred or so.
    assert emulator.counts["PATCH"] <= patches_when_config_failed[0] + 2 < 64
    assert all("/manifests/" not in request.path for request in server.seen)


def test_an_upload_waiting_for_the_registrys_answer_stops_when_another_blob_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hatch_jib")
    layer, config = b"layer bytes" * 64, b'{"architecture": "amd64"}'
    paths = _blob_files(tmp_path, layer, config)
    layer_held, release, answered_late = threading.Event(), threading.Event(), threading.Event()

    def hold_layer_refuse_config(request: Seen, n: int) -> Reply | None:
        digest = _digest_param(request)
        if request.method == "PUT" and digest == sha256_digest(layer):
            # Every byte is in; the registry takes its time to answer.
            layer_held.set()
            if release.wait(15):
                return Answer(drop=True)  # the client has gone
            answered_late.set()
        if request.method == "PUT" and digest == sha256_digest(config):
            layer_held.wait(10)
            return 403, {}, _errors("DENIED")
        return None

    emulator = UploadRegistry(fault=hold_layer_refuse_config)
    options = TransportOptions(timeout=20.0, max_retries=0)
    with fake_registry(emulator) as server:
        try:
            with pytest.raises(RegistryError) as caught:
                _push(server, options, _image(layer, config), paths)
            # The push gave up on the layer's answer rather than waiting it out.
            assert layer_held.is_set() and not answered_late.is_set()
        finally:
            release.set()

    assert caught.value.code == "DENIED"
    assert all("/manifests/" not in request.path for request in server.seen)
    short = sha256_digest(layer).partition(":")[2][:12]
    assert f"{short} not pushed: the push was stopped" in caplog.text


def test_a_restarted_upload_waits_as_long_as_the_registrys_retry_after(blob_file: Path) -> None:
    posts: list[float] = []

    def rate_limited_once(request: Seen, n: int) -> Reply | None:
        if request.method == "POST":
            posts.append(time.monotonic())
        if request.method == "PUT" and n == 1:
            return 429, {"Retry-After": "2"}, _errors("TOOMANYREQUESTS")
        return None

    emulator = UploadRegistry(fault=rate_limited_once)

    upload(emulator, blob_file, chunk=None)

    assert emulator.blobs == {DIGEST: BLOB}
    assert len(posts) == 2 and posts[1] - posts[0] >= 1.9


def _digest_param(request: Seen) -> str:
    """The `digest` a closing upload PUT names, or ""."""
    return parse_qs(urlsplit(request.path).query).get("digest", [""])[0]


def _push(
    server: FakeRegistry, options: TransportOptions, image: Image, paths: dict[str, Path]
) -> None:
    """Push `image`, whose blobs are in `paths`, to team/app:v1 on `server`."""
    with RegistryClient(server.host, "team/app", credential=None, options=options) as c:
        target = parse_reference(f"{server.host}/team/app")
        push_image(image, client=c, target=target, tags=["v1"], blob_path=paths.__getitem__)


def _blob_files(directory: Path, *blobs: bytes) -> dict[str, Path]:
    """Each blob in a file of its own, by digest."""
    paths = {}
    for data in blobs:
        paths[sha256_digest(data)] = directory / sha256_digest(data).replace(":", "-")
        paths[sha256_digest(data)].write_bytes(data)
    return paths


def _image(layer: bytes, config: bytes) -> Image:
    config_descriptor = Descriptor(MediaType.OCI_CONFIG, sha256_digest(config), len(config))
    layer_descriptor = Descriptor(MediaType.OCI_LAYER_GZIP, sha256_digest(layer), len(layer))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_MANIFEST,
            "config": config_descriptor.to_json(),
            "layers": [layer_descriptor.to_json()],
        }
    ).encode()
    return Image(
        platform=Platform(),
        manifest_media_type=MediaType.OCI_MANIFEST,
        manifest_bytes=manifest,
        config=config_descriptor,
        config_bytes=config,
        layers=(ImageLayer(layer_descriptor, sha256_digest(b"tar"), "code"),),
    )
