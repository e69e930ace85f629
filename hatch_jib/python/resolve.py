"""Wheel selection for a target with uv, and hash-checked wheel downloads into the blob store."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import httpx

from hatch_jib import cancel
from hatch_jib.cache import BlobStore, BlobWriter, file_digest, record_of
from hatch_jib.errors import BuildError
from hatch_jib.image.descriptor import DigestMismatch
from hatch_jib.interruptible import interruptible
from hatch_jib.python.target import TargetProfile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ResolvedWheel", "download", "resolve", "uv_binary"]

log = logging.getLogger(__name__)

_RECORD_KIND = "resolutions"
_RECORD_FORMAT = 2  # bump when the record's shape or meaning changes
_DOWNLOAD_WORKERS = 4
_CHUNK = 1 << 20
# find_uv_bin reads sysconfig, which before Python 3.12 fills its variables on first use
# without a lock: a platform asking while another fills them would see them empty.
_UV_LOOKUP = threading.Lock()
_TIMEOUT = httpx.Timeout(60.0, connect=15.0)

# uv reads its own variables, and many change what it resolves (UV_INDEX_URL, UV_RESOLUTION,
# UV_CONSTRAINT, ...): all key the cached resolution but these, which change how uv works and
# not its answer, so that a per-job cache directory or a rotating token keeps the record.
_UV_ENV_IGNORED = re.compile(
    r"UV_(?:CACHE_DIR|NO_CACHE|NO_PROGRESS|CONCURRENT_\w+|HTTP_TIMEOUT|REQUEST_TIMEOUT"
    r"|HTTP_RETRIES|LOG_CONTEXT|\w+_USERNAME|\w+_PASSWORD|\w+_TOKEN)"
)
# uv variables that name files it reads: their content keys the record too.
_UV_FILE_ENV = ("UV_CONSTRAINT", "UV_OVERRIDE", "UV_CONFIG_FILE")
# pip's variables, which uv ignores: each becomes a uv option unless uv's own variable is set.
_PIP_INDEX_ENV = {
    "PIP_INDEX_URL": ("--index-url", ("UV_INDEX_URL", "UV_DEFAULT_INDEX")),
    "PIP_EXTRA_INDEX_URL": ("--extra-index-url", ("UV_EXTRA_INDEX_URL", "UV_INDEX")),
    "PIP_FIND_LINKS": ("--find-links", ("UV_FIND_LINKS",)),
}


@dataclass(frozen=True)
class ResolvedWheel:
    """One wheel chosen for the target; `sha256` is hex and may be empty if the index gave none."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None

    @property
    def digest(self) -> str | None:
        return f"sha256:{self.sha256}" if self.sha256 else None


def resolve(
    requirements: Sequence[str],
    target: TargetProfile,
    *,
    store: BlobStore,
    offline: bool = False,
    no_deps: bool = False,
    project_root: Path | None = None,
) -> list[ResolvedWheel]:
    """Choose one wheel per distribution for `requirements` on `target`, reusing a cached answer.

    With `no_deps` the requirements are a complete pinned set, such as a lock's: only markers
    and wheel tags are evaluated for the target. uv runs in `project_root`, so the project's
    `[tool.uv]` or `uv.toml` index settings apply as they do to `uv pip` there.
    """
    if not requirements:
        return []
    if target.implementation != "cp":
        raise BuildError(
            f"cannot resolve wheels for {target.describe()}: only CPython targets are supported",
            hint="use a CPython base image or set `tool.jib.python.implementation` to cpython",
        )

    # The same requirements, target, uv and index settings give the same answer.
    platform = target.python_platform()
    index_args = _index_arguments(os.environ)
    options = [*index_args, "--no-deps"] if no_deps else index_args
    cwd = project_root or Path.cwd()
    key = _record_key(requirements, target, platform, [*options, *_uv_settings(cwd, os.environ)])
    cached = store.load_record(
        _RECORD_KIND, key, lambda record: [record_of(ResolvedWheel, w) for w in record["wheels"]]
    )
    if cached is not None:
        # A local wheel rebuilt in place keeps its URL: its old hash would fetch the old blob.
        if all(_local_file_unchanged(wheel) for wheel in cached):
            log.info(
                "Reusing the resolution of %d requirement(s) for %s", len(requirements), platform
            )
            return cached
        log.info("A local wheel changed since its resolution for %s: resolving again", platform)

    # Ask uv for a pylock.toml that lists, for this target alone, each wheel to install.
    log.info("Resolving %d requirement(s) for %s", len(requirements), platform)
    lock = _run_uv(requirements, target, platform, options, offline=offline, cwd=cwd)
    wheels = _wheels_from_lock(lock, target, cwd)

    store.write_record(_RECORD_KIND, key, {"wheels": [asdict(wheel) for wheel in wheels]})
    return wheels


def _local_file_unchanged(wheel: ResolvedWheel) -> bool:
    """Whether a `file:` wheel still has the sha256 it was resolved with (others always do)."""
    parts = urlsplit(wheel.url)
    if parts.scheme != "file" or not wheel.sha256:
        return True
    path = Path(url2pathname(parts.path))
    try:
        return file_digest(path) == f"sha256:{wheel.sha256}"
    except OSError:
        return False


def _index_arguments(environ: Mapping[str, str]) -> list[str]:
    """uv options for pip's index variables that have no uv counterpart set."""
    args = []
    for variable, (option, uv_variables) in _PIP_INDEX_ENV.items():
        if not environ.get(variable) or any(environ.get(name) for name in uv_variables):
            continue
        # pip separates several values with whitespace.
        for value in environ[variable].split():
            args += [option, value]
    return args


def _uv_settings(directory: Path, environ: Mapping[str, str]) -> list[str]:
    """The uv configuration `uv pip` reads in `directory`, as text for the record key.

    That is the nearest `uv.toml` or `[tool.uv]` in `directory` or a parent, the user's and
    the system's `uv.toml`, and the files uv's variables name.
    """
    settings = []
    for parent in (directory, *directory.parents):
        found = _project_uv_settings(parent)
        if found:
            settings += found
            break
    for path in _uv_config_files(environ):
        settings.append(f"{path}:{_file_text(path)}")
    for name in _UV_FILE_ENV:
        for value in environ.get(name, "").split():
            path = directory / value
            settings.append(f"{name}={value}:{_file_text(path)}")
    return settings


def _project_uv_settings(directory: Path) -> list[str]:
    settings = []
    for name in ("uv.toml", "pyproject.toml"):
        try:
            data = tomllib.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        table = data if name == "uv.toml" else data.get("tool", {}).get("uv", {})
        if table:
            settings.append(f"{name}:{json.dumps(table, sort_keys=True, default=str)}")
    return settings


def _uv_config_files(environ: Mapping[str, str]) -> list[Path]:
    """Where uv looks for the user's and the system's `uv.toml`."""
    user = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    system = (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep)
    return [Path(base, "uv", "uv.toml") for base in (user, *system, "/etc")]


def _file_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _record_key(
    requirements: Sequence[str], target: TargetProfile, platform: str, index_args: list[str]
) -> str:
    payload = {
        "format": _RECORD_FORMAT,
        "requirements": sorted(requirement.strip() for requirement in requirements),
        "python_version": target.python_version,
        "implementation": target.implementation,
        "platform": platform,
        "uv": _uv_version(),
        "uv_env": {
            name: value
            for name, value in os.environ.items()
            if name.startswith("UV_") and not _UV_ENV_IGNORED.fullmatch(name)
        },
        "index_args": index_args,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _uv_version() -> str:
    # From the package metadata, so a cache hit never has to start uv.
    try:
        return importlib.metadata.version("uv")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def uv_binary() -> str:
    """The uv executable that ships with hatch-jib."""
    from uv import find_uv_bin

    try:
        with _UV_LOOKUP:
            return os.fsdecode(find_uv_bin())
    except FileNotFoundError as error:
        raise BuildError(
            "cannot find the uv executable to resolve dependencies",
            hint="reinstall hatch-jib so that its `uv` dependency is installed",
        ) from error


def _run_uv(
    requirements: Sequence[str],
    target: TargetProfile,
    platform: str,
    index_args: list[str],
    *,
    offline: bool,
    cwd: Path,
) -> dict[str, Any]:
    command = [
        uv_binary(),
        "pip",
        "compile",
        "-",
        "--python-platform",
        platform,
        "--python-version",
        target.python_version,
        "--only-binary",
        ":all:",
        "--format",
        "pylock.toml",
        "--no-header",
        "--no-annotate",
        # Only wheels are used, so no interpreter is needed; never download one.
        "--no-python-downloads",
        "--no-progress",
        "--color",
        "never",
        *index_args,
    ]
    if offline:
        command.append("--offline")
    log.debug("running %s", " ".join(_redact(arg) for arg in command))
    try:
        result = subprocess.run(
            command,
            input="\n".join(requirements) + "\n",
            capture_output=True,
            text=True,
            check=False,
            cwd=cwd,
        )
    except OSError as error:
        raise BuildError(
            f"cannot run uv to resolve dependencies: {error}",
            hint="reinstall hatch-jib so that its `uv` dependency is installed",
        ) from error
    if result.returncode != 0:
        failure = _resolution_error(result.stderr, target, platform)
        if offline:
            # Offline, uv sees only its cache: a "missing" wheel was most likely never fetched.
            raise BuildError(
                f"offline: cannot resolve dependencies from the cache alone ({failure.message})",
                hint="build once online so the wheels are cached, or turn off `offline`",
            )
        raise failure
    try:
        return tomllib.loads(result.stdout)
    except tomllib.TOMLDecodeError as error:
        raise BuildError(
            f"uv wrote a pylock.toml that cannot be read: {error}",
            hint="upgrade hatch-jib and uv, then build again",
        ) from error


# uv's explanations of a failed resolution, in the order they are checked.
_NO_WHEEL = re.compile(
    r"(?P<name>[A-Za-z0-9][\w.-]*?)(?P<spec>[=<>!~][^ ]*)? (?:has|have) no usable wheels"
)
_NO_MATCHING_TAG = re.compile(
    r"(?P<name>[A-Za-z0-9][\w.-]*?)(?P<spec>[=<>!~][^ ]*)? has no wheels with a matching "
    r"(?P<what>platform tag|Python ABI tag|Python implementation tag|Python version)"
)
_AVAILABLE = re.compile(
    r"Wheels are available for `[^`]+` \([^)]*\) on the following platforms?: (.+)"
)
_WHEELS_REQUIRED = re.compile(r"Wheels are required for `(?P<name>[^`]+)`")
_NOT_FOUND = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*) was not found in the package registry")
_NO_VERSION = re.compile(
    r"Because there is no version of (?P<name>[A-Za-z0-9][\w.-]*?)(?P<spec>[=<>!~][^ ]*)?"
    r" and"
)


def _resolution_error(stderr: str, target: TargetProfile, platform: str) -> BuildError:
    """One BuildError that says which requirement failed and why, for uv's stderr."""
    where = f"{target.describe()} ({platform})"
    log.debug("uv failed:\n%s", stderr)

    # uv wraps long lines; read its explanation as one line.
    flat = " ".join(stderr.split())
    if match := _NO_MATCHING_TAG.search(flat):
        available = _AVAILABLE.search(flat)
        found = f"; it has wheels for {available.group(1).rstrip('.')}" if available else ""
        return BuildError(
            f"no wheel of {match.group('name')}{match.group('spec') or ''} fits the target "
            f"{where}: no matching {match.group('what')}{found}",
            hint="choose a base image that fits its wheels (a newer glibc, another Python), "
            "or pin a version with a wheel for this target",
        )
    if match := _NO_WHEEL.search(stderr) or _WHEELS_REQUIRED.search(stderr):
        spec = match.groupdict().get("spec") or ""
        return BuildError(
            f"no wheel of {match.group('name')}{spec} fits the target {where}",
            hint="choose a base image whose platform has wheels, or pin a version that ships one",
        )
    if match := _NOT_FOUND.search(stderr):
        return BuildError(
            f"package {match.group('name')} was not found on the package index",
            hint="check the requirement's spelling and the index settings "
            "(UV_INDEX_URL, PIP_INDEX_URL)",
        )
    if match := _NO_VERSION.search(stderr):
        return BuildError(
            f"no version of {match.group('name')} matches {match.group('spec') or 'the request'}",
            hint="relax the version constraint or check the package index",
        )
    return BuildError(
        f"cannot resolve dependencies for {where}:\n{_useful_lines(stderr)}",
        hint="fix the requirement uv names above, or check the package index settings",
    )


def _useful_lines(stderr: str, limit: int = 8) -> str:
    # uv's warnings (e.g. about the host interpreter) are noise next to the error itself.
    lines = [line for line in stderr.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("error")), 0)
    return "\n".join("  " + line for line in lines[start : start + limit])


def _wheels_from_lock(
    lock: Mapping[str, Any], target: TargetProfile, cwd: Path
) -> list[ResolvedWheel]:
    wheels = [_wheel_of(package, cwd) for package in lock.get("packages", [])]
    log.debug("%d wheel(s) selected for %s", len(wheels), target.describe())
    return wheels


def _wheel_of(package: Mapping[str, Any], cwd: Path) -> ResolvedWheel:
    """The wheel a pylock.toml package entry names: from an index, or a direct wheel URL."""
    name, version = str(package["name"]), str(package.get("version", ""))

    # uv lists only wheels for the target's platform; the first is its preferred one.
    choices = package.get("wheels") or []
    wheel: Mapping[str, Any] = choices[0] if choices else package.get("archive") or {}
    location = _location(wheel, cwd)
    if not location.endswith(".whl"):
        raise BuildError(
            f"{name} {version}".rstrip() + " is not available as a wheel",
            hint="depend on a released wheel, or build this dependency into a wheel first",
        )
    return ResolvedWheel(
        name=name,
        version=version,
        filename=str(wheel.get("name") or _filename_from(location)),
        url=location,
        sha256=str((wheel.get("hashes") or {}).get("sha256", "")),
        size=wheel.get("size"),
    )


def _location(source: Mapping[str, Any], cwd: Path) -> str:
    if source.get("url"):
        return str(source["url"])
    # A `path` is relative to the lock file; uv wrote ours to stdout from its working directory.
    path = Path(str(source.get("path", "")))
    return (path if path.is_absolute() else cwd / path).as_uri() if path.parts else ""


def _filename_from(location: str) -> str:
    return unquote(urlsplit(location).path.rpartition("/")[2])


def download(
    wheels: Sequence[ResolvedWheel], store: BlobStore, *, offline: bool = False
) -> list[Path]:
    """Put each wheel in the store, checking its sha256; return the blob paths in order.

    Blobs are named by digest, so the wheel's real filename travels in `ResolvedWheel.filename`;
    `install_wheel` is given that name instead of copying the blob to a named file.
    """
    if not wheels:
        return []
    with interruptible(httpx.Client(timeout=_TIMEOUT, follow_redirects=True)) as client:
        if len(wheels) == 1:
            return [_fetch(wheels[0], store, client, offline)]
        # Ctrl-C here, or the first failed download, stops the others.
        with cancel.CancellingPool(_DOWNLOAD_WORKERS, name="jib-wheels") as pool:
            fetched = [pool.submit(_fetch, wheel, store, client, offline) for wheel in wheels]
            pool.wait_all()
        return [future.result() for future in fetched]


def _fetch(wheel: ResolvedWheel, store: BlobStore, client: httpx.Client, offline: bool) -> Path:
    # A wheel already in the store (and still intact) is not fetched again.
    if wheel.digest is not None and (path := store.verified_path(wheel.digest)) is not None:
        log.debug("wheel %s is cached", wheel.filename)
        return path
    if offline:
        raise BuildError(
            f"wheel {wheel.filename} is not in the cache and the build is offline",
            hint="build once with network access, or turn off `offline`",
        )
    if wheel.digest is None:
        log.warning(
            "The index gives no sha256 for %s; its content is not verified", _redact(wheel.url)
        )

    try:
        with store.writer() as blob:
            _copy_into(wheel, blob, client)
            digest = blob.commit(expected=wheel.digest)
    except DigestMismatch as error:
        raise BuildError(
            f"wheel {wheel.filename} does not match the sha256 the index lists "
            f"(expected {error.expected}, got {error.actual})",
            hint="the download was corrupted or the index changed the file; build again",
        ) from error
    # A local wheel (a path dependency, find-links) is copied, not downloaded.
    log.info("%s %s", "Stored" if wheel.url.startswith("file:") else "Downloaded", wheel.filename)
    return store.path(digest)


def _copy_into(wheel: ResolvedWheel, blob: BlobWriter, client: httpx.Client) -> None:
    """Stream the wheel's bytes from its URL (http, https or a local file) into `blob`."""
    parts = urlsplit(wheel.url)
    if parts.scheme in ("", "file"):
        path = Path(url2pathname(parts.path)) if parts.scheme else Path(wheel.url)
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    cancel.checkpoint()
                    blob.write(chunk)
        except OSError as error:
            raise BuildError(
                f"cannot read wheel {wheel.filename} at {path}: {error.strerror}",
                hint="check the find-links or index directory",
            ) from error
        return
    try:
        with client.stream("GET", wheel.url) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(_CHUNK):
                cancel.checkpoint()
                blob.write(chunk)
    except httpx.HTTPStatusError as error:
        raise BuildError(
            f"GET {_redact(wheel.url)}: HTTP {error.response.status_code}",
            hint="check the package index and its credentials, then build again",
        ) from error
    except httpx.HTTPError as error:
        raise BuildError(
            f"GET {_redact(wheel.url)}: {error}",
            hint="check the network connection to the package index, then build again",
        ) from error


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()
