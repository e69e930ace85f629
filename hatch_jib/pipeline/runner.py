"""The runner: wires the steps together, runs independent work in parallel, reports results."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hatch_jib import cancel
from hatch_jib.cache import BlobStore, default_cache_dir
from hatch_jib.config import JibConfig
from hatch_jib.errors import ConfigError
from hatch_jib.image.image import BuiltImage, Image
from hatch_jib.image.reference import DOCKER_HUB
from hatch_jib.outputs.files import write_result_files
from hatch_jib.outputs.registry import push_image
from hatch_jib.pipeline import steps
from hatch_jib.project import Project
from hatch_jib.python.target import PythonOverrides
from hatch_jib.registry.client import RegistryClient
from hatch_jib.registry.transport import TransportOptions

if TYPE_CHECKING:
    from hatch_jib.outputs.docker import DockerDaemon

__all__ = ["OUTPUTS", "BuildPlan", "BuildResult", "LayerReport", "PlatformReport", "run_build"]

log = logging.getLogger("hatch_jib")

OUTPUTS = ("registry", "tar", "oci", "docker")
# The final log line names the most telling output, in Jib's words.
# Outputs that need the base layers' bytes, not just their digests.
_BYTE_OUTPUTS = ("tar", "oci", "docker")
T = TypeVar("T")
_FINAL_VERBS = {
    "registry": "Built and pushed image as",
    "docker": "Built image to Docker daemon as",
    "tar": "Built image tar as",
    "oci": "Built OCI image layout as",
}


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build needs: the project, its validated config and where to write."""

    project: Project
    config: JibConfig
    outputs: tuple[str, ...]
    directory: Path


@dataclass(frozen=True)
class LayerReport:
    name: str
    digest: str
    size: int
    pushed: bool


@dataclass(frozen=True)
class PlatformReport:
    """One platform's image in the result: its manifest digest and config digest."""

    platform: str
    digest: str
    image_id: str


@dataclass(frozen=True)
class BuildResult:
    image: str
    image_digest: str
    image_id: str
    tags: tuple[str, ...]
    pushed: bool
    layers: tuple[LayerReport, ...]
    artifacts: tuple[Path, ...] = field(default=())
    platforms: tuple[PlatformReport, ...] = field(default=())
    outputs: tuple[str, ...] = field(default=())
    # The images themselves, so another output of the same build need not rebuild them.
    built: BuiltImage | None = field(default=None, repr=False, compare=False)


def run_build(plan: BuildPlan, previous: BuildResult | None = None) -> BuildResult:
    """Run the pipeline for `plan`; raise a JibError subclass on any user-facing failure.

    `previous` is the result of an earlier output of the same build (hatch calls one
    target version at a time): its images are reused, and the result files report both.
    """
    config = plan.config
    _check_outputs(plan)
    store = BlobStore(config.cache_dir or default_cache_dir())

    # Find the daemon before any work, so a missing one fails fast and leaves nothing behind.
    daemon: DockerDaemon | None = None
    if "docker" in plan.outputs:
        # The tar, OCI and docker outputs are imported only by the builds that write them.
        from hatch_jib.outputs.docker import find_daemon

        daemon = find_daemon()
    # One set of options for every client, so what one learns about a host the others reuse.
    options = steps.transport_options(config)

    with contextlib.ExitStack() as stack:
        # Jib's first step: log in to the target, so refused credentials fail before the build.
        push_client = None
        if "registry" in plan.outputs:
            push_client = stack.enter_context(_connect_target(plan, options))
            push_client.authenticate()

        if previous is not None and previous.built is not None:
            built = previous.built
            log.info(
                "Reusing the image built for %s", ", ".join(previous.outputs) or "the last output"
            )
        else:
            built = _build_images(plan, store, options)
        blobs = _BaseBlobs(store, config, options)
        stack.callback(blobs.close)
        return _write_outputs(plan, built, blobs, daemon, previous, push_client)


def _check_outputs(plan: BuildPlan) -> None:
    unknown = [name for name in plan.outputs if name not in OUTPUTS]
    if unknown:
        raise ConfigError(
            f"Unknown output {unknown[0]!r}", hint=f"use one of: {', '.join(OUTPUTS)}"
        )
    if "registry" in plan.outputs and plan.config.offline:
        raise ConfigError(
            "An offline build cannot push to a registry",
            hint="build the tar output (`hatch build -t jib:tar` or --tar), or turn off `offline`",
        )
    if "registry" in plan.outputs and plan.config.to.image is None:
        raise ConfigError(
            "The registry output needs `tool.jib.to.image`",
            hint="set it in pyproject.toml or JIB_TO_IMAGE, or build the tar output instead",
        )
    platforms = [platform.normalized() for platform in plan.config.from_.platforms]
    repeated = sorted({str(p) for p in platforms if platforms.count(p) > 1})
    if repeated:
        raise ConfigError(
            f"`tool.jib.from.platforms` lists {repeated[0]} more than once",
            hint="list each platform once (linux/arm64 and linux/arm64/v8 are the same)",
        )


def _build_images(plan: BuildPlan, store: BlobStore, options: TransportOptions) -> BuiltImage:
    """One image per platform; several become an index in the format of the first.

    The project's wheel needs nothing from the base, so it is built while the bases are
    pulled; outputs that need the base layers' bytes fetch them while our layers are built.
    """
    config = plan.config
    base_ref = config.from_.image
    metadata = steps.project_metadata(plan.project)
    steps.warn_unless_stock_deflate()
    steps.note_source_date_epoch(config)

    # Exit order matters: the pool's threads finish before the client and scratch go away.
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(store.scratch_directory()))
        base_client = stack.enter_context(
            steps.connect(
                base_ref,
                auth=config.from_.auth,
                options=options,
                cred_helper=config.from_.cred_helper,
            )
        )
        pool = stack.enter_context(cancel.CancellingPool(4, name="jib-step"))
        wheel = pool.submit(steps.build_project_wheel, plan.project, scratch / "wheel", store)
        pulls = [
            pool.submit(
                functools.partial(
                    steps.pull_base_image,
                    offline=config.offline,
                    warn_unpinned=position == 0,
                ),
                base_ref,
                base_client,
                store,
                platform,
            )
            for position, platform in enumerate(config.from_.platforms)
        ]
        bases = [pull.result() for pull in pulls]
        detections = [threading.Event() for _ in bases]
        if any(output in _BYTE_OUTPUTS for output in plan.outputs):
            for base, detected in zip(bases, detections, strict=True):
                pool.submit(_prefetch_base_layers, base, store, detected)

        # Platforms build side by side; a layer that comes out the same for each (code,
        # resources) is written once, as the layer writer serializes equal selectors. The
        # first builds in this thread, so Ctrl-C or SIGTERM stops it at once: a pool thread
        # cannot be interrupted, only waited for.
        image_format = config.container.format or bases[0].manifest.format
        build = functools.partial(
            _build_platform, plan, store=store, image_format=image_format, metadata=metadata
        )
        others = [
            pool.submit(build, base, detected, wheel)
            for base, detected in zip(bases[1:], detections[1:], strict=True)
        ]
        first = build(bases[0], detections[0], wheel)
        images = []
        for image, app in [first, *(build.result() for build in others)]:
            steps.report_layers(app)
            images.append(image)
        pool.wait_all()
    if len(images) == 1:
        return images[0]
    return steps.assemble_index(images, image_format=image_format, annotations=metadata)


def _prefetch_base_layers(
    base: steps.BaseImage, store: BlobStore, detected: threading.Event
) -> None:
    """A byte output's base layers, downloaded while the application layers build. Their
    diff_ids are checked once target detection is done: a detection that read the layers
    checked them from that read, so no layer is unpacked twice."""
    steps.obtain_base_layers(base, store)
    cancel.wait(detected)
    steps.check_base_layers(base, store)


def _build_platform(
    plan: BuildPlan,
    base: steps.BaseImage,
    detected: threading.Event,
    wheel: Future[steps.ProjectWheel],
    *,
    store: BlobStore,
    image_format: str,
    metadata: dict[str, str],
) -> tuple[Image, steps.AppLayers]:
    config = plan.config
    python = config.python
    overrides = PythonOverrides(
        version=python.version,
        implementation=python.implementation,
        libc=python.libc,
        platform_tags=python.platform_tags,
    )
    try:
        target = steps.detect_target_profile(base, store, overrides)
    finally:
        detected.set()
    app = steps.build_application_layers(
        plan.project, config, target, store, wheel.result(), base_layers=len(base.manifest.layers)
    )
    venv = f"{config.container.app_root.rstrip('/')}/.venv"
    environment = steps.image_environment(config, base, venv)
    image = steps.assemble_image(
        base, app, config, environment, image_format=image_format, metadata=metadata
    )
    store.put_bytes(image.config_bytes, expected=image.config.digest)
    return image, app


class _BaseBlobs:
    """Blob files for the outputs: from the cache, else fetched from the base registry.

    The base registry is only contacted when an output needs a blob the cache lacks
    (a registry target that already holds, or can mount, a base layer needs none).
    """

    def __init__(self, store: BlobStore, config: JibConfig, options: TransportOptions) -> None:
        self.store = store
        self._config = config
        self._options = options
        self._client: RegistryClient | None = None
        self._lock = threading.Lock()

    def path(self, digest: str) -> Path:
        cached = self.store.verified_path(digest)
        if cached is not None:
            return cached
        if self._config.offline:
            raise steps.offline_blob_missing(self._config.from_.image, digest, self.store)
        return self._base_client().fetch_blob(digest, self.store)

    def _base_client(self) -> RegistryClient:
        with self._lock:
            if self._client is None:
                base = self._config.from_
                self._client = steps.connect(
                    base.image,
                    auth=base.auth,
                    options=self._options,
                    cred_helper=base.cred_helper,
                )
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _write_outputs(
    plan: BuildPlan,
    built: BuiltImage,
    blobs: _BaseBlobs,
    daemon: DockerDaemon | None,
    previous: BuildResult | None,
    push_client: RegistryClient | None,
) -> BuildResult:
    config, project = plan.config, plan.project
    name = _image_name(plan)
    tags = config.to.tags
    repo_tags = [f"{name}:{tag}" for tag in tags]
    pushed = {layer.digest for layer in previous.layers if layer.pushed} if previous else set()
    artifacts: list[Path] = []
    stem = f"{project.name}-{project.version}"
    mtime = config.container.files_modification_time

    if push_client is not None:
        pushed |= _push(plan, built, blobs, push_client)
    if "tar" in plan.outputs:
        from hatch_jib.outputs.tar import write_image_tar

        tar_path = plan.directory / f"{stem}.image.tar"
        write_image_tar(built, tar_path, repo_tags=repo_tags, blob_path=blobs.path, mtime=mtime)
        log.info("Wrote image tar %s", tar_path)
        artifacts.append(tar_path)
    if "oci" in plan.outputs:
        from hatch_jib.outputs.oci import write_oci_layout

        layout = plan.directory / f"{stem}.oci"
        write_oci_layout(built, layout, repo_tags=repo_tags, blob_path=blobs.path)
        log.info("Wrote OCI image layout %s", layout)
        artifacts.append(layout)
    if daemon is not None:
        from hatch_jib.outputs.docker import load_image

        load_image(
            built,
            daemon,
            repo_tags=repo_tags,
            blob_path=blobs.path,
            mtime=mtime,
            scratch=blobs.store.scratch_directory,
        )

    outputs = tuple(dict.fromkeys((*(previous.outputs if previous else ()), *plan.outputs)))
    recorded_push = False
    if "registry" not in plan.outputs:
        # This run's own push report is authoritative; without one, keep the last one's.
        recorded_pushes, recorded_push = _recorded_pushes(plan.directory, name, built.digest)
        pushed |= recorded_pushes
    result = _result(name, tags, built, pushed, outputs)
    if recorded_push and not result.pushed:
        result = BuildResult(**{**result.__dict__, "pushed": True})
    artifacts.insert(0, write_result_files(plan.directory, _summary(result)))
    final = next(output for output in _FINAL_VERBS if output in outputs)
    log.info("%s %s:%s@%s", _FINAL_VERBS[final], name, tags[0] if tags else "latest", built.digest)
    return BuildResult(**{**result.__dict__, "artifacts": tuple(artifacts)})


def _recorded_pushes(directory: Path, name: str, digest: str) -> tuple[set[str], bool]:
    """What the result files already say was pushed for this very image.

    `hatch build -t jib:registry -t jib:tar` runs each target in its own process; the
    second must not report the image as unpushed just because it only wrote a tar.
    """
    try:
        earlier = json.loads((directory / "jib-image.json").read_text())
        if earlier.get("image") != name or earlier.get("imageDigest") != digest:
            return set(), False
        layers = {str(item["digest"]) for item in earlier.get("layers", []) if item.get("pushed")}
        return layers, bool(earlier.get("imagePushed"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set(), False


def _mount_source(plan: BuildPlan) -> str | None:
    """The base's repository when it lives on the target registry, so layers can be mounted."""
    base, target = plan.config.from_.image, plan.config.to.image
    return base.repository if target and base.registry == target.registry else None


def _connect_target(plan: BuildPlan, options: TransportOptions) -> RegistryClient:
    config = plan.config
    target = config.to.image
    assert target is not None  # _check_outputs made sure
    mount_from = _mount_source(plan)
    return steps.connect(
        target,
        auth=config.to.auth,
        options=options,
        cred_helper=config.to.cred_helper,
        push=True,
        mount_from=[mount_from] if mount_from else [],
    )


def _push(
    plan: BuildPlan, built: BuiltImage, blobs: _BaseBlobs, client: RegistryClient
) -> set[str]:
    """Push to `to.image`; return the digests of the blobs that were uploaded or mounted."""
    target = plan.config.to.image
    assert target is not None  # _check_outputs made sure
    pushes = push_image(
        built,
        client=client,
        target=target,
        tags=plan.config.to.tags,
        blob_path=blobs.path,
        mount_from=_mount_source(plan),
    )
    return {item.digest for item in pushes if item.outcome != "skipped"}


def _image_name(plan: BuildPlan) -> str:
    """The image's name without tag: `to.image`, else the project name."""
    target = plan.config.to.image
    if target is None:
        return plan.project.name.lower().replace("_", "-")
    if target.registry == DOCKER_HUB:
        # The name Docker itself shows, not the API host.
        return f"docker.io/{target.repository}"
    return target.context


def _result(
    name: str, tags: tuple[str, ...], built: BuiltImage, pushed: set[str], outputs: tuple[str, ...]
) -> BuildResult:
    layers: dict[str, LayerReport] = {}
    for image in built.images:
        for layer in image.layers:
            descriptor = layer.descriptor
            layers.setdefault(
                descriptor.digest,
                LayerReport(
                    layer.name, descriptor.digest, descriptor.size, descriptor.digest in pushed
                ),
            )
    return BuildResult(
        image=name,
        image_digest=built.digest,
        image_id=built.image_id,
        tags=tags,
        pushed="registry" in outputs,
        layers=tuple(layers.values()),
        platforms=tuple(
            PlatformReport(str(image.platform), image.digest, image.image_id)
            for image in built.images
        ),
        outputs=outputs,
        built=built,
    )


def _summary(result: BuildResult) -> dict[str, Any]:
    """The content of jib-image.json."""
    return {
        "image": result.image,
        "imageDigest": result.image_digest,
        "imageId": result.image_id,
        "tags": list(result.tags),
        "platforms": [item.platform for item in result.platforms],
        "images": [
            {"platform": item.platform, "digest": item.digest, "imageId": item.image_id}
            for item in result.platforms
        ],
        "imagePushed": result.pushed,
        "layers": [
            {"name": item.name, "digest": item.digest, "size": item.size, "pushed": item.pushed}
            for item in result.layers
        ],
    }
