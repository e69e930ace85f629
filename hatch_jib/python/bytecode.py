"""Bytecode for the image: deterministic pycs that name the in-image source paths."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import posixpath
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hatch_jib import cancel
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
    this build runs with `-O` or `PYTHONOPTIMIZE`. Many files are compiled on every core, by
    child processes of this same interpreter, which write the very bytes this one would.
    """
    suffix = importlib.util.cache_from_source("x.py", optimization="").rpartition("x")[2]
    jobs = []
    for index, dist in enumerate(dists):
        for path in dist.files:
            if not path.endswith(".py") or "/site-packages/" not in path:
                continue
            directory, _, filename = path.rpartition("/")
            pyc = f"{directory}/__pycache__/{filename[:-3]}{suffix}"
            jobs.append(_Job(index, path, pyc, str(root / path), str(root / pyc)))
    compiled = _compile_everywhere(jobs)
    result = []
    for index, dist in enumerate(dists):
        written = [
            job.pyc for job, ok in zip(jobs, compiled, strict=True) if ok and job.dist == index
        ]
        # Everything else about the dist stays, above all what it left unwritten: the
        # resources key is made of those files' hashes.
        result.append(
            dataclasses.replace(dist, files=tuple(sorted({*dist.files, *written})))
            if written
            else dist
        )
    return result


@dataclasses.dataclass(frozen=True)
class _Job:
    dist: int  # index of its dist
    path: str  # the source's path in the image
    pyc: str
    source: str  # on disk
    target: str


# Below this many files a child's start (about 30 ms) costs more than the cores save.
_PARALLEL_FROM = 300
_WORKER = """
import json, py_compile, sys
request = json.load(open(sys.argv[1]))
if request["version"] != sys.version:
    sys.exit(3)
failed = []
for index, (source, target, shown) in enumerate(request["jobs"]):
    try:
        py_compile.compile(source, cfile=target, dfile=shown, doraise=True, optimize=0,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as error:
        failed.append([index, error.msg])
json.dump(failed, sys.stdout)
"""


def _compile_everywhere(jobs: Sequence[_Job]) -> list[bool]:
    """Compile every job; whether each gave a pyc. Spread over child processes when many."""
    workers = min(os.cpu_count() or 1, 8, len(jobs) // (_PARALLEL_FROM // 2))
    if workers < 2 or len(jobs) < _PARALLEL_FROM or not sys.executable:
        return [_compile_here(job) for job in jobs]
    # Round-robin slices, so each child gets a share of every dist's files.
    slices = [list(range(first, len(jobs), workers)) for first in range(workers)]
    compiled = [False] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="hatch-jib-pyc-") as scratch:
        children = []
        try:
            for number, members in enumerate(slices):
                request = Path(scratch) / f"{number}.json"
                entries = [
                    (jobs[i].source, jobs[i].target, posixpath.join("/", jobs[i].path))
                    for i in members
                ]
                request.write_text(json.dumps({"version": sys.version, "jobs": entries}))
                children.append(_start_worker(request))
            for members, child in zip(slices, children, strict=True):
                failed = _wait_for_worker(child)
                if failed is None:  # no answer: this interpreter does that share itself
                    for i in members:
                        compiled[i] = _compile_here(jobs[i])
                    continue
                for i in members:
                    compiled[i] = True
                for position, message in failed:
                    compiled[members[position]] = False
                    _log_not_compiled(jobs[members[position]].path, message)
        finally:
            for child in children:
                if child is not None and child.poll() is None:
                    child.kill()
                    child.wait()
    return compiled


def _start_worker(request: Path) -> subprocess.Popen[bytes] | None:
    try:
        # -I -S: no environment, user site or site-packages; py_compile is all it needs.
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WORKER, str(request)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as error:
        log.debug("cannot start a bytecode worker (%s); compiling here", error)
        return None


def _wait_for_worker(child: subprocess.Popen[bytes] | None) -> list[tuple[int, str]] | None:
    """The worker's failed jobs, or None if it gave no usable answer."""
    if child is None:
        return None
    while True:
        cancel.checkpoint()
        try:
            out, err = child.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            continue
    if child.returncode != 0:
        log.debug("bytecode worker exited %s: %s", child.returncode, err.decode(errors="replace"))
        return None
    try:
        return [(int(position), str(message)) for position, message in json.loads(out)]
    except (ValueError, TypeError) as error:
        log.debug("bytecode worker answered %r (%s)", out[:200], error)
        return None


def _compile_here(job: _Job) -> bool:
    import py_compile

    try:
        py_compile.compile(
            job.source,
            cfile=job.target,
            dfile=posixpath.join("/", job.path),
            doraise=True,
            optimize=0,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except py_compile.PyCompileError as error:
        _log_not_compiled(job.path, error.msg)
        return False
    return True


def _log_not_compiled(path: str, message: str) -> None:
    # As compileall does: a file that does not compile (a template, old syntax) stays
    # source-only; importing it would fail the same way with or without a pyc.
    log.debug("not compiling %s: %s", path, message.strip().splitlines()[-1])
