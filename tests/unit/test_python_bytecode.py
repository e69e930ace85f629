"""Bytecode: when it is written, and that it is deterministic and names in-image paths."""

from __future__ import annotations

import logging
import marshal
import sys
from pathlib import Path

import pytest

from hatch_jib.errors import BuildError
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
