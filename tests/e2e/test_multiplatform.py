"""Two platforms in one build: an index in the registry and in an OCI layout, from hatch."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO_ROOT
from tests.support.multiarch_base import push_multiarch_base
from tests.support.runner import run_image, unpack_image

# ELF e_machine values.
EM_X86_64 = 62
EM_AARCH64 = 183

PYPROJECT = """\
[build-system]
requires = ["hatchling", "hatch-jib @ {repo}"]
build-backend = "hatchling.build"

[project]
name = "hello-multi"
version = "0.3.0"
description = "A compiled dependency on two platforms"
license = "MIT"
requires-python = ">=3.10"
dependencies = ["markupsafe>=2.1"]

[project.urls]
Homepage = "https://example.org/hello-multi"
Source = "https://example.org/hello-multi.git"

[project.scripts]
hello-multi = "hello_multi:main"

[tool.jib]
from.platforms = ["linux/amd64", "linux/arm64"]
to.tags = ["{{version}}", "latest"]
container.labels = {{ "org.opencontainers.image.vendor" = "tests" }}
"""
MODULE = """\
import platform

import markupsafe
from markupsafe import _speedups


def main() -> None:
    print(markupsafe.escape("<multi>"), platform.machine(), _speedups.__name__)
"""


@pytest.fixture(scope="module")
def multiarch_base(base_image: str) -> str:
    return push_multiarch_base(base_image)


def write_project(root: Path) -> Path:
    (root / "hello_multi").mkdir(parents=True)
    (root / "hello_multi" / "__init__.py").write_text(MODULE)
    (root / "pyproject.toml").write_text(PYPROJECT.format(repo=REPO_ROOT.as_uri()))
    return root


def skopeo(*args: str) -> dict:
    command = ["skopeo", "inspect", "--tls-verify=false", *args]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def so_machines(host: str, repository: str, manifest: dict) -> dict[str, int]:
    """ELF e_machine of every markupsafe extension module in the image's layers."""
    machines = {}
    for layer in manifest["layers"]:
        url = f"http://{host}/v2/{repository}/blobs/{layer['digest']}"
        if layer["size"] > 5_000_000:
            continue  # a base layer; the wheels are in our small dependencies layer
        blob = httpx.get(url, follow_redirects=True).content
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            for member in tar.getmembers():
                if "markupsafe/_speedups" in member.name and member.name.endswith(".so"):
                    header = tar.extractfile(member).read(20)  # type: ignore[union-attr]
                    machines[member.name] = int.from_bytes(header[18:20], "little")
    return machines


def test_two_platform_build_pushes_an_index_and_writes_an_oci_layout(
    tmp_path, registry, multiarch_base, jib_cache
):
    project = write_project(tmp_path / "hello-multi")
    target = f"{registry.host}/e2e/multi"
    env = {**os.environ, "JIB_CONSOLE": "plain", "JIB_FROM_IMAGE": multiarch_base}
    env["JIB_TO_IMAGE"] = target

    built = subprocess.run(
        ["hatch", "build", "-t", "jib:registry", "-t", "jib:oci"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert built.returncode == 0, built.stderr
    dist = project / "dist"
    digest = (dist / "jib-image.digest").read_text()
    result = json.loads((dist / "jib-image.json").read_text())
    assert result["imagePushed"] is True and result["imageDigest"] == digest
    assert result["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    # Hatch runs each target on its own; the second found everything in the cache.
    assert built.stderr.count("Resolving 1 requirement") == 2
    assert built.stderr.count("Reusing the resolution of 1 requirement") == 2
    assert len(re.findall(r"Layer code +built", built.stderr)) == 1
    assert len(re.findall(r"Layer code +reused", built.stderr)) == 3

    # The registry holds an index whose children are the platforms' manifests.
    index = skopeo("--raw", f"docker://{target}:0.3.0")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert skopeo(f"docker://{target}:latest")["Digest"] == digest
    children = {item["platform"]["architecture"]: item["digest"] for item in index["manifests"]}
    assert [image["digest"] for image in result["images"]] == [children["amd64"], children["arm64"]]
    assert index["annotations"]["org.opencontainers.image.source"].endswith("hello-multi.git")

    # Code is the same on both platforms and was built once; the wheels differ.
    repository = "e2e/multi"
    amd64 = skopeo("--raw", f"docker://{target}@{children['amd64']}")
    arm64 = skopeo("--raw", f"docker://{target}@{children['arm64']}")
    assert amd64["layers"][-1]["digest"] == arm64["layers"][-1]["digest"]
    assert [layer["name"] for layer in result["layers"]].count("code") == 1
    assert set(so_machines(registry.host, repository, amd64).values()) == {EM_X86_64}
    assert set(so_machines(registry.host, repository, arm64).values()) == {EM_AARCH64}
    arm_config = skopeo("--config", f"docker://{target}@{children['arm64']}")
    assert arm_config["architecture"] == "arm64"
    labels = arm_config["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "hello-multi"
    assert labels["org.opencontainers.image.vendor"] == "tests"

    # The amd64 image runs.
    bundle = unpack_image(f"docker://{target}:0.3.0", tmp_path / "run")
    run = run_image(bundle, [])
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["&lt;multi&gt;", "x86_64", "markupsafe._speedups"]

    # The OCI layout holds the same index.
    layout = dist / "hello-multi-0.3.0.oci"
    assert skopeo("--raw", f"oci:{layout}:0.3.0") == index
    assert skopeo("--override-arch=arm64", f"oci:{layout}:latest")["Architecture"] == "arm64"


def test_platform_the_base_lacks_is_an_error_listing_those_it_has(
    tmp_path, multiarch_base, jib_cache
):
    project = write_project(tmp_path / "hello-multi")

    command = ["python", "-m", "hatch_jib", "build", str(project), "--plain", "--tar"]
    command += ["--from", multiarch_base, "--platform", "linux/amd64", "--platform", "linux/s390x"]

    built = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert built.returncode == 1
    assert "no linux/s390x image (it has: linux/amd64, linux/arm64/v8)" in built.stderr
    assert "Traceback" not in built.stderr
    assert not (project / "dist").exists()
