"""The split of installed files into the image's named layers, from rarely to often changed."""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from hatch_jib.cache import file_type_name
from hatch_jib.config import ExtraDirectory
from hatch_jib.errors import BuildError
from hatch_jib.image.layer import LayerEntry, LayerSpec
from hatch_jib.python.install import InstalledDist

__all__ = [
    "CODE_SUFFIXES",
    "DEFAULT_OWN_LAYER_SIZE",
    "MAX_LAYERS",
    "extra_directory_layers",
    "is_code",
    "split_layers",
]

log = logging.getLogger(__name__)

# Files that change whenever the code does; everything else the project ships is a resource.
CODE_SUFFIXES = (".py", ".pyi", ".pyc", ".pth")
# An installed dependency at least this big gets its own layer (10 MiB: numpy, pandas, torch).
DEFAULT_OWN_LAYER_SIZE = 10 << 20
# Docker and containerd refuse images with too many layers; stay well clear of their limits.
MAX_LAYERS = 99


def split_layers(
    root: Path,
    *,
    dependencies: Sequence[InstalledDist],
    project: InstalledDist,
    venv_entries: Sequence[LayerEntry],
    local_dependencies: Sequence[InstalledDist] = (),
    own_layer_size: int | None = DEFAULT_OWN_LAYER_SIZE,
    spare_layers: int = MAX_LAYERS,
) -> list[LayerSpec]:
    """The `dependencies`, `dependency-<name>`..., `local-dependencies`, `resources` and `code`
    layers, in that order, each skipped if empty.

    Paths in the dists are relative to the image root, and their bytes are under `root`.
    At most `spare_layers` layers are returned: big dependencies that do not fit stay in
    `dependencies`.
    """
    # Big wheels get a layer each, so bumping one re-pushes only that one.
    fixed = 4  # dependencies, local-dependencies, resources, code
    big = _big_dependencies(root, dependencies, own_layer_size, spare_layers - fixed)
    small = [dist for dist in dependencies if dist.name not in big]

    # Third-party wheels change least often, so they sit lowest, with the venv skeleton.
    dependency_entries = [*venv_entries, *_entries(root, _paths(small))]
    own = [
        LayerSpec(f"dependency-{canonicalize_name(name)}", _sorted(_entries(root, big[name].files)))
        for name in sorted(big, key=canonicalize_name)
    ]

    # The project's own files: code (and what describes it) on top, resources below. Files
    # the install held in memory go in as they are, with the mode they would have on disk.
    executable = {path: flag for path, _, _, flag in project.unwritten}
    project_entries = _entries(root, project.files) + [
        LayerEntry.content(path, data, mode=0o755 if executable[path] else 0o644)
        for path, data in project.kept
    ]
    code = [entry for entry in project_entries if is_code(entry.path)]
    resources = [entry for entry in project_entries if not is_code(entry.path)]

    specs = [
        LayerSpec("dependencies", _sorted(dependency_entries)),
        *own,
        LayerSpec("local-dependencies", _sorted(_entries(root, _paths(local_dependencies)))),
        LayerSpec("resources", _sorted(resources)),
        LayerSpec("code", _sorted(code)),
    ]
    return [spec for spec in specs if spec.entries]


def _big_dependencies(
    root: Path, dists: Sequence[InstalledDist], threshold: int | None, budget: int
) -> dict[str, InstalledDist]:
    if threshold is None or budget <= 0:
        return {}
    sizes = {dist.name: _installed_size(root, dist) for dist in dists}
    big = sorted((d for d in dists if sizes[d.name] >= threshold), key=lambda d: -sizes[d.name])
    if len(big) > budget:
        log.warning(
            "%d dependencies are over the own-layer size, but only %d more layers fit under "
            "%d: the smallest of them share the dependencies layer",
            len(big),
            budget,
            MAX_LAYERS,
        )
    return {dist.name: dist for dist in big[:budget]}


def _installed_size(root: Path, dist: InstalledDist) -> int:
    return sum((root / path).lstat().st_size for path in dist.files)


def _paths(dists: Iterable[InstalledDist]) -> list[str]:
    return [path for dist in dists for path in dist.files]


def is_code(path: str) -> bool:
    """Whether an installed project file goes in the `code` layer rather than `resources`."""
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
        # One lstat per path, and a str rather than a Path for the source: a tree of many
        # small files spends its time in such per-path costs.
        source = os.path.join(root, path)
        mode = os.lstat(source).st_mode
        # A symlink in the staging tree stays a symlink in the image.
        if stat.S_ISLNK(mode):
            entries.append(LayerEntry.symlink(path, os.readlink(source)))
        elif stat.S_ISDIR(mode):
            entries.append(LayerEntry.directory(path))
        else:
            entries.append(LayerEntry.file(path, source, mode=0o755 if mode & 0o111 else 0o644))
    return entries


def _sorted(entries: Iterable[LayerEntry]) -> tuple[LayerEntry, ...]:
    return tuple(sorted(entries, key=lambda entry: entry.path))


def extra_directory_layers(directories: Sequence[ExtraDirectory]) -> list[LayerSpec]:
    """One layer per `extra-directories` item, named `extra-directory-<index>`, if not empty.

    `includes` and `excludes` are globs relative to `from` (`**` spans directories); an
    excluded directory drops its whole subtree. `permissions` maps globs of in-image paths to
    octal modes. Symlinks are kept as symlinks, never followed.
    """
    specs = []
    for index, directory in enumerate(directories):
        entries = _directory_entries(directory, f"tool.jib.extra-directories[{index}]")
        if entries:
            specs.append(LayerSpec(f"extra-directory-{index}", _sorted(entries)))
        else:
            log.warning("Extra directory %s adds no files to the image", directory.source)
    return specs


def _directory_entries(directory: ExtraDirectory, config_key: str) -> list[LayerEntry]:
    includes = [_glob(pattern) for pattern in directory.includes]
    excludes = [_glob(pattern) for pattern in directory.excludes]
    permissions = [
        (_glob(key.lstrip("/")), int(mode, 8)) for key, mode in directory.permissions.items()
    ]
    into = directory.into.strip("/")
    entries = []
    for relative, source, kind in _walk(directory.source, excludes, config_key):
        if kind != "dir" and includes and not any(p.fullmatch(relative) for p in includes):
            continue
        if kind == "dir" and includes:
            continue  # included files bring their parent directories
        path = f"{into}/{relative}" if into else relative
        mode = next((m for pattern, m in permissions if pattern.fullmatch(path)), None)
        if kind == "symlink":
            entries.append(LayerEntry.symlink(path, os.readlink(source)))
        elif kind == "dir":
            entries.append(LayerEntry.directory(path, mode=0o755 if mode is None else mode))
        elif kind == "file":
            entries.append(LayerEntry.file(path, source, mode=0o644 if mode is None else mode))
        else:
            raise BuildError(
                f"{source}, under `{config_key}.from`, is {kind}, which a layer cannot hold",
                hint=f'leave it out with `{config_key}.excludes = ["{relative}"]`',
            )
    if into and entries:
        # The target directory itself, so that permissions can name it.
        mode = next((m for pattern, m in permissions if pattern.fullmatch(into)), 0o755)
        entries.append(LayerEntry.directory(into, mode=mode))
    return entries


def _walk(
    top: Path, excludes: Sequence[re.Pattern[str]], config_key: str
) -> Iterable[tuple[str, Path, str]]:
    """(relative path, path, kind) under `top`, sorted, without excluded paths or subtrees.

    The kind is "dir", "file", "symlink" or, for a FIFO, socket or device, what it is ("a
    FIFO"). A path that cannot be read stops the build: leaving it out quietly would ship an
    image without it.
    """
    try:
        yield from _walk_tree(top, excludes)
    except OSError as error:
        relative = os.path.relpath(error.filename, top) if error.filename else ""
        raise BuildError(
            f"cannot read {error.filename}, under `{config_key}.from`: {error.strerror}",
            hint=f"make it readable by the build's user, or leave it out with "
            f'`{config_key}.excludes = ["{relative}"]`',
        ) from error


def _walk_tree(top: Path, excludes: Sequence[re.Pattern[str]]) -> Iterable[tuple[str, Path, str]]:
    for current, dirnames, filenames in os.walk(top, onerror=_reraise):
        base = Path(current)
        for name in sorted(dirnames):
            relative = (base / name).relative_to(top).as_posix()
            if any(pattern.fullmatch(relative) for pattern in excludes):
                dirnames.remove(name)
            elif (base / name).is_symlink():
                yield relative, base / name, "symlink"
            else:
                yield relative, base / name, "dir"
        dirnames.sort()
        for name in sorted(filenames):
            relative = (base / name).relative_to(top).as_posix()
            if not any(pattern.fullmatch(relative) for pattern in excludes):
                yield relative, base / name, _file_kind(base / name)


def _reraise(error: OSError) -> None:
    raise error


def _file_kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else file_type_name(mode)


def _glob(pattern: str) -> re.Pattern[str]:
    """A glob as a regex: `**/` any directories, `**` anything, `*` and `?` within a name."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # A pattern naming a directory also matches everything below it.
    return re.compile("".join(out).rstrip("/") + "(?:/.*)?")
