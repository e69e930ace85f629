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
        # Patch releases fix the compiler too: 3.11.2 and 3.11.7 give a `match` statement
        # other column tables, so the release is what a user pins for equal digests.
        log.info(
            "Bytecode in the image comes from this CPython %s: another %s release may "
            "compile some modules differently, and so give other layer digests",
            sys.version.split()[0],
            host,
        )
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
    this build runs with `-O` or `PYTHONOPTIMIZE`. Child processes of this interpreter write
    them (see `_WORKER_FLAGS`), one per core when there are many.
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
    written: list[list[str]] = [[] for _ in dists]
    for job, ok in zip(jobs, _compile_everywhere(jobs), strict=True):
        if ok:
            written[job.dist].append(job.pyc)

    # Everything else about a dist stays, above all what it left unwritten: the resources
    # key is made of those files' hashes.
    return [
        dataclasses.replace(dist, files=tuple(sorted({*dist.files, *pycs}))) if pycs else dist
        for dist, pycs in zip(dists, written, strict=True)
    ]


@dataclasses.dataclass(frozen=True)
class _Job:
    dist: int  # index of its dist
    path: str  # the source's path in the image
    pyc: str
    source: str  # on disk
    target: str


# Files per child process: below twice this, one child does them all.
_SHARE = 150
# The compiler's output depends on how its interpreter was started: `-X no_debug_ranges`
# drops column positions from every pyc, `-W error` turns a warning into no pyc at all, and
# the int digit limit can refuse a long literal. So the pycs always come from children of
# this interpreter started the same way, never from this process, whatever its own flags:
# -I (no PYTHON* variables, user site or cwd on the path), -S (py_compile is all it needs),
# -W ignore (warnings cannot fail a file, and stay off the console).
_WORKER_FLAGS = ("-I", "-S", "-W", "ignore")
_WORKER = """
import json, py_compile, sys
request = json.load(sys.stdin)
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
    """Compile every job in child processes, one per core for many files; whether each gave a
    pyc. A share no child could do is compiled here, with a warning."""
    if not jobs:
        return []
    workers = max(1, min(os.cpu_count() or 1, 8, len(jobs) // _SHARE))
    # Round-robin shares, so each child gets some of every dist's files.
    shares = [list(range(first, len(jobs), workers)) for first in range(workers)]
    compiled = [False] * len(jobs)
    children: list[subprocess.Popen[bytes] | None] = []
    try:
        for share in shares:
            children.append(_start_worker([jobs[i] for i in share]))
        for share, child in zip(shares, children, strict=True):
            failed = _wait_for_worker(child, len(share))
            if failed is None:
                _compile_share_here([jobs[i] for i in share], compiled, share)
                continue
            for i in share:
                compiled[i] = True
            for position, message in failed:
                compiled[share[position]] = False
                _log_not_compiled(jobs[share[position]].path, message)
    finally:
        for child in children:
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
    return compiled


def _start_worker(share: Sequence[_Job]) -> subprocess.Popen[bytes] | None:
    entries = [(job.source, job.target, posixpath.join("/", job.path)) for job in share]
    request = json.dumps({"version": sys.version, "jobs": entries}).encode()
    if not sys.executable:
        log.debug("no interpreter to start a bytecode worker with")
        return None
    # A pipe of our own for the request, so that `communicate` later only reads.
    reading, writing = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, *_WORKER_FLAGS, "-c", _WORKER],
            stdin=reading,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as error:
        os.close(writing)
        log.debug("cannot start a bytecode worker (%s)", error)
        return None
    finally:
        os.close(reading)
    # The worker reads all of its request before it writes anything, so this cannot block
    # on a full pipe the other way.
    try:
        with open(writing, "wb") as pipe:
            pipe.write(request)
    except OSError as error:  # it died at once: its answer says why
        log.debug("bytecode worker refused its request (%s)", error)
    return child


def _wait_for_worker(
    child: subprocess.Popen[bytes] | None, size: int
) -> list[tuple[int, str]] | None:
    """The positions and messages of the worker's failed files, or None if it gave no
    usable answer."""
    if child is None:
        return None
    while True:
        cancel.checkpoint()
        try:
            out, err = child.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            continue
    # Killed by a signal (Ctrl-C reaches it too): if the build is being stopped, stop here.
    cancel.checkpoint()
    if child.returncode != 0:
        log.debug("bytecode worker exited %s: %s", child.returncode, err.decode(errors="replace"))
        return None
    try:
        failed = [(position, message) for position, message in json.loads(out)]
    except (ValueError, TypeError) as error:
        log.debug("bytecode worker answered %r (%s)", out[:200], error)
        return None
    if not all(
        isinstance(p, int) and 0 <= p < size and isinstance(m, str) and m.strip() for p, m in failed
    ):
        log.debug("bytecode worker answered %r", out[:200])
        return None
    return failed


def _compile_share_here(share: Sequence[_Job], compiled: list[bool], positions: list[int]) -> None:
    log.warning(
        "Compiling %d modules in the build's own process, as no worker could: their bytecode "
        "may depend on how this Python was started (-X no_debug_ranges, -W error)",
        len(share),
    )
    for job, position in zip(share, positions, strict=True):
        cancel.checkpoint()
        compiled[position] = _compile_here(job)


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
    lines = message.strip().splitlines()
    log.debug("not compiling %s: %s", path, lines[-1] if lines else "no reason given")
