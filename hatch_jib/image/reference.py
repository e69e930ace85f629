"""Image references (`registry/repository:tag@digest`), parsed by the distribution grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hatch_jib.errors import ConfigError

__all__ = ["DOCKER_HUB", "Reference", "parse_reference"]

DOCKER_HUB = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HOST = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; `digest` wins over `tag` when both are given."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def context(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag=tag)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, tag=self.tag, digest=digest)

    def __str__(self) -> str:
        text = self.context
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


_FORM = "use the form [registry/]repository[:tag][@sha256:<64 hex>]"


def _fail(text: str, rule: str, *, key: str, hint: str = _FORM) -> ConfigError:
    return ConfigError(f"Invalid image reference {text!r} in `{key}`: {rule}", hint=hint)


def _lower_case_hint(text: str, remainder: str, written: str) -> str | None:
    """The reference as written with its repository in lower case, if that is all it lacks.

    Registries refuse upper case in a repository name, while a host or a tag may have it.
    """
    lowered = remainder.removesuffix(written) + written.lower()
    if not all(_COMPONENT.fullmatch(part) for part in written.lower().split("/")):
        return None
    return f"write the repository in lower case: {lowered + text[len(remainder) :]!r}"


def parse_reference(text: str, *, key: str = "image") -> Reference:
    """Parse `text` into a Reference; `key` names the setting in errors."""
    # `user:password@host/...` is a URL habit; never echo what may be a password.
    _, at, after = text.strip().rpartition("@")
    if at and "/" in after:
        raise ConfigError(
            f"The image reference in `{key}` seems to hold credentials (user:password@host); "
            "it is not shown",
            hint="put credentials in the auth settings (JIB_TO_AUTH_USERNAME/PASSWORD or "
            "JIB_FROM_AUTH_*), never in the reference",
        )

    # Split off the digest, then the tag (a colon after the last slash).
    remainder, _, digest = text.strip().partition("@")
    if not remainder:
        raise _fail(text, "it is empty", key=key)
    if digest and not _DIGEST.fullmatch(digest):
        raise _fail(text, f"digest {digest!r} is not algorithm:hex", key=key)
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise _fail(text, f"tag {tag!r} may hold only [A-Za-z0-9_.-], 128 at most", key=key)

    # The first component is a registry only if it looks like a host.
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        port = first.rpartition(":")[2] if not first.endswith("]") else ""
        if not _HOST.fullmatch(first) or (port.isdigit() and not 0 < int(port) < 65536):
            raise _fail(text, f"registry host {first!r} is not a valid host[:port]", key=key)
        registry, path = first, rest
    else:
        registry, path = "docker.io", remainder

    written = path
    # Docker Hub keeps official images under library/.
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise _fail(
                text,
                f"repository component {component!r} must be lower-case letters, digits "
                "and single separators (. _ __ -)",
                key=key,
                hint=_lower_case_hint(text.strip(), remainder, written) or _FORM,
            )
    if len(path) > 255:
        raise _fail(text, "the repository name is longer than 255 characters", key=key)
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, path, tag=tag, digest=digest or None)
