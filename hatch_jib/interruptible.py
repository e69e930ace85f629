"""HTTP connections whose waits a cancelled build breaks off within a moment.

A thread blocked in `recv` cannot be asked to stop: a registry that holds its answer to an
upload, or a download that stalls, would keep a failed or Ctrl-C'd build waiting for the
whole read timeout. So the sockets of our httpx clients wait in short slices, and between
two slices `cancel.checkpoint()` raises `Cancelled` if the build was cancelled. Timeouts
still count as httpcore counts them: from the start of a read, and from a write's last
progress. Opening a connection (DNS, TCP, the TLS handshake) is not sliced.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable

import httpcore
import httpx

from hatch_jib import cancel

__all__ = ["SLICE", "InterruptibleBackend", "interruptible", "interruptible_transport"]

# How long a cancelled build may go on waiting on a socket, at most.
SLICE = 0.1


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
        # Only a stream we know to be a socket's (httpcore's own) is written to directly.
        self._direct = type(inner) is httpcore.SyncBackend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream, direct=self._direct)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
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
        deadline = _deadline(timeout)
        while True:
            try:
                return self._inner.read(max_bytes, _slice(deadline))
            except httpcore.ReadTimeout:
                if _expired(deadline):
                    raise
                cancel.checkpoint()

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._socket is None:
            # TODO(#4): a stream that is not a plain socket's (TLS inside an HTTPS proxy's
            # tunnel) may have sent part of a buffer when it times out, so its writes cannot
            # be asked again: a stalled write there waits out the timeout.
            self._inner.write(buffer, timeout)
            return
        try:
            _send_all(self._socket, memoryview(buffer), timeout)
        except TimeoutError as error:
            raise httpcore.WriteTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.WriteError(str(error)) from error

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, timeout)
        # TLS over a plain socket is a stream of the same kind over an SSL socket.
        return _Stream(tls, direct=self._socket is not None and type(tls) is type(self._inner))

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


def _send_all(sock: socket.socket, data: memoryview, timeout: float | None) -> None:
    # As in httpcore, the timeout runs from the last progress, not from the first byte: a
    # slow reader that keeps taking bytes is not a stalled one.
    deadline = _deadline(timeout)
    while data:
        sock.settimeout(_slice(deadline))
        try:
            sent = sock.send(data)
        except TimeoutError:
            if _expired(deadline):
                raise
            # After a timed-out `send`, TLS needs the same bytes offered again, which they are.
            cancel.checkpoint()
            continue
        data = data[sent:]
        deadline = _deadline(timeout)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _slice(deadline: float | None) -> float:
    # Never 0, which would make the socket non-blocking rather than quick to time out.
    if deadline is None:
        return SLICE
    return max(0.001, min(SLICE, deadline - time.monotonic()))


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
