"""One entry for every front end: load the project and config, run the build, report."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hatch_jib.cache import cache_in_use, default_cache_dir, explained_file_system_errors
from hatch_jib.config import JibConfig, load_config
from hatch_jib.console import live_progress, setup_console
from hatch_jib.errors import ConfigError
from hatch_jib.outputs.files import remove_result_files
from hatch_jib.pipeline import BuildPlan, BuildResult, run_build
from hatch_jib.project import Project, load_project
from hatch_jib.python.lock import find_lock

__all__ = ["build_project", "check_project", "default_outputs", "load_build_config"]

log = logging.getLogger("hatch_jib")


def default_outputs(to_image: object | None) -> tuple[str, ...]:
    """`registry` when there is somewhere to push, else a tar."""
    return ("registry",) if to_image else ("tar",)


def load_build_config(
    root: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Project, JibConfig]:
    """Read `root`'s project and its effective `[tool.jib]`; nothing touches the network."""
    environ = os.environ if environ is None else environ
    project = load_project(root)
    config = load_config(
        project.jib_table,
        project_root=root,
        version=project.version,
        name=_tag_name(project.name),
        environ=environ,
        overrides=overrides,
    )
    return project, config


def check_project(project: Project, config: JibConfig) -> None:
    """Fail on what the project and config disagree about, before any network traffic."""
    container = config.container
    scripts = sorted(project.scripts)

    # The entrypoint: a named script must exist, and several need a choice.
    if container.script and container.script not in project.scripts:
        raise ConfigError(
            f"`tool.jib.container.script` = {container.script!r} is not in [project.scripts]",
            hint=f"choose one of: {', '.join(scripts) or 'none (the project has no scripts)'}",
        )
    if not container.entrypoint and not container.script and len(scripts) > 1:
        raise ConfigError(
            f"The project has several scripts ({', '.join(scripts)}) and none is chosen",
            hint="set `tool.jib.container.script` (or JIB_CONTAINER_SCRIPT) to the one to run",
        )

    # Entry points must parse, or the installer fails on them mid-build.
    for name, target in project.scripts.items():
        if not _ENTRY_POINT.fullmatch(target):
            raise ConfigError(
                f"[project.scripts] {name} = {target!r} is not an entry point",
                hint='write it as "package.module:function", optionally with " [extra]"',
            )

    # Extras and the lock file must exist; these raise the ConfigError that names them.
    project.requirements(config.python.extras)
    find_lock(project.root, config.python.lock)


_ENTRY_POINT = re.compile(r"[\w.]+(?:\s*:\s*[\w.]+)?(?:\s*\[[\w\s,.-]*\])?\s*")


def check_writable(directory: Path, what: str, key: str) -> None:
    """Fail now if `directory` could not be created or written, without creating it."""
    # The first existing path up the tree decides: it must be a directory we may write in.
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    reason = "is not a directory" if not existing.is_dir() else "is not writable"
    raise ConfigError(
        f"Cannot write the {what} {directory}: {existing} {reason}",
        hint=f"make it writable, or choose another one with {key}",
    )


def build_project(
    root: Path,
    *,
    directory: Path,
    outputs: tuple[str, ...] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    debug: bool = False,
    previous: BuildResult | None = None,
) -> BuildResult:
    """Build `root`'s image into `directory`; raises JibError subclasses on user errors.

    `previous` is an earlier output's result from this same build, whose images are reused.
    """
    try:
        return _build(
            root,
            directory=directory,
            outputs=outputs,
            overrides=overrides,
            environ=environ,
            debug=debug,
            previous=previous,
        )
    except BaseException:
        # A CI step that reads jib-image.digest after a failed build must not find an older
        # build's. An earlier output of this same process (`previous`) succeeded: its stay.
        if previous is None:
            with contextlib.suppress(OSError):
                remove_result_files(directory)
        raise


def _build(
    root: Path,
    *,
    directory: Path,
    outputs: tuple[str, ...] | None,
    overrides: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
    debug: bool,
    previous: BuildResult | None,
) -> BuildResult:
    project, config = load_build_config(root, overrides=overrides, environ=environ)
    check_project(project, config)
    setup_console(config.console, debug=debug)
    for warning in config.warnings:
        log.warning("%s", warning)
    plan = BuildPlan(
        project=project,
        config=config,
        outputs=outputs or default_outputs(config.to.image),
        directory=directory,
    )

    # Where results and blobs go must be writable before anything is pulled or pushed.
    cache_dir = config.cache_dir or default_cache_dir()
    check_writable(directory, "output directory", "--output-dir (or hatch's -o)")
    check_writable(cache_dir, "cache directory", "`tool.jib.cache-dir` or JIB_CACHE_DIR")

    # A shared hold on the cache keeps `hatch-jib cache prune` from removing blobs mid-build.
    with (
        explained_file_system_errors(cache_dir=cache_dir, output_dir=directory),
        cache_in_use(cache_dir),
        live_progress(config.console),
    ):
        return run_build(plan, previous)


def _tag_name(name: str) -> str:
    # The normalized project name (PEP 503), which is always a valid tag.
    return re.sub(r"[-_.]+", "-", name).lower()
