"""The project's pinned dependency set: a lock file, or `[project]` plus extras and groups.

A lock (`uv.lock`, `pylock.toml` or a requirements file with hashes) is read into pinned
requirements with the hashes it allows; the target's wheels are then chosen among them, so the
image gets exactly the locked versions. Without a lock, the requirements are resolved afresh.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from hatch_jib.errors import BuildError, ConfigError
from hatch_jib.python.resolve import ResolvedWheel, uv_binary
from hatch_jib.python.target import TargetProfile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "AUTO_LOCKS",
    "Requirements",
    "check_locked_hashes",
    "collect_requirements",
    "dependency_groups",
    "find_lock",
    "is_local",
    "read_lock",
]

log = logging.getLogger(__name__)

# Looked for in the project root, in this order, when `python.lock` is not set.
AUTO_LOCKS = ("uv.lock", "pylock.toml")
_VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
_HASH = re.compile(r"--hash[=\s]+sha256:([0-9a-fA-F]{64})")


@dataclass(frozen=True)
class Requirements:
    """What to install: index requirements, local ones to build first, and the lock's hashes.

    `locked` is true for a lock: `index` is then the complete pinned set (resolve it without
    dependencies) and `hashes` maps each canonical name to the sha256 values it allows.
    """

    index: tuple[str, ...]
    local: tuple[str, ...] = ()
    locked: bool = False
    hashes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    source: str = "pyproject.toml"


def find_lock(root: Path, configured: str | None) -> Path | None:
    """The lock file to honour: `python.lock` if set (it must exist), else an auto-detected one."""
    if configured:
        path = root / configured
        if not path.is_file():
            raise ConfigError(
                f"`tool.jib.python.lock` names {configured!r}, but {path} does not exist",
                hint="point it at uv.lock, pylock.toml or a requirements file with hashes",
            )
        return path
    for name in AUTO_LOCKS:
        if (root / name).is_file():
            return root / name
    return None


def read_lock(
    path: Path,
    *,
    root: Path,
    extras: Sequence[str] = (),
    groups: Sequence[str] = (),
    target: TargetProfile | None = None,
) -> Requirements:
    """The pinned requirements `path` holds for the chosen extras and groups.

    `target` evaluates pylock.toml markers that select by extra or group; other markers are
    left to the resolver.
    """
    log.info("Using lock file %s", path.name)
    if path.name == "uv.lock":
        text = _export_uv_lock(path, root=root, extras=extras, groups=groups)
        return _from_requirements_text(text, path.name, root=root)
    if path.suffix == ".toml":
        return _from_pylock(path, target=target, extras=extras, groups=groups)
    return _from_requirements_text(path.read_text(encoding="utf-8"), path.name, root=root)


def _export_uv_lock(path: Path, *, root: Path, extras: Sequence[str], groups: Sequence[str]) -> str:
    # --frozen: export exactly what is locked; a stale lock is the user's to refresh.
    # TODO(#5): say when uv.lock no longer matches pyproject.toml (`--locked` needs a resolve).
    command = [
        uv_binary(),
        "export",
        "--frozen",
        "--format",
        "requirements-txt",
        "--no-emit-project",
        "--no-header",
        "--no-annotate",
        # The image gets [project] dependencies; dev groups only when named.
        "--no-default-groups",
        "--project",
        os.fspath(path.parent),
        "--no-progress",
        "--color",
        "never",
    ]
    for extra in extras:
        command += ["--extra", extra]
    for group in groups:
        command += ["--group", group]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=root)
    if result.returncode != 0:
        detail = "\n".join("  " + line for line in result.stderr.strip().splitlines()[-6:])
        raise BuildError(
            f"cannot read {path}:\n{detail}",
            hint="run `uv lock` in the project, or check `tool.jib.python.extras` and `groups`",
        )
    return result.stdout


def _from_requirements_text(text: str, source: str, *, root: Path) -> Requirements:
    """Pinned, hashed requirement lines (pip's hash-checking mode); local ones are set aside."""
    index: list[str] = []
    local: list[str] = []
    hashes: dict[str, frozenset[str]] = {}
    for line in _logical_lines(text):
        allowed = frozenset(match.lower() for match in _HASH.findall(line))
        spec = _HASH.sub("", line).strip()
        if spec.startswith("-e ") or spec.startswith("--editable"):
            spec = spec.split(None, 1)[1].strip() if " " in spec else ""
        elif spec.startswith("-"):
            # Index options (--index-url, --find-links) are for uv, which reads them too.
            index.append(spec)
            continue
        if is_local(spec):
            local.append(_absolute_local(spec, root))
            continue
        if spec.startswith((".", "/")):
            # A wheel file in the project (`./wheels/x.whl`): its bytes are the project's own.
            index.append(_wheel_file_requirement(spec, root))
            continue
        name = _pinned_name(spec, source, allowed)
        hashes[name] = allowed
        index.append(spec)
    return Requirements(tuple(index), tuple(local), True, hashes, source)


def _wheel_file_requirement(spec: str, root: Path) -> str:
    location, _, marker = spec.partition(";")
    path = (root / location.strip()).resolve()
    name = parse_wheel_filename(path.name)[0]
    return f"{name} @ {path.as_uri()}" + (f" ; {marker.strip()}" if marker.strip() else "")


def _logical_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\r?\n", " ", text)
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line]


def _pinned_name(spec: str, source: str, allowed: frozenset[str]) -> str:
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as error:
        raise BuildError(
            f"{source}: cannot read the requirement {spec!r}: {error}", hint="fix that line"
        ) from error
    pins = [s for s in requirement.specifier if s.operator in ("==", "===")]
    if not pins or "*" in pins[0].version or not allowed:
        raise BuildError(
            f"{source}: {spec!r} is not pinned with `==` and `--hash`",
            hint="generate the file with `uv pip compile --generate-hashes` "
            "or `uv export`, or drop `tool.jib.python.lock` to resolve afresh",
        )
    return canonicalize_name(requirement.name)


def _from_pylock(
    path: Path,
    *,
    target: TargetProfile | None,
    extras: Sequence[str],
    groups: Sequence[str],
) -> Requirements:
    """PEP 751: each package is pinned with its marker; wheels and sdist give the hashes."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise BuildError(f"cannot read {path}: {error}", hint="regenerate the lock") from error
    chosen = _LockSelection(
        extras=frozenset(extras), groups=frozenset(groups or data.get("default-groups", []))
    )

    index: list[str] = []
    local: list[str] = []
    hashes: dict[str, frozenset[str]] = {}
    for package in data.get("packages", []):
        name, marker = str(package["name"]), package.get("marker")
        if marker and not chosen.includes(str(marker), target, path.name):
            continue
        suffix = f" ; {marker}" if marker and not chosen.selects_by(str(marker)) else ""
        source = _pylock_local_source(package, path.parent)
        if source is not None:
            local.append(f"{name} @ {source}{suffix}")
            continue
        files = [*package.get("wheels", []), package.get("sdist") or {}]
        allowed = frozenset(
            str(item["hashes"]["sha256"]).lower()
            for item in files
            if "sha256" in item.get("hashes", {})
        )
        hashes[canonicalize_name(name)] = allowed
        index.append(f"{name}=={package['version']}{suffix}")
    return Requirements(tuple(index), tuple(local), True, hashes, path.name)


@dataclass(frozen=True)
class _LockSelection:
    """The extras and dependency groups a pylock.toml is read for."""

    extras: frozenset[str]
    groups: frozenset[str]

    @staticmethod
    def selects_by(marker: str) -> bool:
        return bool(re.search(r"\b(extras|dependency_groups)\b", marker))

    def includes(self, marker: str, target: TargetProfile | None, source: str) -> bool:
        """False when the marker excludes the package by extra or group; else uv decides."""
        if not self.selects_by(marker):
            return True
        if target is None:
            raise BuildError(
                f"{source}: the marker {marker!r} needs the target to evaluate",
                hint="this is a bug in hatch-jib; please report it",
            )
        environment: dict[str, str | frozenset[str]] = {
            **target.marker_environment(),
            "extras": self.extras,
            "dependency_groups": self.groups,
        }
        try:
            return Marker(marker).evaluate(environment, context="lock_file")
        except InvalidMarker as error:
            raise BuildError(
                f"{source}: cannot read the marker {marker!r}: {error}",
                hint="regenerate the lock",
            ) from error


def _pylock_local_source(package: Mapping[str, Any], base: Path) -> str | None:
    if "directory" in package:
        return (base / package["directory"]["path"]).resolve().as_uri()
    if "vcs" in package:
        vcs = package["vcs"]
        url = f"{vcs['type']}+{vcs.get('url') or (base / vcs['path']).resolve().as_uri()}"
        return f"{url}@{vcs['commit-id']}" if vcs.get("commit-id") else url
    archive = package.get("archive")
    if archive and not str(archive.get("url") or archive.get("path", "")).endswith(".whl"):
        return str(archive.get("url") or (base / archive["path"]).resolve().as_uri())
    return None


def is_local(spec: str) -> bool:
    """A path, VCS or non-wheel file requirement: it must be built into a wheel first."""
    text = spec.strip()
    if text.startswith((".", "/", "file:")) or text.startswith(_VCS_SCHEMES):
        return not text.split(";")[0].strip().endswith(".whl")
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return False
    url = requirement.url or ""
    if url.startswith(_VCS_SCHEMES):
        return True
    return url.startswith("file:") and not url.endswith(".whl")


def _absolute_local(spec: str, root: Path) -> str:
    # uv export writes project-relative paths (`./libs/x`); make them independent of the cwd.
    location = spec.split(";")[0].strip()
    if location.startswith((".", "/")):
        return (root / location).resolve().as_uri()
    return spec


def check_locked_hashes(wheels: Sequence[ResolvedWheel], requirements: Requirements) -> None:
    """Every chosen wheel must be one the lock lists, byte for byte."""
    for wheel in wheels:
        allowed = requirements.hashes.get(canonicalize_name(wheel.name))
        if allowed is None:
            continue  # a wheel built from a local dependency
        if wheel.sha256.lower() not in allowed:
            raise BuildError(
                f"wheel {wheel.filename} is not one that {requirements.source} allows "
                f"(sha256 {wheel.sha256 or 'unknown'})",
                hint=f"refresh {requirements.source} so that it lists the target's wheels "
                "(uv lock, or uv pip compile --generate-hashes --universal)",
            )


def dependency_groups(table: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """PEP 735: the requirements of `names` in `[dependency-groups]`, with includes expanded."""
    groups: dict[str, Any] = {canonicalize_name(key): value for key, value in table.items()}
    result: list[str] = []
    for name in names:
        result.extend(_expand_group(groups, canonicalize_name(name), name, ()))
    return list(dict.fromkeys(result))


def _expand_group(
    groups: Mapping[str, Any], key: str, shown: str, seen: tuple[str, ...]
) -> list[str]:
    if key not in groups:
        known = ", ".join(sorted(groups)) or "none"
        raise ConfigError(
            f"`tool.jib.python.groups` names {shown!r}, which [dependency-groups] does not define",
            hint=f"groups in [dependency-groups]: {known}",
        )
    if key in seen:
        raise ConfigError(
            f"[dependency-groups] {shown!r} includes itself",
            hint="remove the include-group cycle",
        )
    requirements: list[str] = []
    for item in groups[key]:
        if isinstance(item, str):
            requirements.append(item)
        elif isinstance(item, Mapping) and "include-group" in item:
            included = str(item["include-group"])
            requirements += _expand_group(
                groups, canonicalize_name(included), included, (*seen, key)
            )
    return requirements


def collect_requirements(
    root: Path,
    dependencies: Sequence[str],
    *,
    lock: str | None = None,
    extras: Sequence[str] = (),
    groups: Sequence[str] = (),
    target: TargetProfile | None = None,
) -> Requirements:
    """The lock's pinned set if there is a lock; else `dependencies` plus the chosen groups.

    `dependencies` already holds the chosen extras' requirements.
    """
    path = find_lock(root, lock)
    if path is not None:
        return read_lock(path, root=root, extras=extras, groups=groups, target=target)
    requirements = [*dependencies, *dependency_groups(_pyproject_groups(root), groups)]
    return Requirements(
        index=tuple(spec for spec in requirements if not is_local(spec)),
        local=tuple(_absolute_local(spec, root) for spec in requirements if is_local(spec)),
    )


def _pyproject_groups(root: Path) -> Mapping[str, Any]:
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    groups = data.get("dependency-groups") or {}
    return groups if isinstance(groups, Mapping) else {}
