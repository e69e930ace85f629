"""Registry authentication: `WWW-Authenticate` challenges, Basic auth and Bearer tokens.

A client pings `/v2/` once; the challenge it gets back decides the scheme. Basic sends
the credential only because the registry asked for it. Bearer fetches a token from the
challenge's realm for the client's scopes (anonymously, with Basic credentials, or by the
OAuth2 refresh-token grant for identity tokens), caches it until it expires, and fetches
again when a request is refused.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from hatch_jib.errors import RegistryError
from hatch_jib.registry.credentials import HELPER_SOURCE, Credential
from hatch_jib.registry.transport import Transport, is_loopback

__all__ = [
    "Authenticator",
    "Challenge",
    "parse_challenges",
    "repository_scope",
    "unauthorized_hint",
]

log = logging.getLogger(__name__)

_DEFAULT_EXPIRES_IN = 60
_EXPIRY_MARGIN = 10.0
_CLIENT_ID = "hatch-jib"
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHAR | frozenset("/")
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


@dataclass(frozen=True)
class Challenge:
    """One challenge from `WWW-Authenticate`: a scheme and its parameters."""

    scheme: str  # lower-case: "basic", "bearer", ...
    params: Mapping[str, str] = field(default_factory=dict)  # names lower-cased
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenges(headers: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one or more `WWW-Authenticate` values (RFC 7235 grammar).

    Commas separate both challenges and parameters, so a comma ends a challenge only
    when what follows is not `name=`. Quoted strings may hold commas and escapes.
    """
    values = [headers] if isinstance(headers, str) else list(headers)
    challenges: list[Challenge] = []
    for value in values:
        challenges.extend(_ChallengeParser(value).parse())
    return challenges


def repository_scope(repository: str, actions: Sequence[str]) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def unauthorized_hint(
    registry: str, credential: Credential | None, *, env_prefix: str = "JIB_TO_AUTH"
) -> str:
    """What to do after the registry refused us, naming the credential we used.

    `env_prefix` is `JIB_TO_AUTH` for the push and `JIB_FROM_AUTH` for the base image.
    """
    variables = f"{env_prefix}_USERNAME and {env_prefix}_PASSWORD"
    if credential is None:
        return (
            f"no credentials were found for {registry}: set {variables},"
            f" or run `docker login {registry}`"
        )
    if credential.source == f"{env_prefix}_USERNAME/{env_prefix}_PASSWORD":
        # They are set already: telling the user to set them would send them in a circle.
        return (
            f"the credentials from {credential.source} were refused: check their values,"
            f" or unset them and run `docker login {registry}`"
        )
    if env_prefix in credential.source or "pyproject.toml" in credential.source:
        # Configured credentials come before `docker login` and helpers, so only they can help.
        return f"the credentials from {credential.source} were refused: check their values"
    if credential.source.startswith(HELPER_SOURCE):
        # The helper named by `cred-helper` comes before the Docker config, so `docker login`
        # helps only where Docker keeps its logins in that same helper.
        return (
            f"the credentials from {credential.source} were refused: renew what the helper"
            f" holds for {registry} (`docker login {registry}` does if Docker stores its"
            f" logins in it), or set {variables}, which come before it"
        )
    return (
        f"the credentials from {credential.source} were refused: check them, set"
        f" {variables}, or run `docker login {registry}`"
    )


class _ChallengeParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> list[Challenge]:
        challenges: list[Challenge] = []
        while True:
            self._skip(" \t,")
            if self.pos >= len(self.text):
                return challenges
            scheme = self._token()
            if not scheme:
                # Not a challenge: skip to the next comma and try again.
                comma = self.text.find(",", self.pos + 1)
                self.pos = len(self.text) if comma < 0 else comma
                continue
            challenges.append(self._rest_of_challenge(scheme.lower()))

    def _rest_of_challenge(self, scheme: str) -> Challenge:
        self._skip(" \t")
        params: dict[str, str] = {}
        if not self._param_ahead():
            token68 = self._token68()
            return Challenge(scheme, params, token68 or None)
        while self._param_ahead():
            name = self._token().lower()
            self._skip(" \t")
            self.pos += 1  # the "="
            self._skip(" \t")
            params[name] = self._quoted() if self._peek() == '"' else self._token()
            self._skip(" \t")
            if self._peek() != ",":
                break
            # Look past the comma(s): another parameter, or the next challenge?
            mark = self.pos
            self._skip(" \t,")
            if not self._param_ahead():
                self.pos = mark
                break
        return Challenge(scheme, params)

    def _param_ahead(self) -> bool:
        mark = self.pos
        name = self._token()
        self._skip(" \t")
        ahead = bool(name) and self._peek() == "=" and self._peek(1) not in ("=", ",", "")
        self.pos = mark
        return ahead

    def _token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def _token68(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN68:
            self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] == "=":
            self.pos += 1
        return self.text[start : self.pos]

    def _quoted(self) -> str:
        self.pos += 1  # the opening quote
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == '"':
                break
            else:
                out.append(char)
        return "".join(out)

    def _skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def _peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""


class Authenticator:
    """The `Authorization` header for one repository's requests, kept fresh."""

    def __init__(
        self,
        transport: Transport,
        repository: str,
        *,
        credential: Credential | None,
        scopes: Sequence[str],
        anonymous_first: bool = False,
        env_prefix: str = "JIB_TO_AUTH",
    ) -> None:
        self.transport = transport
        self.repository = repository
        self.credential = credential
        self.env_prefix = env_prefix
        # Public base images need no login: try without the credential until refused.
        self._anonymous = anonymous_first and credential is not None
        self.scopes = list(dict.fromkeys(scopes))
        self._lock = threading.RLock()
        self._pinged = False
        self._challenge: Challenge | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_scopes: list[str] = []
        # Set once a token server drops scopes we asked for: then ask only for what the
        # registry's last challenge named, one request's needs at a time.
        self._narrow_scopes: list[str] | None = None
        self.token_fetches = 0

    @property
    def scheme(self) -> str | None:
        """The challenged scheme after the ping: "basic", "bearer", or None for none."""
        with self._lock:
            self._ensure_pinged()
            return self._challenge.scheme if self._challenge else None

    def authorization(self) -> str | None:
        """The header value for the next request, or None to send none."""
        with self._lock:
            self._ensure_pinged()
            challenge = self._challenge
            if challenge is None:
                return None
            if challenge.scheme == "basic":
                return None if self._anonymous else self._basic_header(self.transport.base_url)
            if challenge.scheme == "bearer":
                if self._token is None or time.monotonic() >= self._token_expires:
                    self._fetch_token(challenge)
                return f"Bearer {self._token}"
            return None

    def add_scopes(self, scopes: Sequence[str]) -> None:
        """Widen the token's scope (a new mount source); the next request fetches anew."""
        with self._lock:
            merged = list(dict.fromkeys([*self.scopes, *scopes]))
            if merged != self.scopes:
                self.scopes = merged
                self._token = None

    def refused(self, response: httpx.Response, sent: str | None) -> bool:
        """Learn from a 401; True when sending again with a new header may succeed."""
        challenges = parse_challenges(response.headers.get_list("WWW-Authenticate"))
        challenge = _preferred(challenges)
        with self._lock:
            if challenge is None:
                return False
            if challenge.scheme == "basic":
                if self._anonymous and sent is None:
                    self._use_credential("the registry refused anonymous access")
                    self._challenge = challenge
                    return True
                # Retry only if we had not sent Basic yet; otherwise the password is wrong.
                asked_before = self._challenge is not None and self._challenge.scheme == "basic"
                self._challenge = challenge
                return not (asked_before and sent) and self.credential is not None
            if challenge.scheme == "bearer":
                current = sent is not None and sent == f"Bearer {self._token}"
                if self._anonymous and current:
                    self._use_credential("the registry refused anonymous access")
                if challenge.scope:
                    self._learn_scopes(challenge.scope.split(" "), current=current)
                self._challenge = challenge
                # Another thread may already have replaced the token we sent.
                if sent is None or current:
                    self._token = None
                return True
            return False

    # -- steps ---------------------------------------------------------------------------

    def _use_credential(self, why: str) -> None:
        self._anonymous = False
        assert self.credential is not None
        log.info(
            "%s: %s; using credentials from %s",
            self.transport.registry,
            why,
            self.credential.source,
        )

    def _learn_scopes(self, needed: list[str], *, current: bool) -> None:
        """Widen the scopes to what a refusal named (`insufficient_scope`)."""
        if self._narrow_scopes is None and current and set(needed) <= set(self._token_scopes):
            # We asked for these and the token still lacks them: the token server keeps
            # only some scopes per token (one, typically), so ask for one need at a time.
            log.debug(
                "%s: the token server ignored some scopes; asking for fewer",
                self.transport.registry,
            )
            self._narrow_scopes = needed
        elif self._narrow_scopes is not None:
            self._narrow_scopes = needed
        self.scopes = list(dict.fromkeys([*self.scopes, *needed]))

    def _ensure_pinged(self) -> None:
        if self._pinged:
            return
        url = f"{self.transport.base_url}/v2/"
        response = self.transport.request("GET", url)
        response.close()
        if response.status_code == 401:
            challenges = parse_challenges(response.headers.get_list("WWW-Authenticate"))
            self._challenge = _preferred(challenges)
            log.debug(
                "%s: challenge %s",
                self.transport.registry,
                self._challenge.scheme if self._challenge else "none",
            )
        self._pinged = True

    def _basic_header(self, url: str) -> str | None:
        credential = self.credential
        if credential is None:
            return None
        self._require_safe_channel(url)
        raw = f"{credential.username}:{credential.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _fetch_token(self, challenge: Challenge) -> None:
        realm = challenge.realm
        if not realm:
            raise RegistryError(
                f"Registry {self.transport.registry} asked for a Bearer token but named no realm",
                hint="the registry's auth configuration is broken; report it to its operator",
                registry=self.transport.registry,
                repository=self.repository,
                code="UNAUTHORIZED",
            )
        self.token_fetches += 1
        response = self._request_token(realm, challenge)
        if self._anonymous and response.status_code in (401, 403):
            response.close()
            self._use_credential("the token server refused anonymous access")
            response = self._request_token(realm, challenge)
        body = self._token_body(response, realm)

        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._token_error(realm, "answered without a token", response.status_code)
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, (int, float)) or expires_in <= 0:
            expires_in = _DEFAULT_EXPIRES_IN
        self._token = token
        self._token_expires = time.monotonic() + max(expires_in - _EXPIRY_MARGIN, 1.0)
        self._token_scopes = self._requested_scopes()
        log.debug("%s: got a token for %s", self.transport.registry, " ".join(self._token_scopes))

    def _request_token(self, realm: str, challenge: Challenge) -> httpx.Response:
        credential = None if self._anonymous else self.credential
        if credential is not None and credential.is_identity_token:
            return self._oauth_token_request(realm, challenge)
        return self._token_request(realm, challenge)

    def _requested_scopes(self) -> list[str]:
        return list(self._narrow_scopes or self.scopes)

    def _token_request(self, realm: str, challenge: Challenge) -> httpx.Response:
        query: list[tuple[str, str]] = []
        if challenge.service:
            query.append(("service", challenge.service))
        query.extend(("scope", scope) for scope in self._requested_scopes())
        url = _with_query(realm, urlencode(query))
        headers = {"Accept": "application/json"}
        basic = None if self._anonymous else self._basic_header(realm)
        if basic:
            headers["Authorization"] = basic
        return self.transport.request("GET", url, headers=headers)

    def _oauth_token_request(self, realm: str, challenge: Challenge) -> httpx.Response:
        assert self.credential is not None
        self._require_safe_channel(realm)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self.credential.password,
            "client_id": _CLIENT_ID,
            "scope": " ".join(self._requested_scopes()),
        }
        if challenge.service:
            form["service"] = challenge.service
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        # Replaying the same grant is harmless, so allow retries.
        return self.transport.request(
            "POST", realm, headers=headers, body=urlencode(form).encode(), idempotent=True
        )

    def _token_body(self, response: httpx.Response, realm: str) -> dict[str, Any]:
        try:
            if response.status_code in (401, 403):
                raise self._token_error(realm, "refused the credentials", response.status_code)
            if response.status_code != 200:
                raise self._token_error(
                    realm, f"answered HTTP {response.status_code}", response.status_code
                )
            data = json.loads(response.read())
        except ValueError as error:
            raise self._token_error(realm, "answered with invalid JSON", 200) from error
        finally:
            response.close()
        if not isinstance(data, dict):
            raise self._token_error(realm, "answered with JSON that is not an object", 200)
        return data

    def _token_error(self, realm: str, what: str, status: int) -> RegistryError:
        refused = status in (401, 403)
        return RegistryError(
            f"Token server {_origin_text(realm)} for {self.transport.registry}/"
            f"{self.repository} {what}",
            hint=unauthorized_hint(
                self.transport.registry, self.credential, env_prefix=self.env_prefix
            )
            if refused
            else "the registry's token service is failing; try again later",
            registry=self.transport.registry,
            repository=self.repository,
            code="UNAUTHORIZED" if refused else "TOKEN_SERVER",
            status=status,
        )

    def _warn_clear_text(self, url: str) -> None:
        origin = _origin_text(url)
        if not _warned_once(origin):
            log.warning(
                "Sending credentials for %s over plain HTTP to %s"
                " (send-credentials-over-http is set)",
                self.transport.registry,
                origin,
            )

    def _require_safe_channel(self, url: str) -> None:
        if self.transport.credentials_allowed(url):
            if url.startswith("http://") and not is_loopback(httpx.URL(url).host):
                self._warn_clear_text(url)
            return
        raise RegistryError(
            f"Refusing to send credentials for {self.transport.registry} over plain HTTP"
            f" to {_origin_text(url)}",
            hint="use HTTPS, or set `tool.jib.send-credentials-over-http = true` if you"
            " accept that the password travels in clear text",
            registry=self.transport.registry,
            repository=self.repository,
            code="INSECURE_CREDENTIALS",
        )


def _warned_once(key: str) -> bool:
    with _WARNED_LOCK:
        seen = key in _WARNED
        _WARNED.add(key)
        return seen


def _preferred(challenges: Sequence[Challenge]) -> Challenge | None:
    """Bearer over Basic, since a token limits what a leaked header can do."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def _with_query(url: str, query: str) -> str:
    if not query:
        return url
    base, _, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    return base + joiner + query + (f"#{fragment}" if fragment else "")


def _origin_text(url: str) -> str:
    parts = httpx.URL(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.host}{port}"
