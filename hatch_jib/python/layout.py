"""The split of installed files into the image's named layers, from rarely to often changed."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from hatch_jib.image.layer import LayerEntry, LayerSpec
from hatch_jib.python.install import InstalledDist

__all__ = ["CODE_SUFFIXES", "split_layers"]

# Files that change whenever the code does; everything else the project ships is a resource.
CODE_SUFFIXES = (".py", ".pyi", ".pyc", ".pth")


def split_layers(
    root: Path,
    *,
    dependencies: Sequence[InstalledDist],
    project: InstalledDist,
    venv_entries: Sequence[LayerEntry],
) -> list[LayerSpec]:
    """The `dependencies`, `resources` and `code` layers, in that order, each skipped if empty.

    Paths in the dists are relative to the image root, and their bytes are under `root`.
    """
    # Third-party wheels change least often, so they sit lowest, with the venv skeleton.
    dependency_paths = [path for dist in dependencies for path in dist.files]
    dependency_entries = [*venv_entries, *_entries(root, dependency_paths)]

    # The project's own files: code (and what describes it) on top, resources below.
    code_paths = [path for path in project.files if _is_code(path)]
    resource_paths = [path for path in project.files if not _is_code(path)]

    specs = [
        LayerSpec("dependencies", _sorted(dependency_entries)),
        LayerSpec("resources", _sorted(_entries(root, resource_paths))),
        LayerSpec("code", _sorted(_entries(root, code_paths))),
    ]
    return [spec for spec in specs if spec.entries]


def _is_code(path: str) -> bool:
    parts = path.split("/")
    if any(part.endswith(".dist-info") for part in parts[:-1]):
        return True
    # Outside site-packages, a wheel installs scripts (bin/), data and headers.
    if "site-packages" not in parts[:-1]:
        return len(parts) >= 2 and parts[-2] == "bin"
    return path.endswith(CODE_SUFFIXES)


def _entries(root: Path, paths: Iterable[str]) -> list[LayerEntry]:
    entries = []
    for path in paths:
        source = root / path
        # A symlink in the staging tree stays a symlink in the image.
        if source.is_symlink():
            entries.append(LayerEntry.symlink(path, os.readlink(source)))
        elif source.is_dir():
            entries.append(LayerEntry.directory(path))
        else:
            entries.append(LayerEntry.file(path, source))
    return entries


def _sorted(entries: Iterable[LayerEntry]) -> tuple[LayerEntry, ...]:
    return tuple(sorted(entries, key=lambda entry: entry.path))
