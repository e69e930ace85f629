"""Bytecode for the image: deterministic pycs that name the in-image source paths."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import posixpath
import sys
from collections.abc import Sequence
from pathlib import Path

from hatch_jib.errors import BuildError
from hatch_jib.python.install import InstalledDist
from hatch_jib.python.target import TargetProfile

__all__ = ["compile_dists", "should_compile"]

log = logging.getLogger(__name__)


def should_compile(mode: str, target: TargetProfile) -> bool:
    """Whether to write pycs: `auto` only when this interpreter's bytecode fits the target."""
    if mode == "never":
        return False
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    fits = target.implementation == "cp" and sys.implementation.name == "cpython"
    fits = fits and host == target.python_version
    if fits:
        return True
    if mode == "always":
        raise BuildError(
            f"cannot write bytecode for Python {target.python_version}: this build runs "
            f"{sys.implementation.name} {host}, whose bytecode the target cannot load",
            hint=f"build with Python {target.python_version}, or set `tool.jib.python.bytecode` "
            'to "auto" or "never"',
        )
    log.info(
        "Not compiling bytecode: the build runs Python %s and the image Python %s",
        host,
        target.python_version,
    )
    return False


def compile_dists(root: Path, dists: Sequence[InstalledDist]) -> list[InstalledDist]:
    """Compile each dist's `.py` files under `root`; return the dists with their pycs added.

    The pycs are unchecked-hash based, so they carry no source mtime, and their `co_filename`
    is the path in the image, so tracebacks show /app/.venv/... instead of the build's tree.
    They are the plain, unoptimized ones the image's Python loads by default, whether or not
    this build runs with `-O` or `PYTHONOPTIMIZE`.
    """
    suffix = importlib.util.cache_from_source("x.py", optimization="").rpartition("x")[2]
    return [_compile_dist(root, dist, suffix) for dist in dists]


def _compile_dist(root: Path, dist: InstalledDist, suffix: str) -> InstalledDist:
    import py_compile

    written = []
    for path in dist.files:
        if not path.endswith(".py") or "/site-packages/" not in path:
            continue
        directory, _, filename = path.rpartition("/")
        pyc = f"{directory}/__pycache__/{filename[:-3]}{suffix}"
        try:
            py_compile.compile(
                str(root / path),
                cfile=str(root / pyc),
                dfile=posixpath.join("/", path),
                doraise=True,
                optimize=0,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        except py_compile.PyCompileError as error:
            # As compileall does: a file that does not compile (a template, old syntax) stays
            # source-only; importing it would fail the same way with or without a pyc.
            log.debug("not compiling %s: %s", path, error.msg.strip().splitlines()[-1])
            continue
        written.append(pyc)
    if not written:
        return dist
    # Everything else about the dist stays, above all what it left unwritten: the resources
    # key is made of those files' hashes.
    return dataclasses.replace(dist, files=tuple(sorted({*dist.files, *written})))
