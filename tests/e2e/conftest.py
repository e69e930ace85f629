"""End-to-end helpers: fresh copies of the fixture projects, built with this checkout."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

__all__ = ["FIXTURE_PROJECTS", "REPO_ROOT", "copy_project"]

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PROJECTS = REPO_ROOT / "fixtures" / "projects"
_PUBLISHED_REQUIRES = 'requires = ["hatchling", "hatch-jib"]'


def copy_project(name: str, tmp_path: Path) -> Path:
    """Copy fixture project `name` under `tmp_path` and make it build with this checkout.

    The copy's ``[build-system] requires`` pins hatch-jib to the repository root by a
    ``file://`` URL. Hatch reuses a project's build environment and does not reinstall a
    ``file://`` requirement whose version is unchanged, so every copy gets a path never used
    before: its build environment is new and holds the current code.
    """
    source = FIXTURE_PROJECTS / name
    if not (source / "pyproject.toml").is_file():
        known = sorted(path.name for path in FIXTURE_PROJECTS.iterdir())
        raise ValueError(f"no fixture project {name!r} in {FIXTURE_PROJECTS}; known: {known}")
    project = tmp_path / f"{name}-{uuid.uuid4().hex[:12]}"
    shutil.copytree(
        source, project, symlinks=True, ignore=shutil.ignore_patterns("dist", "__pycache__")
    )

    # Point the build requirement at this checkout instead of the published package.
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    if text.count(_PUBLISHED_REQUIRES) != 1:
        raise ValueError(f"{pyproject}: expected exactly one line `{_PUBLISHED_REQUIRES}`")
    pinned = f'requires = ["hatchling", "hatch-jib @ {REPO_ROOT.as_uri()}"]'
    pyproject.write_text(text.replace(_PUBLISHED_REQUIRES, pinned))
    return project
