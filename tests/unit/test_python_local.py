"""Local dependencies (a path, a git repository) are built into wheels kept by content."""

from __future__ import annotations

import subprocess
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hatch_jib.errors import BuildError
from hatch_jib.python import local as local_module
from hatch_jib.python.local import build_local_wheels


def make_package(root: Path, name: str = "helper", version: str = "1.0") -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("VALUE = 1\n")
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            [project]
            name = "{name}"
            version = "{version}"
            """
        )
    )
    return root


def test_path_dependency_becomes_a_wheel_requirement_stable_across_builds(
    tmp_path: Path,
) -> None:
    source = make_package(tmp_path / "src")
    spec = f"helper @ {source.as_uri()} ; python_version >= '3.8'"

    [(first, wheel)] = build_local_wheels([spec], cache_root=tmp_path / "cache")
    [(second, _)] = build_local_wheels([spec], cache_root=tmp_path / "cache")

    assert wheel.name == "helper-1.0-py2.py3-none-any.whl"
    assert wheel.parent.parent == tmp_path / "cache/local-wheels"
    assert first == f"helper @ {wheel.as_uri()} ; python_version >= '3.8'"
    assert second == first


def test_git_dependency_is_cloned_at_its_revision_and_built(tmp_path: Path) -> None:
    repo = make_package(tmp_path / "repo", version="2.0")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "v2"], check=True)
    subprocess.run([*git, "tag", "v2"], check=True)
    (repo / "pyproject.toml").write_text(
        (repo / "pyproject.toml").read_text().replace("2.0", "3.0")
    )
    subprocess.run([*git, "commit", "-qam", "v3"], check=True)

    [(spec, wheel)] = build_local_wheels(
        [f"helper @ git+{repo.as_uri()}@v2"], cache_root=tmp_path / "cache"
    )

    assert wheel.name == "helper-2.0-py2.py3-none-any.whl"
    assert spec == f"helper @ {wheel.as_uri()}"


def test_missing_path_dependency_is_a_build_error_naming_it(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere").as_uri()

    with pytest.raises(BuildError, match=f"local dependency {missing} does not exist"):
        build_local_wheels([f"helper @ {missing}"], cache_root=tmp_path / "cache")


def test_two_builds_keeping_the_same_wheel_at_once_never_expose_a_partial_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(bytes(range(256)) * 64)
    first_half_written, second_opened, first_kept = (threading.Event() for _ in range(3))
    arrivals = iter(["first", "second"])

    def interleaved_copy(source: Path, destination: str) -> None:
        # The second copy opens its file between the two halves of the first one's.
        data = Path(source).read_bytes()
        if next(arrivals) == "first":
            with open(destination, "wb") as handle:
                handle.write(data[: len(data) // 2])
                first_half_written.set()
                second_opened.wait(10)
                handle.write(data[len(data) // 2 :])
            return
        first_half_written.wait(10)
        with open(destination, "wb") as handle:
            second_opened.set()
            first_kept.wait(10)
            handle.write(data)

    monkeypatch.setattr(local_module.shutil, "copyfile", interleaved_copy)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(local_module._keep, wheel, tmp_path / "kept")
        second = pool.submit(local_module._keep, wheel, tmp_path / "kept")
        kept = first.result(timeout=20)
        seen_right_after = kept.read_bytes()
        first_kept.set()
        second.result(timeout=20)

    assert seen_right_after == wheel.read_bytes()
    assert kept.read_bytes() == wheel.read_bytes()


def test_platforms_building_a_local_dependency_at_once_take_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "dep"
    source.mkdir()
    inside, most_inside = [0], [0]
    guard = threading.Lock()

    def counting_build(source: Path, out: Path, *, spec: str, offline: bool) -> Path:
        with guard:
            inside[0] += 1
            most_inside[0] = max(most_inside[0], inside[0])
        time.sleep(0.3)  # long enough for the other thread to arrive, if it may
        out.mkdir(parents=True, exist_ok=True)
        wheel = out / "dep-1.0-py3-none-any.whl"
        wheel.write_bytes(b"wheel bytes")
        with guard:
            inside[0] -= 1
        return wheel

    monkeypatch.setattr(local_module, "_uv_build", counting_build)
    start = threading.Barrier(2)

    def build() -> list[tuple[str, Path]]:
        start.wait()
        return build_local_wheels([str(source)], cache_root=tmp_path / "cache")

    with ThreadPoolExecutor(2) as pool:
        results = [future.result(timeout=20) for future in [pool.submit(build) for _ in "ab"]]

    assert most_inside[0] == 1
    assert results[0] == results[1]
