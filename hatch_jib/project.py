"""The project being containerized: its metadata, scripts and wheel, read through hatchling."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hatch_jib.errors import BuildError, ConfigError

__all__ = ["Project", "build_wheel", "load_project"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Project:
    """What the build needs to know about the project, read once from pyproject.toml."""

    root: Path
    name: str
    version: str
    dependencies: tuple[str, ...]
    optional_dependencies: dict[str, tuple[str, ...]]
    scripts: dict[str, str]
    jib_table: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    license: str = ""
    urls: dict[str, str] = field(default_factory=dict)

    def requirements(self, extras: tuple[str, ...] = ()) -> list[str]:
        """Core dependencies plus those of the chosen extras."""
        requirements = list(self.dependencies)
        for extra in extras:
            if extra not in self.optional_dependencies:
                known = ", ".join(sorted(self.optional_dependencies)) or "none"
                raise ConfigError(
                    f"`tool.jib.python.extras` names {extra!r}, which the project does not define",
                    hint=f"extras in [project.optional-dependencies]: {known}",
                )
            requirements.extend(self.optional_dependencies[extra])
        return requirements


def load_project(root: Path) -> Project:
    """Read `root/pyproject.toml` with hatchling's metadata model."""
    from hatchling.metadata.core import ProjectMetadata
    from hatchling.plugin.manager import PluginManager

    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise ConfigError(
            f"No pyproject.toml in {root}",
            hint="run from the project directory or pass its path",
        )
    try:
        metadata = ProjectMetadata(str(root), PluginManager())
        core = metadata.core
        project = Project(
            root=root,
            name=core.name,
            version=metadata.version,
            dependencies=tuple(core.dependencies),
            optional_dependencies={k: tuple(v) for k, v in core.optional_dependencies.items()},
            scripts=dict(core.scripts),
            jib_table=dict(metadata.config.get("tool", {}).get("jib", {}) or {}),
            description=core.description,
            license=core.license_expression or core.license,
            urls=dict(core.urls),
        )
    except (ValueError, TypeError, OSError) as error:
        raise ConfigError(f"{pyproject}: {error}", hint="fix the [project] table") from error
    return project


def build_wheel(project: Project, directory: Path) -> Path:
    """Build the project's wheel with hatchling into `directory`."""
    from hatchling.builders.wheel import WheelBuilder

    try:
        builder = WheelBuilder(str(project.root))
        artifacts = list(builder.build(directory=str(directory), versions=["standard"]))
    except Exception as error:  # hatchling raises bare exceptions for project mistakes
        raise BuildError(
            f"Building the wheel of {project.name} failed: {error}",
            hint="check that `hatch build -t wheel` works for this project",
        ) from error
    wheel = Path(artifacts[0])
    log.debug("built project wheel %s", wheel.name)
    return wheel


def main_module(wheel: Path) -> str | None:
    """The top-level package in `wheel` that has a `__main__` module, if exactly one has."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/__main__.py")]
    packages = sorted(name.split("/")[0] for name in names)
    return packages[0] if len(packages) == 1 else None
