"""The split of installed files into dependencies, resources and code layers."""

from __future__ import annotations

import os
from pathlib import Path

from hatch_jib.image.layer import LayerEntry, LayerSpec
from hatch_jib.python.install import InstalledDist, create_venv, install_wheel
from hatch_jib.python.layout import split_layers
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
    assert (script.kind, script.mode, script.source) == (
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
