"""The measured child modes of `run.py`: our push and our layer writer, importing only
what they use, so that the time of the harness's own imports is not counted as ours.

    python benchmarks/child.py push-layout LAYOUT REGISTRY/REPOSITORY
    python benchmarks/child.py write-layer TREE STORE
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# `write-layer` prints this and the seconds the scan and the layer took in the process.
IN_PROCESS = "in-process seconds:"


def push_layout(layout: Path, target: str) -> None:
    """Push an OCI layout's image with our push code alone, as skopeo does."""
    from hatch_jib.image.descriptor import Descriptor
    from hatch_jib.image.image import Image, ImageLayer
    from hatch_jib.image.manifest import parse_manifest
    from hatch_jib.image.platform import Platform
    from hatch_jib.image.reference import parse_reference
    from hatch_jib.outputs.registry import push_image
    from hatch_jib.registry import RegistryClient, TransportOptions

    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")

    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    raw = blob(entry["digest"]).read_bytes()
    manifest = parse_manifest(raw, entry["mediaType"])
    config = Descriptor(manifest.config.media_type, manifest.config.digest, manifest.config.size)
    image = Image(
        platform=Platform(),
        manifest_media_type=entry["mediaType"],
        manifest_bytes=raw,
        config=config,
        config_bytes=blob(config.digest).read_bytes(),
        layers=tuple(ImageLayer(layer, "", "layer") for layer in manifest.layers),
    )
    reference = parse_reference(target)
    with RegistryClient(
        reference.registry,
        reference.repository,
        credential=None,
        options=TransportOptions(),
        push=True,
    ) as client:
        push_image(image, client=client, target=reference, tags=["1.0"], blob_path=blob)


def write_layer(tree: Path, store_root: Path) -> None:
    """Write `tree` as one layer with the production writer."""
    from hatch_jib.cache import BlobStore
    from hatch_jib.image.layer import LayerEntry, LayerSpec, build_layer

    # Timed from here: what writing a layer costs inside a running build, where the
    # interpreter has started and imported hatch-jib already.
    start = time.perf_counter()
    # File types come from the directory scan and each file's mode from the writer's own
    # fstat when it reads the file (an entry without a mode), so the scan makes no stat
    # call; the order does not matter.
    entries = []
    prefix = len(str(tree)) + 1
    pending = [str(tree)]
    while pending:
        with os.scandir(pending.pop()) as scan:
            for item in scan:
                name = item.path[prefix:]
                if item.is_symlink():
                    entries.append(LayerEntry.symlink(name, os.readlink(item.path)))
                elif item.is_dir():
                    entries.append(LayerEntry.directory(name))
                    pending.append(item.path)
                else:
                    entries.append(LayerEntry.file(name, item.path))
    build_layer(LayerSpec("bench", tuple(entries)), BlobStore(store_root))
    print(f"{IN_PROCESS} {time.perf_counter() - start:.6f}")


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    mode, first, second = sys.argv[1:4]
    if mode == "push-layout":
        push_layout(Path(first), second)
    elif mode == "write-layer":
        write_layer(Path(first), Path(second))
    else:
        raise SystemExit(f"unknown mode {mode!r}: push-layout or write-layer")


if __name__ == "__main__":
    main()
