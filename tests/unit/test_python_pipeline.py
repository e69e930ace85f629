"""`build_application_layers`: the project's requirements end up in the right named layers."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.config import load_config
from hatch_jib.pipeline import steps
from hatch_jib.pipeline.steps import build_application_layers
from hatch_jib.project import load_project
from hatch_jib.python.destination import RecordedZip, StagingDestination
from hatch_jib.python.install import wheel_record
from hatch_jib.python.target import TargetProfile
from tests.support.deflate import deflate_by_write
from tests.unit.data.python.wheels import build_wheel

TARGET = TargetProfile("3.11", "/usr/bin/python3.11", "amd64", libc_version="2.36")
# A target of this interpreter's version, so `bytecode = "auto"` writes pycs.
HOST = TargetProfile(
    f"{sys.version_info.major}.{sys.version_info.minor}", "/usr/bin/python3", "amd64"
)


@pytest.fixture(autouse=True)
def no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    # Everything here is a file in the project: uv never needs an index.
    monkeypatch.setenv("UV_NO_INDEX", "1")


def layer_paths(store: BlobStore, digest: str) -> list[str]:
    data = gzip.decompress(store.read_bytes(digest))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_wheel_inside_the_project_goes_in_the_local_dependencies_layer(tmp_path: Path) -> None:
    project_root = tmp_path / "app"
    (project_root / "app").mkdir(parents=True)
    (project_root / "wheels").mkdir()
    (project_root / "app/__init__.py").write_text("")
    (project_root / "app/__main__.py").write_text("print('hi')\n")
    build_wheel(project_root / "wheels", "vendored", "1.0", {"vendored/__init__.py": ""})
    (project_root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            [project]
            name = "app"
            version = "1.0"
            dependencies = ["vendored @ {root:uri}/wheels/vendored-1.0-py3-none-any.whl"]
            [tool.hatch.metadata]
            allow-direct-references = true
            """
        )
    )
    project = load_project(project_root)
    config = load_config({"from": {"image": "base"}}, project_root=project_root, environ={})
    store = BlobStore(tmp_path / "cache")

    app = build_application_layers(project, config, TARGET, store, base_layers=1)

    by_name = {layer.name: layer for layer in app.layers}
    assert list(by_name) == ["dependencies", "local-dependencies", "code"]
    site = "app/.venv/lib/python3.11/site-packages"
    assert f"{site}/vendored/__init__.py" in layer_paths(
        store, by_name["local-dependencies"].digest
    )
    assert f"{site}/vendored/__init__.py" not in layer_paths(store, by_name["dependencies"].digest)
    assert app.entrypoint == ("/app/.venv/bin/python", "-m", "app")


def _resource_project(root: Path) -> Path:
    (root / "app" / "data").mkdir(parents=True)
    (root / "app/__init__.py").write_text("VALUE = 1\n")
    (root / "app/__main__.py").write_text("print('hi')\n")
    for index in range(20):
        (root / f"app/data/item{index}.txt").write_text(f"item {index}\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "app"\nversion = "1.0"\n'
    )
    return root


def _layers(
    root: Path, store: BlobStore, target: TargetProfile = TARGET, *, keep: int | None = None
) -> dict[str, tuple[str, bool]]:
    """The project's layers by name: (digest, reused); `keep` caps resources held in memory."""
    config = load_config({"from": {"image": "base"}}, project_root=root, environ={})
    with pytest.MonkeyPatch.context() as patch:
        if keep is not None:
            patch.setattr(steps, "_KEEP_RESOURCES", keep)
        app = build_application_layers(load_project(root), config, target, store, base_layers=1)
    return {layer.name: (layer.digest, layer.reused) for layer in app.layers}


def test_code_change_reuses_resources_without_writing_them_and_matches_a_cold_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    _layers(root, store)
    (root / "app/__init__.py").write_text("VALUE = 2\n")
    written: list[str] = []
    real_open = Path.open
    monkeypatch.setattr(
        Path,
        "open",
        lambda self, mode="r", *a, **k: (
            (written.append(self.name) if "w" in mode else None) or real_open(self, mode, *a, **k)
        ),
    )

    rebuilt = _layers(root, store)

    monkeypatch.undo()
    cold = _layers(root, BlobStore(tmp_path / "cold-cache"))
    assert rebuilt["resources"] == (cold["resources"][0], True)
    assert rebuilt["code"] == (cold["code"][0], False)
    assert "__init__.py" in written
    assert not [name for name in written if name.startswith("item")]


def test_code_change_reads_no_resource_out_of_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    _layers(root, store, HOST)
    (root / "app/__init__.py").write_text("VALUE = 2\n")
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def counted(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", counted)

    rebuilt = _layers(root, store, HOST)

    monkeypatch.undo()
    cold = _layers(root, BlobStore(tmp_path / "cold-cache"), HOST)
    assert rebuilt["resources"] == (cold["resources"][0], True)
    assert rebuilt["code"] == (cold["code"][0], False)
    assert "app/__init__.py" in opened
    assert not [name for name in opened if "/data/" in name]


@pytest.mark.parametrize("target", [TARGET, HOST], ids=["no-bytecode", "bytecode"])
def test_code_change_shows_installer_only_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: TargetProfile
) -> None:
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    _layers(root, store, target)
    (root / "app/__init__.py").write_text("VALUE = 2\n")
    handed: list[str] = []
    real_write = StagingDestination.write_to_fs

    def write_to_fs(self, scheme, path, stream, is_executable):  # type: ignore[no-untyped-def]
        handed.append(path)
        return real_write(self, scheme, path, stream, is_executable)

    monkeypatch.setattr(StagingDestination, "write_to_fs", write_to_fs)

    rebuilt = _layers(root, store, target)

    monkeypatch.undo()
    cold = _layers(root, BlobStore(tmp_path / "cold-cache"), target)
    # The code layer holds RECORD, which still lists every resource as a cold build's does.
    assert rebuilt["code"] == (cold["code"][0], False)
    assert rebuilt["resources"] == (cold["resources"][0], True)
    assert "app/__init__.py" in handed
    assert not [path for path in handed if "/data/" in path]


def test_a_passed_over_file_that_installer_hands_over_anyway_is_recorded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should installer find the members by another list than `infolist`, it would hand over
    # the files passed over too: RECORD must still list each of them once.
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    _layers(root, store)
    (root / "app/__init__.py").write_text("VALUE = 2\n")
    monkeypatch.setattr(RecordedZip, "infolist", zipfile.ZipFile.infolist)

    rebuilt = _layers(root, store)

    cold = _layers(root, BlobStore(tmp_path / "cold-cache"))
    assert rebuilt["code"] == (cold["code"][0], False)


@pytest.mark.parametrize(
    "placed",
    ["__pycache__/notes.txt", "app/__pycache__/notes.txt", "app/tool.sh"],
    ids=["top-level-pycache", "package-pycache", "executable"],
)
def test_code_change_with_an_odd_resource_matches_a_cold_build(tmp_path: Path, placed: str) -> None:
    # installer skips a file under any `__pycache__` (with a warning) and keeps an x bit:
    # a resource it is never shown must come out the same way.
    root = _resource_project(tmp_path / "app")
    (root / "assets").mkdir()
    (root / "assets/file").write_text("#!/bin/sh\necho notes\n")
    (root / "assets/file").chmod(0o755)
    with open(root / "pyproject.toml", "a") as pyproject:
        pyproject.write(
            f'[tool.hatch.build.targets.wheel.force-include]\n"assets/file" = "{placed}"\n'
        )
    store = BlobStore(tmp_path / "cache")
    with pytest.warns(RuntimeWarning) if "__pycache__" in placed else nullcontext():
        _layers(root, store)
    (root / "app/__init__.py").write_text("VALUE = 2\n")

    with pytest.warns(RuntimeWarning) if "__pycache__" in placed else nullcontext():
        rebuilt = _layers(root, store)

    with pytest.warns(RuntimeWarning) if "__pycache__" in placed else nullcontext():
        cold = _layers(root, BlobStore(tmp_path / "cold-cache"))
    assert rebuilt["code"] == (cold["code"][0], False)
    assert rebuilt["resources"] == (cold["resources"][0], True)


def test_wheel_record_of_a_wheel_with_a_duplicate_or_escaping_member_is_not_trusted(
    tmp_path: Path,
) -> None:
    rows = "app/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n"
    duplicate = tmp_path / "dup" / "app-1.0-py3-none-any.whl"
    duplicate.parent.mkdir()
    with zipfile.ZipFile(duplicate, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("app/__init__.py", "")
        archive.writestr("app/__init__.py", "")
        archive.writestr("app-1.0.dist-info/RECORD", rows + "app-1.0.dist-info/RECORD,,\n")
    escaping = tmp_path / "esc" / "app-1.0-py3-none-any.whl"
    escaping.parent.mkdir()
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("app/../../etc/x", "")
        archive.writestr(
            "app-1.0.dist-info/RECORD",
            rows.replace("app/__init__.py", "app/../../etc/x") + "app-1.0.dist-info/RECORD,,\n",
        )

    assert wheel_record(duplicate) is None
    assert wheel_record(escaping) is None


def test_code_change_reads_the_new_wheels_zip_directory_once_per_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wheel of 10,000 files takes about 0.06 s to open: its RECORD is read once, to check
    # it before caching the wheel and to find the resources, and it is opened once to install.
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    config = load_config({"from": {"image": "base"}}, project_root=root, environ={})

    def build(scratch: str) -> None:
        project = load_project(root)
        wheel = steps.build_project_wheel(project, tmp_path / scratch, store)
        build_application_layers(project, config, TARGET, store, wheel, base_layers=1)

    build("one")
    (root / "app/__init__.py").write_text("VALUE = 2\n")
    opened: list[str] = []
    real_init = zipfile.ZipFile.__init__

    def counted(self, file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if mode == "r" and str(getattr(file, "name", file)).endswith(".whl"):
            opened.append(str(getattr(file, "name", file)))
        real_init(self, file, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "__init__", counted)

    build("two")

    assert len(opened) == 2, opened


def test_wheel_record_without_a_hash_for_a_file_is_not_trusted(tmp_path: Path) -> None:
    wheel = tmp_path / "app-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("app/__init__.py", "")
        archive.writestr(
            "app-1.0.dist-info/RECORD", "app/__init__.py,,\napp-1.0.dist-info/RECORD,,\n"
        )

    assert wheel_record(wheel) is None


def test_resource_change_with_bytecode_on_rebuilds_resources_as_a_cold_build_does(
    tmp_path: Path,
) -> None:
    # A target of this interpreter's version, so `bytecode = "auto"` writes pycs.
    host = TargetProfile(
        f"{sys.version_info.major}.{sys.version_info.minor}", "/usr/bin/python3", "amd64"
    )
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    first = _layers(root, store, host)
    (root / "app/data/item3.txt").write_text("changed\n")

    rebuilt = _layers(root, store, host)

    cold = _layers(root, BlobStore(tmp_path / "cold-cache"), host)
    assert rebuilt["resources"][0] == cold["resources"][0]
    assert rebuilt["resources"][0] != first["resources"][0]


def test_cold_build_tars_small_resources_from_memory_into_the_same_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _resource_project(tmp_path / "app")
    (root / "app/data/run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "app/data/run.sh").chmod(0o755)
    from_disk = _layers(root, BlobStore(tmp_path / "disk-cache"), keep=0)
    written: list[str] = []
    real_open = Path.open
    monkeypatch.setattr(
        Path,
        "open",
        lambda self, mode="r", *a, **k: (
            (written.append(self.name) if "w" in mode else None) or real_open(self, mode, *a, **k)
        ),
    )

    from_memory = _layers(root, BlobStore(tmp_path / "memory-cache"))

    monkeypatch.undo()
    assert from_memory == from_disk
    assert "__init__.py" in written
    assert not [name for name in written if name.startswith("item") or name == "run.sh"]


def _layer_file(store: BlobStore, digest: str, path: str) -> bytes:
    data = gzip.decompress(store.read_bytes(digest))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(path)
        assert member is not None
        return member.read()


def test_wheel_rebuilt_in_place_in_the_project_installs_its_new_content_as_a_cold_build_does(
    tmp_path: Path,
) -> None:
    root = tmp_path / "app"
    (root / "app").mkdir(parents=True)
    (root / "wheels").mkdir()
    (root / "app/__init__.py").write_text("")
    (root / "app/__main__.py").write_text("print('hi')\n")
    build_wheel(root / "wheels", "vendored", "1.0", {"vendored/__init__.py": "V = 1\n"})
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            [project]
            name = "app"
            version = "1.0"
            dependencies = ["vendored @ {root:uri}/wheels/vendored-1.0-py3-none-any.whl"]
            [tool.hatch.metadata]
            allow-direct-references = true
            """
        )
    )
    store = BlobStore(tmp_path / "cache")
    _layers(root, store)
    # The same file name, new content: the requirement text does not change.
    build_wheel(root / "wheels", "vendored", "1.0", {"vendored/__init__.py": "V = 2\n"})

    rebuilt = _layers(root, store)

    cold_store = BlobStore(tmp_path / "cold-cache")
    cold = _layers(root, cold_store)
    path = "app/.venv/lib/python3.11/site-packages/vendored/__init__.py"
    assert _layer_file(store, rebuilt["local-dependencies"][0], path) == b"V = 2\n"
    assert rebuilt["local-dependencies"][0] == cold["local-dependencies"][0]


def _code_layer_under_optimize(root: Path, cache: Path) -> str:
    """The `code` layer digest of a build run by `python -O`, in a process of its own."""
    script = (
        "import sys; from pathlib import Path; from hatch_jib.cache import BlobStore; "
        "from tests.unit.test_python_pipeline import HOST, _layers; "
        "print(_layers(Path(sys.argv[1]), BlobStore(Path(sys.argv[2])), HOST)['code'][0])"
    )
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, "-O", "-c", script, str(root), str(cache)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return completed.stdout.strip().splitlines()[-1]


def test_build_under_python_optimize_has_the_code_layer_of_a_cold_build(tmp_path: Path) -> None:
    root = _resource_project(tmp_path / "app")
    first = _layers(root, BlobStore(tmp_path / "cache"), HOST)

    rebuilt = _code_layer_under_optimize(root, tmp_path / "cache")

    cold = _code_layer_under_optimize(root, tmp_path / "cold-cache")
    assert rebuilt == cold == first["code"][0]


def test_another_installer_version_installs_again_instead_of_reusing_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    _layers(root, store)
    installed: list[str] = []
    real_install = steps.install_wheel

    def counting_install(wheel: Path, **kwargs: Any) -> Any:
        installed.append(kwargs["filename"])
        return real_install(wheel, **kwargs)

    monkeypatch.setattr(steps, "install_wheel", counting_install)
    _layers(root, store)
    assert installed == []  # the same installer: everything reused
    monkeypatch.setattr(steps, "_installer_version", lambda: "999.0")

    _layers(root, store)

    assert [name.split("-")[0] for name in installed] == ["app"]


def test_layers_written_by_another_deflate_are_written_again_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _resource_project(tmp_path / "app")
    store = BlobStore(tmp_path / "cache")
    stock = _layers(root, store)
    deflate_by_write(monkeypatch)  # compresses otherwise, as zlib-ng does

    other = _layers(root, store)

    assert stock.keys() == other.keys()
    for name, (digest, reused) in other.items():
        assert not reused, name
        assert digest != stock[name][0], name
    assert _layers(root, BlobStore(tmp_path / "cold")) == {
        name: (digest, False) for name, (digest, _) in other.items()
    }


def test_a_project_file_a_dependency_also_ships_is_the_projects_cold_or_warm(
    tmp_path: Path,
) -> None:
    root = tmp_path / "app"
    (root / "app").mkdir(parents=True)
    (root / "wheels").mkdir()
    (root / "app/__init__.py").write_text("OWNER = 'project'\n")
    (root / "app/__main__.py").write_text("print('hi')\n")
    build_wheel(root / "wheels", "clash", "1.0", {"app/__init__.py": "OWNER = 'clash'\n"})
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            [project]
            name = "app"
            version = "1.0"
            dependencies = ["clash @ {root:uri}/wheels/clash-1.0-py3-none-any.whl"]
            [tool.hatch.metadata]
            allow-direct-references = true
            """
        )
    )
    store = BlobStore(tmp_path / "cache")
    init = "app/.venv/lib/python3.11/site-packages/app/__init__.py"

    # As pip does, the project's own file wins: it sits in a layer above the dependencies'.
    cold = _layers(root, store)
    (root / "app/__main__.py").write_text("print('changed')\n")
    warm = _layers(root, store)

    fresh = _layers(root, BlobStore(tmp_path / "fresh-cache"))
    assert _layer_file(store, cold["code"][0], init) == b"OWNER = 'project'\n"
    assert warm["dependencies"][1] and not warm["code"][1]
    assert warm["code"][0] == fresh["code"][0]
