"""Wheel installation into the staging tree and the venv skeleton."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.python.install import InstalledDist, create_venv, install_wheel
from hatch_jib.python.resolve import download, resolve
from hatch_jib.python.target import TargetProfile
from tests.unit.data.python.wheels import build_wheel

TARGET = TargetProfile("3.12", "/usr/local/bin/python3.12", "amd64", libc_version="2.36")
SITE = "app/.venv/lib/python3.12/site-packages"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    staging = tmp_path / "root"
    staging.mkdir()
    return staging


def test_real_wheel_installs_for_the_target_version_with_venv_shebangs(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "https://pypi.org/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    store = BlobStore(tmp_path / "cache")
    [wheel] = resolve(["pyflakes==3.2.0"], TARGET, store=store)
    [blob] = download([wheel], store)

    dist = install_wheel(blob, filename=wheel.filename, target=TARGET, root=root)

    assert (dist.name, dist.version) == ("pyflakes", "3.2.0")
    assert f"{SITE}/pyflakes/checker.py" in dist.files
    assert "app/.venv/bin/pyflakes" in dist.files
    assert all((root / path).is_file() for path in dist.files)
    script = (root / "app/.venv/bin/pyflakes").read_text()
    assert script.startswith("#!/app/.venv/bin/python\n")
    assert os.access(root / "app/.venv/bin/pyflakes", os.X_OK)


def test_record_is_sorted_and_installer_is_hatch_jib(tmp_path: Path, root: Path) -> None:
    wheel = build_wheel(
        tmp_path,
        "probe",
        "1.0",
        {"probe/z.py": "", "probe/a.py": "", "probe/__init__.py": ""},
        console_scripts={"zprobe": "probe.a:main"},
    )

    dist = install_wheel(wheel, filename=wheel.name, target=TARGET, root=root)

    dist_info = root / SITE / "probe-1.0.dist-info"
    rows = (dist_info / "RECORD").read_text().splitlines()
    paths = [row.split(",")[0] for row in rows]
    assert paths == sorted(paths)
    assert "../../../bin/zprobe" in paths
    assert (dist_info / "INSTALLER").read_text() == "hatch-jib\n"
    assert not (dist_info / "direct_url.json").exists()
    assert dist.files == tuple(sorted(dist.files))


def test_install_is_byte_identical_across_staging_roots(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "probe", "1.0", {"probe/__init__.py": "X = 1\n"})
    first, second = tmp_path / "one", tmp_path / "two"

    dists = [
        install_wheel(wheel, filename=wheel.name, target=TARGET, root=r) for r in (first, second)
    ]

    assert dists[0] == dists[1]
    for path in dists[0].files:
        assert (first / path).read_bytes() == (second / path).read_bytes()


def test_blob_named_by_digest_installs_under_its_real_filename(tmp_path: Path, root: Path) -> None:
    wheel = build_wheel(tmp_path, "probe", "2.0", {"probe/__init__.py": ""})
    blob = tmp_path / "0123abcd"
    wheel.rename(blob)

    dist = install_wheel(blob, filename="probe-2.0-py3-none-any.whl", target=TARGET, root=root)

    assert dist == InstalledDist("probe", "2.0", dist.files)
    assert f"{SITE}/probe-2.0.dist-info/METADATA" in dist.files


def test_two_wheels_shipping_one_file_is_a_build_error(tmp_path: Path, root: Path) -> None:
    first = build_wheel(tmp_path, "one", "1.0", {"shared/__init__.py": "A = 1\n"})
    second = build_wheel(tmp_path, "two", "1.0", {"shared/__init__.py": "B = 2\n"})
    install_wheel(first, filename=first.name, target=TARGET, root=root)

    with pytest.raises(BuildError, match=r"two-1\.0-py3-none-any\.whl"):
        install_wheel(second, filename=second.name, target=TARGET, root=root)


def test_damaged_wheel_is_a_build_error_naming_it(tmp_path: Path, root: Path) -> None:
    broken = tmp_path / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")

    with pytest.raises(BuildError, match=r"broken-1\.0-py3-none-any\.whl"):
        install_wheel(broken, filename=broken.name, target=TARGET, root=root)


def test_venv_skeleton_links_the_base_interpreter(root: Path) -> None:
    entries = {entry.path: entry for entry in create_venv(root, TARGET)}

    assert entries["app/.venv/bin/python"].link_target == "/usr/local/bin/python3.12"
    assert entries["app/.venv/bin/python3"].link_target == "python"
    assert entries["app/.venv/bin/python3.12"].link_target == "python"
    assert entries["app/.venv/lib64"].link_target == "lib"
    assert entries[SITE].kind == "dir"
    config = entries["app/.venv/pyvenv.cfg"]
    assert config.source == root / "app/.venv/pyvenv.cfg"
    assert config.source.read_text().splitlines()[:3] == [
        "home = /usr/local/bin",
        "include-system-site-packages = false",
        "version = 3.12",
    ]


def test_gui_scripts_data_scripts_and_extras_entry_points_get_venv_shebangs(
    tmp_path: Path, root: Path
) -> None:
    wheel = build_wheel(
        tmp_path,
        "probe",
        "1.0",
        {
            "probe/__init__.py": "def main():\n    pass\n",
            # A script shipped as data: installer rewrites its `#!python` shebang.
            "probe-1.0.data/scripts/probe-tool": "#!python\nprint('tool')\n",
        },
        console_scripts={"probe": "probe:main [fancy]"},
        gui_scripts={"probe-gui": "probe:main"},
    )

    dist = install_wheel(wheel, filename=wheel.name, target=TARGET, root=root)

    for name in ("probe", "probe-gui", "probe-tool"):
        assert f"app/.venv/bin/{name}" in dist.files
        script = (root / "app/.venv/bin" / name).read_text()
        assert script.startswith("#!/app/.venv/bin/python\n"), name
        assert os.access(root / "app/.venv/bin" / name, os.X_OK)
    assert "from probe import main" in (root / "app/.venv/bin/probe").read_text()


def test_path_requirements_in_metadata_lose_the_host_path(tmp_path: Path, root: Path) -> None:
    wheel = build_wheel(
        tmp_path,
        "probe",
        "1.0",
        {"probe/__init__.py": ""},
        requires=(
            "helper[fast] @ file:///home/me/src/helper ; python_version >= '3.8'",
            "lib @ git+https://example.org/lib.git@v1",
            "idna>=3",
        ),
    )

    install_wheel(wheel, filename=wheel.name, target=TARGET, root=root)

    metadata = (root / SITE / "probe-1.0.dist-info/METADATA").read_text()
    assert [line for line in metadata.splitlines() if line.startswith("Requires-Dist")] == [
        'Requires-Dist: helper[fast]; python_version >= "3.8"',
        "Requires-Dist: lib @ git+https://example.org/lib.git@v1",
        "Requires-Dist: idna>=3",
    ]
    # RECORD lists the hash of the bytes in the image, not of the wheel's original METADATA.
    digest = hashlib.sha256(metadata.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    record = (root / SITE / "probe-1.0.dist-info/RECORD").read_text()
    assert f"probe-1.0.dist-info/METADATA,sha256={expected}," in record
