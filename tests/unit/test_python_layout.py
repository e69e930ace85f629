"""The split of installed files into dependencies, resources and code layers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hatch_jib.config import ExtraDirectory
from hatch_jib.errors import BuildError
from hatch_jib.image.layer import LayerEntry, LayerSpec
from hatch_jib.python.install import InstalledDist, create_venv, install_wheel
from hatch_jib.python.layout import extra_directory_layers, split_layers
from hatch_jib.python.target import TargetProfile
from tests.unit.data.python.wheels import build_wheel

TARGET = TargetProfile("3.11", "/usr/bin/python3.11", "amd64", libc_version="2.36")
SITE = "app/.venv/lib/python3.11/site-packages"


def paths(spec: LayerSpec) -> list[str]:
    return [entry.path for entry in spec.entries]


def install_project_and_dependency(tmp_path: Path, root: Path) -> list[InstalledDist]:
    dependency = build_wheel(tmp_path, "helper", "1.0", {"helper/__init__.py": "H = 1\n"})
    project = build_wheel(
        tmp_path,
        "myapp",
        "0.1",
        {
            "myapp/__init__.py": "",
            "myapp/cli.py": "def main():\n    pass\n",
            "myapp/templates/index.html": "<html></html>\n",
            "myapp/py.typed": "",
        },
        console_scripts={"myapp": "myapp.cli:main"},
    )
    return [
        install_wheel(wheel, filename=wheel.name, target=TARGET, root=root)
        for wheel in (dependency, project)
    ]


def test_layers_split_dependencies_resources_and_code(tmp_path: Path) -> None:
    root = tmp_path / "root"
    venv = create_venv(root, TARGET)
    helper, myapp = install_project_and_dependency(tmp_path, root)

    specs = split_layers(root, dependencies=[helper], project=myapp, venv_entries=venv)

    assert [spec.name for spec in specs] == ["dependencies", "resources", "code"]
    dependencies, resources, code = specs
    assert f"{SITE}/helper/__init__.py" in paths(dependencies)
    assert "app/.venv/bin/python" in paths(dependencies)
    assert "app/.venv/pyvenv.cfg" in paths(dependencies)
    assert paths(resources) == [f"{SITE}/myapp/py.typed", f"{SITE}/myapp/templates/index.html"]
    assert "app/.venv/bin/myapp" in paths(code)
    assert f"{SITE}/myapp/cli.py" in paths(code)
    assert f"{SITE}/myapp-0.1.dist-info/RECORD" in paths(code)
    assert not any("helper" in path for path in paths(code) + paths(resources))


def test_entries_point_at_staged_files_and_keep_script_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    helper, myapp = install_project_and_dependency(tmp_path, root)

    specs = split_layers(root, dependencies=[helper], project=myapp, venv_entries=[])

    code = {entry.path: entry for entry in specs[-1].entries}
    script = code["app/.venv/bin/myapp"]
    assert (script.kind, script.mode, Path(script.source or "")) == (
        "file",
        0o755,
        root / "app/.venv/bin/myapp",
    )
    assert code[f"{SITE}/myapp/cli.py"].mode == 0o644


def test_empty_layers_are_skipped_and_symlinks_stay_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / SITE / "pkg").mkdir(parents=True)
    (root / SITE / "pkg/__init__.py").write_text("")
    os.symlink("__init__.py", root / SITE / "pkg/alias.py")
    project = InstalledDist("pkg", "1", (f"{SITE}/pkg/__init__.py", f"{SITE}/pkg/alias.py"))

    specs = split_layers(root, dependencies=[], project=project, venv_entries=[])

    assert [spec.name for spec in specs] == ["code"]
    assert LayerEntry.symlink(f"{SITE}/pkg/alias.py", "__init__.py") in specs[0].entries


def staged_dist(root: Path, name: str, size: int) -> InstalledDist:
    path = f"{SITE}/{name}/__init__.py"
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_bytes(b"#" * size)
    return InstalledDist(name, "1.0", (path,))


def test_dependencies_over_the_threshold_get_their_own_layers_by_name(tmp_path: Path) -> None:
    project = staged_dist(tmp_path, "app", 10)
    small, numpy, scipy = (
        staged_dist(tmp_path, n, s) for n, s in [("six", 99), ("NumPy", 100), ("scipy", 500)]
    )
    local = staged_dist(tmp_path, "helper", 10)

    specs = split_layers(
        tmp_path,
        dependencies=[numpy, scipy, small],
        local_dependencies=[local],
        project=project,
        venv_entries=[],
        own_layer_size=100,
    )

    assert [spec.name for spec in specs] == [
        "dependencies",
        "dependency-numpy",
        "dependency-scipy",
        "local-dependencies",
        "code",
    ]
    assert paths(specs[0]) == [f"{SITE}/six/__init__.py"]
    assert paths(specs[1]) == [f"{SITE}/NumPy/__init__.py"]
    assert paths(specs[3]) == [f"{SITE}/helper/__init__.py"]


def test_only_the_biggest_dependencies_get_layers_when_the_layer_budget_is_short(
    tmp_path: Path,
) -> None:
    project = staged_dist(tmp_path, "app", 10)
    dists = [staged_dist(tmp_path, f"big{size}", size) for size in (200, 300, 400)]

    specs = split_layers(
        tmp_path,
        dependencies=dists,
        project=project,
        venv_entries=[],
        own_layer_size=100,
        spare_layers=6,
    )

    assert [spec.name for spec in specs] == [
        "dependencies",
        "dependency-big300",
        "dependency-big400",
        "code",
    ]
    assert paths(specs[0]) == [f"{SITE}/big200/__init__.py"]


def test_threshold_off_keeps_every_dependency_in_one_layer(tmp_path: Path) -> None:
    project = staged_dist(tmp_path, "app", 10)
    big = staged_dist(tmp_path, "numpy", 1 << 20)

    specs = split_layers(
        tmp_path, dependencies=[big], project=project, venv_entries=[], own_layer_size=None
    )

    assert [spec.name for spec in specs] == ["dependencies", "code"]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    source = tmp_path / "config"
    (source / "conf.d").mkdir(parents=True)
    (source / "build").mkdir()
    (source / "app.conf").write_text("a\n")
    (source / "app.conf.bak").write_text("old\n")
    (source / "secret.key").write_text("k\n")
    (source / "conf.d/x.conf").write_text("x\n")
    (source / "build/out.conf").write_text("o\n")
    os.symlink("app.conf", source / "current.conf")
    return source


def test_extra_directory_honours_excludes_permissions_and_keeps_symlinks(
    config_dir: Path,
) -> None:
    directory = ExtraDirectory(
        config_dir,
        "/etc/app",
        excludes=("**/*.bak", "build"),
        permissions={"/etc/app/*.key": "600", "/etc/app/conf.d": "700"},
    )

    [spec] = extra_directory_layers([directory])

    entries = {entry.path: entry for entry in spec.entries}
    assert spec.name == "extra-directory-0"
    assert sorted(entries) == [
        "etc/app",
        "etc/app/app.conf",
        "etc/app/conf.d",
        "etc/app/conf.d/x.conf",
        "etc/app/current.conf",
        "etc/app/secret.key",
    ]
    assert entries["etc/app/secret.key"].mode == 0o600
    assert entries["etc/app/conf.d"].mode == 0o700
    assert entries["etc/app/app.conf"].mode == 0o644
    assert entries["etc/app/current.conf"] == LayerEntry.symlink("etc/app/current.conf", "app.conf")


def test_extra_directory_includes_select_files_and_bring_their_directories(
    config_dir: Path,
) -> None:
    (config_dir / "run.sh").write_text("#!/bin/sh\n")
    (config_dir / "run.sh").chmod(0o755)
    directory = ExtraDirectory(config_dir, "/opt", includes=("**/*.conf", "*.sh"))

    [spec] = extra_directory_layers([directory])

    assert paths(spec) == [
        "opt",
        "opt/app.conf",
        "opt/build/out.conf",
        "opt/conf.d/x.conf",
        "opt/current.conf",
        "opt/run.sh",
    ]
    # Modes are fixed, not copied from the checkout, unless permissions say otherwise.
    assert {entry.path: entry.mode for entry in spec.entries}["opt/run.sh"] == 0o644
    assert stat.S_IMODE((config_dir / "run.sh").stat().st_mode) == 0o755


def test_fifo_in_an_extra_directory_is_named_not_read_or_left_out(config_dir: Path) -> None:
    os.mkfifo(config_dir / "conf.d" / "events")
    directory = ExtraDirectory(config_dir, "/etc/app")

    with pytest.raises(BuildError) as caught:
        extra_directory_layers([directory])

    fifo = config_dir / "conf.d" / "events"
    assert caught.value.message == (
        f"{fifo}, under `tool.jib.extra-directories[0].from`, is a FIFO, which a layer cannot hold"
    )
    assert caught.value.hint == (
        'leave it out with `tool.jib.extra-directories[0].excludes = ["conf.d/events"]`'
    )


def test_fifo_that_includes_leave_out_is_no_error(config_dir: Path) -> None:
    os.mkfifo(config_dir / "conf.d" / "events")
    directory = ExtraDirectory(config_dir, "/etc/app", includes=("**/*.conf",))

    [spec] = extra_directory_layers([directory])

    assert "etc/app/conf.d/events" not in paths(spec)
    assert "etc/app/conf.d/x.conf" in paths(spec)


def test_excluded_fifo_in_an_extra_directory_is_no_error(config_dir: Path) -> None:
    os.mkfifo(config_dir / "events")
    directory = ExtraDirectory(config_dir, "/etc/app", excludes=("events",))

    [spec] = extra_directory_layers([directory])

    assert "etc/app/events" not in paths(spec)


def test_path_that_cannot_be_read_stops_the_build_rather_than_going_missing(
    config_dir: Path,
) -> None:
    # A path longer than PATH_MAX cannot be opened by name: a real failure even for root.
    fd = os.open(config_dir, os.O_RDONLY)
    for _ in range(20):
        os.mkdir("d" * 250, dir_fd=fd)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    directory = ExtraDirectory(config_dir, "/etc/app")

    with pytest.raises(BuildError, match=r"cannot read .*tool\.jib\.extra-directories\[0\]\.from"):
        extra_directory_layers([directory])
