"""Inside `hatch build -t jib`, a user error is the same clean message and exit code as in
`hatch-jib build`, and JIB_DEBUG=1 brings the traceback back."""

from __future__ import annotations

from tests.e2e.conftest import copy_project
from tests.e2e.test_build_image import hatch_build


def test_hatch_build_reports_bad_config_without_traceback_and_exits_2(tmp_path, jib_cache):
    project = copy_project("hello-cli", tmp_path)
    env = {"JIB_FROM_IMAGE": "127.0.0.1:1/base:1", "JIB_CONTAINER_PORTS": "80,http"}

    built = hatch_build(project, env)
    debugged = hatch_build(project, {**env, "JIB_DEBUG": "1"})

    assert built.returncode == 2, built.stderr
    assert "error: `tool.jib.container.ports[1]` = 'http' is not a port" in built.stderr
    assert "Traceback" not in built.stdout + built.stderr
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())
    assert debugged.returncode == 2
    assert "Traceback" in debugged.stderr and "ports[1]" in debugged.stderr
