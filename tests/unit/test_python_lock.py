"""Lock files, dependency groups and local requirements: what the image must install."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import uv

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError, ConfigError
from hatch_jib.python.lock import (
    Requirements,
    check_locked_hashes,
    collect_requirements,
    dependency_groups,
    find_lock,
    is_local,
)
from hatch_jib.python.resolve import ResolvedWheel, resolve
from hatch_jib.python.target import TargetProfile

DEBIAN_311 = TargetProfile("3.11", "/usr/bin/python3.11", "amd64", libc_version="2.36")
IDNA_HASH = "946d195a0d259cbba61165e88e65941f16e9b36ea6ddb97f00452bae8b1287d3"
IDNA_SDIST_HASH = "12f65c9b470abda6dc35cf8e63cc574b1c52b11df2c86030af0ac09b01b13ea9"


def write_project(root: Path, body: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    header = '[project]\nname = "app"\nversion = "1.0"\nrequires-python = ">=3.10"\n'
    (root / "pyproject.toml").write_text(header + textwrap.dedent(body))
    return root


@pytest.fixture(autouse=True)
def pypi_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_INDEX_URL", "https://pypi.org/simple")


def test_lock_is_auto_detected_uv_lock_first(tmp_path: Path) -> None:
    (tmp_path / "pylock.toml").write_text("")
    (tmp_path / "uv.lock").write_text("")

    assert find_lock(tmp_path, None) == tmp_path / "uv.lock"
    assert find_lock(tmp_path, "pylock.toml") == tmp_path / "pylock.toml"
    assert find_lock(tmp_path / "empty", None) is None


def test_configured_lock_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`tool\.jib\.python\.lock` names 'requirements\.lock'"):
        find_lock(tmp_path, "requirements.lock")


def test_hashed_requirements_file_gives_pins_hashes_and_local_paths(tmp_path: Path) -> None:
    root = write_project(tmp_path)
    (root / "requirements.lock").write_text(
        "# generated\n"
        "--index-url https://pypi.org/simple\n"
        f"idna==3.10 \\\n    --hash=sha256:{IDNA_HASH} \\\n    --hash=sha256:{IDNA_SDIST_HASH}\n"
        "colorama==0.4.6 ; sys_platform == 'win32' --hash=sha256:" + "a" * 64 + "\n"
        "-e ./libs/helper\n"
        "./wheels/vendored-1.0-py3-none-any.whl ; python_version >= '3.10'\n"
    )

    wanted = collect_requirements(root, [], lock="requirements.lock")

    assert wanted.locked and wanted.source == "requirements.lock"
    assert wanted.index == (
        "--index-url https://pypi.org/simple",
        "idna==3.10",
        "colorama==0.4.6 ; sys_platform == 'win32'",
        f"vendored @ {(root / 'wheels/vendored-1.0-py3-none-any.whl').resolve().as_uri()}"
        " ; python_version >= '3.10'",
    )
    assert wanted.hashes["idna"] == {IDNA_HASH, IDNA_SDIST_HASH}
    assert wanted.local == ((root / "libs/helper").resolve().as_uri(),)


def test_requirements_file_line_without_pin_or_hash_is_rejected_by_name(tmp_path: Path) -> None:
    root = write_project(tmp_path)
    (root / "reqs.txt").write_text("idna>=3\n")

    with pytest.raises(BuildError) as raised:
        collect_requirements(root, [], lock="reqs.txt")

    assert raised.value.message == "reqs.txt: 'idna>=3' is not pinned with `==` and `--hash`"
    assert "--generate-hashes" in (raised.value.hint or "")


def test_pylock_packages_become_pins_with_markers_and_directories_local(tmp_path: Path) -> None:
    root = write_project(tmp_path)
    (root / "pylock.toml").write_text(
        textwrap.dedent(
            f"""\
            lock-version = "1.0"
            created-by = "uv"
            [[packages]]
            name = "idna"
            version = "3.10"
            marker = "python_version >= '3.9'"
            [[packages.wheels]]
            url = "https://example.invalid/idna-3.10-py3-none-any.whl"
            hashes = {{ sha256 = "{IDNA_HASH}" }}
            [[packages]]
            name = "helper"
            directory = {{ path = "libs/helper" }}
            """
        )
    )

    wanted = collect_requirements(root, ["ignored==1"])

    assert wanted.index == ("idna==3.10 ; python_version >= '3.9'",)
    assert wanted.hashes == {"idna": frozenset({IDNA_HASH})}
    assert wanted.local == (f"helper @ {(root / 'libs/helper').resolve().as_uri()}",)


def test_uv_lock_pins_the_locked_versions_with_the_chosen_group_only(
    tmp_path: Path,
) -> None:
    root = write_project(
        tmp_path / "app",
        """\
        dependencies = ["idna>=3"]
        [dependency-groups]
        web = ["six"]
        dev = ["iniconfig"]
        """,
    )
    uv_bin = uv.find_uv_bin()
    # Lock idna and six at old versions, as a project would that locked long ago.
    subprocess.run(
        [uv_bin, "lock", "-q", "--exclude-newer", "2021-03-01T00:00:00Z"], cwd=root, check=True
    )

    wanted = collect_requirements(root, ["idna>=3"], groups=["web"])
    wheels = resolve(wanted.index, DEBIAN_311, store=BlobStore(tmp_path / "c"), no_deps=True)
    check_locked_hashes(wheels, wanted)

    assert wanted.locked and wanted.source == "uv.lock"
    assert {(wheel.name, wheel.version) for wheel in wheels} == {
        ("idna", "3.1"),
        ("six", "1.15.0"),
    }


def test_wheel_not_listed_in_the_lock_is_rejected() -> None:
    wanted = Requirements(("idna==3.10",), locked=True, hashes={"idna": frozenset({"0" * 64})})
    wheel = ResolvedWheel("idna", "3.10", "idna-3.10-py3-none-any.whl", "u", IDNA_HASH, None)

    with pytest.raises(BuildError) as raised:
        check_locked_hashes([wheel], wanted)

    assert raised.value.message == (
        f"wheel idna-3.10-py3-none-any.whl is not one that pyproject.toml allows "
        f"(sha256 {IDNA_HASH})"
    )


def test_dependency_groups_expand_includes_and_normalize_names() -> None:
    table = {
        "Test": ["pytest", {"include-group": "typing"}],
        "typing": ["mypy", "pytest"],
    }

    assert dependency_groups(table, ["test"]) == ["pytest", "mypy"]


def test_unknown_or_cyclic_dependency_group_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="names 'docs'"):
        dependency_groups({"test": []}, ["docs"])
    with pytest.raises(ConfigError, match="includes itself"):
        dependency_groups({"a": [{"include-group": "b"}], "b": [{"include-group": "a"}]}, ["a"])


def test_groups_are_added_to_project_dependencies_without_a_lock(tmp_path: Path) -> None:
    root = write_project(
        tmp_path,
        """\
        [dependency-groups]
        server = ["gunicorn==23.0.0", "helper @ file:///src/helper"]
        """,
    )

    wanted = collect_requirements(root, ["idna==3.10"], groups=["server"])

    assert not wanted.locked
    assert wanted.index == ("idna==3.10", "gunicorn==23.0.0")
    assert wanted.local == ("helper @ file:///src/helper",)


@pytest.mark.parametrize(
    ("spec", "local"),
    [
        ("helper @ file:///src/helper", True),
        ("helper @ file:///src/helper-1.0.tar.gz", True),
        ("helper @ file:///src/helper-1.0-py3-none-any.whl", False),
        ("helper @ git+https://example.org/helper.git@v1", True),
        ("./libs/helper", True),
        ("git+https://example.org/helper.git", True),
        ("helper @ https://example.org/helper-1.0-py3-none-any.whl", False),
        ("idna==3.10", False),
    ],
)
def test_path_vcs_and_sdist_requirements_are_local(spec: str, local: bool) -> None:
    assert is_local(spec) is local


def test_pylock_markers_on_extras_and_groups_select_for_the_target(tmp_path: Path) -> None:
    root = write_project(tmp_path)
    (root / "pylock.toml").write_text(
        textwrap.dedent(
            """\
            lock-version = "1.0"
            created-by = "hand"
            default-groups = ["base"]
            [[packages]]
            name = "six"
            version = "1.16.0"
            marker = "'web' in dependency_groups and platform_machine == 'x86_64'"
            [[packages]]
            name = "idna"
            version = "3.10"
            marker = "'cli' in extras"
            [[packages]]
            name = "attrs"
            version = "24.2.0"
            marker = "'base' in dependency_groups"
            [[packages]]
            name = "colorama"
            version = "0.4.6"
            marker = "sys_platform == 'win32'"
            """
        )
    )

    web = collect_requirements(root, [], groups=["web"], target=DEBIAN_311)
    default = collect_requirements(root, [], extras=["cli"], target=DEBIAN_311)

    assert web.index == ("six==1.16.0", "colorama==0.4.6 ; sys_platform == 'win32'")
    assert default.index == (
        "idna==3.10",
        "attrs==24.2.0",
        "colorama==0.4.6 ; sys_platform == 'win32'",
    )
