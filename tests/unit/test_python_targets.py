"""Targets other than the host: the wheels chosen fit the image's Python, libc and machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.python.resolve import resolve
from hatch_jib.python.target import PythonOverrides, detect_target
from tests.unit.data.python.wheels import build_wheel
from tests.unit.test_python_target import DPKG_STATUS, config, make_layer

APK_DB = "P:musl\nV:1.2.4-r2\n\nP:busybox\nV:1.36.1-r5\n"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "cache")


@pytest.fixture(autouse=True)
def pypi_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_INDEX_URL", "https://pypi.org/simple")


def debian_layer(tmp_path: Path) -> Path:
    return make_layer(
        tmp_path / "debian.tar.gz",
        {"usr/bin/python3.11": b"\x7fELF", "var/lib/dpkg/status": DPKG_STATUS},
    )


def test_python_version_override_chooses_that_versions_wheels(
    tmp_path: Path, store: BlobStore
) -> None:
    two_pythons = make_layer(
        tmp_path / "two.tar.gz",
        {
            "usr/bin/python3.11": b"\x7fELF",
            "usr/bin/python3.12": b"\x7fELF",
            "var/lib/dpkg/status": DPKG_STATUS,
        },
    )
    target = detect_target(
        config(["PYTHON_VERSION=3.11.9"]),
        [two_pythons],
        architecture="amd64",
        overrides=PythonOverrides(version="3.12"),
    )

    [wheel] = resolve(["markupsafe==3.0.2"], target, store=store)

    assert (target.python_version, target.interpreter) == ("3.12", "/usr/bin/python3.12")
    assert wheel.filename.startswith("MarkupSafe-3.0.2-cp312-cp312-manylinux")
    assert wheel.filename.endswith("_x86_64.whl")


def test_override_naming_a_python_the_base_lacks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        detect_target(
            config(),
            [debian_layer(tmp_path)],
            architecture="amd64",
            overrides=PythonOverrides(version="3.99"),
        )

    assert "no python3.99" in str(caught.value) and "python3.11" in str(caught.value)
    assert "tool.jib.python.version" in str(caught.value)


def test_musl_base_gets_musllinux_wheels(tmp_path: Path, store: BlobStore) -> None:
    layer = make_layer(
        tmp_path / "alpine.tar.gz",
        {
            "lib/ld-musl-aarch64.so.1": b"\x7fELF",
            "lib/apk/db/installed": APK_DB,
            "usr/local/bin/python3.12": b"\x7fELF",
        },
    )
    target = detect_target(config(["PYTHON_VERSION=3.12.7"]), [layer], architecture="arm64")

    [wheel] = resolve(["markupsafe==3.0.2"], target, store=store)

    assert (target.libc, target.libc_version) == ("musl", "1.2")
    assert wheel.filename.startswith("MarkupSafe-3.0.2-cp312-cp312-musllinux_1_")
    assert wheel.filename.endswith("_aarch64.whl")


def test_glibc_older_than_the_wheel_needs_is_rejected_naming_package_and_target(
    tmp_path: Path, store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    build_wheel(
        links,
        "fastthing",
        "1.0",
        {"fastthing/__init__.py": ""},
        tag="cp311-cp311-manylinux_2_28_x86_64",
    )
    monkeypatch.setenv("UV_FIND_LINKS", str(links))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    old = DPKG_STATUS.replace("2.36-9+deb12u4", "2.17-326.el7")
    layer = make_layer(
        tmp_path / "centos7.tar.gz", {"usr/bin/python3.11": b"", "var/lib/dpkg/status": old}
    )
    target = detect_target(config(), [layer], architecture="amd64")

    with pytest.raises(BuildError) as raised:
        resolve(["fastthing==1.0"], target, store=store)

    assert raised.value.message == (
        "no wheel of fastthing==1.0 fits the target CPython 3.11, linux/amd64, glibc 2.17 "
        "(x86_64-manylinux_2_17): no matching platform tag; it has wheels for "
        "`manylinux_2_28_x86_64`"
    )
    assert "a newer glibc" in (raised.value.hint or "")
