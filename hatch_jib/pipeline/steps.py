"""The steps of a build, one function each; the runner decides what runs when."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from hatch_jib.cache import BlobStore
from hatch_jib.config import Auth, JibConfig
from hatch_jib.errors import BuildError, ConfigError
from hatch_jib.image.config import ContainerSettings, build_image_config
from hatch_jib.image.descriptor import Descriptor, MediaType, sha256_digest
from hatch_jib.image.image import Image, ImageIndex, ImageLayer
from hatch_jib.image.layer import BuiltLayer, build_layer
from hatch_jib.image.manifest import Manifest, parse_index, parse_manifest, serialize
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import Reference
from hatch_jib.project import Project, build_wheel, main_module
from hatch_jib.python.bytecode import compile_dists, should_compile
from hatch_jib.python.install import InstalledDist, create_venv, install_wheel
from hatch_jib.python.layout import MAX_LAYERS, extra_directory_layers, split_layers
from hatch_jib.python.local import build_local_wheels
from hatch_jib.python.lock import check_locked_hashes, collect_requirements
from hatch_jib.python.resolve import download, resolve
from hatch_jib.python.target import PythonOverrides, TargetProfile, detect_target
from hatch_jib.registry.client import RegistryClient
from hatch_jib.registry.credentials import Credential, find_credential
from hatch_jib.registry.transport import TransportOptions

__all__ = [
    "AppLayers",
    "BaseImage",
    "assemble_image",
    "assemble_index",
    "build_application_layers",
    "choose_entrypoint",
    "connect",
    "detect_target_profile",
    "git_revision",
    "image_environment",
    "obtain_base_layers",
    "project_metadata",
    "pull_base_image",
    "transport_options",
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
    credential = find_credential(reference.registry, explicit=explicit, cred_helper=cred_helper)
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


def pull_base_image(
    reference: Reference,
    client: RegistryClient,
    store: BlobStore,
    platform: Platform,
    *,
    warn_unpinned: bool = True,
) -> BaseImage:
    """Pull the base's manifest (through its index if it has one) and its config."""
    if warn_unpinned and not reference.digest:
        log.warning(
            "Base image %s is not pinned by digest: builds may change when the tag moves", reference
        )
    pulled = client.get_manifest(reference.identifier)
    media_type = pulled.media_type or _sniff_media_type(pulled.data)

    # Pick the platform from an index or manifest list.
    if media_type in MediaType.INDEXES:
        index = parse_index(pulled.data, media_type)
        chosen = index.find(platform)
        if chosen is None:
            available = ", ".join(str(p) for p in index.platforms()) or "none"
            raise BuildError(
                f"Base image {reference} has no {platform} image (it has: {available})",
                hint="set `tool.jib.from.platforms` to one it has, or choose another base",
            )
        pulled = client.get_manifest(chosen.digest)
        media_type = pulled.media_type or _sniff_media_type(pulled.data)
    if media_type not in MediaType.MANIFESTS:
        raise BuildError(
            f"Base image {reference} has an unsupported manifest type {media_type!r}",
            hint="use a base image with a Docker v2.2 or OCI manifest (schema 1 is obsolete)",
        )
    manifest = parse_manifest(pulled.data, media_type)

    # The config says the platform for single-platform bases; check it matches.
    client.fetch_blob(manifest.config.digest, store)
    config = json.loads(store.read_bytes(manifest.config.digest))
    found = Platform(
        config.get("os", "linux"), config.get("architecture", "amd64"), config.get("variant")
    )
    if not found.matches(platform):
        raise BuildError(
            f"Base image {reference} is for {found}, not {platform}",
            hint=f'set `tool.jib.from.platforms` to ["{found}"] or choose a {platform} base',
        )
    log.info("Base image %s@%s (%s)", reference.context, pulled.digest, found)
    return BaseImage(reference, client, manifest, pulled.digest, config, found)


def _sniff_media_type(raw: bytes) -> str:
    data = json.loads(raw)
    if "manifests" in data:
        return MediaType.OCI_INDEX
    return MediaType.OCI_MANIFEST


def obtain_base_layers(base: BaseImage, store: BlobStore) -> list[Path]:
    """Download every base layer into the cache (skipping cached ones), in parallel."""
    digests = [layer.digest for layer in base.manifest.layers]
    missing = [digest for digest in digests if store.verified_path(digest) is None]
    if missing:
        log.info("Downloading %d of %d base layers", len(missing), len(digests))
    with ThreadPoolExecutor(MAX_CONNECTIONS) as pool:
        list(pool.map(lambda digest: base.client.fetch_blob(digest, store), missing))
    return [store.path(digest) for digest in digests]


def detect_target_profile(
    base: BaseImage, store: BlobStore, overrides: PythonOverrides
) -> TargetProfile:
    """The base's Python and platform, cached by base manifest digest."""
    key = json.dumps([base.manifest_digest, repr(overrides)])
    record = store.read_record("targets", key)
    if record:
        target = TargetProfile(**record)
    else:
        # TODO(#4): read PYTHON_VERSION-style config first and skip layer downloads when enough.
        layers = obtain_base_layers(base, store)
        target = detect_target(
            base.config,
            layers,
            architecture=base.platform.architecture,
            variant=base.platform.variant,
            overrides=overrides,
        )
        store.write_record("targets", key, target.__dict__)
        return target
    log.info("Target: %s (cached)", target.describe())
    return target


def build_application_layers(
    project: Project,
    config: JibConfig,
    target: TargetProfile,
    store: BlobStore,
    *,
    base_layers: int = 0,
) -> AppLayers:
    """Build the wheel, resolve and install for the target, and write our layers."""
    venv = f"{config.container.app_root.rstrip('/')}/.venv"
    python = config.python
    with tempfile.TemporaryDirectory(prefix="hatch-jib-") as scratch:
        scratch_path = Path(scratch)
        wheel = build_wheel(project, scratch_path / "wheel")

        # Install into a staging tree that mirrors the image.
        root = scratch_path / "root"
        root.mkdir()
        venv_entries = create_venv(root, target, venv=venv)
        index, local = _install_dependencies(project, config, target, store, root, venv)
        own = install_wheel(wheel, filename=wheel.name, target=target, root=root, venv=venv)

        # Bytecode next to each source, in the same layer, when the target can load it.
        if should_compile(python.bytecode, target):
            index, local, [own] = (compile_dists(root, dists) for dists in (index, local, [own]))

        # Split into layers; extra directories go on top, one layer each.
        extras = extra_directory_layers(config.extra_directories)
        specs = split_layers(
            root,
            dependencies=index,
            local_dependencies=local,
            project=own,
            venv_entries=venv_entries,
            own_layer_size=python.layer_threshold,
            spare_layers=MAX_LAYERS - base_layers - len(extras),
        )
        mtime = config.container.files_modification_time
        layers = tuple(build_layer(spec, store, mtime=mtime) for spec in [*specs, *extras])
        entrypoint = choose_entrypoint(project, config, venv, main_module(wheel))

    for layer in layers:
        state = "reused" if layer.reused else "built"
        log.info(
            "Layer %-12s %s %s (%s)", layer.name, state, _short(layer.digest), _size(layer.size)
        )
    return AppLayers(layers, entrypoint, target)


def _install_dependencies(
    project: Project,
    config: JibConfig,
    target: TargetProfile,
    store: BlobStore,
    root: Path,
    venv: str,
) -> tuple[list[InstalledDist], list[InstalledDist]]:
    """Resolve, fetch and install the dependencies for the target, not for this host.

    Returns the index dependencies and the local (path, VCS) ones, installed under `root`.
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
    paths = download(resolved, store, offline=config.offline)
    log.info("Resolved %d dependencies for %s", len(resolved), target.python_platform())

    # Installed in resolution order, which is by name: the same tree on every machine.
    local_urls = {path.as_uri() for _, path in built}
    index: list[InstalledDist] = []
    local: list[InstalledDist] = []
    for item, path in zip(resolved, paths, strict=True):
        dist = install_wheel(path, filename=item.filename, target=target, root=root, venv=venv)
        is_local = item.url in local_urls or _in_project(item.url, project.root)
        (local if is_local else index).append(dist)
    return index, local


def _in_project(url: str, root: Path) -> bool:
    """A wheel file inside the project (`pkg @ {root:uri}/wheels/...`) is a local dependency."""
    if not url.startswith("file:"):
        return False
    path = Path(url2pathname(urlsplit(url).path))
    return path.is_relative_to(root.resolve())


def choose_entrypoint(
    project: Project, config: JibConfig, venv: str, package_with_main: str | None
) -> tuple[str, ...]:
    """The explicit entrypoint, else the project's one script, else `python -m package`."""
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
    if package_with_main:
        return (f"{venv}/bin/python", "-m", package_with_main)
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
    """The commit `root` is checked out at, or None outside git (or without git)."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "--quiet", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
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


def _short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


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
