"""The transport rules for talking to a registry: TLS, insecure hosts, retries and redirects.

One `Transport` serves one registry host. It picks the scheme (HTTPS first; plain HTTP only
for loopback or hosts the user allowed), retries idempotent requests on 429 and 5xx with
backoff and `Retry-After`, follows redirects itself so `Location` is used as sent and
`Authorization` never reaches another origin, and logs each exchange at DEBUG with secrets
redacted.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import random
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import urljoin, urlsplit

import httpx

from hatch_jib import cancel
from hatch_jib.errors import ConfigError, RegistryError
from hatch_jib.interruptible import interruptible, interruptible_transport

__all__ = [
    "MAX_TIMEOUTS",
    "Body",
    "HostFacts",
    "Transport",
    "TransportOptions",
    "is_loopback",
    "origin_of",
    "redact_headers",
    "redact_url",
    "retry_after",
    "tls_context",
]

log = logging.getLogger(__name__)

# A request body: bytes, or a factory giving a fresh chunk iterator for each attempt.
Body: TypeAlias = bytes | Callable[[], Iterable[bytes]] | None

_MAX_REDIRECTS = 10
_MAX_RETRY_AFTER = 60.0
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# Timeouts of one request, or of one blob's upload sessions, before the registry is given up.
MAX_TIMEOUTS = 2
_SECRET_QUERY_WORDS = ("signature", "token", "credential", "secret", "password", "key")
_INSECURE_HINT = (
    "is it running? for a plain HTTP registry add it to `tool.jib.allow-insecure-registries`"
    " (or JIB_ALLOW_INSECURE_REGISTRIES)"
)


class HostFacts:
    """What probing a host found (its scheme, and whether TLS is used unverified), kept for
    the other clients of the same build so each host is probed once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[str, tuple[str, bool]] = {}

    def get(self, host: str) -> tuple[str, bool] | None:
        with self._lock:
            return self._found.get(host.lower())

    def put(self, host: str, scheme: str, verify_tls: bool) -> None:
        with self._lock:
            self._found[host.lower()] = (scheme, verify_tls)


@dataclass(frozen=True)
class TransportOptions:
    """How to reach registries; one instance is shared by every client in a build."""

    insecure_hosts: frozenset[str] = frozenset()  # plain HTTP allowed; loopback always allowed
    send_credentials_over_http: bool = False
    ca_file: str | None = None  # else SSL_CERT_FILE / the system store
    timeout: float = 60.0
    max_retries: int = 4
    # Bytes per PATCH; None uploads with one PUT unless the blob is very large.
    upload_chunk_size: int | None = None
    hosts: HostFacts = field(default_factory=HostFacts, compare=False, repr=False)


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1, with or without a port."""
    name = _hostname(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with default ports made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def redact_headers(headers: Mapping[str, str] | httpx.Headers) -> dict[str, str]:
    """Headers safe to log: credentials replaced by their scheme alone."""
    safe = {}
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} ***".strip()
        elif name.lower() in ("location", "content-location"):
            value = redact_url(value)
        safe[name] = value
    return safe


def redact_url(url: str) -> str:
    """The URL with signed-URL secrets in its query (S3, GCS, CDN tokens) masked, and
    Distribution's upload `_state`: hundreds of signed characters that would let whoever
    reads a log go on with the upload session."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = []
    for pair in parts.query.split("&"):
        name, sep, _value = pair.partition("=")
        secret = name == "_state" or any(word in name.lower() for word in _SECRET_QUERY_WORDS)
        if sep and secret:
            pair = f"{name}=***"
        pairs.append(pair)
    return parts._replace(query="&".join(pairs)).geturl()


class Transport:
    """HTTP to one registry host under the rules of `TransportOptions`."""

    def __init__(self, registry: str, options: TransportOptions, *, purpose: str = "") -> None:
        self.registry = registry
        self.options = options
        self.purpose = purpose  # "to pull base/app": which of a build's registries failed
        self._lock = threading.Lock()
        self._scheme: str | None = None
        self._verify_tls = True
        self._client = self._new_client(verify=True)
        self._unverified: httpx.Client | None = None
        self._unverified_lock = threading.Lock()
        known = options.hosts.get(registry)
        if known is not None:
            self._scheme, self._verify_tls = known

    # -- scheme --------------------------------------------------------------------------

    @property
    def plain_http_allowed(self) -> bool:
        return is_loopback(self.registry) or self._listed_insecure()

    @property
    def scheme(self) -> str:
        """`https` or `http`, settled by the first request (`base_url` triggers it)."""
        return self._settle_scheme()

    @property
    def base_url(self) -> str:
        return f"{self._settle_scheme()}://{self.registry}"

    def credentials_allowed(self, url: str) -> bool:
        """Whether secrets may be sent to `url`: over TLS, to loopback, or by user opt-in."""
        scheme, host, _ = origin_of(url)
        if scheme == "https" or self.options.send_credentials_over_http:
            return True
        return is_loopback(host)

    def _settle_scheme(self) -> str:
        with self._lock:
            if self._scheme is None:
                self._scheme = self._probe_scheme()
                self.options.hosts.put(self.registry, self._scheme, self._verify_tls)
            return self._scheme

    def _probe_scheme(self) -> str:
        """Try HTTPS on `/v2/`; fall back to HTTP only where allowed and only if TLS failed."""
        url = f"https://{self.registry}/v2/"
        if self.plain_http_allowed and not self._speaks_tls(url):
            return self._plain_http()
        try:
            self._client.get(url).close()
            return "https"
        except httpx.TimeoutException as error:
            # A timeout says nothing about the scheme: never downgrade on one.
            raise self._unreachable(error, url) from error
        except httpx.ConnectError as error:
            if _caused_by(error, ssl.SSLCertVerificationError) and self._listed_insecure():
                log.warning(
                    "%s: TLS certificate not trusted; using it unverified because the host"
                    " is in allow-insecure-registries",
                    self.registry,
                )
                self._verify_tls = False
                return "https"
            if _caused_by(error, ssl.SSLCertVerificationError) or not self.plain_http_allowed:
                raise self._unreachable(error, url) from error
            log.debug("%s: HTTPS failed (%s); trying plain HTTP", self.registry, error)
        return self._plain_http()

    def _speaks_tls(self, url: str) -> bool:
        """Whether the host completes a TLS handshake at all, asked without loading a trust
        store: a plain-HTTP loopback registry then never pays for one. Nothing secret is
        sent, and a host that does speak TLS is probed again with verification."""
        try:
            self._unverified_client().get(url).close()
            return True
        except httpx.TimeoutException as error:
            raise self._unreachable(error, url) from error
        except httpx.ConnectError as error:
            log.debug("%s: no TLS handshake (%s)", self.registry, error)
            return False

    def _plain_http(self) -> str:
        if not is_loopback(self.registry):
            log.warning("%s: using plain HTTP (allow-insecure-registries)", self.registry)
        return "http"

    def _listed_insecure(self) -> bool:
        hosts = {h.lower() for h in self.options.insecure_hosts}
        return self.registry.lower() in hosts or _hostname(self.registry) in hosts

    # -- requests ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        idempotent: bool | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send with retries and manual redirects; the caller closes a streamed response.

        `idempotent` defaults from the method (GET, HEAD, PUT, DELETE); a request that is
        not idempotent is sent once, so a failed upload must restart its own session.
        """
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        attempts = 1 + (self.options.max_retries if idempotent else 0)
        timeouts = 0
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._follow(method, url, dict(headers or {}), body, stream)
            except httpx.TransportError as error:
                # A registry that let a request time out twice will not answer a third:
                # five tries of a minute each would hold the build for five minutes.
                timeouts += isinstance(error, httpx.TimeoutException)
                if last or timeouts == MAX_TIMEOUTS or not _retryable_error(error):
                    raise self._unreachable(error, url, tries=attempt + 1) from error
                self._sleep(attempt, None, f"{method} {redact_url(url)}: {error}")
                continue
            if response.status_code in _RETRY_STATUSES and not last:
                response.close()
                self._sleep(
                    attempt, response, f"{method} {redact_url(url)}: HTTP {response.status_code}"
                )
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _follow(
        self, method: str, url: str, headers: dict[str, str], body: Body, stream: bool
    ) -> httpx.Response:
        origin = origin_of(url)
        for _hop in range(_MAX_REDIRECTS + 1):
            response = self._send_once(method, url, headers, body, stream)
            location = response.headers.get("Location")
            if response.status_code not in (301, 302, 303, 307, 308) or not location:
                return response
            response.close()

            # Resolve against the current URL but otherwise keep Location as sent: signed
            # URLs break if their query is re-encoded.
            url = location if urlsplit(location).scheme else urljoin(url, location)
            if origin_of(url) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, body = "GET", None
        raise RegistryError(
            f"{self.registry}: more than {_MAX_REDIRECTS} redirects for {redact_url(url)}",
            hint="the registry or its storage redirects in a loop; check its configuration",
            registry=self.registry,
        )

    def _send_once(
        self, method: str, url: str, headers: dict[str, str], body: Body, stream: bool
    ) -> httpx.Response:
        content: bytes | Iterator[bytes] | None
        content = body() if callable(body) else body  # type: ignore[assignment]
        if content is not None and not isinstance(content, bytes):
            content = iter(content)
        client = self._client if self._verify_tls else self._unverified_client()
        request = client.build_request(method, url, headers=headers, content=content)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("> %s %s %s", method, redact_url(url), redact_headers(request.headers))
        response = client.send(request, stream=stream)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "< %s %s %s",
                response.status_code,
                redact_url(url),
                redact_headers(response.headers),
            )
        return response

    def _sleep(self, attempt: int, response: httpx.Response | None, why: str) -> None:
        delay = retry_after(response) if response is not None else None
        if delay is None:
            delay = min(8.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2)
        log.info("%s; retrying in %.1fs", why, delay)
        cancel.sleep(delay)

    def _unreachable(
        self, error: httpx.TransportError, url: str, *, tries: int = 1
    ) -> RegistryError:
        if _caused_by(error, ssl.SSLCertVerificationError):
            hint = (
                "the registry's TLS certificate is not trusted: point SSL_CERT_FILE at its CA"
                " bundle, or add the host to allow-insecure-registries"
            )
        elif _caused_by(error, socket.gaierror):
            hint = (
                f"a host name did not resolve ({_hostname(self.registry)}, or a proxy's): check"
                " the registry in the image reference, and this machine's DNS and proxy settings"
            )
        else:
            # Plain HTTP is already allowed for loopback and listed hosts: only ask if it runs.
            hint = "is it running?" if self.plain_http_allowed else _INSECURE_HINT
            if isinstance(error, httpx.TimeoutException):
                waited = f"the registry did not answer within {self.options.timeout:g}s"
                if tries > 1:
                    waited += f" on the last of {tries} tries"
                hint = f"{waited}; {hint}"
        purpose = f" {self.purpose}" if self.purpose else ""
        return RegistryError(
            f"Cannot reach registry {self.registry}{purpose} ({redact_url(url)}): {error}",
            hint=hint,
            registry=self.registry,
            code="UNREACHABLE",
        )

    # -- clients -------------------------------------------------------------------------

    def _new_client(self, *, verify: bool) -> httpx.Client:
        timeout = httpx.Timeout(self.options.timeout)
        ca_file = self.options.ca_file
        # Loading the trust store takes about 0.1 s, which plain HTTP never needs: without
        # proxies (httpx skips them for a custom transport) it waits for the first HTTPS
        # request. A configured CA file is still read now, so a bad one fails at once.
        if verify and not ca_file and not urllib.request.getproxies():
            transport = _LazyTLSTransport(lambda: httpx.HTTPTransport(verify=tls_context(None)))
            return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
        ssl_context: ssl.SSLContext | bool = tls_context(ca_file) if verify else False
        client = httpx.Client(
            verify=ssl_context, timeout=timeout, follow_redirects=False, trust_env=True
        )
        return interruptible(client)

    def _unverified_client(self) -> httpx.Client:
        # Its own lock: the probe asks for this client while holding `_lock`.
        with self._unverified_lock:
            if self._unverified is None:
                self._unverified = self._new_client(verify=False)
            return self._unverified

    def close(self) -> None:
        self._client.close()
        if self._unverified is not None:
            self._unverified.close()


class _LazyTLSTransport(httpx.BaseTransport):
    """Plain HTTP straight away; HTTPS through a verifying transport made on first use."""

    def __init__(self, make_https: Callable[[], httpx.BaseTransport]) -> None:
        # The plain transport never performs a handshake, so it needs no trust store.
        self._plain = httpx.HTTPTransport(verify=False)
        interruptible_transport(self._plain)
        self._make_https = make_https
        self._https: httpx.BaseTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return self._plain.handle_request(request)
        with self._lock:
            if self._https is None:
                self._https = self._make_https()
                interruptible_transport(self._https)
        return self._https.handle_request(request)

    def close(self) -> None:
        self._plain.close()
        if self._https is not None:
            self._https.close()


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying TLS: the system store (or SSL_CERT_FILE / SSL_CERT_DIR), plus `ca_file`.

    The extra CA is added rather than substituted, so a private registry and a public base
    image registry both verify in one build.
    """
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"Cannot load the CA file {ca_file}: {error}",
                hint="point `tool.jib.registry-ca-file` (JIB_REGISTRY_CA_FILE) at a PEM bundle",
            ) from error
    return context


def _hostname(host: str) -> str:
    """`host[:port]` or `[v6]:port` -> the bare lower-case host name."""
    host = host.lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is in `error`'s chain of causes (httpx wraps the socket's errors)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retryable_error(error: httpx.TransportError) -> bool:
    # Connection refused or a TLS failure will not heal in a second; a reset or timeout may.
    if isinstance(error, httpx.ConnectError):
        return False
    return isinstance(
        error,
        (httpx.TimeoutException, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError),
    )


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from `Retry-After` (delta or HTTP date), capped; None when absent."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, _MAX_RETRY_AFTER))
