"""`hatch build -t jib` end to end: build, push, inspect with skopeo, and run under chroot."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.e2e.conftest import copy_project
from tests.support.registry import running_registry
from tests.support.runner import run_image, unpack_image


def hatch_build(
    project: Path, env: dict[str, str], target: str = "jib"
) -> subprocess.CompletedProcess:
    """Run the real `hatch build -t TARGET` in `project` with `env` added to ours."""
    return subprocess.run(
        ["hatch", "build", "-t", target],
        cwd=project,
        env={**os.environ, "JIB_CONSOLE": "plain", **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def skopeo_inspect(reference: str, *, raw: bool = False) -> dict:
    command = ["skopeo", "inspect", "--tls-verify=false"]
    if raw:
        command.append("--raw")
    output = subprocess.run(
        [*command, reference], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output)


def test_hatch_build_pushes_an_image_that_runs(tmp_path, registry, base_image, jib_cache):
    project = copy_project("hello-cli", tmp_path)
    target = f"{registry.host}/e2e/hello-cli"

    built = hatch_build(project, {"JIB_FROM_IMAGE": base_image, "JIB_TO_IMAGE": target})

    assert built.returncode == 0, built.stderr
    digest = (project / "dist" / "jib-image.digest").read_text()
    result = json.loads((project / "dist" / "jib-image.json").read_text())
    assert result["imageDigest"] == digest and result["imagePushed"] is True
    assert result["tags"] == ["0.1.0", "latest"]
    assert [layer["name"] for layer in result["layers"]][-2:] == ["resources", "code"]
    last_line = [line for line in built.stderr.splitlines() if line.startswith("[jib]")][-1]
    assert f"{target}:0.1.0@{digest}" in last_line

    # Both tags point at the pushed manifest, and the config is what we promised.
    for tag in ("0.1.0", "latest"):
        assert skopeo_inspect(f"docker://{target}:{tag}")["Digest"] == digest
    config = skopeo_inspect(f"docker://{target}:0.1.0")
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert env["VIRTUAL_ENV"] == "/app/.venv" and env["PYTHONUNBUFFERED"] == "1"
    raw_config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{target}:0.1.0"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert raw_config["config"]["Entrypoint"] == ["/app/.venv/bin/hello"]
    assert raw_config["config"]["WorkingDir"] == "/app"

    # skopeo copies it (checking every digest), umoci unpacks it, and it runs.
    bundle = unpack_image(f"docker://{target}:0.1.0", tmp_path / "run")
    run = run_image(bundle, ["--name", "e2e"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "Hello from hello-cli 0.1.0 on Python 3.11",
        *[line for line in run.stdout.splitlines()[1:]],
    ]
    assert "e2e" in run.stdout.splitlines()[1]
    shebang = (bundle / "rootfs/app/.venv/bin/hello").read_text().splitlines()[0]
    assert shebang == "#!/app/.venv/bin/python"


def test_rebuild_of_unchanged_project_pushes_nothing_and_keeps_the_digest(
    tmp_path, registry, base_image, jib_cache
):
    project = copy_project("hello-cli", tmp_path)
    env = {"JIB_FROM_IMAGE": base_image, "JIB_TO_IMAGE": f"{registry.host}/e2e/rebuild"}
    first = hatch_build(project, env)
    assert first.returncode == 0, first.stderr
    digest = (project / "dist" / "jib-image.digest").read_text()

    second = hatch_build(project, env)

    assert second.returncode == 0, second.stderr
    assert (project / "dist" / "jib-image.digest").read_text() == digest
    result = json.loads((project / "dist" / "jib-image.json").read_text())
    assert not any(layer["pushed"] for layer in result["layers"])


def test_without_target_image_writes_a_loadable_tar(tmp_path, base_image, jib_cache):
    project = copy_project("hello-src", tmp_path)

    built = hatch_build(project, {"JIB_FROM_IMAGE": base_image})

    assert built.returncode == 0, built.stderr
    archive = project / "dist" / "hello-src-0.2.0.image.tar"
    digest = (project / "dist" / "jib-image.digest").read_text()
    with tarfile.open(archive) as tar:
        docker_manifest = json.load(tar.extractfile("manifest.json"))
    assert docker_manifest[0]["RepoTags"] == ["hello-src:0.2.0"]
    assert skopeo_inspect(f"docker-archive:{archive}")["Architecture"] == "amd64"
    bundle = unpack_image(f"docker-archive:{archive}", tmp_path / "run")
    run = run_image(bundle, ["a", "b"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Hello from hello-src on Python 3.11 with args ['a', 'b']"
    assert skopeo_inspect(f"oci-archive:{archive}")["Digest"] == digest


@pytest.mark.parametrize(
    ("env", "culprit"),
    [
        ({"JIB_FROM_IMAGE": "{registry}/no/such-image:1"}, "no/such-image"),
        ({"JIB_FROM_IMAGE": "127.0.0.1:9/base:1"}, "127.0.0.1:9"),
        ({"JIB_FROM_IMAGE": "{base}", "JIB_TO_IMAGE": "Bad Name"}, "tool.jib.to.image"),
    ],
)
def test_bad_input_fails_with_a_short_message_and_writes_nothing(
    tmp_path, registry, base_image, jib_cache, env, culprit
):
    project = copy_project("hello-cli", tmp_path)
    env = {k: v.format(registry=registry.host, base=base_image) for k, v in env.items()}

    built = hatch_build(project, env)

    assert built.returncode != 0
    assert culprit in built.stderr
    assert "Traceback" not in built.stderr
    errors = [line for line in built.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    dist = project / "dist"
    assert not dist.exists() or not any(dist.iterdir())


def test_unknown_jib_output_is_a_two_line_error_not_a_traceback(tmp_path, base_image, jib_cache):
    project = copy_project("hello-cli", tmp_path)

    built = hatch_build(project, {"JIB_FROM_IMAGE": base_image}, target="jib:tarr")

    assert built.returncode == 2
    assert "Traceback" not in built.stderr
    assert "error: Unknown jib output 'tarr' in `hatch build -t jib:...`" in built.stderr
    assert "hint: the outputs are registry, tar, oci and docker" in built.stderr


def test_unknown_jib_output_in_the_hatch_config_is_a_clean_error(tmp_path, base_image, jib_cache):
    project = copy_project("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text() + '\n[tool.hatch.build.targets.jib]\nversions = ["tarr"]\n'
    )

    built = hatch_build(project, {"JIB_FROM_IMAGE": base_image})

    assert built.returncode == 2
    assert "Traceback" not in built.stderr
    assert "error: `tool.hatch.build.targets.jib.versions`: Unknown versions" in built.stderr


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_push_with_credentials_from_the_environment(tmp_path, base_image, jib_cache, mode):
    project = copy_project("hello-cli", tmp_path)
    with running_registry(tmp_path / "secured", mode) as secured:
        target = f"{secured.host}/e2e/secured"
        env = {
            "JIB_FROM_IMAGE": base_image,
            "JIB_TO_IMAGE": target,
            "JIB_TO_AUTH_USERNAME": secured.username,
            "JIB_TO_AUTH_PASSWORD": secured.password,
        }

        built = hatch_build(project, env)

        assert built.returncode == 0, built.stderr
        output = built.stdout + built.stderr
        assert "credentials from JIB_TO_AUTH_USERNAME/JIB_TO_AUTH_PASSWORD" in output
        assert secured.password not in output
        inspected = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                f"--creds={secured.username}:{secured.password}",
                f"docker://{target}:0.1.0",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        digest = (project / "dist" / "jib-image.digest").read_text()
        assert json.loads(inspected.stdout)["Digest"] == digest


def test_rejected_credentials_fail_with_the_source_and_no_secret(tmp_path, base_image, jib_cache):
    project = copy_project("hello-cli", tmp_path)
    with running_registry(tmp_path / "secured", "htpasswd") as secured:
        env = {
            "JIB_FROM_IMAGE": base_image,
            "JIB_TO_IMAGE": f"{secured.host}/e2e/denied",
            "JIB_TO_AUTH_USERNAME": secured.username,
            "JIB_TO_AUTH_PASSWORD": "wrong-password-value",
        }

        built = hatch_build(project, env)

    assert built.returncode != 0
    assert "UNAUTHORIZED" in built.stderr and "JIB_TO_AUTH" in built.stderr
    assert "wrong-password-value" not in built.stdout + built.stderr
    assert "Traceback" not in built.stdout + built.stderr
    assert not (project / "dist" / "jib-image.digest").exists()
    # The login is checked first, as in Jib: nothing was built before it failed.
    assert "Layer" not in built.stderr and "Resolving" not in built.stderr


def test_docker_format_base_gives_a_docker_manifest(
    tmp_path, registry, base_image_docker, jib_cache
):
    project = copy_project("hello-cli", tmp_path)
    target = f"{registry.host}/e2e/docker-format"

    built = hatch_build(project, {"JIB_FROM_IMAGE": base_image_docker, "JIB_TO_IMAGE": target})

    assert built.returncode == 0, built.stderr
    raw = skopeo_inspect(f"docker://{target}:0.1.0", raw=True)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert raw["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {layer["mediaType"] for layer in raw["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
