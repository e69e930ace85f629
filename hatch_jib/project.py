"""The project being containerized: its metadata, scripts and wheel, read through hatchling."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import stat
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatch_jib import cancel
from hatch_jib.cache import ContentHashes
from hatch_jib.errors import BuildError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from hatchling.builders.wheel import WheelBuilder

    from hatch_jib.python.install import RecordedFile
    from hatch_jib.wheelzip import Replacement, ZipMember

__all__ = [
    "Project",
    "WheelInputs",
    "build_wheel",
    "load_project",
    "main_module",
    "patch_wheel",
    "wheel_builder",
    "wheel_inputs",
]

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


def wheel_builder(project: Project) -> WheelBuilder:
    """Hatchling's wheel builder for the project; its metadata is read once, on first use."""
    from hatchling.builders.wheel import WheelBuilder

    return WheelBuilder(str(project.root))


def build_wheel(project: Project, directory: Path, builder: WheelBuilder | None = None) -> Path:
    """Build the project's wheel with hatchling into `directory`."""
    try:
        builder = builder or wheel_builder(project)
        artifacts = list(builder.build(directory=str(directory), versions=["standard"]))
    except Exception as error:  # hatchling raises bare exceptions for project mistakes
        raise BuildError(
            f"Building the wheel of {project.name} failed: {error}",
            hint="check that `hatch build -t wheel` works for this project",
        ) from error
    wheel = Path(artifacts[0])
    log.debug("built project wheel %s", wheel.name)
    return wheel


@dataclass(frozen=True)
class WheelInputs:
    """Everything hatchling makes the project's standard wheel of, read before building it.

    `files` are the included files as (distribution path, permission bits, sha256) in the
    order hatchling writes them, `metadata` the sha256 of each generated dist-info file,
    `settings` what else shapes the wheel's bytes: its name and tag, the members' time, and
    the zipfile and zlib that write it. `matches` checks a built wheel against all of it, so
    a wheel is only ever remembered under inputs that are exactly its own.
    """

    dist_info: str
    files: tuple[tuple[str, int, str], ...]
    metadata: tuple[tuple[str, str], ...]
    settings: tuple[tuple[str, str], ...]
    # Where each of `files` is read from: not an input, the same files may sit anywhere.
    sources: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def key(self) -> str:
        payload = {
            "format": _WHEEL_INPUTS_FORMAT,
            "dist-info": self.dist_info,
            "files": self.files,
            "metadata": self.metadata,
            "settings": self.settings,
        }
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))

    def filename(self) -> str:
        """The wheel's file name, as hatchling names it."""
        return f"{self.dist_info.removesuffix('.dist-info')}-{dict(self.settings)['tag']}.whl"

    def matches(self, recorded: Sequence[RecordedFile] | None) -> bool:
        """Whether a wheel whose files are `recorded` (its RECORD, see `wheel_record`) holds
        exactly these files, with these modes and hashes."""
        # Imported here: installer's side of hatch-jib loads only once a wheel is built.
        from hatch_jib.python.install import record_hash_hex

        if recorded is None:
            return False
        expected = {path: digest for path, _, digest in self.files}
        expected.update(self.metadata)
        # As hatchling writes modes: normalized by the owner's bit when reproducible, else as
        # they are, and installer makes a file executable for any of its x bits.
        exec_bits = 0o100 if dict(self.settings).get("reproducible") == "true" else 0o111
        executable = {path for path, permissions, _ in self.files if permissions & exec_bits}
        rows = [row for row in recorded if row[0] != f"{self.dist_info}/WHEEL"]
        found = {path: record_hash_hex(encoded) for path, encoded, _, _ in rows}
        if found != expected:
            return False
        return all(flag == (path in executable) for path, _, _, flag in rows)


# Bump when WheelInputs reads the project differently: 2 keeps every permission bit, as a
# wheel built with `reproducible = false` carries them all; 3 keeps the files in the order
# of the wheel's members, and adds the members' time and the zipfile and zlib versions.
_WHEEL_INPUTS_FORMAT = "3"


def wheel_inputs(builder: WheelBuilder, hashes: ContentHashes) -> WheelInputs | None:
    """What the wheel will be made of, or None when that cannot be known before building.

    A build hook may add any file or metadata, so a project with one always builds; so does
    one with shared data, shared scripts, extra metadata or SBOM files, which are rare
    enough not to model. Metadata hooks and dynamic versions need no exception: their
    results are in the core metadata, which is computed here as hatchling will.
    """
    config = builder.config
    if config.hook_config or config.shared_data or config.shared_scripts:
        return None
    if config.extra_metadata or config.sbom_files:
        return None
    dist_info = f"{builder.artifact_project_id}.dist-info"

    # The included files, as the wheel build walks them.
    files, sources = [], []
    for included in builder.recurse_included_files():
        cancel.checkpoint()
        mode, digest = hashes.state(included.path)
        files.append((included.distribution_path.replace(os.sep, "/"), mode & 0o7777, digest))
        sources.append(included.path)
    # Two files for one wheel path make hatchling stop; let it say so.
    if len({path for path, _, _ in files}) != len(files):
        return None

    # The dist-info files hatchling generates, and the license files it copies.
    metadata = [
        (f"{dist_info}/METADATA", _text_digest(config.core_metadata_constructor(builder.metadata)))
    ]
    entry_points = builder.construct_entry_points_file()
    if entry_points:
        metadata.append((f"{dist_info}/entry_points.txt", _text_digest(entry_points)))
    for relative in builder.metadata.core.license_files:
        source = os.path.normpath(os.path.join(builder.root, relative))
        metadata.append((f"{dist_info}/licenses/{relative}", hashes.sha256(source)))

    settings = (
        ("hatchling", importlib.metadata.version("hatchling")),
        ("tag", builder.get_default_tag()),
        ("reproducible", "true" if config.reproducible else "false"),
        ("member-time", _member_time(reproducible=config.reproducible)),
        # zipfile's own bytes may change in any release: the exact interpreter.
        ("python", f"{sys.implementation.name} {sys.version.split()[0]}"),
        ("zlib", zlib.ZLIB_RUNTIME_VERSION),
    )
    return WheelInputs(dist_info, tuple(files), tuple(sorted(metadata)), settings, tuple(sources))


def _member_time(*, reproducible: bool) -> str:
    """The time hatchling gives every member, from SOURCE_DATE_EPOCH, when it builds
    reproducibly; otherwise each file's own mtime is used, which zip times alone record."""
    if not reproducible:
        return "mtime"
    from hatchling.builders.wheel import WheelArchive

    year, month, day, hour, minute, second = WheelArchive.get_reproducible_time_tuple()
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def patch_wheel(previous: Path, inputs: WheelInputs, target: Path) -> tuple[str, int] | None:
    """Write the wheel `inputs` describe to `target`, made from `previous`, when that is a
    wheel hatchling built with the same settings and only the bytes of some files differ;
    the new wheel's digest and how many files changed.

    Only the changed files' members and RECORD get new bytes, so the result is the wheel
    hatchling would build. None when anything else differs (a file added, removed, given
    another mode or place in the order, other metadata) or `previous` is not laid out as
    hatchling writes it.
    """
    from hatch_jib.wheelzip import UnsupportedZip, replace_members

    # A wheel built without `reproducible` takes each member's time from its file.
    if dict(inputs.settings).get("reproducible") != "true":
        return None
    try:
        # The last wheel's members and RECORD.
        read = _read_wheel(previous, inputs)
        if read is None:
            return None
        members, rows = read

        # The files whose bytes changed, when nothing else did.
        attributes = {member.name: member.external_attr for member in members}
        changed = _changed_files(inputs, rows, attributes)
        contents = _changed_contents(inputs, changed) if changed is not None else None
        if contents is None:
            return None

        # Their members and RECORD are written anew, everything else is copied.
        replacements = _replacements(inputs, rows, contents)
        return replace_members(previous, members, target, replacements), len(contents)
    except (UnsupportedZip, OSError, UnicodeDecodeError, zlib.error, csv.Error) as error:
        log.debug("wheel %s not patched: %s", previous.name, error)
        target.unlink(missing_ok=True)
        return None


def _read_wheel(wheel: Path, inputs: WheelInputs) -> tuple[list[ZipMember], list[list[str]]] | None:
    """The wheel's members and its RECORD's rows, if each name is there once and RECORD
    reads back to the very text hatchling wrote."""
    from hatch_jib.wheelzip import read_member, read_members

    members = read_members(wheel)
    by_name = {member.name: member for member in members}
    record_name = f"{inputs.dist_info}/RECORD"
    if len(by_name) != len(members) or record_name not in by_name:
        return None
    rows = _record_rows(read_member(wheel, by_name[record_name]).decode("utf-8"))
    return (members, rows) if rows is not None else None


def _changed_files(
    inputs: WheelInputs, rows: list[list[str]], attributes: dict[str, int]
) -> list[str] | None:
    """The files whose hash in RECORD `rows` is not the one in `inputs`; None if anything
    else differs. `attributes` are the members' zip external attributes, in archive order."""
    from hatch_jib.python.install import record_hash

    listed = {row[0]: row for row in rows if row}
    expected = {path: digest for path, _, digest in inputs.files}
    expected.update(inputs.metadata)
    generated = {f"{inputs.dist_info}/RECORD", f"{inputs.dist_info}/WHEEL"}
    if len(listed) != len(rows) or listed.keys() != attributes.keys():
        return None
    if listed.keys() - generated != expected.keys():
        return None

    # Members stay where they are, so they must already be in the order hatchling walks.
    modes = {path: permissions for path, permissions, _ in inputs.files}
    if [name for name in attributes if name in modes] != list(modes):
        return None

    # A file's mode is in its zip entry; a new mode means new entry bytes beyond the data.
    changed = []
    for path, digest in expected.items():
        row = listed[path]
        if len(row) != 3 or not row[1].startswith("sha256="):
            return None
        if path in modes and attributes[path] >> 16 != _zip_mode(modes[path]):
            return None
        if row[1] != f"sha256={record_hash(bytes.fromhex(digest))}":
            if path not in modes:
                return None  # generated metadata changed: hatchling writes it
            changed.append(path)
    return changed


def _changed_contents(inputs: WheelInputs, changed: list[str]) -> dict[str, bytes] | None:
    """The bytes of the `changed` files, or None once they are too large to hold or one has
    changed again since `inputs` hashed it."""
    expected = {path: digest for path, _, digest in inputs.files}
    if len(inputs.sources) != len(inputs.files):
        return None
    pairs = zip(inputs.files, inputs.sources, strict=True)
    sources = {path: source for (path, _, _), source in pairs}
    if sum(os.stat(sources[path]).st_size for path in changed) > _PATCH_LIMIT:
        return None
    contents = {}
    for path in changed:
        cancel.checkpoint()
        data = Path(sources[path]).read_bytes()
        if hashlib.sha256(data).hexdigest() != expected[path]:
            return None
        contents[path] = data
    return contents


# Changed files are held in memory to be deflated; more than this goes to hatchling, which
# streams them.
_PATCH_LIMIT = 64 << 20
# hatchling hands zipfile each file in reads of this size; zlib-ng deflates by the write.
_HATCHLING_READ = 16384


def _replacements(
    inputs: WheelInputs, rows: list[list[str]], contents: dict[str, bytes]
) -> dict[str, Replacement]:
    """The changed files' new members, and RECORD with their new hashes and sizes in the
    rows' old order."""
    from hatch_jib.python.install import record_hash
    from hatch_jib.wheelzip import Replacement

    replacements = {path: Replacement(data, _HATCHLING_READ) for path, data in contents.items()}
    for row in rows:
        data = contents.get(row[0])
        if data is not None:
            row[1:] = [f"sha256={record_hash(hashlib.sha256(data).digest())}", str(len(data))]
    # RECORD goes in with one write, as hatchling's `writestr`.
    record = _record_text(rows).encode("utf-8")
    replacements[f"{inputs.dist_info}/RECORD"] = Replacement(record)
    return replacements


def _zip_mode(permissions: int) -> int:
    """The mode hatchling gives a regular file's zip entry when it builds reproducibly."""
    from hatchling.builders.utils import normalize_file_permissions

    return normalize_file_permissions(stat.S_IFREG | permissions) & 0xFFFF


def _record_rows(text: str) -> list[list[str]] | None:
    """RECORD's rows, if writing them again as hatchling does gives back the same text."""
    rows = list(csv.reader(io.StringIO(text)))
    return rows if _record_text(rows) == text else None


def _record_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=",", quotechar='"', lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def main_module(names: Iterable[str]) -> str | None:
    """The top-level package that has a `__main__` module among a wheel's file `names`, if
    exactly one has."""
    mains = [n for n in names if n.count("/") == 1 and n.endswith("/__main__.py")]
    packages = sorted(name.split("/")[0] for name in mains)
    return packages[0] if len(packages) == 1 else None
