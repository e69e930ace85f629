"""`[tool.jib.python]` and `extra-directories` keys, and the entrypoint chosen from scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatch_jib.config import load_config
from hatch_jib.errors import ConfigError
from hatch_jib.pipeline.steps import choose_entrypoint
from hatch_jib.project import Project

BASE = {"from": {"image": "python:3.12-slim"}}
VENV = "/app/.venv"


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1048576, 1 << 20),
        ("10MB", 10 << 20),
        ("512 KiB", 512 << 10),
        ("2G", 2 << 30),
        ("off", None),
    ],
)
def test_layer_threshold_takes_bytes_units_or_off(value: int | str, size: int | None) -> None:
    table = {**BASE, "python": {"layer-threshold": value}}

    config = load_config(table, project_root=Path("/p"), environ={})

    assert config.python.layer_threshold == size


def test_layer_threshold_defaults_to_ten_mebibytes_and_reads_the_environment() -> None:
    environ = {"JIB_PYTHON_LAYER_THRESHOLD": "1MB"}

    assert load_config(BASE, project_root=Path("/p"), environ={}).python.layer_threshold == (
        10 << 20
    )
    assert load_config(BASE, project_root=Path("/p"), environ=environ).python.layer_threshold == (
        1 << 20
    )


def test_bad_layer_threshold_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"`tool.jib.python.layer-threshold` = 'big'"):
        load_config({**BASE, "python": {"layer-threshold": "big"}}, project_root=Path("/p"))


def test_extra_directory_permission_must_be_an_octal_string(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    table = {
        **BASE,
        "extra-directories": [{"from": "conf", "into": "/etc/x", "permissions": {"/etc/x": "rwx"}}],
    }

    with pytest.raises(ConfigError) as raised:
        load_config(table, project_root=tmp_path, environ={})

    assert raised.value.message == (
        "`tool.jib.extra-directories[0].permissions` gives '/etc/x' the mode 'rwx'"
    )


def project(scripts: dict[str, str]) -> Project:
    return Project(Path("/p"), "app", "1.0", (), {}, scripts)


def test_entry_point_with_an_extras_marker_is_the_entrypoint() -> None:
    config = load_config(BASE, project_root=Path("/p"), environ={})

    def no_main_lookup() -> str | None:
        raise AssertionError("a project with one script needs no look into its wheel")

    scripts = project({"app": "app.cli:main [fancy]"})
    entrypoint = choose_entrypoint(scripts, config, VENV, no_main_lookup)

    assert entrypoint == ("/app/.venv/bin/app",)


def test_package_with_main_runs_with_python_dash_m() -> None:
    config = load_config(BASE, project_root=Path("/p"), environ={})

    assert choose_entrypoint(project({}), config, VENV, lambda: "app") == (
        "/app/.venv/bin/python",
        "-m",
        "app",
    )


def test_several_scripts_and_none_chosen_says_to_set_container_script() -> None:
    config = load_config(BASE, project_root=Path("/p"), environ={})

    with pytest.raises(ConfigError) as raised:
        choose_entrypoint(project({"a": "m:a", "b": "m:b"}), config, VENV, lambda: "app")

    assert raised.value.hint == "set `tool.jib.container.script` to the one the image should run"
