"""`hatch-jib inspect`, `cache prune`, `build --print-config` and `--debug`, as a user runs them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.console import report_failure
from tests.support.registry import running_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
HELLO = REPO_ROOT / "fixtures" / "projects" / "hello-cli"


def hatch_jib(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JIB_")}
    return subprocess.run(
        [sys.executable, "-m", "hatch_jib", *args],
        cwd=REPO_ROOT,
        env={**clean, "JIB_CONSOLE": "plain", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_inspect_shows_digest_platform_and_layer_sizes(registry, base_image):
    done = hatch_jib("inspect", base_image)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Image      {base_image}"
    assert lines[1].startswith("Digest     sha256:")
    assert "Platforms  linux/amd64" in lines
    assert any(line.strip().startswith("total ") and "in 1 layers" in line for line in lines)


def test_inspect_raw_prints_the_manifest_the_registry_sent(registry, base_image):
    done = hatch_jib("inspect", "--raw", base_image)
    summary = hatch_jib("inspect", base_image).stdout.splitlines()[1].split()[1]

    manifest = json.loads(done.stdout)
    assert manifest["schemaVersion"] == 2 and manifest["layers"]
    assert "sha256:" + hashlib.sha256(done.stdout.rstrip("\n").encode()).hexdigest() == summary


def test_inspect_of_a_missing_tag_names_it_and_exits_1(registry, base_image):
    missing = base_image.rsplit(":", 1)[0] + ":no-such-tag"

    done = hatch_jib("inspect", missing)

    assert done.returncode == 1
    assert "no-such-tag" in done.stderr and "Traceback" not in done.stderr


def test_debug_shows_the_http_exchange_with_secrets_redacted(tmp_path):
    with running_registry(tmp_path / "auth", "htpasswd") as auth:
        env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
        (tmp_path / "docker").mkdir()
        token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
        (tmp_path / "docker" / "config.json").write_text(
            json.dumps({"auths": {auth.host: {"auth": token}}})
        )

        done = hatch_jib("inspect", "--debug", f"{auth.host}/nothing:1", env=env)

    assert done.returncode == 1
    assert "> GET http://" in done.stderr and "< 401" in done.stderr
    assert "'authorization': 'basic ***'" in done.stderr.lower()
    assert auth.password not in done.stderr and token not in done.stderr
    assert "Traceback" in done.stderr


def test_print_config_shows_sources_masks_secrets_and_builds_nothing(tmp_path):
    env = {
        "JIB_FROM_IMAGE": "127.0.0.1:1/base:1",
        "JIB_TO_AUTH_USERNAME": "ci",
        "JIB_TO_AUTH_PASSWORD": "pw-never-shown",
    }

    done = hatch_jib(
        "build", str(HELLO), "--print-config", "--to", "127.0.0.1:1/app", "--tag", "{name}", env=env
    )

    assert done.returncode == 0, done.stderr
    lines = {line.split(" = ")[0]: line for line in done.stdout.splitlines()}
    assert lines["from.image"].endswith("# env JIB_FROM_IMAGE")
    assert '"127.0.0.1:1/app"' in lines["to.image"] and "# command line" in lines["to.image"]
    assert '["hello-cli"]' in lines["to.tags"]
    assert '"***"' in lines["to.auth.password"]
    assert "pw-never-shown" not in done.stdout + done.stderr
    assert not (HELLO / "dist").exists()


def test_print_config_warns_of_a_misspelt_variable_on_stderr_only():
    env = {"JIB_FROM_IMAGE": "127.0.0.1:1/base:1", "JIB_TO_IMAGES": "127.0.0.1:1/app"}

    done = hatch_jib("build", str(HELLO), "--print-config", env=env)

    assert done.returncode == 0, done.stderr
    assert "JIB_TO_IMAGES is not a hatch-jib setting; did you mean JIB_TO_IMAGE?" in done.stderr
    assert "JIB_TO_IMAGES" not in done.stdout
    assert done.stdout.splitlines()[0].startswith("from.image = ")


def test_cache_prune_reports_what_it_removed(tmp_path):
    store = BlobStore(tmp_path / "cache")
    old = store.put_bytes(b"old blob")
    os.utime(store.path(old), (1_000_000, 1_000_000))
    kept = store.put_bytes(b"new blob")

    done = hatch_jib("cache", "prune", "--older-than", "30", "--cache-dir", str(store.root))

    assert done.returncode == 0, done.stderr
    assert f"removed {old}" in done.stdout
    assert "Removed 1 blob(s), 8 B; 1 blob(s), 8 B left" in done.stdout
    assert not store.has(old) and store.has(kept)


def test_cache_prune_names_a_damaged_cache_entry_instead_of_crashing(tmp_path):
    store = BlobStore(tmp_path / "cache")
    shutil.rmtree(store.tmp_dir)
    store.tmp_dir.write_text("a file where the cache keeps a directory")

    done = hatch_jib("cache", "prune", "--older-than", "30", "--cache-dir", str(store.root))

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: The cache entry {store.tmp_dir} is damaged (File exists)",
        "  hint: remove it; hatch-jib downloads or builds again what is missing",
    ]


def test_cache_prune_in_a_project_prunes_the_cache_dir_it_configures(tmp_path):
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.jib]\ncache-dir = ".jib-cache"\n')
    store = BlobStore(project / ".jib-cache")
    old = store.put_bytes(b"old blob")
    os.utime(store.path(old), (1_000_000, 1_000_000))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JIB_")}

    done = subprocess.run(
        [sys.executable, "-m", "hatch_jib", "cache", "prune", "--older-than", "30"],
        cwd=project,
        env={**clean, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert f"removed {old}" in done.stdout
    assert str(project / ".jib-cache") in done.stdout
    assert not store.has(old)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("cache", "prune"), 2, "--older-than"),
        (("cache", "prune", "--max-size", "lots"), 2, "--max-size 'lots' is not a size"),
        (("inspect", "Bad/Ref"), 2, "Invalid image reference 'Bad/Ref'"),
        (("build", "--no-such-flag"), 2, "unrecognized arguments"),
        (("frobnicate",), 2, "invalid choice"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, code, message):
    done = hatch_jib(*args)

    assert done.returncode == code
    assert message in done.stderr and "Traceback" not in done.stderr


def test_internal_error_is_one_line_pointing_at_a_saved_traceback(capsys):
    try:
        {}["missing"]
    except KeyError as error:
        code = report_failure(error, debug=False)

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: internal error in hatch-jib: KeyError")
    crash_file = err.split("the traceback is in ", 1)[1].split(";", 1)[0]
    assert "Traceback" not in err
    assert "KeyError" in Path(crash_file).read_text()
    Path(crash_file).unlink()
