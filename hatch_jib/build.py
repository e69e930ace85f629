"""One entry for every front end: load the project and config, run the build, report."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hatch_jib.config import load_config
from hatch_jib.console import setup_console
from hatch_jib.pipeline import BuildPlan, BuildResult, run_build
from hatch_jib.project import load_project

__all__ = ["build_project", "default_outputs"]


def default_outputs(to_image: object | None) -> tuple[str, ...]:
    """`registry` when there is somewhere to push, else a tar."""
    return ("registry",) if to_image else ("tar",)


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
    environ = os.environ if environ is None else environ
    project = load_project(root)
    config = load_config(
        project.jib_table,
        project_root=root,
        version=project.version,
        environ=environ,
        overrides=overrides,
    )
    setup_console(config.console, debug=debug)
    plan = BuildPlan(
        project=project,
        config=config,
        outputs=outputs or default_outputs(config.to.image),
        directory=directory,
    )
    return run_build(plan, previous)
