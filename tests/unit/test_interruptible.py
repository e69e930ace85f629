"""Connections that a cancelled build breaks off, over real sockets on 127.0.0.1."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
import pytest
import trustme

from hatch_jib import cancel
from hatch_jib.interruptible import InterruptibleBackend, interruptible

# More than the socket buffers of both ends hold, so a write to a peer that reads
# nothing blocks.
BIG = bytes(range(256)) * (32 * 1024)  # 8 MiB


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@contextmanager
def peer(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A listener on 127.0.0.1 whose first connection `handle` serves; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            handle(connection)
        done.set()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        done.wait(10)


@contextmanager
def silent_peer() -> Iterator[int]:
    """A peer that accepts, then neither reads nor writes until the block ends."""
    leave = threading.Event()
    with peer(lambda connection: leave.wait(10)) as port:
        try:
            yield port
        finally:
            leave.set()


def cancelled_after(seconds: float) -> threading.Event:
    event = threading.Event()
    threading.Timer(seconds, event.set).start()
    return event


def connect(port: int) -> httpcore.NetworkStream:
    return InterruptibleBackend(httpcore.SyncBackend()).connect_tcp("127.0.0.1", port, 5.0)


def test_a_read_from_a_silent_peer_stops_when_the_build_is_cancelled() -> None:
    with silent_peer() as port:
        stream = connect(port)
        with cancel.scope(cancelled_after(0.2)), pytest.raises(cancel.Cancelled):
            stream.read(1024, timeout=8.0)
        stream.close()


def test_a_write_to_a_peer_that_reads_nothing_stops_when_the_build_is_cancelled() -> None:
    with silent_peer() as port:
        stream = connect(port)
        with cancel.scope(cancelled_after(0.2)), pytest.raises(cancel.Cancelled):
            stream.write(BIG, timeout=8.0)
        stream.close()


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port whose accept queue is full: a new connection's SYN goes unanswered, as from a
    host that drops packets."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))
    yield port
    queued.close()
    listener.close()


def test_a_connect_to_a_host_that_drops_packets_stops_when_the_build_is_cancelled(
    full_listener: int,
) -> None:
    with cancel.scope(cancelled_after(0.2)), pytest.raises(cancel.Cancelled):
        InterruptibleBackend(httpcore.SyncBackend()).connect_tcp("127.0.0.1", full_listener, 8.0)


def test_a_connect_still_times_out_and_a_refused_one_fails_at_once(full_listener: int) -> None:
    backend = InterruptibleBackend(httpcore.SyncBackend())
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()

    with cancel.scope(threading.Event()):
        with pytest.raises(httpcore.ConnectTimeout):
            backend.connect_tcp("127.0.0.1", full_listener, 0.3)
        started = time.monotonic()
        with pytest.raises(httpcore.ConnectError) as refused:
            backend.connect_tcp("127.0.0.1", closed_port, 8.0)

    assert time.monotonic() - started < 4.0
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)


def test_an_address_whose_socket_cannot_be_made_gives_way_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socket.getaddrinfo

    def unusable_first(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        family, kind, _, name, address = found[0]
        return [(family, kind, 9999, name, address), *found]  # no such protocol

    monkeypatch.setattr(socket, "getaddrinfo", unusable_first)
    with peer(lambda connection: connection.sendall(b"hello")) as port:
        stream = InterruptibleBackend(httpcore.SyncBackend()).connect_tcp("127.0.0.1", port, 5.0)
        greeting = stream.read(5, timeout=5.0)
        stream.close()

    assert greeting == b"hello"


def test_a_tls_handshake_with_a_silent_peer_stops_when_the_build_is_cancelled() -> None:
    with silent_peer() as port:
        stream = connect(port)
        with cancel.scope(cancelled_after(0.2)), pytest.raises(cancel.Cancelled):
            stream.start_tls(ssl.create_default_context(), "localhost", timeout=8.0)
        stream.close()


def test_a_read_still_times_out_after_the_whole_timeout() -> None:
    with silent_peer() as port:
        stream = connect(port)
        started = time.monotonic()
        with cancel.scope(threading.Event()), pytest.raises(httpcore.ReadTimeout):
            stream.read(1024, timeout=0.35)
        waited = time.monotonic() - started
        stream.close()

    assert waited >= 0.35


def test_a_write_to_a_slow_reader_that_keeps_reading_does_not_time_out() -> None:
    def read_slowly(connection: socket.socket) -> None:
        left = len(BIG)
        while left:
            time.sleep(0.1)  # far slower than loopback, but never 0.5 s without reading
            left -= len(connection.recv(min(left, 1024 * 1024)))
        connection.sendall(b"ok")

    with peer(read_slowly) as port:
        stream = connect(port)
        with cancel.scope(threading.Event()):
            stream.write(BIG, timeout=0.5)
            answer = stream.read(2, timeout=10.0)
        stream.close()

    assert answer == b"ok"


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_write_that_waits_through_many_slices_delivers_every_byte_once(
    ca: trustme.CA, tls: bool
) -> None:
    received = hashlib.sha256()

    def read_late(connection: socket.socket) -> None:
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost").configure_cert(context)
            connection = context.wrap_socket(connection, server_side=True)
        time.sleep(0.5)  # the writer's send buffer fills, and its sends time out
        left = len(BIG)
        while left:
            chunk = connection.recv(min(left, 65536))
            assert chunk
            received.update(chunk)
            left -= len(chunk)
        connection.sendall(b"ok")

    with peer(read_late) as port:
        stream = connect(port)
        if tls:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            stream = stream.start_tls(context, "localhost", timeout=5.0)
        with cancel.scope(threading.Event()):
            stream.write(BIG, timeout=10.0)
            answer = stream.read(2, timeout=10.0)
        stream.close()

    assert answer == b"ok"
    assert received.hexdigest() == hashlib.sha256(BIG).hexdigest()


def test_every_pool_of_a_client_with_proxies_gets_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")

    with interruptible(httpx.Client(trust_env=True)) as client:
        transports = [client._transport, *client._mounts.values()]
        pools = [getattr(transport, "_pool", None) for transport in transports]

    assert len(pools) >= 3
    assert all(isinstance(pool._network_backend, InterruptibleBackend) for pool in pools)
