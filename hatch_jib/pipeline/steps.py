"""The steps of a build, one function each; the runner decides what runs when."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from hatch_jib import cancel
from hatch_jib.cache import BlobStore, ContentHashes, file_digest, record_of
from hatch_jib.config import Auth, JibConfig
from hatch_jib.errors import BuildError, ConfigError, RegistryError
from hatch_jib.image.config import ContainerSettings, build_image_config
from hatch_jib.image.descriptor import (
    Descriptor,
    MediaType,
    check_digest,
    human_size,
    sha256_digest,
    short_digest,
)
from hatch_jib.image.image import Image, ImageIndex, ImageLayer
from hatch_jib.image.layer import (
    STOCK_DEFLATE,
    BuiltLayer,
    LayerSpec,
    build_layer,
    deflate_fingerprint,
    is_stored,
    layer_format,
    recorded_layer,
)
from hatch_jib.image.manifest import Manifest, parse_index, parse_manifest, serialize
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import Reference
from hatch_jib.project import (
    Project,
    WheelInputs,
    build_wheel,
    main_module,
    patch_wheel,
    wheel_builder,
    wheel_inputs,
)
from hatch_jib.python.bytecode import compile_dists, should_compile
from hatch_jib.python.install import (
    InstalledDist,
    RecordedFile,
    create_venv,
    install_wheel,
    wheel_record,
)
from hatch_jib.python.layout import (
    CODE_SUFFIXES,
    MAX_LAYERS,
    extra_directory_layers,
    is_code,
    split_layers,
)
from hatch_jib.python.local import build_local_wheels
from hatch_jib.python.lock import check_locked_hashes, collect_requirements
from hatch_jib.python.resolve import ResolvedWheel, download, resolve
from hatch_jib.python.target import PythonOverrides, TargetProfile, detect_target
from hatch_jib.registry.client import PulledManifest, RegistryClient
from hatch_jib.registry.credentials import Credential, find_credential
from hatch_jib.registry.transport import TransportOptions

__all__ = [
    "AppLayers",
    "BaseImage",
    "ProjectWheel",
    "assemble_image",
    "assemble_index",
    "build_application_layers",
    "build_project_wheel",
    "check_base_layers",
    "choose_entrypoint",
    "connect",
    "detect_target_profile",
    "fetch_base_blob",
    "git_revision",
    "image_environment",
    "note_source_date_epoch",
    "obtain_base_layers",
    "offline_blob_missing",
    "project_metadata",
    "pull_base_image",
    "report_layers",
    "transport_options",
    "warn_unless_stock_deflate",
]

log = logging.getLogger("hatch_jib")

# Jib-style bound on concurrent requests to one registry.
MAX_CONNECTIONS = 8


@dataclass(frozen=True)
class BaseImage:
    """The pulled base: its reference, the chosen platform's manifest and parsed config."""

    reference: Reference
    client: RegistryClient
    manifest: Manifest
    manifest_digest: str
    config: dict[str, Any]
    platform: Platform
    offline: bool = False


@dataclass(frozen=True)
class AppLayers:
    """Our layers, bottom to top, and the command that starts the app."""

    layers: tuple[BuiltLayer, ...]
    entrypoint: tuple[str, ...]
    target: TargetProfile


def transport_options(config: JibConfig) -> TransportOptions:
    return TransportOptions(
        insecure_hosts=config.allow_insecure_registries,
        send_credentials_over_http=config.send_credentials_over_http,
        ca_file=str(config.registry_ca_file) if config.registry_ca_file else None,
        upload_chunk_size=config.upload_chunk_size,
    )


def connect(
    reference: Reference,
    *,
    auth: Auth | None,
    options: TransportOptions,
    cred_helper: str | None = None,
    push: bool = False,
    mount_from: Sequence[str] = (),
) -> RegistryClient:
    """Retrieve credentials for `reference` and open a client; log where they came from."""
    explicit = Credential(auth.username, auth.password, auth.source) if auth else None
    credential = find_credential(
        reference.registry,
        explicit=explicit,
        cred_helper=cred_helper,
        env_prefix="JIB_TO_AUTH" if push else "JIB_FROM_AUTH",
    )
    role = "target" if push else "base"
    if credential:
        log.info(
            "Using credentials from %s for %s (%s)", credential.source, reference.registry, role
        )
    else:
        log.info("No credentials for %s (%s): trying anonymous access", reference.registry, role)
    return RegistryClient(
        reference.registry,
        reference.repository,
        credential=credential,
        options=options,
        push=push,
        mount_from=mount_from,
        # Like Jib, pull the base anonymously first: public bases need no login.
        anonymous_first=not push,
    )


def warn_unless_stock_deflate() -> None:
    """Say so when this Python's zlib compresses unlike stock zlib: its layers are valid,
    but their digests will not match a build of the same project on another machine."""
    if deflate_fingerprint() != STOCK_DEFLATE:
        log.warning(
            "This Python's zlib (%s) compresses differently from stock zlib: layer digests "
            "will not match builds made with stock zlib, though the files are the same. "
            "For digests that match across machines, build with a Python linked to stock zlib",
            zlib.ZLIB_RUNTIME_VERSION,
        )


def note_source_date_epoch(config: JibConfig) -> None:
    """Say so when SOURCE_DATE_EPOCH dates the files of every layer: a value that moves with
    each commit gives every layer, dependencies too, new bytes to push."""
    if "container.files-modification-time" in config.sources:
        return
    if os.environ.get("SOURCE_DATE_EPOCH") is None:
        return
    log.info(
        "Files in the layers are dated %d, from SOURCE_DATE_EPOCH: another value rebuilds and "
        "pushes every layer again; a fixed `tool.jib.container.files-modification-time` "
        "keeps them reusable",
        config.container.files_modification_time,
    )


def pull_base_image(
    reference: Reference,
    client: RegistryClient,
    store: BlobStore,
    platform: Platform,
    *,
    offline: bool = False,
    warn_unpinned: bool = True,
) -> BaseImage:
    """Pull the base's manifest (through its index if it has one) and its config.

    Offline, both come from the cache: a tag through the digest it had when last pulled.
    """
    if warn_unpinned and not reference.digest:
        log.warning(
            "Base image %s is not pinned by digest: builds may change when the tag moves", reference
        )
    try:
        pulled = _get_manifest(client, reference, reference.identifier, store, offline)
    except RegistryError as error:
        # The registry's hint says "the image reference"; a build has two, so name this one.
        if error.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN"):
            error.hint = (
                f"{reference} is not in the registry: check the base image, "
                "`tool.jib.from.image` (or JIB_FROM_IMAGE)"
            )
        raise
    media_type = pulled.media_type

    # Pick the platform from an index or manifest list.
    if media_type in MediaType.INDEXES:
        with _malformed(reference, "index"):
            index = parse_index(pulled.data, media_type)
        chosen = index.find(platform)
        if chosen is None:
            available = ", ".join(str(p) for p in index.platforms()) or "none"
            raise BuildError(
                f"Base image {reference} has no {platform} image (it has: {available})",
                hint="set `tool.jib.from.platforms` to one it has, or choose another base",
            )
        pulled = _get_manifest(client, reference, chosen.digest, store, offline)
        media_type = pulled.media_type
    if media_type not in MediaType.MANIFESTS:
        raise BuildError(
            f"Base image {reference} has an unsupported manifest type {media_type!r}",
            hint="use a base image with a Docker v2.2 or OCI manifest (schema 1 is obsolete)",
        )
    with _malformed(reference, "manifest"):
        manifest = parse_manifest(pulled.data, media_type)

    # The config says the platform for single-platform bases; check it matches.
    _fetch_blob(client, reference, manifest.config.digest, store, offline, what="config")
    with _malformed(reference, "config"):
        config = _check_base_config(json.loads(store.read_bytes(manifest.config.digest)))
    found = Platform(
        config.get("os", "linux"), config.get("architecture", "amd64"), config.get("variant")
    )
    if not found.matches(platform):
        raise BuildError(
            f"Base image {reference} is for {found}, not {platform}",
            hint=f'set `tool.jib.from.platforms` to ["{found}"] or choose a {platform} base',
        )
    log.info("Base image %s@%s (%s)", reference.context, pulled.digest, found)
    return BaseImage(reference, client, manifest, pulled.digest, config, found, offline)


@contextlib.contextmanager
def _malformed(reference: Reference, what: str) -> Iterator[None]:
    """Turn a parse failure of what the registry sent into an error naming the base."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        detail = f"{type(error).__name__}: {error}" if isinstance(error, KeyError) else error
        raise BuildError(
            f"Base image {reference}: the registry sent an invalid {what} ({detail})",
            hint="the image or the registry is broken; choose another base image or tag",
        ) from error


def _check_base_config(config: Any) -> dict[str, Any]:
    """The base config fields we build on must have the types the image spec gives them."""
    if not isinstance(config, dict):
        raise TypeError("the config is not a JSON object")
    runtime = config.get("config") or {}
    if not isinstance(runtime, dict):
        raise TypeError("`config` is not an object")
    for name in ("Env", "Entrypoint", "Cmd"):
        value = runtime.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            raise TypeError(f"`config.{name}` is not an array of strings")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if not isinstance(diff_ids, list) or not all(isinstance(item, str) for item in diff_ids):
        raise TypeError("`rootfs.diff_ids` is not an array of digests")
    for diff_id in diff_ids:
        check_digest(diff_id)
    return config


def _get_manifest(
    client: RegistryClient, reference: Reference, identifier: str, store: BlobStore, offline: bool
) -> PulledManifest:
    """A manifest by tag or digest from the registry, kept in the cache for offline builds."""
    tag_key = f"{reference.registry}/{reference.repository}:{identifier}"
    if offline:
        return _cached_manifest(reference, identifier, store, tag_key)

    pulled = client.get_manifest(identifier)
    store.put_bytes(pulled.data, expected=pulled.digest)
    store.write_record("manifests", pulled.digest, {"media_type": pulled.media_type})
    if not identifier.startswith("sha256:"):
        store.write_record("tags", tag_key, {"digest": pulled.digest})
    return pulled


def _cached_manifest(
    reference: Reference, identifier: str, store: BlobStore, tag_key: str
) -> PulledManifest:
    digest: str | None = identifier
    if not identifier.startswith("sha256:"):
        digest = store.load_record("tags", tag_key, lambda record: check_digest(record["digest"]))
    media_type = None
    if digest:
        media_type = store.load_record("manifests", digest, lambda rec: str(rec["media_type"]))
    path = store.verified_path(digest) if digest and media_type else None
    if digest is None or media_type is None or path is None:
        separator = "@" if identifier.startswith("sha256:") else ":"
        what = f"{reference.context}{separator}{identifier}"
        what = f"the digest of tag {what}" if digest is None else f"the manifest {digest} of {what}"
        raise BuildError(
            f"Offline build: {what} is not in the cache at {store.root}",
            hint="build once with network access (or pin the base by digest after one), "
            "or turn off `offline`",
        )
    log.info("Base manifest %s from the cache (offline)", digest)
    return PulledManifest(path.read_bytes(), media_type, digest)


def _fetch_blob(
    client: RegistryClient,
    reference: Reference,
    digest: str,
    store: BlobStore,
    offline: bool,
    *,
    what: str,
) -> Path:
    """A base blob from the cache, else from the registry unless the build is offline."""
    path = store.verified_path(digest)
    if path is not None:
        return path
    if offline:
        raise offline_blob_missing(reference, digest, store, what=what)
    return client.fetch_blob(digest, store)


def offline_blob_missing(
    reference: Reference, digest: str, store: BlobStore, *, what: str = "layer"
) -> BuildError:
    """The error for a base blob an offline build needs and the cache lacks."""
    return BuildError(
        f"Offline build: base image {what} {digest} of {reference.context} is not in the "
        f"cache at {store.root}",
        hint="build once with network access for this output, or turn off `offline`",
    )


def fetch_base_blob(base: BaseImage, digest: str, store: BlobStore) -> Path:
    """One base layer or config blob, verified, downloading it only when the cache lacks it."""
    return _fetch_blob(base.client, base.reference, digest, store, base.offline, what="layer")


_DOWNLOADS = threading.Lock()


def obtain_base_layers(base: BaseImage, store: BlobStore) -> list[Path]:
    """Download every base layer into the cache (skipping cached ones), in parallel. Their
    digests are verified; their diff_ids are left to `check_base_layers`, which a caller that
    reads the layers whole anyway can feed from its own read."""
    digests = [layer.digest for layer in base.manifest.layers]

    # Target detection and a tar prefetch may both ask: the second waits and finds them cached.
    with _DOWNLOADS:
        missing = [digest for digest in digests if store.verified_path(digest) is None]
        if missing:
            log.info("Downloading %d of %d base layers", len(missing), len(digests))
        # Ctrl-C here, or the first failed download, stops the others.
        with cancel.CancellingPool(MAX_CONNECTIONS, name="jib-pull") as pool:
            for digest in missing:
                pool.submit(fetch_base_blob, base, digest, store)
            pool.wait_all()

    # The digest proves the bytes; the size must agree too, or our manifest would lie.
    for layer in base.manifest.layers:
        actual = store.size(layer.digest)
        if actual != layer.size:
            raise BuildError(
                f"Base image {base.reference}: layer {layer.digest} has {actual} bytes, but "
                f"its manifest says {layer.size}",
                hint="the base image's manifest is wrong; choose another base image or tag",
            )
    return [store.path(digest) for digest in digests]


def check_base_layers(
    base: BaseImage, store: BlobStore, read: Mapping[Path, str] | None = None
) -> None:
    """Each base layer unpacks to the diff_id its config lists; checked once per layer.
    `read` holds the tar digests of layers the caller has read whole already."""
    diff_ids = (base.config.get("rootfs") or {}).get("diff_ids") or []
    # A count that disagrees is refused when the image is assembled.
    for layer, diff_id in zip(base.manifest.layers, diff_ids, strict=False):
        if store.read_record("diff-ids", layer.digest) == diff_id:
            continue
        cancel.checkpoint()
        path = store.path(layer.digest)
        actual = (read or {}).get(path) or _uncompressed_digest(path, layer.media_type)
        if actual is None:
            log.debug("not checking the diff_id of %s (%s)", layer.digest, layer.media_type)
            continue
        if actual != diff_id:
            raise BuildError(
                f"Base image {base.reference}: layer {layer.digest} unpacks to {actual}, but "
                f"its config lists diff_id {diff_id}",
                hint="the base image's config does not match its layers; choose another base",
            )
        store.write_record("diff-ids", layer.digest, diff_id)


def _uncompressed_digest(path: Path, media_type: str) -> str | None:
    """The sha256 of a layer's tar, or None for a compression we cannot read (zstd)."""
    gzipped = "gzip" in media_type
    if not gzipped and not media_type.endswith("tar"):
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise BuildError(
            f"base layer {path.name} does not unpack: {error}",
            hint="the base image's layer is damaged or not the type it claims",
        ) from error
    return "sha256:" + digest.hexdigest()


def detect_target_profile(
    base: BaseImage, store: BlobStore, overrides: PythonOverrides
) -> TargetProfile:
    """The base's Python and platform, cached by base manifest digest.

    The layers are read only when the config and overrides leave the Python version or the
    libc open, so a registry build over a `python:*` base with a libc override downloads none.
    """
    from hatch_jib import __version__

    key = json.dumps([_TARGET_FORMAT, __version__, base.manifest_digest, repr(overrides)])
    cached = store.load_record("targets", key, lambda record: record_of(TargetProfile, record))
    if cached is not None:
        log.info("Target: %s (cached)", cached.describe())
        return cached

    layers: list[Path] = []
    if not _config_says_enough(base.config, overrides):
        # The scan reads each layer whole: the diff_ids are checked from what it read.
        layers = obtain_base_layers(base, store)
    tar_digests: dict[Path, str] = {}
    target = detect_target(
        base.config,
        layers,
        architecture=base.platform.architecture,
        variant=base.platform.variant,
        overrides=overrides,
        tar_digests=tar_digests,
    )
    if layers:
        check_base_layers(base, store, tar_digests)
    store.write_record("targets", key, target.__dict__)
    return target


# Bump when the same base and overrides may be detected as another target, or records written
# before may be wrong: 2 drops targets whose python.version the base lacks, which older
# builds recorded with an interpreter the image does not have instead of refusing them.
_TARGET_FORMAT = "2"


def _config_says_enough(config: dict[str, Any], overrides: PythonOverrides) -> bool:
    """Whether the Python version and libc are known without reading any base layer."""
    env = (config.get("config") or {}).get("Env") or []
    has_version = bool(overrides.version) or any(
        str(item).startswith("PYTHON_VERSION=") for item in env
    )
    return has_version and bool(overrides.platform_tags or overrides.libc)


def build_application_layers(
    project: Project,
    config: JibConfig,
    target: TargetProfile,
    store: BlobStore,
    wheel: ProjectWheel | None = None,
    *,
    base_layers: int = 0,
) -> AppLayers:
    """Resolve and install for the target, and write our layers.

    `wheel` is the project's wheel if built already (see `build_project_wheel`). The
    dependency layers and the project's layers are each reused, without installing anything,
    when their inputs are unchanged: the resolved wheels, or the project's wheel.
    """
    venv = f"{config.container.app_root.rstrip('/')}/.venv"
    extras = extra_directory_layers(config.extra_directories)
    setup = _InstallSetup(
        target=target,
        venv=venv,
        mtime=config.container.files_modification_time,
        compile=should_compile(config.python.bytecode, target),
        own_layer_size=config.python.layer_threshold,
        spare_layers=MAX_LAYERS - base_layers - len(extras),
    )
    with store.scratch_directory() as scratch:
        root = Path(scratch) / "root"
        root.mkdir()
        if wheel is None:
            built = build_wheel(project, Path(scratch) / "wheel")
            wheel = ProjectWheel(built, file_digest(built))

        # Dependencies, then our own wheel, then extra directories on top, one layer each.
        # The project installs into a tree of its own: whether or not the dependencies were
        # installed just now, a file both ship is the project's, as with pip.
        dependencies = _dependency_layers(project, config, store, root, setup)
        project_root = Path(scratch) / "project"
        project_root.mkdir()
        own = _project_layers(wheel, store, project_root, setup)
        extra = tuple(build_layer(spec, store, mtime=setup.mtime) for spec in extras)
        layers = (*dependencies, *own, *extra)
        entrypoint = choose_entrypoint(project, config, venv, lambda: main_module(wheel.names()))
    return AppLayers(layers, entrypoint, target)


def report_layers(app: AppLayers) -> None:
    """Log each of our layers as built or reused; the runner calls it in platform order."""
    for layer in app.layers:
        state = "reused" if layer.reused else "built"
        log.info(
            "Layer %-12s %s %s (%s)",
            layer.name,
            state,
            short_digest(layer.digest),
            human_size(layer.size),
        )


@dataclass(frozen=True)
class ProjectWheel:
    """The project's wheel, its `sha256:` digest, and the files its RECORD lists, read at
    most once."""

    path: Path
    digest: str

    @functools.cached_property
    def record(self) -> tuple[RecordedFile, ...] | None:
        """See `wheel_record`: None when the RECORD cannot be trusted."""
        return wheel_record(self.path)

    def names(self) -> list[str]:
        """The name of every file in the wheel, from its RECORD where that can be trusted."""
        if self.record is not None:
            return [row[0] for row in self.record]
        with zipfile.ZipFile(self.path) as archive:
            return archive.namelist()


def build_project_wheel(project: Project, directory: Path, store: BlobStore) -> ProjectWheel:
    """The project's wheel, taken from the cache when nothing it is made of has changed, or
    the last one patched when only the bytes of some files have (see `patch_wheel`).

    It needs nothing from the base, so it runs beside the pull. A wheel is remembered by its
    inputs (see `WheelInputs`) only once its own RECORD shows it was made of exactly those.
    """
    builder = wheel_builder(project)
    hashes = ContentHashes(store, f"wheel-inputs:{project.root}")
    try:
        inputs = wheel_inputs(builder, hashes)
    except (ValueError, TypeError, OSError) as error:  # the wheel build will say what is wrong
        log.debug("wheel inputs of %s not known (%s); building it", project.name, error)
        inputs = None
    if inputs is not None:
        cached = _cached_wheel(store, inputs, directory)
        if cached is not None:
            _remember_wheel(store, project, inputs, cached)
            hashes.save()
            log.info("Project wheel %s reused: none of its inputs changed", cached.path.name)
            return cached

        # After a change to files' bytes alone, the last wheel is patched, not built again.
        patched = _patched_wheel(store, project, inputs, directory)
        if patched is not None:
            wheel, changed = patched
            _remember_wheel(store, project, inputs, wheel, new=True)
            hashes.save()
            log.info(
                "Project wheel %s made from the last one: %d changed file(s) replaced",
                wheel.path.name,
                changed,
            )
            return wheel

    path = build_wheel(project, directory, builder)
    wheel = ProjectWheel(path, file_digest(path))
    if inputs is not None and inputs.matches(wheel.record):
        _remember_wheel(store, project, inputs, wheel, new=True)
        hashes.save()
    return wheel


def _remember_wheel(
    store: BlobStore,
    project: Project,
    inputs: WheelInputs,
    wheel: ProjectWheel,
    *,
    new: bool = False,
) -> None:
    """Keep a `new` wheel under its inputs, and any as the project's last wheel, the one a
    later change of files' bytes patches."""
    record = {"filename": wheel.path.name, "digest": wheel.digest}
    if new:
        store.put_file(wheel.path, wheel.digest)
        store.write_record("wheels", inputs.key(), record)
    last = {**record, "settings": [*map(list, inputs.settings)]}
    if store.read_record("last-wheels", str(project.root)) != last:
        store.write_record("last-wheels", str(project.root), last)


def _patched_wheel(
    store: BlobStore, project: Project, inputs: WheelInputs, directory: Path
) -> tuple[ProjectWheel, int] | None:
    """The project's last wheel with the files that changed since replaced (see
    `patch_wheel`), and how many did; None when it was built otherwise or is gone, or the
    result does not match `inputs`."""
    last = store.read_record("last-wheels", str(project.root))
    if not isinstance(last, dict) or last.get("settings") != [*map(list, inputs.settings)]:
        return None
    stored = _stored_wheel(store, last, inputs.filename())
    if stored is None:
        return None
    previous = stored[0]
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / inputs.filename()
    patched = patch_wheel(previous, inputs, target)
    if patched is None:
        return None
    digest, changed = patched
    wheel = ProjectWheel(target, digest)
    if not inputs.matches(wheel.record):
        log.debug("patched wheel %s does not match its inputs; building it", target)
        target.unlink()
        return None
    return wheel, changed


def _cached_wheel(store: BlobStore, inputs: WheelInputs, directory: Path) -> ProjectWheel | None:
    """The wheel remembered under `inputs`, copied into `directory`."""
    stored = _stored_wheel(store, store.read_record("wheels", inputs.key()), inputs.filename())
    if stored is None:
        return None
    blob, digest = stored
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / inputs.filename()
    shutil.copyfile(blob, wheel)
    return ProjectWheel(wheel, digest)


def _stored_wheel(store: BlobStore, record: Any, filename: str) -> tuple[Path, str] | None:
    """The verified blob and digest of the wheel a `wheels` or `last-wheels` record names,
    if the record is sound and names a wheel called `filename`."""
    if not isinstance(record, dict) or record.get("filename") != filename:
        return None
    digest = str(record.get("digest"))
    try:
        blob = store.verified_path(check_digest(digest))
    except ValueError:
        return None
    return (blob, digest) if blob is not None else None


@dataclass(frozen=True)
class _InstallSetup:
    """Everything besides the wheels that decides the bytes of an installed layer."""

    target: TargetProfile
    venv: str
    mtime: int
    compile: bool
    own_layer_size: int | None
    spare_layers: int

    def key(self, kind: str, wheels: Sequence[Sequence[str]]) -> str:
        from hatch_jib import __version__

        payload = {
            "format": _INSTALL_FORMAT,
            "layer-format": layer_format(),
            "hatch-jib": __version__,
            "kind": kind,
            "wheels": [list(wheel) for wheel in wheels],
            "target": self.target.__dict__,
            "venv": self.venv,
            "mtime": self.mtime,
            # Bytecode comes from this interpreter, so its exact version is an input.
            "bytecode": sys.version if self.compile else None,
            # installer writes the files, RECORD and scripts: another version, other bytes.
            "installer": _installer_version(),
            "own-layer-size": self.own_layer_size,
            "spare-layers": self.spare_layers,
        }
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _installer_version() -> str:
    return importlib.metadata.version("installer")


# Bump when the same wheels would install to other bytes (installer, venv or split changes),
# or when records written before may be wrong: 2 drops the resources records of builds that
# wrote bytecode, which were all keyed as if the project had no resources; 3 drops the
# dependency records of local wheels rebuilt in place, which were installed from the old wheel;
# 4 drops records of builds run with `python -O`, whose optimized pycs were keyed as plain ones;
# 5 keys resources by the wheel's RECORD instead of the installed files; 6 drops layers whose
# pycs the build's own process wrote, which differ under -X no_debug_ranges or -W error.
_INSTALL_FORMAT = "6"
# Stands for "no project" when only the dependency layers are split out.
_NOTHING = InstalledDist("", "", ())
# Resource bytes a project install may hold in memory instead of writing them out.
_KEEP_RESOURCES = 64 << 20


def _dependency_layers(
    project: Project, config: JibConfig, store: BlobStore, root: Path, setup: _InstallSetup
) -> tuple[BuiltLayer, ...]:
    """The dependency layers; an unchanged set of wheels is neither downloaded nor installed."""
    venv_entries = create_venv(root, setup.target, venv=setup.venv)
    resolved, local_urls = _resolve_dependencies(project, config, setup.target, store)
    wheels = [
        (item.filename, _wheel_identity(item), "local" if item.url in local_urls else "")
        for item in resolved
    ]
    key = setup.key("dependencies", wheels)
    reused = _reuse_layers(store, key)
    if reused is not None:
        return reused

    # Installed in resolution order, which is by name: the same tree on every machine.
    paths = download(resolved, store, offline=config.offline)
    index: list[InstalledDist] = []
    local: list[InstalledDist] = []
    for item, path in zip(resolved, paths, strict=True):
        dist = install_wheel(
            path, filename=item.filename, target=setup.target, root=root, venv=setup.venv
        )
        (local if item.url in local_urls else index).append(dist)

    # Bytecode next to each source, in the same layer, when the target can load it.
    if setup.compile:
        index, local = compile_dists(root, index), compile_dists(root, local)
    specs = split_layers(
        root,
        dependencies=index,
        local_dependencies=local,
        project=_NOTHING,
        venv_entries=venv_entries,
        own_layer_size=setup.own_layer_size,
        spare_layers=setup.spare_layers,
    )
    return _build_and_remember(specs, store, key, setup.mtime)


def _project_layers(
    project_wheel: ProjectWheel, store: BlobStore, root: Path, setup: _InstallSetup
) -> tuple[BuiltLayer, ...]:
    """The `resources` and `code` layers, keyed by the project wheel (hatchling's is stable).

    A changed wheel whose resources are unchanged installs and tars only its code: the
    resources' layer is found by their hashes in the wheel's RECORD, and they are not read.
    """
    wheel = project_wheel.path
    key = setup.key("project", [(wheel.name, project_wheel.digest)])
    reused = _reuse_layers(store, key)
    if reused is not None:
        return reused

    # Every file that may land in `resources` is in its key: all but the dist-info and the
    # top-level modules, which install as code whatever the target.
    recorded = project_wheel.record
    resources_key = None
    if recorded is not None:
        rows = [list(map(str, row)) for row in recorded if not _surely_code(row[0])]
        resources_key = setup.key("resources", rows)
        resources = _reuse_layers(store, resources_key)
        if resources is not None:
            code_only = _install_project(wheel, root, setup, write=is_code, recorded=recorded)
            layers = (*resources, *_build_project_specs(code_only, store, root, setup))
            _remember(store, key, layers)
            return layers

    # New resources: the code is written, the small resources are kept in memory and tarred
    # from there if all fit (writing thousands of small files only to read them back costs
    # more than the tar), else everything is installed afresh.
    code_only = _install_project(wheel, root, setup, write=is_code, keep=_KEEP_RESOURCES)
    if len(code_only.kept) == len(code_only.unwritten):
        layers = _build_project_specs(code_only, store, root, setup)
    else:
        full_root = root.parent / "project-full"
        full_root.mkdir()
        full = _install_project(wheel, full_root, setup, write=None)
        layers = _build_project_specs(full, store, full_root, setup)
    _remember(store, key, layers)
    if resources_key is not None:
        _remember(store, resources_key, tuple(x for x in layers if x.name == "resources"))
    return layers


def _surely_code(path: str) -> bool:
    """Whether a wheel file installs into `code` on every target: dist-info, or a top-level
    module (everything outside `.data/` installs into site-packages)."""
    top = path.split("/", 1)[0]
    if top.endswith(".dist-info"):
        return True
    return not top.endswith(".data") and path.endswith(CODE_SUFFIXES)


def _install_project(
    wheel: Path,
    root: Path,
    setup: _InstallSetup,
    *,
    write: Callable[[str], bool] | None,
    keep: int = 0,
    recorded: Sequence[RecordedFile] | None = None,
) -> InstalledDist:
    own = install_wheel(
        wheel,
        filename=wheel.name,
        target=setup.target,
        root=root,
        venv=setup.venv,
        write=write,
        keep=keep,
        recorded=recorded,
    )
    if setup.compile:
        [own] = compile_dists(root, [own])
    return own


def _build_project_specs(
    own: InstalledDist, store: BlobStore, root: Path, setup: _InstallSetup
) -> tuple[BuiltLayer, ...]:
    specs = split_layers(
        root,
        dependencies=(),
        project=own,
        venv_entries=(),
        own_layer_size=setup.own_layer_size,
        spare_layers=setup.spare_layers,
    )
    return tuple(build_layer(spec, store, mtime=setup.mtime) for spec in specs)


def _wheel_identity(wheel: ResolvedWheel) -> str:
    """What pins a wheel's bytes: a local file's own digest, else the index's hash or URL."""
    if wheel.url.startswith("file:"):
        # A local wheel may be rebuilt in place with new content under the same name.
        return file_digest(Path(url2pathname(urlsplit(wheel.url).path)))
    return wheel.sha256 or wheel.url


def _reuse_layers(store: BlobStore, key: str) -> tuple[BuiltLayer, ...] | None:
    """The layers recorded for `key`, if every blob is still in the cache and intact."""
    layers = store.load_record("installed-layers", key, _recorded_layers)
    if layers is None or not all(is_stored(layer, store) for layer in layers):
        return None
    return layers


def _recorded_layers(record: dict[str, Any]) -> tuple[BuiltLayer, ...]:
    return tuple(recorded_layer(item["name"], item) for item in record["layers"])


def _build_and_remember(
    specs: Sequence[LayerSpec], store: BlobStore, key: str, mtime: int
) -> tuple[BuiltLayer, ...]:
    layers = tuple(build_layer(spec, store, mtime=mtime) for spec in specs)
    _remember(store, key, layers)
    return layers


def _remember(store: BlobStore, key: str, layers: Sequence[BuiltLayer]) -> None:
    items = [
        {"name": x.name, "digest": x.digest, "diff_id": x.diff_id, "size": x.size} for x in layers
    ]
    store.write_record("installed-layers", key, {"layers": items})


def _resolve_dependencies(
    project: Project, config: JibConfig, target: TargetProfile, store: BlobStore
) -> tuple[list[ResolvedWheel], set[str]]:
    """The wheels to install for the target, not for this host, and which of them are local.

    Local (path, VCS, project-relative) wheels are returned by URL in the second item.
    """
    python = config.python
    wanted = collect_requirements(
        project.root,
        project.requirements(python.extras),
        lock=python.lock,
        extras=python.extras,
        groups=python.groups,
        target=target,
    )

    # Local dependencies become wheels first; uv then resolves what they depend on.
    built = build_local_wheels(wanted.local, cache_root=store.root, offline=config.offline)
    requirements = [*wanted.index, *(spec for spec, _ in built)]
    resolved = resolve(
        requirements,
        target,
        store=store,
        offline=config.offline,
        no_deps=wanted.locked,
        project_root=project.root,
    )
    if wanted.locked:
        check_locked_hashes(resolved, wanted)
    log.info("Resolved %d dependencies for %s", len(resolved), target.python_platform())
    built_urls = {path.as_uri() for _, path in built}
    local_urls = {
        item.url
        for item in resolved
        if item.url in built_urls or _in_project(item.url, project.root)
    }
    return resolved, local_urls


def _in_project(url: str, root: Path) -> bool:
    """A wheel file inside the project (`pkg @ {root:uri}/wheels/...`) is a local dependency."""
    if not url.startswith("file:"):
        return False
    path = Path(url2pathname(urlsplit(url).path))
    return path.is_relative_to(root.resolve())


def choose_entrypoint(
    project: Project,
    config: JibConfig,
    venv: str,
    package_with_main: Callable[[], str | None],
) -> tuple[str, ...]:
    """The explicit entrypoint, else the project's one script, else `python -m package`.

    `package_with_main` is asked only when neither of the first two is there: it reads the
    wheel's list of files, which a rebuild whose layers are all reused need not open.
    """
    container = config.container
    if container.entrypoint:
        return container.entrypoint
    scripts = sorted(project.scripts)
    if container.script:
        if container.script not in project.scripts:
            raise ConfigError(
                f"`tool.jib.container.script` = {container.script!r} is not in [project.scripts]",
                hint=f"choose one of: {', '.join(scripts) or 'none (the project has no scripts)'}",
            )
        return (f"{venv}/bin/{container.script}",)
    if len(scripts) == 1:
        return (f"{venv}/bin/{scripts[0]}",)
    if len(scripts) > 1:
        raise ConfigError(
            f"The project has several scripts ({', '.join(scripts)}) and none is chosen",
            hint="set `tool.jib.container.script` to the one the image should run",
        )
    package = package_with_main()
    if package:
        return (f"{venv}/bin/python", "-m", package)
    raise ConfigError(
        f"Cannot tell how to start {project.name}: it has no [project.scripts] and no __main__",
        hint="add a script, a package __main__.py, or set `tool.jib.container.entrypoint`",
    )


def project_metadata(project: Project) -> dict[str, str]:
    """The `org.opencontainers.image.*` facts `[project]` and git give about the image."""
    urls = {
        name.lower().replace(" ", "").replace("-", ""): url for name, url in project.urls.items()
    }
    facts = {
        "title": project.name,
        "version": project.version,
        "description": project.description,
        "licenses": project.license,
        "url": next((urls[key] for key in _HOME_URL_KEYS if key in urls), ""),
        "source": next((urls[key] for key in _SOURCE_URL_KEYS if key in urls), ""),
        "revision": git_revision(project.root) or "",
    }
    return {f"{_OCI_PREFIX}.{key}": value for key, value in facts.items() if value}


_OCI_PREFIX = "org.opencontainers.image"
_HOME_URL_KEYS = ("homepage", "home", "documentation", "url")
_SOURCE_URL_KEYS = ("source", "sourcecode", "repository", "code", "github")


def git_revision(root: Path) -> str | None:
    """The commit `root` is checked out at, or None outside git (or without git).

    The label is part of the image's config, so only the checkout decides it, not who
    builds: a checkout owned by another user (a CI container's) is read, where git would
    refuse it as of dubious ownership (an older git, which takes safe.directory only from
    the global or system config, ignores this `-c` and still refuses), and `GIT_DIR` and the
    like cannot point elsewhere; `GIT_CEILING_DIRECTORIES` may still stop the search for the
    checkout. Reading HEAD runs none of the repository's commands.
    """
    command = [
        "git",
        "-c",
        "safe.directory=*",
        "-C",
        str(root),
        "rev-parse",
        "-q",
        "--verify",
        "HEAD",
    ]
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") or key == "GIT_CEILING_DIRECTORIES"
    }
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            env=environment,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = completed.stdout.strip()
    return revision if completed.returncode == 0 and revision else None


def assemble_image(
    base: BaseImage,
    app: AppLayers,
    config: JibConfig,
    environment: dict[str, str],
    *,
    image_format: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Image:
    """Put base and app layers under one config and manifest, in the chosen format.

    `metadata` (see `project_metadata`) becomes config labels and, for OCI, manifest
    annotations; the user's `labels` and `annotations` win over it.
    """
    image_format = image_format or config.container.format or base.manifest.format
    media = _MEDIA[image_format]

    # Base layers pass through untouched; only their media type follows the format.
    base_diff_ids = list((base.config.get("rootfs") or {}).get("diff_ids") or [])
    if len(base_diff_ids) != len(base.manifest.layers):
        raise BuildError(
            f"Base image {base.reference} has {len(base.manifest.layers)} layers but its config "
            f"lists {len(base_diff_ids)} diff_ids",
            hint="the base image is malformed; choose another",
        )
    layers = [
        ImageLayer(_convert_layer(desc, image_format), diff_id, "base")
        for desc, diff_id in zip(base.manifest.layers, base_diff_ids, strict=True)
    ]
    layers += [
        ImageLayer(Descriptor(media["layer"], layer.digest, layer.size), layer.diff_id, layer.name)
        for layer in app.layers
    ]

    # Config, then manifest; these exact bytes are hashed and pushed.
    container = config.container
    settings = ContainerSettings(
        entrypoint=app.entrypoint,
        args=container.args,
        environment=environment,
        labels={**(metadata or {}), **container.labels},
        ports=container.ports,
        volumes=container.volumes,
        user=container.user,
        working_directory=container.working_directory,
        created=container.creation_time,
    )
    base_runtime = dict(base.config)
    base_runtime.setdefault("rootfs", {"type": "layers", "diff_ids": base_diff_ids})
    config_bytes = build_image_config(
        base_runtime,
        settings=settings,
        diff_ids=[layer.diff_id for layer in app.layers],
        layer_names=[layer.name for layer in app.layers],
    )
    config_desc = Descriptor(media["config"], sha256_digest(config_bytes), len(config_bytes))
    annotations = None
    if image_format == "oci":
        annotations = {
            **(metadata or {}),
            f"{_OCI_PREFIX}.base.name": str(base.reference.with_digest("")).rstrip("@"),
            f"{_OCI_PREFIX}.base.digest": base.manifest_digest,
            **container.annotations,
        }
    manifest = Manifest(
        media["manifest"], config_desc, tuple(layer.descriptor for layer in layers), annotations
    )
    return Image(
        platform=base.platform,
        manifest_media_type=manifest.media_type,
        manifest_bytes=manifest.to_bytes(),
        config=config_desc,
        config_bytes=config_bytes,
        layers=tuple(layers),
    )


def assemble_index(
    images: Sequence[Image], *, image_format: str, annotations: Mapping[str, str] | None = None
) -> ImageIndex:
    """An OCI index (or Docker manifest list) over one image per platform, in their order."""
    media_type = MediaType.OCI_INDEX if image_format == "oci" else MediaType.DOCKER_LIST
    manifests = [
        Descriptor(
            image.manifest_media_type,
            image.digest,
            len(image.manifest_bytes),
            platform=image.platform.to_json(),
        ).to_json()
        for image in images
    ]
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    }
    # Docker manifest lists have no annotations.
    if image_format == "oci" and annotations:
        document["annotations"] = dict(annotations)
    return ImageIndex(media_type, serialize(document), tuple(images))


_MEDIA = {
    "oci": {
        "manifest": MediaType.OCI_MANIFEST,
        "config": MediaType.OCI_CONFIG,
        "layer": MediaType.OCI_LAYER_GZIP,
    },
    "docker": {
        "manifest": MediaType.DOCKER_MANIFEST,
        "config": MediaType.DOCKER_CONFIG,
        "layer": MediaType.DOCKER_LAYER_GZIP,
    },
}
_LAYER_CONVERSIONS = {
    ("docker", MediaType.OCI_LAYER_GZIP): MediaType.DOCKER_LAYER_GZIP,
    ("oci", MediaType.DOCKER_LAYER_GZIP): MediaType.OCI_LAYER_GZIP,
}


def _convert_layer(descriptor: Descriptor, image_format: str) -> Descriptor:
    media_type = _LAYER_CONVERSIONS.get((image_format, descriptor.media_type))
    if media_type is None:
        if image_format == "docker" and ".oci." in descriptor.media_type:
            raise ConfigError(
                f"Base layer {descriptor.digest} is {descriptor.media_type}, which a Docker "
                "manifest cannot hold",
                hint='set `tool.jib.container.format = "oci"`',
            )
        return descriptor
    return Descriptor(media_type, descriptor.digest, descriptor.size, urls=descriptor.urls)


def image_environment(config: JibConfig, base: BaseImage, venv: str) -> dict[str, str]:
    """PATH with the venv first, VIRTUAL_ENV, PYTHONUNBUFFERED, then the user's variables."""
    base_env = dict(
        item.partition("=")[::2] for item in (base.config.get("config") or {}).get("Env") or []
    )
    base_path = base_env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    environment = {
        "PATH": f"{venv}/bin:{base_path}",
        "VIRTUAL_ENV": venv,
        "PYTHONUNBUFFERED": "1",
    }
    environment.update(config.container.environment)
    return environment
