"""The image configuration blob: the base's config with our layers, env and entrypoint."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hatch_jib.image.manifest import serialize

__all__ = ["DEFAULT_PATH", "ContainerSettings", "build_image_config", "merge_env"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ContainerSettings:
    """What our image sets on top of the base config."""

    entrypoint: tuple[str, ...]
    args: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    user: str | None = None
    working_directory: str = "/app"
    created: str = "1970-01-01T00:00:00Z"


def merge_env(base_env: Sequence[str], additions: Mapping[str, str]) -> list[str]:
    """Overlay `additions` on a `KEY=value` list, keeping the base's order for old keys."""
    merged: dict[str, str] = {}
    for item in base_env:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.update(additions)
    return [f"{key}={value}" for key, value in merged.items()]


def build_image_config(
    base: Mapping[str, Any],
    *,
    settings: ContainerSettings,
    diff_ids: Sequence[str],
    layer_names: Sequence[str],
) -> bytes:
    """Return the serialized config for the base plus our layers (`diff_ids`, bottom to top)."""
    config = copy.deepcopy(dict(base))
    runtime = dict(config.get("config") or {})

    # Our entrypoint replaces the base's, and with it the base's default arguments.
    runtime["Entrypoint"] = list(settings.entrypoint)
    runtime["Cmd"] = list(settings.args) if settings.args is not None else None
    runtime["WorkingDir"] = settings.working_directory
    runtime["Env"] = merge_env(runtime.get("Env") or [], settings.environment)
    if settings.user is not None:
        runtime["User"] = settings.user
    if settings.labels:
        runtime["Labels"] = {**(runtime.get("Labels") or {}), **settings.labels}
    if settings.ports:
        exposed = dict(runtime.get("ExposedPorts") or {})
        exposed.update({port: {} for port in settings.ports})
        runtime["ExposedPorts"] = dict(sorted(exposed.items()))
    if settings.volumes:
        volumes = dict(runtime.get("Volumes") or {})
        volumes.update({volume: {} for volume in settings.volumes})
        runtime["Volumes"] = dict(sorted(volumes.items()))
    config["config"] = {key: value for key, value in runtime.items() if value is not None}

    # Append our layers to the rootfs and the history, one history entry per layer.
    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + list(diff_ids)
    config["rootfs"] = rootfs
    history = list(config.get("history") or [])
    for name in layer_names:
        history.append(
            {"created": settings.created, "created_by": f"hatch-jib: {name}", "comment": name}
        )
    config["history"] = history
    config["created"] = settings.created
    config.pop("container", None)
    config.pop("container_config", None)
    return serialize(config)
