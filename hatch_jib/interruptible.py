"""HTTP connections whose waits a cancelled build breaks off within a moment.

A thread blocked in `recv` or `connect` cannot be asked to stop: a registry that holds its
answer to an upload, a download that stalls or a host that drops packets would keep a failed
or Ctrl-C'd build waiting for the whole timeout. So the sockets of our httpx clients wait in
short slices, and between two slices `cancel.checkpoint()` raises `Cancelled` if the build
was cancelled. Timeouts still count as httpcore counts them: from the start of a connect, a
TLS handshake or a read, and from a write's last progress.
"""

from __future__ import annotations

import errno
import functools
import os
import selectors
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import httpcore
import httpx

from hatch_jib import cancel

try:  # httpcore's stream over a socket, for the connections we open ourselves
    from httpcore._backends.sync import SyncStream as _SocketStream
except ImportError:  # pragma: no cover - a later httpcore: connect and handshake as it does
    _SocketStream = None  # type: ignore[assignment,misc]

__all__ = ["SLICE", "InterruptibleBackend", "interruptible", "interruptible_transport"]

T = TypeVar("T")

# How long a cancelled build may go on waiting on a socket, at most.
SLICE = 0.1

# A non-blocking connect under way (EINTR too: the kernel goes on connecting).
_IN_PROGRESS = {
    errno.EINPROGRESS,
    errno.EWOULDBLOCK,
    errno.EINTR,
    getattr(errno, "WSAEWOULDBLOCK", -1),
}


def interruptible(client: httpx.Client) -> httpx.Client:
    """`client`, with every connection pool it holds made interruptible; see the module."""
    interruptible_transport(client._transport)
    for transport in client._mounts.values():
        interruptible_transport(transport)
    return client


def interruptible_transport(transport: httpx.BaseTransport | None) -> None:
    """Give an httpx transport's connection pool (direct or through a proxy) our backend.

    httpx has no public way to choose the network backend of its transports, so this sets
    the pool's; the tests check that it took, so an httpx release that moves it fails them.
    """
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore.ConnectionPool):
        backend = pool._network_backend
        if not isinstance(backend, InterruptibleBackend):
            pool._network_backend = InterruptibleBackend(backend)


class InterruptibleBackend(httpcore.NetworkBackend):
    """Opens connections as `inner` does and hands out interruptible streams over them."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner
        # Only httpcore's own backend gives streams we know to be a plain socket's.
        self._direct = type(inner) is httpcore.SyncBackend and _SocketStream is not None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if not self._direct:
            stream = self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
            return _Stream(stream, direct=False)
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            sock = _open_connection(host, port, timeout, local_address, socket_options or ())
        return _Stream(_SocketStream(sock), direct=True)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        # A local socket answers a connect at once or not at all.
        stream = self.inner.connect_unix_socket(path, timeout, socket_options)
        return _Stream(stream, direct=self._direct)

    def sleep(self, seconds: float) -> None:
        cancel.sleep(seconds)


class _Stream(httpcore.NetworkStream):
    """A connection whose reads and writes wait at most `SLICE` between checkpoints."""

    def __init__(self, inner: httpcore.NetworkStream, *, direct: bool) -> None:
        self._inner = inner
        sock = inner.get_extra_info("socket")
        self._socket = sock if direct and isinstance(sock, socket.socket) else None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # A read that times out has consumed nothing, so it can simply be asked again.
        return _sliced(
            lambda wait: self._inner.read(max_bytes, wait), timeout, httpcore.ReadTimeout
        )

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._socket is None:
            # TODO(#4): a stream that is not a plain socket's (TLS inside an HTTPS proxy's
            # tunnel) may have sent part of a buffer when it times out, so its writes cannot
            # be asked again: a stalled write there waits out the timeout.
            self._inner.write(buffer, timeout)
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            _send_all(self._socket, memoryview(buffer), timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        if self._socket is not None and not isinstance(self._socket, ssl.SSLSocket):
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                tls = _handshake(self._socket, ssl_context, server_hostname, timeout)
            return _Stream(_SocketStream(tls), direct=True)
        # TODO(#4): TLS inside TLS (an HTTPS proxy's tunnel) is httpcore's, so its handshake
        # is not sliced: a target that goes silent there holds a cancelled build until the
        # connect timeout. Slicing it means a TLS-in-TLS stream of our own.
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), direct=False)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


def _open_connection(
    host: str,
    port: int,
    timeout: float | None,
    local_address: str | None,
    options: Iterable[httpcore.SOCKET_OPTION],
) -> socket.socket:
    """A connected TCP socket to the first address of `host` that answers, as
    `socket.create_connection` gives (each address with the whole timeout), but waiting in
    slices. Name resolution is not sliced."""
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock: socket.socket | None = None
        try:
            # Inside the try: a family this kernel lacks (IPv6) moves on to the next address.
            sock = socket.socket(family, kind, proto)
            for option in options:
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local_address is not None:
                sock.bind((local_address, 0))
            _connect(sock, address, timeout)
        except BaseException as error:
            if sock is not None:
                sock.close()
            if not isinstance(error, OSError):
                raise
            failure = error
            continue
        return sock
    raise failure


def _connect(sock: socket.socket, address: tuple[Any, ...], timeout: float | None) -> None:
    sock.setblocking(False)
    result = sock.connect_ex(address)
    if result in _IN_PROGRESS:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_WRITE)
            _sliced(lambda wait: _ready(selector.select(wait)), timeout)
        result = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if result:
        raise OSError(result, os.strerror(result))
    sock.setblocking(True)


def _ready(events: Sequence[object]) -> None:
    if not events:
        raise TimeoutError("timed out")


def _handshake(
    sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
) -> ssl.SSLSocket:
    # A handshake that times out waits for the peer, and goes on where it stopped.
    tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    try:
        _sliced(functools.partial(_timed, tls, tls.do_handshake), timeout)
    except BaseException:
        tls.close()
        raise
    return tls


def _send_all(sock: socket.socket, data: memoryview, timeout: float | None) -> None:
    # As in httpcore, the timeout runs from the last progress, not from the first byte: a
    # slow reader that keeps taking bytes is not a stalled one. After a timed-out `send`,
    # TLS needs the same bytes offered again, which they are.
    while data:
        sent = _sliced(functools.partial(_timed, sock, functools.partial(sock.send, data)), timeout)
        data = data[sent:]


def _timed(sock: socket.socket, operation: Callable[[], T], wait: float) -> T:
    """`operation()` on `sock`, given `wait` seconds to make progress."""
    sock.settimeout(wait)
    return operation()


def _sliced(
    attempt: Callable[[float], T],
    timeout: float | None,
    timed_out: type[BaseException] = TimeoutError,
) -> T:
    """`attempt(wait)` until it does not raise `timed_out`, each wait at most `SLICE`, with
    a cancellation checkpoint between two; the last `timed_out` once `timeout` has passed."""
    deadline = _deadline(timeout)
    while True:
        try:
            return attempt(_slice(deadline))
        except timed_out:
            if _expired(deadline):
                raise
            cancel.checkpoint()


@contextmanager
def _mapped(
    timed_out: type[httpcore.TimeoutException], failed: type[httpcore.NetworkError]
) -> Iterator[None]:
    """Socket errors as the httpcore errors httpx expects, each caused by the original."""
    try:
        yield
    except TimeoutError as error:
        raise timed_out(str(error)) from error
    except OSError as error:
        raise failed(str(error)) from error


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _slice(deadline: float | None) -> float:
    # Never 0, which would make the socket non-blocking rather than quick to time out.
    if deadline is None:
        return SLICE
    return max(0.001, min(SLICE, deadline - time.monotonic()))


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
