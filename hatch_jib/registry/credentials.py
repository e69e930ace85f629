"""Where registry credentials come from: explicit settings, Docker and Podman auth files.

The lookup order follows the Docker CLI: an explicit credential, then a named credential
helper, then the Docker config (`credHelpers` for the host, then `credsStore`, then
`auths`), then the Podman/containers auth files. Helpers speak the docker-credential-*
protocol: `get`, the server URL on stdin, JSON on stdout.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hatch_jib.errors import ConfigError

__all__ = [
    "HELPER_SOURCE",
    "IDENTITY_TOKEN_USERNAME",
    "Credential",
    "find_credential",
    "run_credential_helper",
    "server_keys",
]

log = logging.getLogger(__name__)

# Docker's marker for an OAuth2 refresh token stored in place of a password.
IDENTITY_TOKEN_USERNAME = "<token>"

_HUB_HOSTS = ("registry-1.docker.io", "docker.io", "index.docker.io")
_HUB_SERVER_URL = "https://index.docker.io/v1/"
_HELPER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Credential:
    """A username and secret for one registry, and where they were found."""

    username: str
    password: str = field(repr=False)
    source: str = "explicit"

    @property
    def is_identity_token(self) -> bool:
        """The password is an OAuth2 refresh token, not a password."""
        return self.username == IDENTITY_TOKEN_USERNAME


# How a credential from the `cred-helper` a user named is labelled; the Docker config's
# helpers are labelled by the config instead.
HELPER_SOURCE = "credential helper "


def find_credential(
    registry: str,
    *,
    explicit: Credential | None = None,
    environ: Mapping[str, str] | None = None,
    cred_helper: str | None = None,
    env_prefix: str | None = None,
) -> Credential | None:
    """The credential to use for `registry` (a host[:port]), or None to go anonymous.

    `cred_helper` names a docker-credential-* helper (`ecr-login`, or a full name or
    path) consulted before the Docker config, as `tool.jib.to.cred-helper` asks.
    `env_prefix` (`JIB_TO_AUTH` or `JIB_FROM_AUTH`) names the variables that a failing
    helper's hint offers instead, when the caller reads them.
    """
    env = os.environ if environ is None else environ

    # Explicit settings win, then a helper the user named.
    found = explicit
    if found is None and cred_helper:
        found = _from_helper(cred_helper, registry, env, required=True, env_prefix=env_prefix)

    # Then the Docker config, then the containers auth files.
    if found is None:
        found = _from_docker_config(registry, env, env_prefix)
    if found is None:
        found = _from_containers_auth(registry, env)

    if found is None:
        log.debug("%s: no credentials found; using anonymous access", registry)
    else:
        log.debug("%s: using credentials from %s", registry, found.source)
    return found


def server_keys(registry: str) -> list[str]:
    """The keys a config may file `registry` under, most specific first."""
    host = registry.lower()
    if host in _HUB_HOSTS:
        return [_HUB_SERVER_URL, *_HUB_HOSTS, "https://index.docker.io", "https://docker.io"]
    return [host, f"https://{host}", f"http://{host}"]


def run_credential_helper(
    helper: str, server_url: str, environ: Mapping[str, str], *, env_prefix: str | None = None
) -> tuple[str, str] | None:
    """(username, secret) from `docker-credential-<helper> get`, or None if it has none."""
    program = _helper_program(helper, environ)
    if program is None:
        raise ConfigError(
            f"Credential helper {_helper_name(helper)!r} is not on PATH",
            hint="install it, or remove it from the Docker config or `cred-helper`",
        )
    try:
        done = subprocess.run(
            [program, "get"],
            input=server_url.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            env=dict(environ),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ConfigError(
            f"Credential helper {program} failed for {server_url}: {error}",
            hint="run it by hand (`echo SERVER | HELPER get`) to see what is wrong",
        ) from error

    # Helpers report a miss on stdout or stderr with a non-zero exit.
    text = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        errors = done.stderr.decode(errors="replace").strip()
        if "credentials not found" in f"{text} {errors}".lower():
            return None
        # Stdout is where a helper writes secrets, so only its stderr is ever shown.
        said = f": {errors.splitlines()[0][:200]}" if errors else ""
        instead = f", or set {env_prefix}_USERNAME and {env_prefix}_PASSWORD" if env_prefix else ""
        raise ConfigError(
            f"Credential helper {program} failed for {server_url} (exit {done.returncode}){said}",
            hint=f"run it by hand (`echo SERVER | HELPER get`) or log in again with it{instead}",
        )
    try:
        data = json.loads(text)
        return str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"Credential helper {program} gave output that is not"
            " {'Username': ..., 'Secret': ...} JSON",
            hint="check the helper's version; it must implement the docker-credential protocol",
        ) from error


def _from_helper(
    helper: str,
    registry: str,
    environ: Mapping[str, str],
    *,
    required: bool,
    env_prefix: str | None = None,
) -> Credential | None:
    for key in _helper_queries(registry):
        pair = run_credential_helper(helper, key, environ, env_prefix=env_prefix)
        if pair is not None:
            return Credential(pair[0], pair[1], source=f"{HELPER_SOURCE}{_helper_name(helper)}")
    if required:
        log.info("%s: credential helper %s has no credentials", registry, _helper_name(helper))
    return None


def _helper_queries(registry: str) -> list[str]:
    # Helpers store servers under whatever `docker login` was given; the bare host is most
    # common, Docker Hub's is the v1 URL.
    keys = server_keys(registry)
    return keys[:2] if registry.lower() not in _HUB_HOSTS else [_HUB_SERVER_URL]


def _from_docker_config(
    registry: str, environ: Mapping[str, str], env_prefix: str | None = None
) -> Credential | None:
    path = _docker_config_path(environ)
    config = _load_json(path)
    if config is None:
        return None
    where = f"Docker config {path}"

    # A helper for this host is authoritative.
    helpers = config.get("credHelpers") or {}
    for key in server_keys(registry):
        name = helpers.get(key) or helpers.get(_bare_host(key))
        if name:
            return _relabel(
                _from_helper(name, registry, environ, required=False, env_prefix=env_prefix),
                f"{where} (credHelpers: docker-credential-{name})",
            )

    # Then the default store; entries it misses may still sit in `auths`.
    store = config.get("credsStore")
    if store:
        found = _from_helper(store, registry, environ, required=False, env_prefix=env_prefix)
        if found is not None:
            return _relabel(found, f"{where} (credsStore: docker-credential-{store})")
    return _from_auths(config.get("auths") or {}, registry, where)


def _from_containers_auth(registry: str, environ: Mapping[str, str]) -> Credential | None:
    for path in _containers_auth_paths(environ):
        config = _load_json(path)
        if config is not None:
            found = _from_auths(config.get("auths") or {}, registry, f"containers auth {path}")
            if found is not None:
                return found
    return None


def _from_auths(auths: Mapping[str, Any], registry: str, where: str) -> Credential | None:
    entry = _match_server(auths, registry)
    if not isinstance(entry, Mapping):
        return None
    if entry.get("identitytoken"):
        return Credential(IDENTITY_TOKEN_USERNAME, str(entry["identitytoken"]), source=where)
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise ConfigError(
                f"The `auth` entry for {registry} in {where} is not base64 of user:password",
                hint=f"run `docker login {registry}` again, or fix the file by hand",
            ) from error
        username, sep, password = decoded.partition(":")
        if sep:
            return Credential(username, password, source=where)
    if entry.get("username") and entry.get("password"):
        return Credential(str(entry["username"]), str(entry["password"]), source=where)
    return None


def _match_server(entries: Mapping[str, Any], registry: str) -> Any:
    wanted = server_keys(registry)
    for key in wanted:
        if key in entries:
            return entries[key]
    # Keys may carry a scheme or a path (`https://host/v1/`): compare the bare host.
    hosts = {_bare_host(key) for key in wanted}
    for key, value in entries.items():
        if _bare_host(key) in hosts:
            return value
    return None


def _bare_host(key: str) -> str:
    text = key.lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0]


def _relabel(found: Credential | None, source: str) -> Credential | None:
    if found is None:
        return None
    return Credential(found.username, found.password, source=source)


def _docker_config_path(environ: Mapping[str, str]) -> Path:
    directory = environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return _home(environ) / ".docker" / "config.json"


def _containers_auth_paths(environ: Mapping[str, str]) -> list[Path]:
    paths = []
    if environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(environ["REGISTRY_AUTH_FILE"]))
    if environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = environ.get("XDG_CONFIG_HOME") or str(_home(environ) / ".config")
    paths.append(Path(config_home) / "containers" / "auth.json")
    return paths


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ["HOME"]) if environ.get("HOME") else Path.home()


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("cannot read %s: %s", path, error)
        return None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ConfigError(
            f"{path} is not valid JSON: {error}",
            hint="fix or remove the file, or log in again to rewrite it",
        ) from error
    return data if isinstance(data, dict) else None


def _helper_name(helper: str) -> str:
    base = os.path.basename(helper)
    return base if base.startswith("docker-credential-") else f"docker-credential-{base}"


def _helper_program(helper: str, environ: Mapping[str, str]) -> str | None:
    if os.sep in helper:
        return helper if os.access(helper, os.X_OK) else None
    return shutil.which(_helper_name(helper), path=environ.get("PATH", os.defpath))
