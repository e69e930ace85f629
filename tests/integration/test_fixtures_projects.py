"""The fixture projects work as plain Python packages, so e2e failures point at hatch-jib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import FIXTURE_PROJECTS, REPO_ROOT, copy_project

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _install(project: Path, tmp_path: Path) -> Path:
    """Build the project's wheel with hatchling, install it in a new venv, return its bin/."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(dist)],
        cwd=project,
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    [wheel] = dist.glob("*.whl")
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True,
    )
    return venv / "bin"


@pytest.mark.parametrize("name", ["hello-cli", "hello-src"])
def test_fixture_projects_require_hatchling_and_hatch_jib_and_leave_images_to_env(
    name: str,
) -> None:
    pyproject = tomllib.loads((FIXTURE_PROJECTS / name / "pyproject.toml").read_text())

    assert pyproject["build-system"]["requires"] == ["hatchling", "hatch-jib"]
    assert "from" not in pyproject["tool"]["jib"]
    assert "image" not in pyproject["tool"]["jib"].get("to", {})


def test_copy_project_pins_hatch_jib_to_this_checkout_in_a_fresh_path(tmp_path: Path) -> None:
    first = copy_project("hello-cli", tmp_path)
    second = copy_project("hello-cli", tmp_path)

    requires = tomllib.loads((first / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires == ["hatchling", f"hatch-jib @ {REPO_ROOT.as_uri()}"]
    assert first != second
    assert (second / "hello_cli" / "greeting.txt").is_file()


def test_copy_project_names_the_known_projects_when_one_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hello-cli"):
        copy_project("no-such-project", tmp_path)


def test_hello_cli_prints_version_python_and_its_package_data(tmp_path: Path) -> None:
    bin_dir = _install(copy_project("hello-cli", tmp_path), tmp_path)

    result = subprocess.run(
        [str(bin_dir / "hello"), "--name", "tester"], capture_output=True, text=True, check=True
    )

    assert result.stdout == (
        f"Hello from hello-cli 0.1.0 on Python {PYTHON}\n"
        "Greetings, tester, from a package data file.\n"
    )


def test_hello_src_runs_as_a_module_and_has_no_scripts(tmp_path: Path) -> None:
    bin_dir = _install(copy_project("hello-src", tmp_path), tmp_path)

    result = subprocess.run(
        [str(bin_dir / "python"), "-m", "hello_src", "a", "b"],
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout == f"Hello from hello-src on Python {PYTHON} with args ['a', 'b']\n"
    assert not (bin_dir / "hello-src").exists()
