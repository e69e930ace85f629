"""Wheel resolution with uv against the real PyPI, the resolution record, and downloads."""

from __future__ import annotations

import hashlib
import re
import signal
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import uv

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.python.resolve import ResolvedWheel, download, resolve, uv_binary
from hatch_jib.python.target import TargetProfile
from tests.support.fake_registry import Answer, Reply, Seen, fake_registry
from tests.unit.data.python.wheels import build_wheel

DEBIAN_311 = TargetProfile("3.11", "/usr/bin/python3.11", "amd64", libc_version="2.36")
ARM_312 = TargetProfile("3.12", "/usr/local/bin/python3.12", "arm64", "v8", libc_version="2.36")
PYPI = "https://pypi.org/simple"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "cache")


@pytest.fixture(autouse=True)
def pypi_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve against PyPI alone, whatever index settings the machine running the tests has."""
    for name in ("UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("UV_INDEX_URL", PYPI)


def test_pure_python_requirement_resolves_to_a_hashed_universal_wheel(store: BlobStore) -> None:
    wheels = resolve(["click==8.1.7"], DEBIAN_311, store=store)

    assert [(wheel.name, wheel.version, wheel.filename) for wheel in wheels] == [
        ("click", "8.1.7", "click-8.1.7-py3-none-any.whl")
    ]
    assert wheels[0].url.startswith("https://files.pythonhosted.org/")
    assert wheels[0].sha256 == "ae74fb96c20a0277a1d615f1e4d73c8414f5a98db8b799a7931d1582f3390c28"
    assert wheels[0].size == 97941


def test_binary_requirement_resolves_to_the_targets_abi_and_architecture(
    store: BlobStore,
) -> None:
    wheels = resolve(["numpy==2.1.3"], ARM_312, store=store)

    assert len(wheels) == 1
    assert wheels[0].filename.startswith("numpy-2.1.3-cp312-cp312-")
    assert wheels[0].filename.endswith("_aarch64.whl")
    assert len(wheels[0].sha256) == 64


def test_requirement_without_a_wheel_is_a_build_error_naming_it(store: BlobStore) -> None:
    # docopt 0.6.2 was only ever published as an sdist.
    with pytest.raises(BuildError) as raised:
        resolve(["docopt==0.6.2"], DEBIAN_311, store=store)

    assert "docopt==0.6.2" in raised.value.message
    assert "CPython 3.11, linux/amd64, glibc 2.36" in raised.value.message
    assert raised.value.hint == (
        "choose a base image whose platform has wheels, or pin a version that ships one"
    )


def test_second_resolve_reuses_the_record_without_running_uv(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = resolve(["click==8.1.7"], DEBIAN_311, store=store)
    monkeypatch.setattr(uv, "find_uv_bin", lambda: "/nonexistent/uv")

    second = resolve([" click==8.1.7"], DEBIAN_311, store=store)

    assert second == first
    with pytest.raises(BuildError, match="cannot run uv"):
        resolve(["click==8.1.6"], DEBIAN_311, store=store)


def test_empty_requirements_resolve_to_nothing_without_uv(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uv, "find_uv_bin", lambda: "/nonexistent/uv")

    assert resolve([], DEBIAN_311, store=store) == []


def test_pip_find_links_is_honoured(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    wheel = _tiny_wheel(links, "hatchjibprobe", "1.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))

    wheels = resolve(["hatchjibprobe==1.0"], DEBIAN_311, store=store)

    assert [w.filename for w in wheels] == [wheel.name]
    assert wheels[0].url == wheel.as_uri()
    assert wheels[0].sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_direct_wheel_url_requirement_resolves_to_that_wheel(
    store: BlobStore, tmp_path: Path
) -> None:
    wheel = _tiny_wheel(tmp_path, "hatchjibprobe", "1.0")

    wheels = resolve([f"hatchjibprobe @ {wheel.as_uri()}"], DEBIAN_311, store=store)

    assert [(w.name, w.filename, w.url) for w in wheels] == [
        ("hatchjibprobe", wheel.name, wheel.as_uri())
    ]


def test_source_directory_requirement_is_a_build_error_naming_it(
    store: BlobStore, tmp_path: Path
) -> None:
    project = tmp_path / "srcproj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "srcproj"\nversion = "1.0"\n')

    with pytest.raises(BuildError) as raised:
        resolve([f"srcproj @ {project.as_uri()}"], DEBIAN_311, store=store)

    assert raised.value.message == "srcproj is not available as a wheel"


def test_download_stores_wheel_by_digest_and_skips_it_next_time(
    store: BlobStore, tmp_path: Path
) -> None:
    wheel = _tiny_wheel(tmp_path, "hatchjibprobe", "1.0")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    resolved = ResolvedWheel("hatchjibprobe", "1.0", wheel.name, wheel.as_uri(), sha256, None)

    first = download([resolved], store)
    wheel.unlink()  # a second download could only succeed from the store
    second = download([resolved], store)

    assert first == second == [store.path(f"sha256:{sha256}")]
    assert hashlib.sha256(first[0].read_bytes()).hexdigest() == sha256


def test_download_with_the_wrong_hash_is_a_build_error_naming_the_wheel(
    store: BlobStore, tmp_path: Path
) -> None:
    wheel = _tiny_wheel(tmp_path, "hatchjibprobe", "1.0")
    resolved = ResolvedWheel("hatchjibprobe", "1.0", wheel.name, wheel.as_uri(), "0" * 64, None)

    with pytest.raises(BuildError) as raised:
        download([resolved], store)

    assert wheel.name in raised.value.message
    assert not store.has("sha256:" + "0" * 64)


def test_ctrl_c_stops_wheel_downloads_that_wait_on_the_index(store: BlobStore) -> None:
    both_asked, release, answered_late = threading.Event(), threading.Event(), threading.Event()
    asked: list[str] = []

    def hold_every_wheel(request: Seen) -> Reply:
        asked.append(request.path)
        if len(asked) == 2:
            both_asked.set()
        if release.wait(15):
            return Answer(drop=True)  # the client has gone
        answered_late.set()
        return 404, {}, b""

    def press_ctrl_c() -> None:
        both_asked.wait(10)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    with fake_registry(hold_every_wheel) as index:
        wheels = [
            ResolvedWheel(
                name,
                "1.0",
                f"{name}-1.0-py3-none-any.whl",
                f"http://{index.host}/{name}.whl",
                "1" * 64,
                None,
            )
            for name in ("first", "second")
        ]
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        try:
            with pytest.raises(KeyboardInterrupt):
                download(wheels, store)
            # Both downloads gave up their wait on the index rather than waiting it out.
            assert both_asked.is_set() and not answered_late.is_set()
        finally:
            release.set()


def test_download_from_pypi_verifies_each_wheel(store: BlobStore) -> None:
    wheels = resolve(["idna==3.10", "six==1.16.0"], DEBIAN_311, store=store)

    paths = download(wheels, store)

    assert [path.name for path in paths] == [wheel.sha256 for wheel in wheels]
    assert [path.stat().st_size for path in paths] == [wheel.size for wheel in wheels]


def test_offline_download_of_a_missing_wheel_is_a_build_error(store: BlobStore) -> None:
    resolved = ResolvedWheel("six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", "", "1" * 64, 1)

    with pytest.raises(BuildError, match=re.escape("six-1.16.0-py2.py3-none-any.whl")):
        download([resolved], store, offline=True)


def _tiny_wheel(directory: Path, name: str, version: str) -> Path:
    return build_wheel(directory, name, version, {f"{name}/__init__.py": "VALUE = 1\n"})


def test_projects_tool_uv_find_links_are_honoured_and_key_the_record(
    tmp_path: Path, store: BlobStore
) -> None:
    project = tmp_path / "project"
    (project / "links").mkdir(parents=True)
    build_wheel(project / "links", "privpkg", "1.0", {"privpkg/__init__.py": ""})
    pyproject = '[project]\nname = "app"\nversion = "1"\n[tool.uv]\nfind-links = ["links"]\n'
    (project / "pyproject.toml").write_text(pyproject)

    [wheel] = resolve(["privpkg"], DEBIAN_311, store=store, project_root=project)

    assert wheel.url == (project / "links/privpkg-1.0-py3-none-any.whl").as_uri()
    # A changed setting is not answered from the record: uv runs again and reads it.
    (project / "pyproject.toml").write_text(pyproject.replace('"links"', '"elsewhere"'))
    with pytest.raises(BuildError, match="Failed to read `--find-links` directory"):
        resolve(["privpkg"], DEBIAN_311, store=store, project_root=project)


def test_offline_resolution_without_cached_wheels_says_it_is_offline(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-uv-cache"))

    with pytest.raises(BuildError) as caught:
        resolve(["charset-normalizer==3.4.0"], DEBIAN_311, store=store, offline=True)

    assert "offline" in str(caught.value)
    assert "charset-normalizer" in str(caught.value)
    assert "build once online" in str(caught.value)


def test_platforms_looking_for_uv_at_once_both_find_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # uv is found through sysconfig, whose variables are filled on first use; the fill is
    # slowed down so the second platform asks while the first is still inside it.
    real_init = sysconfig._init_posix

    def slow_init(variables: dict[str, object]) -> None:
        time.sleep(0.2)
        real_init(variables)

    monkeypatch.setattr(sysconfig, "_CONFIG_VARS", None)
    monkeypatch.setattr(sysconfig, "_init_posix", slow_init)
    both_ask = threading.Barrier(2, timeout=10)

    def find() -> str:
        both_ask.wait()
        return uv_binary()

    with ThreadPoolExecutor(2) as pool:
        found = [future.result() for future in [pool.submit(find), pool.submit(find)]]

    assert found == [uv.find_uv_bin()] * 2


@pytest.fixture
def two_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose only index is a find-links directory with thing 1.0 and 2.0, and whose
    uv reads an empty constraints file."""
    links = tmp_path / "links"
    links.mkdir()
    for version in ("1.0", "2.0"):
        build_wheel(links, "thing", version, {"thing/__init__.py": f"V = {version!r}\n"})
    monkeypatch.delenv("UV_INDEX_URL")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(links))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    project = tmp_path / "workspace/project"
    project.mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n')
    (project / "constraints.txt").write_text("\n")
    monkeypatch.setenv("UV_CONSTRAINT", "constraints.txt")
    return project


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


_LOWEST = '[pip]\nresolution = "lowest"\n'
# Each makes uv choose thing 1.0 instead of 2.0 for the same requirement.
_UV_SETTING_CHANGES = {
    "UV_RESOLUTION": lambda project, env: env.setenv("UV_RESOLUTION", "lowest"),
    "UV_CONSTRAINT": lambda project, env: (
        _write(project / "below-2.txt", "thing<2\n"),
        env.setenv("UV_CONSTRAINT", "below-2.txt"),
    ),
    "constraints content": lambda project, env: _write(project / "constraints.txt", "thing<2\n"),
    "UV_CONFIG_FILE": lambda project, env: (
        _write(project / "lowest.toml", _LOWEST),
        env.setenv("UV_CONFIG_FILE", str(project / "lowest.toml")),
    ),
    "uv.toml in a parent": lambda project, env: _write(project.parent / "uv.toml", _LOWEST),
    "user uv.toml": lambda project, env: _write(project.parents[1] / "config/uv/uv.toml", _LOWEST),
}


@pytest.mark.parametrize("change", list(_UV_SETTING_CHANGES))
def test_a_changed_uv_setting_resolves_again_as_a_cold_build_does(
    two_versions: Path, store: BlobStore, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    project = two_versions
    [first] = resolve(["thing"], DEBIAN_311, store=store, project_root=project)
    _UV_SETTING_CHANGES[change](project, monkeypatch)

    [again] = resolve(["thing"], DEBIAN_311, store=store, project_root=project)

    cold_store = BlobStore(project.parents[1] / "cold-cache")
    [cold] = resolve(["thing"], DEBIAN_311, store=cold_store, project_root=project)
    assert first.version == "2.0"
    assert again.version == cold.version == "1.0"
