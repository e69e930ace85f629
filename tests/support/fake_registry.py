"""A scripted HTTP server on 127.0.0.1 for registry quirks a real registry will not produce.

Each test passes a script: a function from the request it received (`Seen`) to the answer,
either a plain `(status, headers, body)` tuple or an `Answer` that can also delay, leave out
`Content-Length`, or drop the connection. Every request is recorded in order.

`ConnectProxy` is a forward proxy that tunnels `CONNECT` and records each target, for
checking that `HTTPS_PROXY` and `NO_PROXY` are honoured.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = [
    "Answer",
    "ConnectProxy",
    "FakeRegistry",
    "Reply",
    "Script",
    "Seen",
    "fake_registry",
]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """A scripted answer with the misbehaviours a tuple cannot express."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (a slow or stuck server)
    content_length: bool = True  # False: send no Content-Length (HEAD only) and close
    drop: bool = False  # close the connection without any answer


Reply = tuple[int, dict[str, str], bytes] | Answer
Script = Callable[[Seen], Reply]


@dataclass
class FakeRegistry:
    """An HTTP server whose answers come from `script`; `seen` lists what it received."""

    script: Script
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self, method: str) -> list[Seen]:
        return [request for request in self.seen if request.method == method]

    def start(self) -> FakeRegistry:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextlib.contextmanager
def fake_registry(script: Script) -> Iterator[FakeRegistry]:
    server = FakeRegistry(script).start()
    try:
        yield server
    finally:
        server.stop()


def _handler_for(fake: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet

        def _any(self) -> None:
            request = Seen(self.command, self.path, dict(self.headers.items()), self._body())
            fake.seen.append(request)
            reply = fake.script(request)
            answer = reply if isinstance(reply, Answer) else Answer(*reply)
            if answer.delay:
                time.sleep(answer.delay)
            if answer.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(answer)

        def _send(self, answer: Answer) -> None:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.content_length:
                self.send_header("Content-Length", str(len(answer.body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._chunked_body()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _chunked_body(self) -> bytes:
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(parts)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return Handler


@dataclass
class ConnectProxy:
    """A forward proxy on 127.0.0.1 that tunnels CONNECT; `targets` records each one and
    `bytes_up` counts what clients sent through the tunnels."""

    targets: list[str] = field(default_factory=list)
    bytes_up: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ConnectProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.targets.append(self.path)
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
                self.send_response(200, "Connection established")
                self.end_headers()
                _pipe(self.connection, upstream, proxy._count_up)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _count_up(self, size: int) -> None:
        with _COUNT_LOCK:
            self.bytes_up += size

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


_COUNT_LOCK = threading.Lock()


def _pipe(client: socket.socket, upstream: socket.socket, count_up: Callable[[int], None]) -> None:
    """Copy bytes both ways until either side closes, counting those sent upstream."""
    sockets = [client, upstream]
    with upstream:
        while True:
            readable, _, _ = select.select(sockets, [], [], 10)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is client:
                    count_up(len(data))
                (upstream if sock is client else client).sendall(data)
