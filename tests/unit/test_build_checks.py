"""What is checked before any network traffic: entry points, lock files, writable directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatch_jib.build import build_project, check_project, load_build_config
from hatch_jib.errors import ConfigError

ENV = {"JIB_FROM_IMAGE": "127.0.0.1:9/base:1"}  # nothing listens there: no traffic may start


def write_project(root: Path, *, scripts: str = 'app = "app:main"', jib: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text("def main():\n    print('hi')\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        f'[project]\nname = "app"\nversion = "1.0"\n[project.scripts]\n{scripts}\n'
        f"[tool.jib]\n{jib}\n"
    )
    return root


def test_entry_point_that_does_not_parse_is_a_config_error(tmp_path):
    project, config = load_build_config(
        write_project(tmp_path / "app", scripts='a = "no such thing!!"'), environ=ENV
    )

    with pytest.raises(ConfigError) as caught:
        check_project(project, config)

    assert "[project.scripts] a" in str(caught.value)


def test_missing_lock_file_is_a_config_error_before_any_pull(tmp_path):
    project, config = load_build_config(
        write_project(tmp_path / "app", jib='python.lock = "nonexistent.lock"'), environ=ENV
    )

    with pytest.raises(ConfigError, match=r"nonexistent\.lock"):
        check_project(project, config)


def test_output_directory_that_is_a_file_fails_before_the_build(tmp_path):
    root = write_project(tmp_path / "app")
    (root / "dist").write_text("not a directory")

    with pytest.raises(ConfigError) as caught:
        build_project(root, directory=root / "dist", environ={**ENV, "JIB_OFFLINE": "1"})

    assert "output directory" in str(caught.value) and str(root / "dist") in str(caught.value)


def test_cache_dir_that_is_a_file_fails_before_the_build(tmp_path):
    root = write_project(tmp_path / "app")
    cache = tmp_path / "cache-file"
    cache.write_text("not a directory")

    with pytest.raises(ConfigError) as caught:
        build_project(root, directory=root / "dist", environ={**ENV, "JIB_CACHE_DIR": str(cache)})

    assert "Cannot write the cache directory" in str(caught.value)
    assert "JIB_CACHE_DIR" in str(caught.value)
