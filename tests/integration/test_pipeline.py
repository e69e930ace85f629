"""The pipeline against a real registry: shared caches, corrupt blobs, offline builds, pulls."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hatch_jib import cache as cache_module
from hatch_jib import cancel, progress
from hatch_jib.build import build_project
from hatch_jib.errors import BuildError
from hatch_jib.pipeline import steps
from tests.support.multiarch_base import push_multiarch_base
from tests.support.registry import running_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "fixtures" / "projects"


def project_copy(tmp_path: Path, name: str = "hello-cli", where: str = "project") -> Path:
    destination = tmp_path / where
    shutil.copytree(FIXTURES / name, destination, ignore=shutil.ignore_patterns("dist"))
    return destination


def cli_command(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hatch_jib", "build", str(project), "--plain", *args]


def cli_env(cache: Path, base_image: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "JIB_CACHE_DIR": str(cache), "JIB_FROM_IMAGE": base_image, **extra}


def build_env(cache: Path, base_image: str) -> dict[str, str]:
    """The settings of an in-process build: its own cache, the base, plain log lines."""
    return {"JIB_CACHE_DIR": str(cache), "JIB_FROM_IMAGE": base_image, "JIB_CONSOLE": "plain"}


def jib(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m hatch_jib build` from this checkout."""
    return subprocess.run(
        cli_command(project, *args),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def layers_of(project: Path) -> dict[str, dict]:
    result = json.loads((project / "dist" / "jib-image.json").read_text())
    return {layer["name"]: layer for layer in result["layers"]}


def blob_in_cache(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest.removeprefix("sha256:")


def cold_tar_build(tmp_path: Path, base_image: str) -> tuple[Path, Path, dict[str, str], str]:
    """A tar build of the fixture on a fresh cache: the cache, project, env and digest."""
    cache = tmp_path / "cache"
    project = project_copy(tmp_path)
    env = cli_env(cache, base_image)
    cold = jib(project, "--tar", env=env)
    assert cold.returncode == 0, cold.stderr
    return cache, project, env, (project / "dist" / "jib-image.digest").read_text()


def test_two_builds_at_once_on_one_cache_both_succeed(tmp_path, registry, base_image):
    cache = tmp_path / "cache"
    env = cli_env(cache, base_image)
    projects = [project_copy(tmp_path, where=f"copy-{n}") for n in (1, 2)]

    # Both start on an empty cache, so they race for every blob and record.
    running = [
        subprocess.Popen(
            cli_command(project, "--to", f"{registry.host}/pipeline/concurrent-{n}"),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, project in enumerate(projects)
    ]
    outcomes = [(process.wait(timeout=300), process.stderr.read()) for process in running]

    for status, stderr in outcomes:
        assert status == 0, stderr
    digests = {(project / "dist" / "jib-image.digest").read_text() for project in projects}
    assert len(digests) == 1
    assert list((cache / "tmp").iterdir()) == []


def test_what_a_killed_build_leaves_is_in_the_cache_and_prune_removes_it(tmp_path, base_image):
    cache = tmp_path / "cache"
    env = cli_env(cache, base_image, TMPDIR=str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    build = subprocess.Popen(
        cli_command(project_copy(tmp_path), "--tar"),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so its uv and hatchling children are killed with it
    )
    # Kill it while it installs the dependencies into its scratch directory.
    deadline = time.monotonic() + 120
    while not list(cache.glob("tmp/build-*/root/*")) and build.poll() is None:
        assert time.monotonic() < deadline, "the build never started to install"
        time.sleep(0.01)
    os.killpg(build.pid, signal.SIGKILL)
    assert build.wait(timeout=30) == -signal.SIGKILL

    assert list((tmp_path / "system-tmp").iterdir()) == []
    assert list(cache.glob("tmp/build-*"))
    pruned = subprocess.run(
        [sys.executable, "-m", "hatch_jib", "cache", "prune", "--older-than", "30"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "of temporary files that stopped builds left" in pruned.stdout
    assert list((cache / "tmp").iterdir()) == []


def test_corrupt_cached_blobs_are_evicted_rebuilt_and_never_pushed(tmp_path, base_image):
    cache, project, env, _ = cold_tar_build(tmp_path, base_image)
    layers = layers_of(project)
    base_blob = blob_in_cache(cache, layers["base"]["digest"])
    code_blob = blob_in_cache(cache, layers["code"]["digest"])
    base_blob.write_bytes(base_blob.read_bytes()[: base_blob.stat().st_size // 2])
    code_blob.write_bytes(b"not a layer")

    # Another registry, so the base layer must be uploaded rather than mounted.
    with running_registry(tmp_path / "other", "open") as other:
        target = f"{other.host}/pipeline/corrupt"
        pushed = jib(project, "--to", target, env=env)
        assert pushed.returncode == 0, pushed.stderr
        for name in ("base", "code"):
            digest = layers[name]["digest"]
            assert f"evicting corrupt blob {digest}" in pushed.stderr
            served = httpx.get(f"http://{other.host}/v2/pipeline/corrupt/blobs/{digest}")
            assert served.status_code == 200
            assert "sha256:" + hashlib.sha256(served.content).hexdigest() == digest
    assert layers_of(project)["code"]["pushed"] is True


def test_offline_tar_build_works_from_a_warm_cache(tmp_path, base_image):
    cache = tmp_path / "cache"
    project = project_copy(tmp_path)
    online = jib(project, "--tar", env=cli_env(cache, base_image))
    assert online.returncode == 0, online.stderr
    digest = (project / "dist" / "jib-image.digest").read_text()
    (project / "dist" / "jib-image.digest").unlink()

    # The registry's address is unreachable: any request would fail the build.
    offline = jib(project, "--tar", "--offline", env=cli_env(cache, base_image))

    assert offline.returncode == 0, offline.stderr
    assert (project / "dist" / "jib-image.digest").read_text() == digest
    assert "from the cache (offline)" in offline.stderr


def test_damaged_layer_records_are_dropped_with_a_warning_not_pushed(tmp_path, base_image):
    cache, project, env, digest = cold_tar_build(tmp_path, base_image)

    # One flipped hex digit in each recorded diff_id: valid JSON, a wrong checksum.
    records = [*(cache / "installed-layers").rglob("*.json"), *(cache / "selectors").rglob("*")]
    for path in [path for path in records if path.is_file()]:
        raw = path.read_bytes()
        at = raw.index(b'"diff_id": "sha256:') + len(b'"diff_id": "sha256:')
        path.write_bytes(raw[:at] + (b"1" if raw[at : at + 1] == b"0" else b"0") + raw[at + 1 :])
    again = jib(project, "--tar", env=env)

    assert again.returncode == 0, again.stderr
    assert "cache: dropping damaged installed-layers record" in again.stderr
    assert (project / "dist" / "jib-image.digest").read_text() == digest


@pytest.mark.parametrize("kind", ["targets", "resolutions", "installed-layers", "selectors"])
def test_a_record_of_another_shape_is_ignored_with_a_warning(tmp_path, base_image, kind):
    cache, project, env, digest = cold_tar_build(tmp_path, base_image)

    # Written as the store writes, checksum and all, as another hatch-jib might have.
    for path in (cache / kind).rglob("*.json"):
        payload = json.dumps({"x": 1}).encode()
        path.write_bytes(payload + b"\n" + cache_module._record_checksum(path, payload))
    if kind == "selectors":
        shutil.rmtree(cache / "installed-layers")  # so that the selectors are read
    again = jib(project, "--tar", env=env)

    assert again.returncode == 0, again.stderr
    assert f"cache: ignoring the {kind} record " in again.stderr
    assert "it has another shape" in again.stderr
    assert (project / "dist" / "jib-image.digest").read_text() == digest


def test_offline_build_on_a_cold_cache_says_what_is_missing(tmp_path, base_image):
    project = project_copy(tmp_path)

    offline = jib(project, "--tar", "--offline", env=cli_env(tmp_path / "cache", base_image))

    assert offline.returncode == 1
    errors = [line for line in offline.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "Offline build" in errors[0] and base_image.rpartition(":")[0] in errors[0]
    assert "Traceback" not in offline.stderr


@pytest.mark.parametrize(
    ("base", "code", "said"),
    [
        ("127.0.0.1:1/nothing/here:1", 1, "127.0.0.1:1"),  # fails reaching the base
        ("127.0.0.1:1/Not Valid", 2, "Invalid image reference"),  # fails in the config
    ],
)
def test_a_failed_build_leaves_no_older_builds_result_files(tmp_path, base, code, said):
    project = project_copy(tmp_path)
    dist = project / "dist"
    dist.mkdir()
    for name in ("jib-image.digest", "jib-image.id", "jib-image.json"):
        (dist / name).write_text("from a build of yesterday")

    failed = jib(project, "--tar", env=cli_env(tmp_path / "cache", base))

    assert failed.returncode == code and said in failed.stderr
    assert sorted(path.name for path in dist.iterdir()) == []


def test_a_base_tag_the_registry_lacks_is_named_as_the_base_image(tmp_path, base_image):
    missing = base_image.rpartition(":")[0] + ":no-such-tag"

    failed = jib(project_copy(tmp_path), "--tar", env=cli_env(tmp_path / "cache", missing))

    assert failed.returncode == 1
    assert "MANIFEST_UNKNOWN" in failed.stderr
    assert f"hint: {missing} is not in the registry: check the base image, " in failed.stderr
    assert "`tool.jib.from.image` (or JIB_FROM_IMAGE)" in failed.stderr


def test_offline_build_refuses_to_push(tmp_path, registry, base_image):
    project = project_copy(tmp_path)

    offline = jib(
        project,
        "--offline",
        "--to",
        f"{registry.host}/pipeline/offline",
        env=cli_env(tmp_path / "cache", base_image),
    )

    assert offline.returncode == 2
    assert "offline build cannot push" in offline.stderr


def test_registry_build_over_a_described_base_downloads_no_base_layer(
    tmp_path, registry, base_image
):
    cache = tmp_path / "cache"
    project = project_copy(tmp_path)
    env = cli_env(cache, base_image, JIB_PYTHON_VERSION="3.11", JIB_PYTHON_LIBC="glibc")

    built = jib(project, "--to", f"{registry.host}/pipeline/no-download", env=env)

    assert built.returncode == 0, built.stderr
    layers = layers_of(project)
    assert not blob_in_cache(cache, layers["base"]["digest"]).exists()
    assert layers["base"]["pushed"] is True  # mounted from the base's repository
    assert "Downloading" not in built.stderr
    assert re.search(r"Layer base +[0-9a-f]{12} mounted from base/debian-python", built.stderr)
    assert re.search(r"Config +[0-9a-f]{12} pushed \(", built.stderr)
    assert "Layer config" not in built.stderr


@pytest.mark.parametrize("described", [False, True], ids=["detected", "described"])
def test_a_tar_build_unpacks_each_base_layer_once_to_check_its_diff_id(
    tmp_path, monkeypatch, base_image, described
):
    # Target detection reads the base layers whole and checks their diff_ids from that read;
    # the tar's prefetch checks only what detection left, so each layer is unpacked once.
    project = project_copy(tmp_path)
    environ = build_env(tmp_path / "cache", base_image)
    if described:  # detection reads no layer, so the prefetch must check them all
        environ |= {"JIB_PYTHON_VERSION": "3.11", "JIB_PYTHON_LIBC": "glibc"}
    unpacked: list[str] = []
    real = steps._uncompressed_digest
    monkeypatch.setattr(
        steps,
        "_uncompressed_digest",
        lambda path, *rest: unpacked.append(path.name) or real(path, *rest),
    )

    build_project(project, directory=project / "dist", environ=environ, outputs=("tar",))

    base = layers_of(project)["base"]["digest"]
    assert unpacked == ([base.removeprefix("sha256:")] if described else [])
    store = cache_module.BlobStore(tmp_path / "cache")
    assert store.read_record("diff-ids", base) is not None


@pytest.mark.parametrize("broken", ["wheel", "base"])
def test_first_failure_is_reported_once_and_leaves_no_partial_output(
    tmp_path, registry, base_image, broken
):
    project = project_copy(tmp_path)
    env = cli_env(tmp_path / "cache", base_image)
    if broken == "wheel":
        pyproject = project / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text() + "\n[tool.hatch.build.targets.wheel]\nonly-include = 42\n"
        )
    else:
        env["JIB_FROM_IMAGE"] = f"{registry.host}/pipeline/no-such-base:1"

    failed = jib(project, "--tar", env=env)

    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, failed.stderr
    assert ("only-include" if broken == "wheel" else "no-such-base") in failed.stderr
    assert not (project / "dist").exists()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_push_reports_each_blob_with_its_bytes_then_as_skipped_on_rebuild(
    tmp_path, registry, base_image
):
    project = project_copy(tmp_path)
    environ = {
        "JIB_CACHE_DIR": str(tmp_path / "cache"),
        "JIB_FROM_IMAGE": base_image,
        "JIB_TO_IMAGE": f"{registry.host}/pipeline/progress",
        "JIB_CONSOLE": "plain",
    }
    runs: list[list[progress.BlobEvent]] = []

    for _ in range(2):
        events: list[progress.BlobEvent] = []
        unsubscribe = progress.subscribe(events.append)
        try:
            build_project(project, directory=project / "dist", environ=environ)
        finally:
            unsubscribe()
        runs.append(events)

    first, second = runs
    states = {event.name: event.state for event in first if event.state != "sent"}
    assert states == {
        "base": "mounted",
        "dependencies": "pushed",
        "resources": "pushed",
        "code": "pushed",
        "config": "pushed",
    }
    for event in first:
        if event.state == "pushed":
            sent = sum(e.done for e in first if e.state == "sent" and e.digest == event.digest)
            assert sent == event.size
    assert {event.state for event in second} == {"checking", "skipped"}


def two_platform_project(tmp_path: Path) -> Path:
    project = tmp_path / "two-platforms"
    (project / "two_platforms").mkdir(parents=True)
    (project / "two_platforms" / "__init__.py").write_text("")
    (project / "two_platforms" / "__main__.py").write_text("print('hello')\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "two-platforms"\nversion = "1.0"\n\n'
        '[tool.jib.from]\nplatforms = ["linux/amd64", "linux/arm64"]\n'
    )
    return project


def work_until_cancelled(stopped: list[str], name: str) -> None:
    """Stand-in for a platform's long layer step: checkpoints until told to stop."""
    try:
        for _ in range(300):
            cancel.checkpoint()
            time.sleep(0.1)
    except cancel.Cancelled:
        stopped.append(name)
        raise
    raise AssertionError(f"nothing stopped the {name} build")


def test_platforms_of_one_build_are_built_side_by_side(tmp_path, monkeypatch, base_image):
    project = two_platform_project(tmp_path)
    # Each platform's layers wait here for the other's: one after the other, this breaks.
    both_started = threading.Barrier(2, timeout=30)
    real = steps.build_application_layers

    def meet_then_build(*args, **kwargs):
        both_started.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "build_application_layers", meet_then_build)
    environ = build_env(tmp_path / "cache", push_multiarch_base(base_image))

    build_project(project, directory=project / "dist", environ=environ, outputs=("tar",))

    result = json.loads((project / "dist" / "jib-image.json").read_text())
    assert result["platforms"] == ["linux/amd64", "linux/arm64/v8"]


def press_ctrl_c_once(ready: Callable[[], object]) -> None:
    """From another thread: once `ready()` returns, Ctrl-C in the main thread."""

    def press() -> None:
        ready()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=press, daemon=True).start()


def test_ctrl_c_stops_a_build_without_waiting_for_its_layers(tmp_path, monkeypatch, base_image):
    project = project_copy(tmp_path)
    layers_started, released = threading.Event(), threading.Event()
    finished = []

    def slow_layers(*args, **kwargs):
        layers_started.set()
        released.wait(30)
        finished.append(True)
        raise AssertionError("Ctrl-C did not stop the build")

    monkeypatch.setattr(steps, "build_application_layers", slow_layers)
    press_ctrl_c_once(lambda: layers_started.wait(30))
    environ = build_env(tmp_path / "cache", base_image)

    try:
        with pytest.raises(KeyboardInterrupt):
            build_project(project, directory=project / "dist", environ=environ, outputs=("tar",))
    finally:
        released.set()

    assert finished == []
    assert not (project / "dist" / "jib-image.json").exists()


@pytest.mark.parametrize("pinned", [False, True], ids=["detected", "described"])
def test_ctrl_c_stops_the_base_layer_downloads(tmp_path, monkeypatch, base_image, pinned):
    project = project_copy(tmp_path)
    downloading = threading.Event()
    started: list[str] = []
    stopped: list[str] = []

    def endless_download(base, digest, store):
        started.append(digest)
        downloading.set()
        work_until_cancelled(stopped, digest)

    monkeypatch.setattr(steps, "fetch_base_blob", endless_download)
    press_ctrl_c_once(lambda: downloading.wait(30))
    environ = build_env(tmp_path / "cache", base_image)
    if pinned:  # no detection: the download runs in a step's thread, not in the main one
        environ.update(JIB_PYTHON_VERSION="3.11", JIB_PYTHON_LIBC="glibc")

    with pytest.raises(KeyboardInterrupt):
        build_project(project, directory=project / "dist", environ=environ, outputs=("tar",))

    # Every download that started was told to stop, instead of running to its end.
    assert started and sorted(stopped) == sorted(started)
    assert not (project / "dist" / "jib-image.json").exists()


def test_a_failing_platform_stops_the_other_and_its_own_error_is_raised(
    tmp_path, monkeypatch, base_image
):
    project = two_platform_project(tmp_path)
    stopped: list[str] = []
    # arm64 breaks only once amd64 is at work: failing before amd64 starts would leave
    # nothing to stop, and the test would depend on which thread runs first.
    amd64_working = threading.Event()

    def arm64_breaks(project, config, target, *args, **kwargs):
        if target.architecture == "arm64":
            amd64_working.wait(timeout=30)
            raise BuildError("the arm64 layers broke", hint="a test")
        amd64_working.set()
        work_until_cancelled(stopped, target.architecture)

    monkeypatch.setattr(steps, "build_application_layers", arm64_breaks)
    environ = build_env(tmp_path / "cache", push_multiarch_base(base_image))

    with pytest.raises(BuildError, match="the arm64 layers broke"):
        build_project(project, directory=project / "dist", environ=environ, outputs=("tar",))

    assert stopped == ["amd64"]
    assert not (project / "dist").exists()


def test_ctrl_c_stops_every_platform_of_a_build(tmp_path, monkeypatch, base_image):
    project = two_platform_project(tmp_path)
    stopped: list[str] = []
    both_working = threading.Barrier(3, timeout=30)

    def long_layers(project, config, target, *args, **kwargs):
        both_working.wait()
        work_until_cancelled(stopped, target.architecture)

    monkeypatch.setattr(steps, "build_application_layers", long_layers)
    press_ctrl_c_once(both_working.wait)
    environ = build_env(tmp_path / "cache", push_multiarch_base(base_image))

    with pytest.raises(KeyboardInterrupt):
        build_project(project, directory=project / "dist", environ=environ, outputs=("tar",))

    # The first platform builds in the interrupted thread; the other one was told to stop.
    assert stopped == ["arm64"]
