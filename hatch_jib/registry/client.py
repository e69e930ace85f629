"""The OCI distribution client: manifests and blobs in one repository of one registry.

`RegistryClient` speaks the pull and push halves of the distribution spec over a
`Transport` (scheme, retries, redirects) with an `Authenticator` (challenges, tokens).
Every failure becomes a `RegistryError` that names the registry, the repository, the
operation and the registry's error code, with a hint.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urljoin

import httpx

from hatch_jib import cancel, progress
from hatch_jib.cache import BlobStore
from hatch_jib.errors import RegistryError
from hatch_jib.image.descriptor import DigestMismatch, MediaType, check_digest, sha256_digest
from hatch_jib.registry.auth import Authenticator, repository_scope, unauthorized_hint
from hatch_jib.registry.credentials import Credential
from hatch_jib.registry.transport import (
    MAX_TIMEOUTS,
    Body,
    Transport,
    TransportOptions,
    origin_of,
    retry_after,
)

__all__ = ["MANIFEST_ACCEPT", "PulledManifest", "RegistryClient"]

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join(
    [
        MediaType.OCI_INDEX,
        MediaType.OCI_MANIFEST,
        MediaType.DOCKER_LIST,
        MediaType.DOCKER_MANIFEST,
        # Read-only: asked for so an old image fails with a clear message, not a 404.
        MediaType.DOCKER_SCHEMA1_SIGNED,
        MediaType.DOCKER_SCHEMA1,
    ]
)
_SCHEMA1 = (MediaType.DOCKER_SCHEMA1, MediaType.DOCKER_SCHEMA1_SIGNED)
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 20
# Blobs above this go up in PATCH chunks: proxies in front of registries cap request bodies.
_LARGE_BLOB = 512 << 20
_LARGE_CHUNK = 64 << 20
# Codes after which a new upload session may succeed where the current one cannot.
_RESTART_CODES = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"})
_GENERIC_TYPES = ("", "application/json", "text/plain", "application/octet-stream")


@dataclass(frozen=True)
class PulledManifest:
    """A manifest or index exactly as the registry sent it."""

    data: bytes
    media_type: str
    digest: str  # sha256 of `data`


class RegistryClient:
    """Pull and push manifests and blobs in `registry/repository`."""

    def __init__(
        self,
        registry: str,
        repository: str,
        *,
        credential: Credential | None,
        options: TransportOptions,
        push: bool = False,
        mount_from: Sequence[str] = (),
        anonymous_first: bool = False,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.credential = credential
        self.options = options
        purpose = f"to push to {repository}" if push else f"to pull {repository}"
        self.transport = Transport(registry, options, purpose=purpose)
        self._lock = threading.Lock()
        # Upload sessions a refused mount opened, by digest, for the upload that follows.
        self._open_sessions: dict[str, tuple[str, int]] = {}
        actions = ("pull", "push") if push else ("pull",)
        scopes = [repository_scope(repository, actions)]
        scopes += [repository_scope(source, ("pull",)) for source in mount_from]
        self.auth = Authenticator(
            transport=self.transport,
            repository=repository,
            credential=credential,
            scopes=scopes,
            anonymous_first=anonymous_first,
            env_prefix="JIB_TO_AUTH" if push else "JIB_FROM_AUTH",
        )

    # -- public API ----------------------------------------------------------------------

    def authenticate(self) -> None:
        """Check the credentials now, so a refused login fails before the build does.

        A Bearer challenge is checked by getting the token. Basic credentials are only
        checked by the registry itself, so send them to the API root once; a registry that
        asks for a Basic login when there are no credentials would refuse the first upload.
        """
        self.auth.authorization()
        if self.auth.scheme == "basic" and self.credential is None:
            raise self._error(
                f"{self.registry} asks for a login (Basic) before {self.repository} can be used",
                code="UNAUTHORIZED",
                hint=self._hint("UNAUTHORIZED"),
            )
        if self.auth.scheme == "basic":
            response = self._request("GET", "/v2/", what="the API root")
            with closing(response):
                self._expect(response, (200,), "GET /v2/")

    def get_manifest(self, identifier: str) -> PulledManifest:
        """The manifest or index for a tag or digest; a digest is verified against the bytes."""
        what = f"manifest {identifier}"
        response = self._request(
            "GET",
            self._path("manifests", identifier),
            what=what,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        with closing(response):
            self._expect(response, (200,), f"GET {what}")
            data = _read_limited(response, _MAX_MANIFEST_BYTES)
        media_type = _media_type(response.headers.get("Content-Type", ""), data)
        digest = sha256_digest(data)
        if media_type in _SCHEMA1:
            digest = sha256_digest(_schema1_payload(data))
        if identifier.startswith("sha256:") and digest != identifier:
            raise self._error(
                f"GET {what}: the registry sent content with digest {digest}",
                code="DIGEST_INVALID",
                hint="the registry or a proxy altered the manifest; pull by tag to inspect it",
            )
        log.debug("%s: %s is %s (%s)", self._where, identifier, digest, media_type)
        return PulledManifest(data=data, media_type=media_type, digest=digest)

    def blob_exists(self, digest: str) -> int | None:
        """The blob's size if the repository has it (0 when the registry omits the size).

        None means "upload it": the blob is absent, or the registry would not say because
        it refuses HEAD (401, 403 or 405 even after authenticating). The upload that follows
        then either succeeds or fails with the registry's full error body.
        """
        what = f"blob {check_digest(digest)}"
        response = self._request("HEAD", self._path("blobs", digest), what=what)
        with closing(response):
            if response.status_code == 404:
                return None
            if response.status_code in (401, 403, 405):
                log.debug(
                    "%s: HEAD %s answered %d; assuming it is missing",
                    self._where,
                    digest,
                    response.status_code,
                )
                return None
            self._expect(response, (200,), f"HEAD {what}")
        length = response.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else 0

    def fetch_blob(self, digest: str, store: BlobStore) -> Path:
        """Download a blob into `store` (verified by digest) unless it is there already."""
        check_digest(digest)
        cached = store.verified_path(digest)
        if cached is not None:
            return cached
        attempts = 1 + self.options.max_retries
        corrupt = 0
        for attempt in range(attempts):
            try:
                return self._download(digest, store)
            except (httpx.TransportError, _Corrupt) as error:
                # Wrong bytes twice are what the registry holds, not a glitch on the way: a
                # third download of a large layer would only bring them again.
                corrupt += isinstance(error, _Corrupt)
                if attempt == attempts - 1 or corrupt == 2:
                    raise self._download_error(digest, error) from error
                what = "brought other bytes" if isinstance(error, _Corrupt) else "broke off"
                log.info("%s: download of %s %s (%s); retrying", self._where, digest, what, error)
                cancel.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def mount_blob(self, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; True if it did.

        Only 201 means mounted. A 202 opened an ordinary upload session instead: it is
        kept for the `upload_blob` of the same digest that follows. Any other answer (no
        access to the source, mounting unsupported) means the caller uploads the blob.
        """
        what = f"blob {check_digest(digest)} from {from_repository}"
        self.auth.add_scopes([repository_scope(from_repository, ("pull",))])
        path = f"/v2/{self.repository}/blobs/uploads/?mount={digest}&from={from_repository}"
        response = self._request("POST", path, what=what, idempotent=False)
        with closing(response):
            if response.status_code == 201:
                log.debug("%s: mounted %s from %s", self._where, digest, from_repository)
                return True
            if response.status_code != 202:
                code, detail = _error_code(response)
                log.debug("%s: mount of %s refused: %s %s", self._where, what, code, detail)
                return False

        # The registry opened an ordinary upload instead: continue it rather than POST again.
        location = response.headers.get("Location")
        if location:
            minimum = _min_chunk(response)
            with self._lock:
                self._open_sessions[digest] = (self._resolve(location, path), minimum)
        return False

    def upload_blob(self, digest: str, size: int, path: Path) -> None:
        """Push a blob from `path` in a new upload session, restarting it after a failure.

        Small blobs go in one `PUT ?digest=`; large ones (or all, when `upload_chunk_size`
        is set) as `PATCH` chunks with `Content-Range`, then an empty `PUT`. A request that
        changed the session is never sent again: a failure starts a new session, and one
        whose outcome is unknown is first checked with a HEAD.
        """
        check_digest(digest)
        actual_size = Path(path).stat().st_size
        if actual_size != size:
            raise self._error(
                f"blob {digest} has {actual_size} bytes, not the {size} its manifest says",
                code="SIZE_INVALID",
                hint="the base image's manifest lists a wrong size; choose another base image",
            )
        attempts = 1 + self.options.max_retries
        timeouts = 0
        for attempt in range(attempts):
            if attempt:
                progress.publish(progress.BlobEvent(digest, "uploading"))  # counts from 0 again
            try:
                self._upload_session(digest, size, path)
                log.debug("%s: uploaded %s (%d bytes)", self._where, digest, size)
                return
            except _SessionFailed as failure:
                if failure.ambiguous and self.blob_exists(digest) is not None:
                    log.info("%s: %s arrived despite %s", self._where, digest, failure.reason)
                    return
                timeouts += isinstance(failure.error.__cause__, httpx.TimeoutException)
                if attempt == attempts - 1 or timeouts == MAX_TIMEOUTS:
                    raise failure.error from failure
                # A registry that says when to come back (429, 503) is taken at its word.
                delay = failure.retry_after
                if delay is None:
                    delay = min(8.0, 0.5 * 2**attempt)
                log.info(
                    "%s: upload of %s failed (%s); restarting it in a new session in %.1fs",
                    self._where,
                    digest,
                    failure.reason,
                    delay,
                )
                cancel.sleep(delay)

    def put_manifest(self, identifier: str, data: bytes, media_type: str) -> str:
        """Push a manifest or index under a tag or its digest; returns its digest."""
        digest = sha256_digest(data)
        if identifier.startswith("sha256:") and identifier != digest:
            raise ValueError(f"manifest bytes have digest {digest}, not {identifier}")
        what = f"manifest {identifier}"
        if media_type in _SCHEMA1:
            raise self._error(
                f"PUT {what}: Docker schema 1 manifests are read-only",
                code="UNSUPPORTED",
                hint="push the image as a Docker v2.2 or OCI manifest",
            )
        response = self._request(
            "PUT",
            self._path("manifests", identifier),
            what=what,
            headers={"Content-Type": media_type},
            body=data,
        )
        with closing(response):
            if response.status_code not in (200, 201, 202, 204):
                error = self._response_error(response, f"PUT {what}")
                if error.code in ("MANIFEST_INVALID", "UNSUPPORTED"):
                    error.hint = _format_hint(media_type)
                raise error
            self._check_digest_header(response, digest, f"PUT {what}")
        log.debug("%s: pushed %s as %s", self._where, identifier, digest)
        return digest

    def close(self) -> None:
        """Cancel upload sessions a mount opened but no upload used, then disconnect."""
        with self._lock:
            unused = [location for location, _ in self._open_sessions.values()]
            self._open_sessions.clear()
        try:
            for location in unused:
                self._cancel_upload(location)
        finally:
            self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- steps ---------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self.registry}/{self.repository}"

    def _path(self, kind: str, identifier: str) -> str:
        return f"/v2/{self.repository}/{kind}/{identifier}"

    def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        idempotent: bool | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send with the current Authorization; on a 401, let auth learn and send once more."""
        url = self._resolve(path_or_url, "/v2/")
        for attempt in range(2):
            sent_headers = dict(headers or {})
            authorization = self.auth.authorization()
            # Only the registry itself gets our Authorization, never an upload or CDN host.
            if authorization and origin_of(url)[1:] == origin_of(self.transport.base_url)[1:]:
                sent_headers["Authorization"] = authorization
            response = self.transport.request(
                method, url, headers=sent_headers, body=body, idempotent=idempotent, stream=stream
            )
            if response.status_code != 401 or attempt == 1:
                return response
            if not self.auth.refused(response, sent_headers.get("Authorization")):
                return response
            response.close()
            log.debug("%s: %s %s refused; authenticating again", self._where, method, what)
        raise AssertionError("unreachable: the second attempt returns")

    def _resolve(self, path_or_url: str, relative_to: str) -> str:
        """An absolute URL; a relative Location resolves against the request it came from."""
        if "://" in path_or_url:
            return path_or_url
        if "://" not in relative_to:
            relative_to = self.transport.base_url + relative_to
        return urljoin(relative_to, path_or_url)

    def _download(self, digest: str, store: BlobStore) -> Path:
        what = f"blob {digest}"
        response = self._request(
            "GET",
            self._path("blobs", digest),
            what=what,
            headers={"Accept-Encoding": "identity"},
            stream=True,
        )
        with closing(response):
            self._expect(response, (200,), f"GET {what}")
            with store.writer() as blob:
                for chunk in response.iter_raw(_CHUNK):
                    cancel.checkpoint()
                    blob.write(chunk)
                try:
                    blob.commit(expected=digest)
                except DigestMismatch as error:
                    raise _Corrupt(str(error)) from error
        log.debug("%s: fetched %s", self._where, digest)
        return store.path(digest)

    def _upload_session(self, digest: str, size: int, path: Path) -> None:
        """One session: POST, the bytes (whole or in chunks), the closing PUT."""
        what = f"blob {digest}"
        with self._lock:
            opened = self._open_sessions.pop(digest, None)
        location, min_chunk = opened or self._start_upload(what)
        try:
            self._send_blob(location, min_chunk, digest, size, path)
        except _SessionFailed as failure:
            # A registry that answered keeps a broken session until it expires: end it now,
            # with one request, so that a registry in trouble does not slow the retry. Not
            # one that may still be storing the blob (a proxy's 5xx after the closing PUT),
            # nor one that asked us to wait.
            answered = failure.error.code != "UNREACHABLE"
            if answered and not failure.ambiguous and failure.retry_after is None:
                self._cancel_upload(failure.location or location, once=True)
            raise

    def _send_blob(self, location: str, min_chunk: int, digest: str, size: int, path: Path) -> None:
        """The bytes of one session, whole or in chunks, and the closing PUT."""
        what = f"blob {digest}"
        chunk = self._chunk_size(size, min_chunk)

        # Monolithic: the bytes travel with the closing PUT.
        if chunk is None:
            response = self._upload_request(
                "PUT", _with_digest(location, digest), what, path, 0, size, digest=digest, last=True
            )
            self._finish_upload(response, digest, what)
            return

        # Chunked: each PATCH answers with the Location for the next request.
        offset = 0
        try:
            while offset < size:
                length = min(chunk, size - offset)
                response = self._upload_request(
                    "PATCH", location, what, path, offset, length, digest=digest
                )
                with closing(response):
                    self._check_upload_step(response, f"PATCH {what}", (202,))
                    self._check_range(response, offset + length, f"PATCH {what}")
                location = self._next_location(response, location)
                offset += length
            response = self._upload_request(
                "PUT", _with_digest(location, digest), what, path, size, 0, digest=digest, last=True
            )
            self._finish_upload(response, digest, what)
        except _SessionFailed as failure:
            failure.location = location  # the session's latest address
            raise

    def _chunk_size(self, size: int, min_chunk: int) -> int | None:
        """Bytes per PATCH, or None for a monolithic upload."""
        chunk = self.options.upload_chunk_size
        if chunk is None and size > _LARGE_BLOB:
            chunk = _LARGE_CHUNK
        if chunk is None:
            return None
        # Every chunk but the last must reach the registry's minimum.
        return max(chunk, min_chunk, 1)

    def _upload_request(
        self,
        method: str,
        url: str,
        what: str,
        path: Path,
        offset: int,
        length: int,
        *,
        digest: str,
        last: bool = False,
    ) -> httpx.Response:
        """Send one upload request exactly once; a lost answer fails the session."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        if method == "PATCH":
            headers["Content-Range"] = f"{offset}-{offset + length - 1}"
        try:
            return self._request(
                method,
                url,
                what=what,
                headers=headers,
                body=lambda: progress.sent(digest, _file_chunks(path, offset, length)),
                idempotent=False,
            )
        except RegistryError as error:
            if error.code != "UNREACHABLE":
                raise
            # Only the closing PUT can have stored the blob before its answer was lost.
            raise _SessionFailed(error, error.message, ambiguous=last) from error

    def _finish_upload(self, response: httpx.Response, digest: str, what: str) -> None:
        with closing(response):
            self._check_upload_step(response, f"PUT {what}", (201, 204), ambiguous=True)
            self._check_digest_header(response, digest, f"PUT {what}")

    def _check_upload_step(
        self,
        response: httpx.Response,
        action: str,
        statuses: Sequence[int],
        *,
        ambiguous: bool = False,
    ) -> None:
        """Raise `_SessionFailed` for what a new session may fix, RegistryError otherwise."""
        if response.status_code in statuses:
            return
        error = self._response_error(response, action)
        if _retryable(response) or error.code in _RESTART_CODES:
            # A 5xx after the closing PUT may come from a proxy after the blob was stored.
            reason = f"HTTP {response.status_code} {error.code}"
            raise _SessionFailed(
                error,
                reason,
                ambiguous=ambiguous and response.status_code >= 500,
                retry_after=retry_after(response),
            )
        raise error

    def _check_range(self, response: httpx.Response, received: int, action: str) -> None:
        """The registry's `Range` must say it holds every byte sent so far."""
        value = response.headers.get("Range", "")
        _, _, end = value.rpartition("-")
        if not end.strip().isdigit() or int(end) + 1 == received:
            return
        error = self._error(
            f"{action}: the registry holds bytes {value}, not 0-{received - 1}",
            code="BLOB_UPLOAD_INVALID",
            hint=_HINTS["BLOB_UPLOAD_INVALID"],
        )
        raise _SessionFailed(error, f"Range {value} after {received} bytes", ambiguous=False)

    def _next_location(self, response: httpx.Response, current: str) -> str:
        location = response.headers.get("Location")
        return self._resolve(location, current) if location else current

    def _start_upload(self, what: str) -> tuple[str, int]:
        """POST a new session: its absolute Location and the registry's minimum chunk."""
        path = f"/v2/{self.repository}/blobs/uploads/"
        response = self._request("POST", path, what=what, idempotent=False)
        with closing(response):
            self._check_upload_step(response, f"POST upload for {what}", (202,))
        location = response.headers.get("Location")
        if not location:
            raise self._error(
                f"POST upload for {what}: the registry answered 202 without a Location",
                code="BLOB_UPLOAD_INVALID",
                hint="the registry does not follow the distribution spec; report it",
            )
        return self._resolve(location, path), _min_chunk(response)

    def _cancel_upload(self, url: str, *, once: bool = False) -> None:
        # Cleanup: the registry ends the session itself in time, so neither its error nor a
        # build cancelled while it answers slowly may stop what called this.
        try:
            self._request("DELETE", url, what="upload session", idempotent=not once).close()
        except RegistryError as error:
            log.debug("%s: could not cancel upload %s: %s", self._where, url, error.message)
        except cancel.Cancelled:
            log.debug("%s: left upload %s to expire: the build was cancelled", self._where, url)

    def _check_digest_header(self, response: httpx.Response, digest: str, action: str) -> None:
        echoed = response.headers.get("Docker-Content-Digest")
        if echoed and echoed.startswith("sha256:") and echoed != digest:
            raise self._error(
                f"{action}: the registry stored it as {echoed}, not {digest}",
                code="DIGEST_INVALID",
                hint="the registry rewrote the content; push to a registry that stores it as sent",
            )

    # -- errors --------------------------------------------------------------------------

    def _expect(self, response: httpx.Response, statuses: Sequence[int], action: str) -> None:
        if response.status_code not in statuses:
            raise self._response_error(response, action)

    def _response_error(self, response: httpx.Response, action: str) -> RegistryError:
        code, detail = _error_code(response)
        message = f"{action} in {self._where} failed: {code}"
        if detail:
            message += f" ({detail})"
        limits = _rate_limits(response)
        if limits:
            message += f" [{limits}]"
        return self._error(message, code=code, hint=self._hint(code), status=response.status_code)

    def _error(
        self, message: str, *, code: str, hint: str, status: int | None = None
    ) -> RegistryError:
        return RegistryError(
            message,
            hint=hint,
            registry=self.registry,
            repository=self.repository,
            code=code,
            status=status,
        )

    def _hint(self, code: str) -> str:
        if code == "UNAUTHORIZED":
            return unauthorized_hint(
                self.registry, self.credential, env_prefix=self.auth.env_prefix
            )
        if code == "DENIED":
            source = self.credential.source if self.credential else "anonymous access"
            return (
                f"the registry denied {self._where} to {source}: check the account's"
                " permissions and the repository name"
            )
        return _HINTS.get(code, "see the registry's response above and its logs")

    def _download_error(self, digest: str, error: Exception) -> RegistryError:
        if isinstance(error, _Corrupt):
            return self._error(
                f"GET blob {digest} from {self._where}: {error}",
                code="DIGEST_INVALID",
                hint="the registry or a proxy sent different bytes; check the mirror or proxy",
            )
        return self._error(
            f"GET blob {digest} from {self._where} failed: {error}",
            code="UNREACHABLE",
            hint="the connection kept breaking; check the network and try again",
        )


_HINTS = {
    "NAME_UNKNOWN": "the repository does not exist: check the image name",
    "NAME_INVALID": "the repository name is not valid for this registry",
    "MANIFEST_UNKNOWN": "no such tag or digest in the repository: check the image reference",
    "BLOB_UNKNOWN": "the registry is missing a blob: push the image's layers and config first",
    "MANIFEST_BLOB_UNKNOWN": "a blob the manifest references is not in the repository",
    "MANIFEST_INVALID": "the registry rejected the manifest; try the other `container.format`",
    "UNSUPPORTED": "the registry does not support this operation or media type",
    "DIGEST_INVALID": "the content did not match its digest; retry, and check proxies",
    "SIZE_INVALID": "the content did not match its declared size; retry",
    "TAG_INVALID": "the tag does not match the manifest",
    "TOOMANYREQUESTS": "the registry is rate limiting: wait and retry, or log in to raise the"
    " limit",
    "BLOB_UPLOAD_UNKNOWN": "the upload session expired; retry the build",
    "BLOB_UPLOAD_INVALID": "the registry rejected the upload; retry the build",
}

_STATUS_CODES = {
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "NOT_FOUND",
    405: "UNSUPPORTED",
    415: "UNSUPPORTED",
    429: "TOOMANYREQUESTS",
}


class _Corrupt(Exception):
    """Downloaded bytes did not match the digest: worth one more try."""


class _SessionFailed(Exception):
    """An upload session broke in a way a new session may fix."""

    def __init__(
        self,
        error: RegistryError,
        reason: str,
        *,
        ambiguous: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        self.ambiguous = ambiguous  # the blob may have been stored: HEAD before retrying
        self.retry_after = retry_after  # seconds the registry asked to wait, if it did
        self.location: str | None = None  # where the session is, once a PATCH moved it


def _min_chunk(response: httpx.Response) -> int:
    """The registry's smallest accepted PATCH (`OCI-Chunk-Min-Length`), 0 when unsaid."""
    value = response.headers.get("OCI-Chunk-Min-Length", "")
    return int(value) if value.isdigit() else 0


def _rate_limits(response: httpx.Response) -> str:
    """The `RateLimit-*` headers (Docker Hub sends them with 429), as one short text."""
    found = [
        f"{name.lower()}={value}"
        for name, value in response.headers.items()
        if name.lower().startswith(("ratelimit-", "x-ratelimit-", "docker-ratelimit-"))
    ]
    return ", ".join(found)


def _error_code(response: httpx.Response) -> tuple[str, str]:
    """(code, detail) from a distribution error body, else from the status and text."""
    try:
        raw = response.read()
    except httpx.HTTPError:
        raw = b""
    fallback = _STATUS_CODES.get(response.status_code, f"HTTP_{response.status_code}")
    try:
        errors = json.loads(raw).get("errors") or []
        first = errors[0]
        code = str(first.get("code") or fallback).upper()
        detail = str(first.get("message") or "")
        if first.get("detail") and not isinstance(first["detail"], (list, dict)):
            detail = f"{detail}: {first['detail']}" if detail else str(first["detail"])
        return code, detail
    except (ValueError, AttributeError, IndexError, TypeError):
        pass
    text = raw.decode(errors="replace").strip().splitlines()
    return fallback, (text[0][:200] if text else f"HTTP {response.status_code}")


def _format_hint(media_type: str) -> str:
    """Suggest the other image format when a registry rejects a manifest's media type."""
    if media_type in (MediaType.DOCKER_MANIFEST, MediaType.DOCKER_LIST):
        other, env = '"oci"', "oci"
    else:
        other, env = '"docker"', "docker"
    return (
        f"the registry does not accept {media_type}: set `tool.jib.container.format = {other}`"
        f" (or JIB_CONTAINER_FORMAT={env}) and build again"
    )


def _schema1_payload(data: bytes) -> bytes:
    """A signed schema 1 manifest is identified by its bytes without the JWS signatures.

    The protected header says where the payload ends (`formatLength`) and which bytes
    (`formatTail`) close it once the signatures are cut out.
    """
    try:
        signature = json.loads(data)["signatures"][0]
        protected = json.loads(_b64url(signature["protected"]))
        return data[: int(protected["formatLength"])] + _b64url(protected["formatTail"])
    except (ValueError, KeyError, IndexError, TypeError):
        return data


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _media_type(content_type: str, data: bytes) -> str:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in _GENERIC_TYPES:
        return media_type
    # Some registries send generic JSON; the document then names its own type.
    try:
        document = json.loads(data)
        named = document.get("mediaType")
        if document.get("schemaVersion") == 1:
            signed = "signatures" in document
            named = MediaType.DOCKER_SCHEMA1_SIGNED if signed else MediaType.DOCKER_SCHEMA1
        elif not named:
            # OCI documents may leave `mediaType` out; their shape still says what they are.
            named = MediaType.OCI_INDEX if "manifests" in document else MediaType.OCI_MANIFEST
    except (ValueError, AttributeError):
        named = None
    return str(named) if named else media_type


def _read_limited(response: httpx.Response, limit: int) -> bytes:
    data = response.read()
    if len(data) > limit:
        raise ValueError(f"manifest of {len(data)} bytes exceeds the {limit} byte limit")
    return data


def _with_digest(location: str, digest: str) -> str:
    """Add `digest=` to an upload URL, keeping its own query (`_state` etc.) as sent."""
    base, hash_mark, fragment = location.partition("#")
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    return f"{base}{joiner}digest={digest}" + (f"#{fragment}" if hash_mark else "")


def _file_chunks(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """`length` bytes of `path` from `offset`, read lazily in pieces; a cancelled build
    stops between two of them, breaking off the request that sends them."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        while length > 0 and (chunk := handle.read(min(_CHUNK, length))):
            cancel.checkpoint()
            length -= len(chunk)
            yield chunk


def _retryable(response: httpx.Response) -> bool:
    return response.status_code in (408, 429) or response.status_code >= 500
