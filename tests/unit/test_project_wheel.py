"""`build_project_wheel`: a wheel is reused only while nothing it is made of has changed."""

from __future__ import annotations

import hashlib
import os
import textwrap
import zipfile
from pathlib import Path

import pytest

from hatch_jib import cache as cache_module
from hatch_jib import project as project_module
from hatch_jib.cache import BlobStore, ContentHashes
from hatch_jib.errors import BuildError
from hatch_jib.pipeline.steps import build_project_wheel
from hatch_jib.project import load_project, wheel_builder, wheel_inputs
from hatch_jib.python.install import wheel_record
from tests.support.deflate import deflate_by_write

# A fixed past mtime that zip can hold (wheels without `reproducible` keep real times).
OLD = 1_600_000_000

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
[project]
name = "app"
dynamic = ["version"]
license-files = ["LICENSE"]
[project.scripts]
app = "app:main"
[tool.hatch.version]
path = "VERSION.py"
"""


def _project(root: Path, extra: str = "") -> Path:
    (root / "app" / "data").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT + textwrap.dedent(extra))
    (root / "VERSION.py").write_text('__version__ = "1.0"\n')
    (root / "LICENSE").write_text("MIT\n")
    (root / "app" / "__init__.py").write_text("def main():\n    print('hi')\n")
    (root / "app" / "data" / "motd.txt").write_text("hello\n")
    for path in root.rglob("*"):
        os.utime(path, (OLD, OLD))
    return root


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The wheel builds hatchling runs; files are trusted by their stat however young."""
    monkeypatch.setattr(cache_module, "_RACY_SECONDS", -1)
    made: list[str] = []
    real = project_module.build_wheel

    def counted(project, directory, builder=None):
        made.append(project.name)
        return real(project, directory, builder)

    monkeypatch.setattr("hatch_jib.pipeline.steps.build_wheel", counted)
    return made


def _wheel(root: Path, store: BlobStore, scratch: Path) -> tuple[str, dict[str, bytes]]:
    wheel = build_project_wheel(load_project(root), scratch, store).path
    with zipfile.ZipFile(wheel) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return hashlib.sha256(wheel.read_bytes()).hexdigest(), files


def test_unchanged_project_reuses_its_wheel_without_building(tmp_path: Path, builds) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    first, _ = _wheel(root, store, tmp_path / "one")

    again, _ = _wheel(root, BlobStore(tmp_path / "cache"), tmp_path / "two")

    assert again == first
    assert builds == ["app"]


@pytest.mark.parametrize(
    ("relative", "content", "hatchling_builds"),
    [
        # Only the file's bytes change, so the last wheel is patched.
        ("app/__init__.py", "def main():\n    print('ho')\n", ["app"]),  # code, same size
        ("app/data/motd.txt", "howdy\n", ["app"]),  # a resource, same size
        # Metadata changes too, and only hatchling writes that.
        ("LICENSE", "BSD\n", ["app", "app"]),  # a license file, copied into dist-info
        ("VERSION.py", '__version__ = "2.0"\n', ["app", "app"]),  # the dynamic version
    ],
)
def test_file_rewritten_with_its_old_mtime_gives_the_wheel_a_cold_build_gives(
    tmp_path: Path, builds, relative: str, content: str, hatchling_builds: list[str]
) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    _, before = _wheel(root, store, tmp_path / "one")

    (root / relative).write_text(content)
    os.utime(root / relative, (OLD, OLD))
    digest, after = _wheel(root, BlobStore(tmp_path / "cache"), tmp_path / "two")

    assert builds == hatchling_builds
    assert after != before
    cold, _ = _wheel(root, BlobStore(tmp_path / "cold-cache"), tmp_path / "three")
    assert digest == cold


@pytest.mark.parametrize("deflate", ["zlib", "by-write"])
def test_patched_wheel_is_byte_for_byte_the_one_hatchling_builds(
    tmp_path: Path, builds, monkeypatch: pytest.MonkeyPatch, deflate: str
) -> None:
    # Members before, between and after the replaced ones, a non-ASCII name, an empty file
    # that gets bytes and one that spans many of zipfile's 16 KiB writes; "by-write" stands
    # for zlib-ng, whose output depends on how the bytes were written.
    if deflate == "by-write":
        deflate_by_write(monkeypatch)
    root = _project(tmp_path / "src")
    data = root / "app" / "data"
    (data / "empty.txt").write_bytes(b"")
    (data / "ünïcode.txt").write_text("one\n")
    (data / "big.txt").write_text(_words(40_000, "seed"))
    (data / "zzz.txt").write_text("last\n")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")

    (data / "empty.txt").write_text("not any more\n")
    (data / "ünïcode.txt").write_text("two, and longer\n")
    (data / "big.txt").write_text(_words(50_000, "other"))
    digest, files = _wheel(root, BlobStore(tmp_path / "cache"), tmp_path / "two")

    assert builds == ["app"]
    cold = project_module.build_wheel(load_project(root), tmp_path / "cold")
    assert digest == hashlib.sha256(cold.read_bytes()).hexdigest()
    assert files["app/data/ünïcode.txt"] == b"two, and longer\n"
    assert wheel_record(tmp_path / "two" / cold.name) == wheel_record(cold)


def _words(count: int, seed: str) -> str:
    """Text that deflates differently at each level, so a wrong level shows."""
    words = [hashlib.sha256(f"{seed}{i}".encode()).hexdigest()[: 1 + i % 9] for i in range(300)]
    picks = (int(hashlib.md5(f"{seed}{i}".encode()).hexdigest(), 16) % 300 for i in range(count))
    return " ".join(words[pick] for pick in picks)


def test_content_change_without_reproducible_builds_with_hatchling(tmp_path: Path, builds) -> None:
    # Such a wheel takes each member's time from its file, which a patch would not know.
    root = _project(tmp_path / "src", "[tool.hatch.build]\nreproducible = false\n")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")

    (root / "app" / "__init__.py").write_text("def main():\n    print('ho')\n")
    _, files = _wheel(root, store, tmp_path / "two")

    assert builds == ["app", "app"]
    assert b"'ho'" in files["app/__init__.py"]


def test_corrupt_last_wheel_is_evicted_and_the_wheel_built(tmp_path: Path, builds) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    digest, _ = _wheel(root, store, tmp_path / "one")
    store.path(f"sha256:{digest}").write_bytes(b"not a wheel")

    (root / "app" / "__init__.py").write_text("def main():\n    print('ho')\n")
    _, files = _wheel(root, BlobStore(tmp_path / "cache"), tmp_path / "two")

    assert builds == ["app", "app"]
    assert not store.path(f"sha256:{digest}").exists()
    assert b"'ho'" in files["app/__init__.py"]


def test_new_file_and_new_script_build_the_wheel_again(tmp_path: Path, builds) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")

    (root / "app" / "data" / "new.txt").write_text("new\n")
    _, with_file = _wheel(root, store, tmp_path / "two")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'app = "app:main"\n', 'app = "app:main"\nother = "app:main"\n'
        )
    )
    _, with_script = _wheel(root, store, tmp_path / "three")

    assert builds == ["app", "app", "app"]
    assert "app/data/new.txt" in with_file
    assert b"other = app:main" in with_script["app-1.0.dist-info/entry_points.txt"]


def test_executable_bit_is_part_of_the_wheels_inputs(tmp_path: Path, builds) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")

    (root / "app" / "data" / "motd.txt").chmod(0o755)
    wheel = build_project_wheel(load_project(root), tmp_path / "two", store).path

    assert builds == ["app", "app"]
    with zipfile.ZipFile(wheel) as archive:
        assert archive.getinfo("app/data/motd.txt").external_attr >> 16 & 0o111


@pytest.mark.parametrize("bit", [0o010, 0o001])
def test_group_or_other_exec_bit_counts_when_the_wheel_keeps_modes(
    tmp_path: Path, builds, bit: int
) -> None:
    # Without `reproducible`, hatchling keeps every mode bit and installer makes a file
    # executable for any x bit, so `chmod g+x` alone changes the image.
    root = _project(tmp_path / "src", "[tool.hatch.build]\nreproducible = false\n")
    motd = root / "app" / "data" / "motd.txt"
    motd.chmod(0o644)
    store = BlobStore(tmp_path / "cache")
    build_project_wheel(load_project(root), tmp_path / "one", store)

    motd.chmod(0o644 | bit)
    wheel = build_project_wheel(load_project(root), tmp_path / "two", store).path

    assert builds == ["app", "app"]
    with zipfile.ZipFile(wheel) as archive:
        assert archive.getinfo("app/data/motd.txt").external_attr >> 16 & bit


def test_project_with_a_build_hook_always_builds(tmp_path: Path, builds) -> None:
    root = _project(
        tmp_path / "src",
        """\
        [tool.hatch.build.targets.wheel.hooks.custom]
        path = "hook.py"
        """,
    )
    (root / "hook.py").write_text(
        textwrap.dedent(
            """\
            import os
            from hatchling.builders.hooks.plugin.interface import BuildHookInterface

            class Hook(BuildHookInterface):
                def initialize(self, version, build_data):
                    path = os.path.join(self.root, "stamp.txt")
                    with open(path, "w") as handle:
                        handle.write(os.environ.get("STAMP", ""))
                    build_data["force_include"][path] = "app/stamp.txt"
            """
        )
    )
    store = BlobStore(tmp_path / "cache")
    os.environ["STAMP"] = "one"
    try:
        _, first = _wheel(root, store, tmp_path / "one")
        os.environ["STAMP"] = "two"
        _, second = _wheel(root, store, tmp_path / "two")
    finally:
        del os.environ["STAMP"]

    assert builds == ["app", "app"]
    assert (first["app/stamp.txt"], second["app/stamp.txt"]) == (b"one", b"two")


def test_corrupt_cached_wheel_is_evicted_and_built_again(tmp_path: Path, builds) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    digest, _ = _wheel(root, store, tmp_path / "one")
    store.path(f"sha256:{digest}").write_bytes(b"not a wheel")

    again, _ = _wheel(root, BlobStore(tmp_path / "cache"), tmp_path / "two")

    assert again == digest
    assert builds == ["app", "app"]


def test_file_changed_during_the_build_is_not_remembered_under_the_old_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "_RACY_SECONDS", -1)
    root = _project(tmp_path / "src")
    motd = root / "app" / "data" / "motd.txt"
    real = project_module.build_wheel

    def change_then_build(project, directory, builder=None):
        motd.write_text("howdy\n")
        return real(project, directory, builder)

    monkeypatch.setattr("hatch_jib.pipeline.steps.build_wheel", change_then_build)
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")
    monkeypatch.setattr("hatch_jib.pipeline.steps.build_wheel", real)

    # Put the old bytes back: the wheel of the new ones must not be taken for them.
    motd.write_text("hello\n")
    os.utime(motd, (OLD, OLD))
    _, files = _wheel(root, BlobStore(tmp_path / "cache"), tmp_path / "two")

    assert files["app/data/motd.txt"] == b"hello\n"


def test_wheel_inputs_match_only_the_wheel_made_of_them(tmp_path: Path) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    inputs = wheel_inputs(wheel_builder(load_project(root)), ContentHashes(store, "test"))
    assert inputs is not None
    wheel = project_module.build_wheel(load_project(root), tmp_path / "one")

    (root / "app" / "data" / "motd.txt").write_text("howdy\n")
    other = project_module.build_wheel(load_project(root), tmp_path / "two")

    assert inputs.matches(wheel_record(wheel))
    assert not inputs.matches(wheel_record(other))
    assert not inputs.matches(None)  # a RECORD that cannot be trusted


def test_new_source_date_epoch_gives_the_wheel_hatchling_builds(
    tmp_path: Path, builds, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every member's zip time comes from it, as in a CI job that sets it per commit.
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    _wheel(root, store, tmp_path / "one")

    (root / "app" / "__init__.py").write_text("def main():\n    print('ho')\n")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    digest, _ = _wheel(root, store, tmp_path / "two")

    cold = project_module.build_wheel(load_project(root), tmp_path / "cold")
    assert digest == hashlib.sha256(cold.read_bytes()).hexdigest()
    assert builds == ["app", "app"]


def test_members_in_a_new_order_give_the_wheel_hatchling_builds(tmp_path: Path, builds) -> None:
    # Swapping where two roots land moves no file into or out of the wheel, only its order.
    root = _project(
        tmp_path / "src",
        """\
        [tool.hatch.build.targets.wheel]
        only-include = ["app", "a", "b"]
        [tool.hatch.build.targets.wheel.sources]
        "a" = "app/x"
        "b" = "app/y"
        """,
    )
    for name in ("a", "b"):
        (root / name).mkdir()
        (root / name / "f.txt").write_text(f"{name}\n")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")

    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"app/x"', '"app/z"'))
    pyproject.write_text(pyproject.read_text().replace('"app/y"', '"app/x"'))
    pyproject.write_text(pyproject.read_text().replace('"app/z"', '"app/y"'))
    digest, files = _wheel(root, store, tmp_path / "two")

    cold = project_module.build_wheel(load_project(root), tmp_path / "cold")
    assert digest == hashlib.sha256(cold.read_bytes()).hexdigest()
    assert files["app/x/f.txt"] == b"b\n"
    assert builds == ["app", "app"]


def test_two_files_for_one_wheel_path_fail_as_hatchling_does(tmp_path: Path, builds) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")

    pyproject = root / "pyproject.toml"
    forced = (
        '[tool.hatch.build.targets.wheel.force-include]\n"app/data/motd.txt" = "app/__init__.py"\n'
    )
    pyproject.write_text(pyproject.read_text() + forced)

    with pytest.raises(BuildError, match="second file is being added"):
        _wheel(root, store, tmp_path / "two")


@pytest.mark.parametrize(
    "damage",
    [
        lambda record: [record],
        lambda record: "a string",
        lambda record: {**record, "digest": "sha256:abc"},
        lambda record: {**record, "digest": 7},
        lambda record: {**record, "filename": "other-6.6-py3-none-any.whl"},
        lambda record: {**record, "filename": "../app-1.0-py3-none-any.whl"},
    ],
    ids=["list", "string", "short-digest", "number-digest", "other-name", "escaping-name"],
)
def test_damaged_wheel_records_are_ignored(tmp_path: Path, builds, damage) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")
    inputs = wheel_inputs(wheel_builder(load_project(root)), ContentHashes(store, "test"))
    assert inputs is not None
    for kind, key in (("wheels", inputs.key()), ("last-wheels", str(root))):
        store.write_record(kind, key, damage(store.read_record(kind, key)))

    (root / "app" / "__init__.py").write_text("def main():\n    print('ho')\n")
    digest, _ = _wheel(root, BlobStore(tmp_path / "cache"), tmp_path / "two")

    cold = project_module.build_wheel(load_project(root), tmp_path / "cold")
    assert digest == hashlib.sha256(cold.read_bytes()).hexdigest()
    assert sorted(path.name for path in (tmp_path / "two").iterdir()) == [cold.name]


def test_damaged_content_hashes_record_is_read_as_none(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "cache")
    source = tmp_path / "file.txt"
    source.write_text("bytes\n")
    info = source.stat()
    stamp = [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
    store.write_record("content-hashes", "test", [1, 2])
    store.write_record("content-hashes", "other", {str(source): 5})
    store.write_record("content-hashes", "short", {str(source): [*stamp, info.st_mode, "5"]})

    for name in ("test", "other", "short"):
        assert ContentHashes(store, name).sha256(source) == hashlib.sha256(b"bytes\n").hexdigest()


def test_patched_wheel_that_does_not_match_its_inputs_is_dropped_for_hatchlings(
    tmp_path: Path, builds, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "src")
    store = BlobStore(tmp_path / "cache")
    _wheel(root, store, tmp_path / "one")
    real = project_module.patch_wheel

    def patch_then_spoil(previous, inputs, target):
        patched = real(previous, inputs, target)
        with zipfile.ZipFile(target, "a") as archive:
            archive.writestr("app/stray.py", "")
        return patched

    monkeypatch.setattr("hatch_jib.pipeline.steps.patch_wheel", patch_then_spoil)
    (root / "app" / "__init__.py").write_text("def main():\n    print('ho')\n")
    digest, files = _wheel(root, store, tmp_path / "two")

    assert builds == ["app", "app"]
    assert "app/stray.py" not in files
    cold = project_module.build_wheel(load_project(root), tmp_path / "cold")
    assert digest == hashlib.sha256(cold.read_bytes()).hexdigest()
