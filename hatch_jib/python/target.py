"""The target profile: which Python, architecture and libc the image runs, read from the base."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

from hatch_jib.errors import BuildError, ConfigError

if TYPE_CHECKING:
    import tarfile

__all__ = ["PythonOverrides", "TargetProfile", "detect_target"]

log = logging.getLogger(__name__)

# OCI architecture -> the machine name used in wheel tags and uv's platform triples.
_MACHINES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
# The uv triple prefix differs from the wheel-tag machine name for POWER.
_GNU_TRIPLES = {
    "x86_64": "x86_64-unknown-linux-gnu",
    "aarch64": "aarch64-unknown-linux-gnu",
    "ppc64le": "powerpc64le-unknown-linux-gnu",
    "s390x": "s390x-unknown-linux-gnu",
}
# uv names manylinux targets for these glibc minor versions only; others round down.
_MANYLINUX_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
_IMPLEMENTATIONS = {"cp": "cp", "cpython": "cp", "pp": "pp", "pypy": "pp"}
_IMPLEMENTATION_NAMES = {"cp": "CPython", "pp": "PyPy"}

_BIN_DIRS = ("usr/local/bin", "usr/bin", "bin")
_PYTHON_EXE = re.compile(r"(?:usr/local/bin|usr/bin|bin)/python(?:3(?:\.(\d+))?)?")
_MUSL_LOADER = re.compile(r"(?:usr/)?lib/ld-musl-[\w-]+\.so\.1")
_GLIBC_SONAME = re.compile(r"(?:usr/)?lib(?:64|32)?/(?:[\w-]+/)?libc-(2\.\d+)\.so")
_DPKG_STATUS = "var/lib/dpkg/status"
_DPKG_STATUS_D = "var/lib/dpkg/status.d/"
_APK_DB = "lib/apk/db/installed"
_METADATA_LIMIT = 16 << 20  # package databases beyond this are not worth reading


@dataclass(frozen=True)
class TargetProfile:
    """The Python the image runs and the platform its wheels must fit."""

    python_version: str
    interpreter: str
    architecture: str = "amd64"
    variant: str | None = None
    libc: str = "glibc"
    libc_version: str | None = None
    implementation: str = "cp"

    def machine(self) -> str:
        """The machine name of wheel tags and `platform_machine` markers, like "aarch64"."""
        return _MACHINES.get(self.architecture, self.architecture)

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker variables for this target (the micro version is not known: 0)."""
        implementation = "cpython" if self.implementation == "cp" else "pypy"
        return {
            "implementation_name": implementation,
            "implementation_version": f"{self.python_version}.0",
            "os_name": "posix",
            "platform_machine": self.machine(),
            "platform_python_implementation": _IMPLEMENTATION_NAMES.get(self.implementation, ""),
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": f"{self.python_version}.0",
            "python_version": self.python_version,
            "sys_platform": "linux",
        }

    def python_platform(self) -> str:
        """The `uv --python-platform` value that selects wheels for this target."""
        machine = _MACHINES.get(self.architecture)
        if machine is None or (machine == "riscv64" and self.libc == "musl"):
            raise BuildError(
                f"cannot choose wheels for linux/{self.architecture}: uv has no such target",
                hint="build for linux/amd64, linux/arm64, linux/ppc64le or linux/s390x",
            )
        if machine == "riscv64":
            return "riscv64-unknown-linux"
        if self.libc == "musl":
            if machine not in ("x86_64", "aarch64"):
                raise BuildError(
                    f"cannot choose musl wheels for linux/{self.architecture}: uv has no such "
                    "target",
                    hint="use a glibc base image for this platform",
                )
            return f"{machine}-unknown-linux-musl"
        minor = _manylinux_minor(self.libc_version)
        if minor is None:
            return _GNU_TRIPLES[machine]
        return f"{machine}-manylinux_2_{minor}"

    def describe(self) -> str:
        """One line for the log, like "CPython 3.11, linux/amd64, glibc 2.36"."""
        implementation = _IMPLEMENTATION_NAMES.get(self.implementation, self.implementation)
        platform = f"linux/{self.architecture}"
        if self.variant:
            platform += f"/{self.variant}"
        libc = f"{self.libc} {self.libc_version}" if self.libc_version else self.libc
        return f"{implementation} {self.python_version}, {platform}, {libc}"


@dataclass(frozen=True)
class PythonOverrides:
    """`[tool.jib.python]`: each field that is None (or empty) is detected from the base."""

    version: str | None = None
    implementation: str | None = None
    libc: str | None = None
    platform_tags: tuple[str, ...] = ()


@dataclass
class _Scan:
    """What the base layers hold, after later layers and whiteouts are applied."""

    # path -> symlink target ("" for a regular file)
    pythons: dict[str, str] = field(default_factory=dict)
    musl_loaders: set[str] = field(default_factory=set)
    glibc_sonames: dict[str, str] = field(default_factory=dict)
    # package database path -> libc version it records (None: no libc package in it)
    libc_records: dict[str, str | None] = field(default_factory=dict)

    def remove(self, path: str, *, children_only: bool = False) -> None:
        """Forget `path` (unless `children_only`) and everything below it."""
        prefix = path.rstrip("/") + "/" if path else ""

        def gone(name: str) -> bool:
            return name.startswith(prefix) or (not children_only and name == path)

        for table in (self.pythons, self.glibc_sonames, self.libc_records):
            for name in [name for name in table if gone(name)]:
                del table[name]
        self.musl_loaders = {name for name in self.musl_loaders if not gone(name)}


def detect_target(
    image_config: Mapping[str, Any],
    layers: Sequence[Path],
    *,
    architecture: str,
    variant: str | None = None,
    overrides: PythonOverrides | None = None,
    tar_digests: dict[Path, str] | None = None,
) -> TargetProfile:
    """Work out the target from the base image's config and layer blobs, without running them.

    The scan reads each gzip or plain layer whole, so `tar_digests`, when given, gets the
    sha256 of each one's tar (its diff_id), which then needs no reading of its own.
    """
    overrides = overrides or PythonOverrides()
    config = image_config.get("config") or {}

    # Read the layers once, bottom to top, keeping only the paths that tell us something.
    scan = _Scan()
    for layer in layers:
        digest = _scan_layer(layer, scan)
        if tar_digests is not None and digest is not None:
            tar_digests[layer] = digest

    # Python: an override, then the image's own declaration, then what is on disk.
    env = _env_map(config.get("Env") or ())
    command = [str(arg) for arg in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])]
    version, interpreter = _choose_python(overrides.version, env, command, scan)

    # libc: the platform tags override, then the libc override, then the layers.
    libc, libc_version = _choose_libc(overrides, scan)

    implementation = _implementation(overrides.implementation)
    target = TargetProfile(
        python_version=version,
        interpreter=interpreter,
        architecture=architecture,
        variant=variant,
        libc=libc,
        libc_version=libc_version,
        implementation=implementation,
    )
    log.info("Target: %s (interpreter %s)", target.describe(), interpreter)
    return target


def _scan_layer(layer: Path, scan: _Scan) -> str | None:
    """Apply one layer's whiteouts, then record its interesting paths; the sha256 of its tar
    when it is gzip or plain, read whole on the way, else None."""
    import tarfile  # only when the target is not cached yet
    import zlib

    added = _Scan()
    whiteouts: list[tuple[str, bool]] = []
    try:
        with open(layer, "rb") as raw:
            # Stream mode: headers are read in order, file bodies only when asked.
            source = _HashedTar.of(raw)
            mode: Literal["r|", "r|*"] = "r|" if source is not None else "r|*"
            # Stream mode only reads its file object; typeshed asks for a whole file.
            with tarfile.open(fileobj=source or raw, mode=mode) as tar:  # type: ignore[arg-type]
                for member in tar:
                    _scan_member(tar, member, added, whiteouts)
            digest = source.finish() if source is not None else None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise BuildError(
            f"cannot read base image layer {layer.name}: {error}",
            hint="delete the cache directory to download the base image again",
        ) from error

    # A whiteout hides paths from the layers below it, never from its own layer.
    for path, opaque in whiteouts:
        scan.remove(path, children_only=opaque)
    scan.pythons.update(added.pythons)
    scan.musl_loaders |= added.musl_loaders
    scan.glibc_sonames.update(added.glibc_sonames)
    scan.libc_records.update(added.libc_records)
    return digest


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _HashedTar:
    """A gzip or plain layer's tar as tarfile reads it, with the sha256 of every byte."""

    def __init__(self, stream: _Readable) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()

    @classmethod
    def of(cls, raw: BinaryIO) -> _HashedTar | None:
        """The tar in `raw` when it is gzip or plain (other compressions: None)."""
        import gzip

        head = raw.read(_USTAR_END)
        raw.seek(0)
        if head.startswith(b"\x1f\x8b"):
            return cls(gzip.GzipFile(fileobj=raw, mode="rb"))
        return cls(raw) if head[_USTAR_MAGIC] == b"ustar" else None

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._digest.update(data)
        return data

    def finish(self) -> str:
        """Read what tarfile left (the blocks after the end marker); the tar's digest."""
        while self.read(_CHUNK):
            pass
        return "sha256:" + self._digest.hexdigest()


_USTAR_MAGIC = slice(257, 262)
_USTAR_END = 262
_CHUNK = 1 << 20


def _scan_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    added: _Scan,
    whiteouts: list[tuple[str, bool]],
) -> None:
    path = _normalize(member.name)
    parent, _, base = path.rpartition("/")
    if base == ".wh..wh..opq":
        whiteouts.append((parent, True))
    elif base.startswith(".wh."):
        whiteouts.append((posixpath.join(parent, base[4:]), False))
    elif member.isdir():
        return
    elif _PYTHON_EXE.fullmatch(path):
        added.pythons[path] = member.linkname if member.issym() else ""
    elif _MUSL_LOADER.fullmatch(path):
        added.musl_loaders.add(path)
    elif match := _GLIBC_SONAME.fullmatch(path):
        added.glibc_sonames[path] = match.group(1)
    elif _is_package_database(path) and member.isfile():
        added.libc_records[path] = _libc_from_database(path, _read_member(tar, member))


def _normalize(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _is_package_database(path: str) -> bool:
    if path in (_DPKG_STATUS, _APK_DB):
        return True
    return path.startswith(_DPKG_STATUS_D) and not path.endswith(".md5sums")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    if member.size > _METADATA_LIMIT:
        return ""
    handle = tar.extractfile(member)
    if handle is None:
        return ""
    return handle.read().decode("utf-8", errors="replace")


def _libc_from_database(path: str, text: str) -> str | None:
    """The libc version a dpkg status file or apk database records, if it lists libc."""
    if path == _APK_DB:
        # apk: blank-line separated stanzas of "P:name" / "V:version" lines.
        for stanza in text.split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line)
            if fields.get("P") == "musl" and "V" in fields:
                return _major_minor(fields["V"])
        return None
    for stanza in re.split(r"\n\s*\n", text):
        fields = _dpkg_fields(stanza)
        if fields.get("Package") == "libc6" and "not-installed" not in fields.get("Status", ""):
            return _major_minor(fields.get("Version", ""))
    return None


def _dpkg_fields(stanza: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in stanza.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith(" ")}


def _major_minor(version: str) -> str | None:
    # Strip a Debian epoch ("1:") and keep the upstream major.minor ("2.36-9+deb12u4" -> "2.36").
    match = re.match(r"(?:\d+:)?(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _env_map(env: Iterable[str]) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in env if "=" in item)
    return {key: value for key, value in pairs}


def _choose_python(
    override: str | None, env: Mapping[str, str], command: Sequence[str], scan: _Scan
) -> tuple[str, str]:
    """The target's major.minor version and the interpreter path inside the image."""
    executables = _versioned_executables(scan)

    # The first source that names a version wins.
    version = None
    if override:
        version = _python_version(override, "tool.jib.python.version")
    elif env.get("PYTHON_VERSION"):
        version = _python_version(env["PYTHON_VERSION"], "PYTHON_VERSION in the base image")
    else:
        version = _version_from_command(command, scan) or _preferred_version(scan, executables)

    if version is None:
        raise BuildError(
            "base image has no Python interpreter",
            hint="set `tool.jib.python.version` or choose a Python base image",
        )

    # Prefer an interpreter that exists; else the conventional path for how we learned it.
    for bin_dir in _BIN_DIRS:
        candidate = f"{bin_dir}/python{version}"
        if candidate in executables:
            return version, "/" + candidate
    # An image whose venv points at a missing interpreter cannot start: refuse to build it.
    if scan.pythons:
        found = ", ".join(sorted({f"python{v}" for v in executables.values()})) or "none"
        raise BuildError(
            f"base image has no python{version} (it has: {found})",
            hint="set `tool.jib.python.version` to one it has, or choose a base image with "
            f"Python {version}",
        )
    fallback = "/usr/local/bin" if env.get("PYTHON_VERSION") and not override else "/usr/bin"
    return version, f"{fallback}/python{version}"


def _python_version(value: str, source: str) -> str:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:[.\w+-]*)\s*", value)
    if match is None:
        raise ConfigError(
            f"{source} is {value!r}, which is not a Python version",
            hint="give a version like `3.12`",
        )
    return f"{match.group(1)}.{match.group(2)}"


def _versioned_executables(scan: _Scan) -> dict[str, str]:
    """Existing `pythonX.Y` paths (following symlinks) -> their "X.Y" version."""
    found = {}
    for path in scan.pythons:
        if re.search(r"python3\.\d+$", path) and (version := _version_of(path, scan)):
            found[path] = version
    return found


def _version_of(path: str, scan: _Scan, depth: int = 0) -> str | None:
    """The X.Y of the interpreter `path` names, following symlinks within the scan."""
    if path not in scan.pythons or depth > 8:
        return None
    target = scan.pythons[path]
    if not target:
        match = re.search(r"python(3\.\d+)$", path)
        return match.group(1) if match else None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target)).lstrip("/")
    if resolved.startswith("bin/"):
        # Debian merges /bin into /usr/bin, so a target under /bin may live in usr/bin.
        resolved = resolved if resolved in scan.pythons else "usr/" + resolved
    return _version_of(resolved, scan, depth + 1)


def _version_from_command(command: Sequence[str], scan: _Scan) -> str | None:
    for arg in command:
        base = posixpath.basename(arg)
        if match := re.fullmatch(r"python(3\.\d+)", base):
            return match.group(1)
        if base in ("python", "python3"):
            for bin_dir in _BIN_DIRS:
                path = arg.lstrip("/") if arg.startswith("/") else f"{bin_dir}/{base}"
                if version := _version_of(path, scan):
                    return version
    return None


def _preferred_version(scan: _Scan, executables: Mapping[str, str]) -> str | None:
    # `python3` says which of several versions the image means; else take the newest.
    for bin_dir in _BIN_DIRS:
        if version := _version_of(f"{bin_dir}/python3", scan):
            return version
    versions = sorted(set(executables.values()), key=lambda v: tuple(map(int, v.split("."))))
    return versions[-1] if versions else None


def _choose_libc(overrides: PythonOverrides, scan: _Scan) -> tuple[str, str | None]:
    from_tags = _libc_from_tags(overrides.platform_tags)
    if from_tags is not None:
        return from_tags

    detected = "musl" if scan.musl_loaders else "glibc"
    libc = overrides.libc or detected
    if libc not in ("glibc", "musl"):
        raise ConfigError(
            f"`tool.jib.python.libc` is {libc!r}",
            hint='set it to "glibc" or "musl"',
        )
    if libc != detected:
        return libc, None
    return libc, _libc_version(libc, scan)


def _libc_version(libc: str, scan: _Scan) -> str | None:
    # The package database is authoritative; a versioned libc soname is the fallback.
    versions = [version for version in scan.libc_records.values() if version]
    if versions:
        return versions[0]
    if libc == "glibc" and scan.glibc_sonames:
        return max(scan.glibc_sonames.values(), key=lambda v: tuple(map(int, v.split("."))))
    return None


def _libc_from_tags(tags: Sequence[str]) -> tuple[str, str | None] | None:
    """The libc a `platform-tags` override implies: the first manylinux or musllinux tag."""
    for tag in tags:
        if match := re.fullmatch(r"(manylinux|musllinux)_(\d+)_(\d+)_\w+", tag):
            libc = "glibc" if match.group(1) == "manylinux" else "musl"
            return libc, f"{match.group(2)}.{match.group(3)}"
        legacy = {"manylinux2014": "2.17", "manylinux2010": "2.12", "manylinux1": "2.5"}
        prefix = tag.split("_", 1)[0]
        if prefix in legacy:
            return "glibc", legacy[prefix]
    if tags:
        raise ConfigError(
            f"`tool.jib.python.platform-tags` {list(tags)} has no manylinux or musllinux tag",
            hint='give a tag like "manylinux_2_28_x86_64" or "musllinux_1_2_aarch64"',
        )
    return None


def _implementation(value: str | None) -> str:
    if value is None:
        return "cp"
    implementation = _IMPLEMENTATIONS.get(value.lower())
    if implementation is None:
        raise ConfigError(
            f"`tool.jib.python.implementation` is {value!r}",
            hint='set it to "cpython" (or "cp")',
        )
    return implementation


def _manylinux_minor(libc_version: str | None) -> int | None:
    """The newest glibc 2.x minor that uv can target and the image's glibc satisfies."""
    if not libc_version:
        return None
    major, _, minor = libc_version.partition(".")
    if major != "2" or not minor.isdigit():
        return None
    fitting = [known for known in _MANYLINUX_MINORS if known <= int(minor)]
    if not fitting:
        raise BuildError(
            f"glibc {libc_version} is older than any manylinux platform uv can target",
            hint="choose a base image with glibc 2.17 or newer",
        )
    return fitting[-1]
