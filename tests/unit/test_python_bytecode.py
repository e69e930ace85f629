"""Bytecode: when it is written, and that it is deterministic and names in-image paths."""

from __future__ import annotations

import logging
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hatch_jib.errors import BuildError
from hatch_jib.python import bytecode
from hatch_jib.python.bytecode import compile_dists, should_compile
from hatch_jib.python.install import InstalledDist
from hatch_jib.python.target import TargetProfile

HOST = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER = "3.99"
SITE = f"app/.venv/lib/python{HOST}/site-packages"
TAG = sys.implementation.cache_tag


def target(version: str) -> TargetProfile:
    return TargetProfile(version, f"/usr/bin/python{version}")


def staged(root: Path) -> InstalledDist:
    (root / SITE / "pkg").mkdir(parents=True)
    (root / SITE / "pkg/__init__.py").write_text("def boom():\n    raise RuntimeError('x')\n")
    (root / SITE / "pkg/broken.py").write_text("def broken(:\n")
    (root / "app/.venv/bin").mkdir(parents=True)
    (root / "app/.venv/bin/tool.py").write_text("print('a script, not a module')\n")
    files = (f"{SITE}/pkg/__init__.py", f"{SITE}/pkg/broken.py", "app/.venv/bin/tool.py")
    return InstalledDist("pkg", "1.0", files)


def test_auto_compiles_only_for_the_build_interpreters_minor_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    assert should_compile("auto", target(HOST)) is True
    assert should_compile("auto", target(OTHER)) is False
    assert should_compile("never", target(HOST)) is False
    assert f"the build runs Python {HOST} and the image Python {OTHER}" in caplog.text


def test_compiling_names_the_python_release_that_the_pycs_depend_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    should_compile("auto", target(HOST))

    release = sys.version.split()[0]
    assert f"comes from this CPython {release}: another {HOST} release may" in caplog.text


def test_always_fails_clearly_when_the_target_cannot_load_our_bytecode() -> None:
    with pytest.raises(BuildError) as raised:
        should_compile("always", target(OTHER))

    assert f"cannot write bytecode for Python {OTHER}" in raised.value.message
    assert raised.value.hint is not None and f"build with Python {OTHER}" in raised.value.hint


def test_pycs_are_unchecked_hash_based_with_in_image_paths(tmp_path: Path) -> None:
    dist = staged(tmp_path)

    [compiled] = compile_dists(tmp_path, [dist])

    pyc = f"{SITE}/pkg/__pycache__/__init__.{TAG}.pyc"
    assert pyc in compiled.files
    # Only importable modules in site-packages: no pyc for broken code or bin/ scripts.
    assert [path for path in compiled.files if path.endswith(".pyc")] == [pyc]
    data = (tmp_path / pyc).read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0b01
    assert marshal.loads(data[16:]).co_filename == f"/{SITE}/pkg/__init__.py"


def test_pycs_are_the_same_bytes_in_another_checkout_at_another_time(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "elsewhere" / "b"
    compile_dists(first, [staged(first)])
    dist = staged(second)
    (second / SITE / "pkg/__init__.py").touch()

    compile_dists(second, [dist])

    pyc = f"{SITE}/pkg/__pycache__/__init__.{TAG}.pyc"
    assert (first / pyc).read_bytes() == (second / pyc).read_bytes()


def many_staged(root: Path, count: int) -> list[InstalledDist]:
    """Two dists of `count` modules in all, one of them broken, as a big install has."""
    dists = []
    for name in ("alpha", "beta"):
        package = root / SITE / name
        package.mkdir(parents=True)
        files = []
        for index in range(count // 2):
            module = package / f"m{index}.py"
            module.write_text(f"VALUES = {{{index!r}, 'x', 'y'}}\n\ndef f():\n    return {index}\n")
            files.append(f"{SITE}/{name}/m{index}.py")
        dists.append(InstalledDist(name, "1.0", tuple(files)))
    (root / SITE / "beta/m0.py").write_text("def broken(:\n")
    # Modules whose pyc a differently started interpreter would write otherwise, or not at
    # all: an invalid escape warns (an error under -W error), a long literal meets the digit
    # limit, and every function has column positions (gone under -X no_debug_ranges).
    (root / SITE / "alpha/m0.py").write_text("PATTERN = '\\d+'\n")
    (root / SITE / "alpha/m1.py").write_text(f"BIG = {'7' * 5000}\n")
    return dists


def pycs(root: Path, dists: list[InstalledDist]) -> dict[str, bytes]:
    return {
        path: (root / path).read_bytes()
        for dist in dists
        for path in dist.files
        if path.endswith(".pyc")
    }


def test_many_files_compile_on_every_core_to_the_bytes_of_one_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    alone = compile_dists(one, many_staged(one, 400))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)

    def not_here(job: object) -> bool:
        raise AssertionError("every file should have been compiled by a worker")

    monkeypatch.setattr(bytecode, "_compile_here", not_here)

    spread = compile_dists(many, many_staged(many, 400))

    assert [dist.files for dist in spread] == [dist.files for dist in alone]
    assert len(pycs(many, spread)) == 398  # all but the broken module and the long literal
    assert pycs(many, spread) == pycs(one, alone)


_COMPILE_IN_A_CHILD = """
import sys
from pathlib import Path
from hatch_jib.python.install import InstalledDist
from hatch_jib.python.bytecode import compile_dists
root = Path(sys.argv[1])
files = tuple(str(p.relative_to(root)) for p in sorted(root.rglob("*.py")))
compile_dists(root, [InstalledDist("alpha", "1.0", files)])
"""


def test_pycs_do_not_depend_on_how_the_builds_python_was_started(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    [alpha, _] = compile_dists(here, many_staged(here, 20))
    many_staged(there, 20)
    env = {**os.environ, "PYTHONINTMAXSTRDIGITS": "0", "PYTHONNODEBUGRANGES": "1"}

    subprocess.run(
        [sys.executable, "-W", "error", "-c", _COMPILE_IN_A_CHILD, str(there)],
        env=env,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )

    compiled = {path: (here / path).read_bytes() for path in alpha.files if path.endswith(".pyc")}
    assert f"{SITE}/alpha/__pycache__/m0.{TAG}.pyc" in compiled
    assert f"{SITE}/alpha/__pycache__/m1.{TAG}.pyc" not in compiled
    assert {path: (there / path).read_bytes() for path in compiled} == compiled


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
def test_a_worker_of_another_python_leaves_its_share_to_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hatch_jib")
    here, there = tmp_path / "here", tmp_path / "workers"
    alone = compile_dists(here, many_staged(here, 400))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    # The workers check the version they are sent against their own.
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")

    spread = compile_dists(there, many_staged(there, 400))

    assert caplog.text.count("bytecode worker exited 3") == 2
    assert "Compiling 200 modules in the build's own process" in caplog.text
    assert pycs(there, spread) == pycs(here, alone)


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
def test_a_worker_answer_that_does_not_fit_its_share_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hatch_jib")
    here, there = tmp_path / "here", tmp_path / "workers"
    alone = compile_dists(here, many_staged(here, 20))
    # A worker that compiles nothing and names a file its share does not have.
    monkeypatch.setattr(bytecode, "_WORKER", "import sys; sys.stdin.read(); print('[[99, \"x\"]]')")

    spread = compile_dists(there, many_staged(there, 20))

    assert "bytecode worker answered" in caplog.text
    assert pycs(there, spread) == pycs(here, alone)
