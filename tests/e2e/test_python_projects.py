"""Fixture projects built with `hatch build -t jib` run right in the Debian python3 base."""

from __future__ import annotations

import json
import marshal
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO_ROOT, copy_project
from tests.support.runner import run_image, unpack_image

SITE = "app/.venv/lib/python3.11/site-packages"


def hatch_build(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["hatch", "build", "-t", "jib"],
        cwd=project,
        env={**os.environ, "JIB_CONSOLE": "plain", **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_namespace_app_with_compiled_and_local_pth_dependencies_runs(
    tmp_path, registry, base_image, jib_cache
):
    project = copy_project("acme-app", tmp_path)
    target = f"{registry.host}/e2e/acme-app"

    built = hatch_build(project, {"JIB_FROM_IMAGE": base_image, "JIB_TO_IMAGE": target})

    assert built.returncode == 0, built.stderr
    result = json.loads((project / "dist" / "jib-image.json").read_text())
    names = [layer["name"] for layer in result["layers"]]
    assert names[-5:] == [
        "dependencies",
        "local-dependencies",
        "resources",
        "code",
        "extra-directory-0",
    ]

    # It runs: package data, the compiled wheel, the .pth path and the namespace all work.
    bundle = unpack_image(f"docker://{target}:0.3.0", tmp_path / "run")
    run = run_image(bundle)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "acme-app 0.3.0 on Python 3.11",
        "motd: packaged with importlib.resources",
        "escape: &lt;b&gt;",
        "speedups: markupsafe._speedups",
        "plugin: acme-plugin via .pth",
        f"namespace: ['/{SITE}/acme']",
        f"cached: /{SITE}/acme/app/__pycache__/cli.cpython-311.pyc",
    ]

    # Bytecode is there, hash-based, and names the in-image source path.
    rootfs = bundle / "rootfs"
    pyc = (rootfs / SITE / "acme/app/__pycache__/cli.cpython-311.pyc").read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked
    assert marshal.loads(pyc[16:]).co_filename == f"/{SITE}/acme/app/cli.py"
    assert (rootfs / SITE / "markupsafe/__pycache__/__init__.cpython-311.pyc").is_file()

    # The gui script is there with the venv shebang; the extra directory has its modes.
    gui = (rootfs / "app/.venv/bin/acme-gui").read_text()
    assert gui.startswith("#!/app/.venv/bin/python\n")
    etc = rootfs / "etc/acme"
    assert sorted(path.name for path in etc.iterdir()) == [
        "app.conf",
        "conf.d",
        "current.conf",
        "secret.conf",
    ]
    assert stat.S_IMODE((etc / "secret.conf").stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "app.conf").stat().st_mode) == 0o644
    assert os.readlink(etc / "current.conf") == "app.conf"


def test_uv_lock_is_honoured_with_the_chosen_group_and_a_path_source(
    tmp_path, registry, base_image, jib_cache
):
    project = copy_project("locked-app", tmp_path)
    target = f"{registry.host}/e2e/locked-app"

    built = hatch_build(project, {"JIB_FROM_IMAGE": base_image, "JIB_TO_IMAGE": target})

    assert built.returncode == 0, built.stderr
    assert "Using lock file uv.lock" in built.stderr
    result = json.loads((project / "dist" / "jib-image.json").read_text())
    assert "local-dependencies" in [layer["name"] for layer in result["layers"]]
    bundle = unpack_image(f"docker://{target}:1.0.0", tmp_path / "run")
    run = run_image(bundle)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "idna 3.1",
        "six 1.15.0",
        "iniconfig absent",
        "locked-helper 0.5.0",
        "hello from a uv path source",
    ]


def test_app_with_a_path_dependency_is_the_same_image_from_another_checkout_and_cache(
    tmp_path, base_image
):
    digests = []
    for name in ("first", "second"):
        project = copy_project("acme-app", tmp_path / name)
        command = [sys.executable, "-m", "hatch_jib", "build", str(project), "--tar", "--plain"]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "JIB_FROM_IMAGE": base_image,
            "JIB_CACHE_DIR": str(tmp_path / name / "cache"),
        }

        built = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

        assert built.returncode == 0, built.stderr
        digests.append((project / "dist" / "jib-image.digest").read_text())
    assert digests[0] == digests[1]
