"""The runnable Debian bookworm + python3 base image for tests: build it once, push it anywhere.

The image itself is made by ``fixtures/base_image.py`` (debootstrap, no Docker) and cached
across sessions; see that script for the cache location and key.
"""

from __future__ import annotations

import importlib.util
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType

__all__ = ["BASE_IMAGE_SCRIPT", "base_image_layout", "base_image_tag", "push_base_image"]

BASE_IMAGE_SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "base_image.py"


@cache
def _script() -> ModuleType:
    # fixtures/ is not a package; load the script by path so it stays runnable on its own.
    spec = importlib.util.spec_from_file_location("hatch_jib_fixture_base_image", BASE_IMAGE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_image_tag() -> str:
    """The tag under which the layout holds the image."""
    return str(_script().IMAGE_TAG)


def base_image_layout() -> Path:
    """Build (or reuse the cached) OCI layout of the base image and return its directory."""
    return Path(_script().build_base_image_layout())


def push_base_image(
    registry_host: str,
    repository: str = "base/debian-python",
    tag: str = "bookworm",
    *,
    manifest_format: str = "oci",
) -> str:
    """Push the base image to a plain-HTTP registry and return ``HOST/REPOSITORY:TAG``.

    ``manifest_format="docker"`` converts it to a Docker v2.2 manifest and config on the way,
    for tests of behaviour that follows the base image's format.
    """
    if manifest_format not in ("oci", "docker"):
        raise ValueError(f"manifest_format must be 'oci' or 'docker', not {manifest_format!r}")
    layout = base_image_layout()
    reference = f"{registry_host}/{repository}:{tag}"

    format_flag = "v2s2" if manifest_format == "docker" else "oci"
    command = [
        "skopeo",
        "copy",
        "--quiet",
        f"--format={format_flag}",
        "--dest-tls-verify=false",
        f"oci:{layout}:{base_image_tag()}",
        f"docker://{reference}",
    ]
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
    return reference
