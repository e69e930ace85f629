"""The image runner: unpack an image from any source and run it as a container would."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.base_image import base_image_layout, base_image_tag
from tests.support.runner import IMAGE_CONFIG_NAME, run_image, unpack_image


@pytest.fixture(scope="module")
def base_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = base_image_layout()
    return unpack_image(f"oci:{layout}:{base_image_tag()}", tmp_path_factory.mktemp("base"))


def _derived_layout(tmp_path: Path, *options: str) -> str:
    """A copy of the base image with its config changed by `umoci config OPTIONS`."""
    layout = tmp_path / "derived"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            f"oci:{base_image_layout()}:{base_image_tag()}",
            f"oci:{layout}:base",
        ],
        check=True,
    )
    subprocess.run(
        ["umoci", "config", "--image", f"{layout}:base", "--tag", "derived", *options],
        check=True,
    )
    return f"oci:{layout}:derived"


def test_unpacked_bundle_has_rootfs_runtime_config_and_image_config(base_bundle: Path) -> None:
    entries = {path.name for path in base_bundle.iterdir()}

    assert {"rootfs", "config.json", IMAGE_CONFIG_NAME} <= entries
    assert (base_bundle / "rootfs" / "usr" / "bin" / "python3").exists()


def test_base_image_runs_python_and_prints_hi(base_bundle: Path) -> None:
    result = run_image(base_bundle, ["python3", "-c", "print('hi')"])

    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")


def test_run_reports_exit_status_and_stderr(base_bundle: Path) -> None:
    script = "import sys; sys.stderr.write('boom'); sys.exit(3)"

    result = run_image(base_bundle, ["python3", "-c", script])

    assert (result.returncode, result.stdout, result.stderr) == (3, "", "boom")


def test_run_uses_exactly_the_image_env_not_the_host_env(
    base_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HATCH_JIB_HOST_ONLY", "leaked")
    script = "import os; print(os.environ.get('HATCH_JIB_HOST_ONLY'), os.environ['LANG'])"

    result = run_image(base_bundle, ["python3", "-c", script])

    assert result.stdout == "None C.UTF-8\n"


def test_run_is_confined_to_the_image_rootfs(base_bundle: Path) -> None:
    marker = base_bundle / "rootfs" / "only-in-image"
    marker.write_text("inside")

    result = run_image(base_bundle, ["python3", "-c", "print(open('/only-in-image').read())"])

    assert result.stdout == "inside\n"


def test_run_honours_workdir_user_env_and_entrypoint(tmp_path: Path) -> None:
    image = _derived_layout(
        tmp_path,
        "--config.workingdir=/srv/app",
        "--config.user=65534:65534",
        "--config.env=GREETING=bonjour",
        "--config.entrypoint=python3",
        "--config.entrypoint=-c",
    )
    bundle = unpack_image(image, tmp_path / "unpacked")
    script = "import os; print(os.getcwd(), os.getuid(), os.getgid(), os.environ['GREETING'])"

    result = run_image(bundle, [script])

    assert result.returncode == 0, result.stderr
    assert result.stdout == "/srv/app 65534 65534 bonjour\n"


def test_args_replace_cmd_but_keep_the_entrypoint(tmp_path: Path) -> None:
    image = _derived_layout(
        tmp_path,
        "--config.entrypoint=python3",
        "--config.entrypoint=-c",
        "--config.entrypoint=import sys; print(sys.argv[1:])",
        "--config.cmd=from-cmd",
    )
    bundle = unpack_image(image, tmp_path / "unpacked")

    default = run_image(bundle)
    replaced = run_image(bundle, ["x", "y"])

    assert default.stdout == "['from-cmd']\n"
    assert replaced.stdout == "['x', 'y']\n"


def test_nothing_is_mounted_unless_system_mounts_is_set(base_bundle: Path) -> None:
    script = "import os; print(os.path.exists('/proc/self'), os.path.exists('/dev/null'))"

    bare = run_image(base_bundle, ["python3", "-c", script])
    mounted = run_image(base_bundle, ["python3", "-c", script], system_mounts=True)

    assert bare.stdout == "False False\n"
    assert mounted.stdout == "True True\n"
    assert not list((base_bundle / "rootfs" / "proc").iterdir())
    assert not list((base_bundle / "rootfs" / "dev").iterdir())


def test_unpack_pulls_from_a_registry(base_image: str, tmp_path: Path) -> None:
    bundle = unpack_image(f"docker://{base_image}", tmp_path)

    result = run_image(bundle, ["python3", "-c", "print('from the registry')"])

    assert result.stdout == "from the registry\n"


def test_unpack_reads_docker_archives_and_layout_directories(tmp_path: Path) -> None:
    archive = tmp_path / "base.tar"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            f"oci:{base_image_layout()}:{base_image_tag()}",
            f"docker-archive:{archive}",
        ],
        check=True,
    )

    from_archive = unpack_image(f"docker-archive:{archive}", tmp_path / "archive")
    from_directory = unpack_image(str(base_image_layout()), tmp_path / "directory")

    for bundle in (from_archive, from_directory):
        assert run_image(bundle, ["python3", "-c", "print(6 * 7)"]).stdout == "42\n"


def test_unpack_rejects_what_is_neither_a_reference_nor_a_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither an OCI layout"):
        unpack_image(str(tmp_path), tmp_path / "out")


def test_run_times_out(base_bundle: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_image(base_bundle, ["python3", "-c", "import time; time.sleep(30)"], timeout=1)
