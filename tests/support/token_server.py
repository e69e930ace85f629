"""A small Docker token issuer for tests: the token endpoint a Bearer-auth registry points at.

It implements the GET flow of the Docker registry token spec (Basic or anonymous, one or
more `scope` parameters) and the OAuth2 POST flow (`password` and `refresh_token` grants).
Tokens are ES256 JWTs whose `x5c` header carries a leaf certificate signed by a test CA;
the registry trusts that CA through `rootcertbundle`.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SigningChain", "TokenServer", "make_signing_chain", "parse_scope"]

ISSUER = "hatch-jib-test-issuer"
SERVICE = "hatch-jib-test-registry"


@dataclass(frozen=True)
class SigningChain:
    """The key that signs tokens, its certificate, and the CA the registry trusts."""

    key: ec.EllipticCurvePrivateKey
    leaf_der: bytes
    ca_pem: bytes


def make_signing_chain() -> SigningChain:
    """A P-256 CA and a leaf certificate for the token-signing key."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hatch-jib test token CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    return SigningChain(
        key=key,
        leaf_der=leaf.public_bytes(serialization.Encoding.DER),
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
    )


def parse_scope(scope: str) -> dict[str, Any] | None:
    """`repository:team/app:pull,push` -> an `access` entry; None if malformed.

    The name may itself hold a colon (a registry host with a port), so the type is
    split off the front and the actions off the back.
    """
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


@dataclass
class TokenServer:
    """An HTTP token endpoint on 127.0.0.1 that grants `username` everything it asks for.

    Anonymous requests get the actions in `anonymous_actions` (none by default), so a
    registry behind this issuer answers 401 to a client without credentials.
    """

    chain: SigningChain
    username: str
    password: str
    service: str = SERVICE
    issuer: str = ISSUER
    expires_in: int = 300
    anonymous_actions: tuple[str, ...] = ()
    # "all", or "first"/"last" to act like token servers that honour one scope per token.
    keep_scopes: str = "all"
    refresh_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the token server is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/token"

    def start(self) -> TokenServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def issue(self, subject: str, scopes: list[str], *, authenticated: bool) -> str:
        """A signed JWT granting `subject` the actions `scopes` asks for (or fewer)."""
        if self.keep_scopes == "first":
            scopes = scopes[:1]
        elif self.keep_scopes == "last":
            scopes = scopes[-1:]
        access = []
        for scope in scopes:
            entry = parse_scope(scope)
            if entry is None:
                continue
            if not authenticated:
                entry["actions"] = [a for a in entry["actions"] if a in self.anonymous_actions]
            access.append(entry)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        x5c = [base64.b64encode(self.chain.leaf_der).decode()]
        # PyJWT writes ES256 signatures as raw R||S, which is what the registry verifies.
        return jwt.encode(claims, self.chain.key, algorithm="ES256", headers={"x5c": x5c})

    def check_basic(self, header: str | None) -> bool | None:
        """True for the right Basic credentials, False for wrong ones, None when absent."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return user == self.username and password == self.password


def _handler_for(issuer: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            scopes = _split_scopes(query.get("scope", []))
            verdict = issuer.check_basic(self.headers.get("Authorization"))
            issuer.requests.append({"method": "GET", "query": query, "basic": verdict})
            if verdict is False:
                self._reply(401, {"details": "incorrect username or password"})
                return
            subject = issuer.username if verdict else ""
            token = issuer.issue(subject, scopes, authenticated=bool(verdict))
            self._reply(200, _token_body(token, issuer, refresh=None))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            issuer.requests.append({"method": "POST", "form": _redacted(form)})
            grant = (form.get("grant_type") or [""])[0]
            scopes = _split_scopes(form.get("scope", []))
            if grant == "password":
                ok = (form.get("username") or [""])[0] == issuer.username and (
                    form.get("password") or [""]
                )[0] == issuer.password
            elif grant == "refresh_token":
                ok = (form.get("refresh_token") or [""])[0] == issuer.refresh_token
            else:
                self._reply(400, {"error": "unsupported_grant_type"})
                return
            if not ok:
                self._reply(401, {"error": "invalid_grant"})
                return
            token = issuer.issue(issuer.username, scopes, authenticated=True)
            offline = (form.get("access_type") or [""])[0] == "offline"
            refresh = issuer.refresh_token if offline else None
            self._reply(200, _token_body(token, issuer, refresh=refresh, oauth=True))

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _split_scopes(values: list[str]) -> list[str]:
    # Clients may repeat `scope` or join several scopes with spaces in one parameter.
    return [part for value in values for part in value.split(" ") if part]


def _redacted(form: dict[str, list[str]]) -> dict[str, list[str]]:
    secret_keys = {"password", "refresh_token"}
    return {key: ["***"] if key in secret_keys else value for key, value in form.items()}


def _token_body(
    token: str, issuer: TokenServer, *, refresh: str | None, oauth: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": token,
        "expires_in": issuer.expires_in,
        "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    # The OAuth2 endpoint answers with access_token only; the GET endpoint sends both names.
    if not oauth:
        body["token"] = token
    if refresh:
        body["refresh_token"] = refresh
    return body
