"""Real projects nobody here wrote: PyPI sdists built with `hatch build -t jib` and run."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT
from tests.e2e.test_build_image import hatch_build
from tests.support.runner import run_image, unpack_image


def fetch_sdist(requirement: str, directory: Path) -> Path:
    """Download and unpack `requirement`'s sdist from the package index; return its root."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(directory),
            requirement,
        ],
        check=True,
        timeout=300,
    )
    (archive,) = directory.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    (root,) = (path for path in directory.iterdir() if path.is_dir())
    return root


def add_hatch_jib_requirement(project: Path) -> None:
    """Add this checkout of hatch-jib to the project's `[build-system] requires`."""
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    requires = re.search(r"^requires = \[(.*?)\]", text, flags=re.M | re.S)
    assert requires, f"{pyproject} has no one-line build-system requires"
    pinned = f'requires = [{requires[1]}, "hatch-jib @ {REPO_ROOT.as_uri()}"]'
    pyproject.write_text(text.replace(requires[0], pinned, 1))


def drop_mkdocs_env_collectors(project: Path) -> None:
    """Remove mkdocs' hatch-mkdocs environment collectors, which hatch runs before any build.

    They read mkdocs.yml (left out of the sdist) and download a plugin catalogue from GitHub,
    which this test machine cannot reach. They only define dev environments; the build and the
    image are the same without them.
    """
    pyproject = project / "pyproject.toml"
    text, count = re.subn(
        r"^\[tool\.hatch\.env\.collectors\.mkdocs\.\w+\]\npath = .*\n",
        "",
        pyproject.read_text(),
        flags=re.M,
    )
    assert count == 2, f"{pyproject}: expected two mkdocs env collectors, found {count}"
    pyproject.write_text(text)


@pytest.mark.parametrize(
    ("requirement", "script", "expected"),
    [
        ("black==26.10.1", "black", "black, 26.10.1"),
        ("mkdocs==1.6.1", None, "mkdocs, version 1.6.1"),
    ],
)
def test_pypi_sdist_builds_into_an_image_that_runs(
    tmp_path, registry, base_image, jib_cache, requirement, script, expected
):
    project = fetch_sdist(requirement, tmp_path / "sdist")
    add_hatch_jib_requirement(project)
    if requirement.startswith("mkdocs"):
        drop_mkdocs_env_collectors(project)
    name = requirement.split("==")[0]
    env = {"JIB_FROM_IMAGE": base_image, "JIB_TO_IMAGE": f"{registry.host}/real/{name}"}
    if script:
        env["JIB_CONTAINER_SCRIPT"] = script

    built = hatch_build(project, env)

    assert built.returncode == 0, built.stderr
    bundle = unpack_image(f"docker://{registry.host}/real/{name}:latest", tmp_path / "run")
    run = run_image(bundle, ["--version"])
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout
    digest = (project / "dist" / "jib-image.digest").read_text()
    assert f"real/{name}:latest@{digest}" in built.stderr
