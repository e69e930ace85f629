"""The runner: wires the steps together, runs independent work in parallel, reports results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hatch_jib.cache import BlobStore, default_cache_dir
from hatch_jib.config import JibConfig
from hatch_jib.errors import ConfigError
from hatch_jib.image.image import Image
from hatch_jib.outputs.files import write_result_files
from hatch_jib.outputs.registry import push_image
from hatch_jib.outputs.tar import write_image_tar
from hatch_jib.pipeline import steps
from hatch_jib.project import Project
from hatch_jib.python.target import PythonOverrides

__all__ = ["OUTPUTS", "BuildPlan", "BuildResult", "LayerReport", "run_build"]

log = logging.getLogger("hatch_jib")

OUTPUTS = ("registry", "tar")


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
class BuildResult:
    image: str
    image_digest: str
    image_id: str
    tags: tuple[str, ...]
    pushed: bool
    layers: tuple[LayerReport, ...]
    artifacts: tuple[Path, ...] = field(default=())


def run_build(plan: BuildPlan) -> BuildResult:
    """Run the pipeline for `plan`; raise a JibError subclass on any user-facing failure."""
    config = plan.config
    _check_outputs(plan)
    store = BlobStore(config.cache_dir or default_cache_dir())
    options = steps.transport_options(config)
    platform = config.from_.platforms[0]
    if len(config.from_.platforms) > 1:
        # TODO(#6): build one image per platform and push an index.
        raise ConfigError(
            "Several `tool.jib.from.platforms` are not supported yet",
            hint="list a single platform",
        )

    # Pull the base and build the app layers; the wheel build needs the target first.
    base_ref = config.from_.image
    with steps.connect(
        base_ref, auth=config.from_.auth, options=options, cred_helper=config.from_.cred_helper
    ) as base_client:
        base = steps.pull_base_image(base_ref, base_client, store, platform)
        python = config.python
        overrides = PythonOverrides(
            version=python.version,
            implementation=python.implementation,
            libc=python.libc,
            platform_tags=python.platform_tags,
        )
        target = steps.detect_target_profile(base, store, overrides)
        app = steps.build_application_layers(
            plan.project, config, target, store, base_layers=len(base.manifest.layers)
        )
        venv = f"{config.container.app_root.rstrip('/')}/.venv"
        environment = steps.image_environment(config, base, venv)
        image = steps.assemble_image(base, app, config, environment)
        store.put_bytes(image.config_bytes, expected=image.config.digest)

        def blob_path(digest: str) -> Path:
            path = store.verified_path(digest)
            return path if path is not None else base.client.fetch_blob(digest, store)

        return _write_outputs(plan, image, store, base, blob_path)


def _check_outputs(plan: BuildPlan) -> None:
    unknown = [name for name in plan.outputs if name not in OUTPUTS]
    if unknown:
        # TODO(#6): the oci and docker outputs.
        raise ConfigError(
            f"Output {unknown[0]!r} is not supported yet", hint=f"use one of: {', '.join(OUTPUTS)}"
        )
    if "registry" in plan.outputs and plan.config.to.image is None:
        raise ConfigError(
            "The registry output needs `tool.jib.to.image`",
            hint="set it in pyproject.toml or JIB_TO_IMAGE, or build the tar output instead",
        )


def _write_outputs(
    plan: BuildPlan, image: Image, store: BlobStore, base: steps.BaseImage, blob_path
) -> BuildResult:
    config, project = plan.config, plan.project
    target = config.to.image
    tags = config.to.tags
    name = target.context if target else project.name.lower().replace("_", "-")
    pushed_digests: set[str] = set()
    artifacts: list[Path] = []

    if "registry" in plan.outputs and target is not None:
        mount_from = (
            base.reference.repository if base.reference.registry == target.registry else None
        )
        with steps.connect(
            target,
            auth=config.to.auth,
            options=steps.transport_options(config),
            cred_helper=config.to.cred_helper,
            push=True,
            mount_from=[mount_from] if mount_from else [],
        ) as client:
            pushes = push_image(
                image,
                client=client,
                target=target,
                tags=tags,
                blob_path=blob_path,
                mount_from=mount_from,
            )
        pushed_digests = {item.digest for item in pushes if item.outcome != "skipped"}
    if "tar" in plan.outputs:
        tar_path = plan.directory / f"{project.name}-{project.version}.image.tar"
        write_image_tar(
            image,
            tar_path,
            repo_tags=[f"{name}:{tag}" for tag in tags],
            blob_path=blob_path,
            mtime=config.container.files_modification_time,
        )
        log.info("Wrote image tar %s", tar_path)
        artifacts.append(tar_path)

    layers = tuple(
        LayerReport(
            layer.name,
            layer.descriptor.digest,
            layer.descriptor.size,
            layer.descriptor.digest in pushed_digests,
        )
        for layer in image.layers
    )
    result = BuildResult(
        image=name,
        image_digest=image.digest,
        image_id=image.image_id,
        tags=tags,
        pushed="registry" in plan.outputs,
        layers=layers,
    )
    summary = {
        "image": name,
        "imageDigest": result.image_digest,
        "imageId": result.image_id,
        "tags": list(tags),
        "platforms": [str(image.platform)],
        "imagePushed": result.pushed,
        "layers": [
            {"name": item.name, "digest": item.digest, "size": item.size, "pushed": item.pushed}
            for item in layers
        ],
    }
    artifacts.insert(0, write_result_files(plan.directory, summary))
    verb = "Built and pushed image as" if result.pushed else "Built image tar as"
    log.info("%s %s:%s@%s", verb, name, tags[0] if tags else "latest", image.digest)
    return BuildResult(**{**result.__dict__, "artifacts": tuple(artifacts)})
