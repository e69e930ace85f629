"""Push an image: missing blobs first (HEAD, then mount, then upload), then the manifests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hatch_jib import cancel, progress
from hatch_jib.image.descriptor import human_size, short_digest
from hatch_jib.image.image import BuiltImage, ImageIndex, ImageLayer
from hatch_jib.image.reference import Reference
from hatch_jib.registry.client import RegistryClient

__all__ = ["BlobPush", "push_image"]

log = logging.getLogger("hatch_jib")

MAX_CONNECTIONS = 8


@dataclass(frozen=True)
class BlobPush:
    """What happened to one blob: `pushed`, `mounted` or `skipped` (already there)."""

    digest: str
    name: str
    size: int
    outcome: str


def push_image(
    built: BuiltImage,
    *,
    client: RegistryClient,
    target: Reference,
    tags: Sequence[str],
    blob_path: Callable[[str], Path],
    mount_from: str | None = None,
) -> list[BlobPush]:
    """Push `built` to `target` under every tag; return what happened to each layer blob.

    Blobs go first, layers and configs side by side (each once, however many platforms
    share it), then each platform's manifest by digest, then the top manifest or index
    under every tag, so a tag never points at something the registry does not hold.
    """
    layers: dict[str, ImageLayer] = {}
    for image in built.images:
        for layer in image.layers:
            layers.setdefault(layer.descriptor.digest, layer)

    def push_layer(layer: ImageLayer) -> BlobPush:
        source = mount_from if layer.from_base else None
        return _push_blob(
            client, layer.descriptor.digest, layer.descriptor.size, layer.name, blob_path, source
        )

    configs = {image.config.digest: image.config for image in built.images}
    # The first blob that fails, or Ctrl-C, stops the other uploads at their next chunk, or
    # within a moment if one waits on the registry (see `hatch_jib.interruptible`).
    with cancel.CancellingPool(MAX_CONNECTIONS, name="jib-push") as pool:
        # Configs go up beside the layers: only the manifests have to wait for every blob.
        for config in configs.values():
            pool.submit(_push_blob, client, config.digest, config.size, "config", blob_path, None)
        layer_pushes = [pool.submit(push_layer, layer) for layer in layers.values()]
        pool.wait_all()
    results = [pushed.result() for pushed in layer_pushes]

    # Children of an index by digest first; the tags last.
    if isinstance(built, ImageIndex):
        for image in built.images:
            client.put_manifest(image.digest, image.manifest_bytes, image.manifest_media_type)
            log.info("Pushed manifest %s@%s (%s)", target.context, image.digest, image.platform)
    for tag in tags:
        digest = client.put_manifest(tag, built.manifest_bytes, built.manifest_media_type)
        log.info("Pushed manifest %s:%s (%s)", target.context, tag, digest)
    return results


def _push_blob(
    client: RegistryClient,
    digest: str,
    size: int,
    name: str,
    blob_path: Callable[[str], Path],
    mount_from: str | None,
) -> BlobPush:
    def report(state: str) -> None:
        progress.publish(progress.BlobEvent(digest, state, name, size))

    # The config is a blob too, but calling it a layer would mislead.
    what = f"{'Config':<18}" if name == "config" else f"Layer {name:<12}"

    report("checking")
    try:
        if client.blob_exists(digest) is not None:
            log.info("%s %s already in target, skipped", what, short_digest(digest))
            outcome = "skipped"
        elif mount_from and client.mount_blob(digest, mount_from):
            log.info("%s %s mounted from %s", what, short_digest(digest), mount_from)
            outcome = "mounted"
        else:
            report("uploading")
            client.upload_blob(digest, size, blob_path(digest))
            log.info("%s %s pushed (%s)", what, short_digest(digest), human_size(size))
            outcome = "pushed"
    except cancel.Cancelled:
        # Stopped because another blob failed, or Ctrl-C: say which blobs did not go up.
        log.info("%s %s not pushed: the push was stopped", what, short_digest(digest))
        report("cancelled")
        raise
    except BaseException:
        report("failed")
        raise
    report(outcome)
    return BlobPush(digest, name, size, outcome)
