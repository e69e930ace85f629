"""Local dependencies (paths, VCS URLs, sdist files) built into wheels kept in the cache."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import parse_wheel_filename

from hatch_jib.cache import LOCAL_WHEELS, BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.python.resolve import uv_binary

__all__ = ["LocalWheel", "build_local_wheels"]

log = logging.getLogger(__name__)

# Zip timestamps of the built wheels; the image does not depend on them, the cache key does.
_SOURCE_DATE_EPOCH = "315532800"
_VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
_BUILDING = threading.Lock()

LocalWheel = tuple[str, Path]
"""A built wheel: the canonical requirement (`name @ file:///...whl ; marker`) and its path."""


def build_local_wheels(
    specs: Sequence[str], *, cache_root: Path, offline: bool = False
) -> list[LocalWheel]:
    """Build each local requirement into a wheel kept under `cache_root/local-wheels/<sha256>/`.

    The wheel's path depends on its content only, so an unchanged dependency gives the same
    requirement text and the cached resolution is reused.
    """
    built = []
    for spec in specs:
        location, marker = _split_marker(spec)
        # One build at a time: platforms built side by side would otherwise run two build
        # backends in one source tree, and setuptools writes build/ and *.egg-info there.
        with _BUILDING, BlobStore(cache_root).scratch_directory() as scratch:
            source = _source_path(location, Path(scratch))
            wheel = _uv_build(source, Path(scratch) / "out", spec=spec, offline=offline)
            stored = _keep(wheel, cache_root / LOCAL_WHEELS)
        name = parse_wheel_filename(stored.name)[0]
        log.info("Built local dependency %s from %s", stored.name, _display(location))
        built.append((f"{name} @ {stored.as_uri()}{marker}", stored))
    return built


def _split_marker(spec: str) -> tuple[str, str]:
    text, _, marker = spec.partition(";")
    text = text.strip()
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        requirement = None
    if requirement is not None and requirement.url:
        text = requirement.url
    return text, (f" ; {marker.strip()}" if marker.strip() else "")


def _source_path(location: str, scratch: Path) -> Path:
    """A directory or sdist on disk for `location`; VCS URLs are cloned into `scratch`."""
    if location.startswith(_VCS_SCHEMES):
        return _clone(location, scratch / "checkout")
    parts = urlsplit(location)
    path = Path(url2pathname(parts.path)) if parts.scheme == "file" else Path(location)
    if not path.exists():
        raise BuildError(
            f"local dependency {location} does not exist",
            hint="fix the path in the dependency (it is relative to the project root)",
        )
    return path


def _clone(location: str, checkout: Path) -> Path:
    # git+https://host/repo.git@rev#subdirectory=pkg
    vcs, _, url = location.partition("+")
    if vcs != "git":
        raise BuildError(
            f"cannot build {location}: only git VCS dependencies are supported",
            hint="build the dependency into a wheel and depend on that file instead",
        )
    url, _, fragment = url.partition("#")
    head, _, rev = url.rpartition("@")
    if "/" in rev or not head or head.endswith(":"):
        head, rev = url, ""
    subdirectory = dict(p.partition("=")[::2] for p in fragment.split("&") if p).get(
        "subdirectory", ""
    )
    _git(["clone", "--quiet", head, os.fspath(checkout)], location)
    if rev:
        _git(["-C", os.fspath(checkout), "checkout", "--quiet", rev], location)
    return checkout / subdirectory


def _git(args: list[str], location: str) -> None:
    git = shutil.which("git")
    if git is None:
        raise BuildError(f"cannot fetch {location}: git is not installed", hint="install git")
    result = subprocess.run([git, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"git {args[0]} for {location} failed: {result.stderr.strip()}",
            hint="check the URL and revision of the VCS dependency",
        )


def _uv_build(source: Path, out: Path, *, spec: str, offline: bool) -> Path:
    # TODO(#5): a local dependency with extension modules is built by and for the host's
    # Python; for another target uv then rejects its wheel. Cross-building needs the target's
    # headers and a cross compiler, so only pure-Python local dependencies fit any target.
    command = [uv_binary(), "build", "--wheel", "--out-dir", os.fspath(out), "--no-progress"]
    command += ["--color", "never", "--no-python-downloads", os.fspath(source)]
    if offline:
        command.append("--offline")
    env = {
        **os.environ,
        "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", _SOURCE_DATE_EPOCH),
    }
    log.debug("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
    if result.returncode != 0 or len(wheels) != 1:
        detail = "\n".join("  " + line for line in result.stderr.strip().splitlines()[-8:])
        raise BuildError(
            f"cannot build local dependency {spec} into a wheel:\n{detail}",
            hint="check that `uv build --wheel` works in that directory",
        )
    return wheels[0]


def _keep(wheel: Path, directory: Path) -> Path:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    stored = directory / digest / wheel.name
    if not stored.is_file():
        stored.parent.mkdir(parents=True, exist_ok=True)
        # A temp name of its own: another build (or platform) may be copying the same wheel.
        fd, partial = tempfile.mkstemp(dir=stored.parent, suffix=".partial")
        os.close(fd)
        try:
            shutil.copyfile(wheel, partial)
            os.replace(partial, stored)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return stored


def _display(location: str) -> str:
    parts = urlsplit(location)
    return url2pathname(parts.path) if parts.scheme == "file" else location
