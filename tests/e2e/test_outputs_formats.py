"""`container.format` conversion, metadata labels and annotations, and `creation-time`."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import REPO_ROOT, copy_project


def skopeo(*args: str) -> dict:
    command = ["skopeo", "inspect", "--tls-verify=false", *args]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def test_docker_base_built_as_oci_keeps_layer_bytes_and_sets_metadata(
    tmp_path, registry, base_image_docker, jib_cache
):
    project = copy_project("hello-cli", tmp_path)
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write(
            '\n[tool.jib.container]\nformat = "oci"\ncreation-time = "2024-01-02T03:04:05Z"\n'
            'labels = { "team" = "tests" }\n'
            'annotations = { "org.opencontainers.image.vendor" = "hatch-jib tests" }\n'
        )
    target = f"{registry.host}/e2e/converted"
    command = [sys.executable, "-m", "hatch_jib", "build", str(project), "--plain"]
    command += ["--from", base_image_docker, "--to", target, "--tag", "c1"]

    built = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

    assert built.returncode == 0, built.stderr
    base = skopeo("--raw", f"docker://{base_image_docker}")
    raw = skopeo("--raw", f"docker://{target}:c1")
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert {layer["mediaType"] for layer in raw["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }
    base_layers = [(layer["digest"], layer["size"]) for layer in base["layers"]]
    assert [(layer["digest"], layer["size"]) for layer in raw["layers"]][: len(base_layers)] == (
        base_layers
    )
    annotations = raw["annotations"]
    assert annotations["org.opencontainers.image.base.name"] == base_image_docker
    assert annotations["org.opencontainers.image.base.digest"].startswith("sha256:")
    assert annotations["org.opencontainers.image.title"] == "hello-cli"
    assert annotations["org.opencontainers.image.vendor"] == "hatch-jib tests"
    config = skopeo("--config", f"docker://{target}:c1")
    assert config["created"] == "2024-01-02T03:04:05Z"
    assert config["config"]["Labels"]["team"] == "tests"
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == "0.1.0"
