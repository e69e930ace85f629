"""Rebuilds do the least work: a one-file code change pushes only the `code` layer."""

from __future__ import annotations

import json

from tests.e2e.conftest import copy_project
from tests.e2e.test_build_image import hatch_build


def pushed_layers(project) -> dict[str, bool]:
    result = json.loads((project / "dist" / "jib-image.json").read_text())
    return {layer["name"]: layer["pushed"] for layer in result["layers"]}


def test_one_py_change_rebuilds_and_pushes_only_the_code_layer(
    tmp_path, registry, base_image, jib_cache
):
    project = copy_project("hello-cli", tmp_path)
    env = {"JIB_FROM_IMAGE": base_image, "JIB_TO_IMAGE": f"{registry.host}/e2e/incremental"}
    first = hatch_build(project, env)
    assert first.returncode == 0, first.stderr
    before = json.loads((project / "dist" / "jib-image.json").read_text())

    module = project / "hello_cli" / "__init__.py"
    module.write_text(module.read_text() + "\n# a comment changes the code layer only\n")
    second = hatch_build(project, env)

    assert second.returncode == 0, second.stderr
    after = json.loads((project / "dist" / "jib-image.json").read_text())
    assert after["imageDigest"] != before["imageDigest"]
    assert pushed_layers(project) == {
        "base": False,
        "dependencies": False,
        "resources": False,
        "code": True,
    }
    assert "Layer code         built" in second.stderr
    for name in ("dependencies", "resources"):
        assert f"Layer {name:<12} reused" in second.stderr
    assert "made from the last one: 1 changed file(s) replaced" in second.stderr

    # The patched wheel gave the image a cold build gives.
    cold = hatch_build(project, {**env, "JIB_CACHE_DIR": str(tmp_path / "cold-cache")})
    assert cold.returncode == 0, cold.stderr
    rebuilt = json.loads((project / "dist" / "jib-image.json").read_text())
    assert rebuilt["imageDigest"] == after["imageDigest"]
