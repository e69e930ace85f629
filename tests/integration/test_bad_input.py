"""Bad input to `hatch-jib build` fails cleanly: right exit code, the culprit named, no
traceback, no secret, and nothing pushed or written.

Each case is a project (its `[tool.jib]` lines, scripts, dependencies), environment and
command line; the build runs as `python -m hatch_jib build` in a subprocess, as CI runs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.registry import RunningRegistry, running_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-Pa55word-never-printed"
PYPI = "https://pypi.org/simple"


@dataclass(frozen=True)
class Case:
    id: str
    exit_code: int
    culprits: tuple[str, ...]
    jib: str = ""  # lines of [tool.jib]
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ("app",)
    dependencies: tuple[str, ...] = ()
    pyproject: bool = True


CASES = [
    # Bad references.
    Case(
        "from-uppercase",
        2,
        ("tool.jib.from.image", "Bad/Name"),
        'from.image = "Bad/Name"',
        env={"JIB_FROM_IMAGE": ""},
    ),
    Case(
        "to-space-in-tag",
        2,
        ("tool.jib.to.image", "app:bad tag"),
        args=("--to", "reg.example/app:bad tag"),
    ),
    Case(
        "to-with-scheme",
        2,
        ("tool.jib.to.image", "http://reg.example/app"),
        env={"JIB_TO_IMAGE": "http://reg.example/app"},
    ),
    Case(
        "to-short-digest",
        2,
        ("tool.jib.to.image", "sha256:abc"),
        env={"JIB_TO_IMAGE": "reg.example/app@sha256:abc"},
    ),
    Case("from-missing", 2, ("tool.jib.from.image", "JIB_FROM_IMAGE"), env={"JIB_FROM_IMAGE": ""}),
    # Misspelt keys.
    Case(
        "misspelt-from",
        2,
        ("tool.jib.form", "did you mean `tool.jib.from`"),
        'form.image = "python:3.12"',
    ),
    Case(
        "misspelt-tags", 2, ("tool.jib.to.tag", "did you mean `tool.jib.to.tags`"), 'to.tag = ["1"]'
    ),
    Case(
        "misspelt-entrypoint",
        2,
        ("container.entry-point", "container.entrypoint`?"),
        'container.entry-point = ["app"]',
    ),
    Case(
        "misspelt-python-version",
        2,
        ("python.verison", "python.version`?"),
        'python.verison = "3.12"',
    ),
    Case(
        "misspelt-environment",
        2,
        ("container.enviroment", "container.environment`?"),
        "container.enviroment = { A = '1' }",
    ),
    # Wrong types.
    Case("tags-not-array", 2, ("tool.jib.to.tags", "array"), 'to.tags = "latest"'),
    Case("offline-not-boolean", 2, ("tool.jib.offline", "boolean"), 'offline = "yes"'),
    Case("port-not-string", 2, ("tool.jib.container.ports",), "container.ports = [8000]"),
    Case(
        "environment-not-table",
        2,
        ("tool.jib.container.environment", "table"),
        'container.environment = ["A=1"]',
    ),
    Case("from-not-table", 2, ("tool.jib.from", "table"), 'from = "python:3.12"'),
    Case("env-offline-not-boolean", 2, ("JIB_OFFLINE", "maybe"), env={"JIB_OFFLINE": "maybe"}),
    # Bad ports.
    Case(
        "port-name", 2, ("tool.jib.container.ports[1]", "http"), 'container.ports = ["80", "http"]'
    ),
    Case(
        "port-too-big", 2, ("tool.jib.container.ports[0]", "70000"), 'container.ports = ["70000"]'
    ),
    Case(
        "port-range-backwards",
        2,
        ("tool.jib.container.ports[0]",),
        'container.ports = ["9002-9000/udp"]',
    ),
    Case(
        "port-protocol",
        2,
        ("tool.jib.container.ports[0]", "80/icmp"),
        'container.ports = ["80/icmp"]',
    ),
    # Unknown platforms.
    Case(
        "platform-sparc",
        2,
        ("tool.jib.from.platforms[0]", "linux/sparc"),
        'from.platforms = ["linux/sparc"]',
    ),
    Case(
        "platform-windows",
        2,
        ("tool.jib.from.platforms[0]", "windows/amd64"),
        'from.platforms = ["windows/amd64"]',
    ),
    Case(
        "platform-flag-without-os", 2, ("from.platforms[0]", "amd64"), args=("--platform", "amd64")
    ),
    # Other values out of range.
    Case("format", 2, ("tool.jib.container.format", "rpm"), 'container.format = "rpm"'),
    Case("tag-placeholder", 2, ("tool.jib.to.tags[0]", "{branch}"), 'to.tags = ["{branch}"]'),
    Case("tag-flag", 2, ("tool.jib.to.tags[0]", "bad tag"), args=("--tag", "bad tag")),
    Case(
        "creation-time",
        2,
        ("tool.jib.container.creation-time", "yesterday"),
        'container.creation-time = "yesterday"',
    ),
    Case("python-version", 2, ("tool.jib.python.version", "three"), 'python.version = "three"'),
    Case(
        "auth-without-password",
        2,
        ("tool.jib.to.auth", "JIB_TO_AUTH_PASSWORD"),
        'to.auth.username = "ci"',
        env={"JIB_TO_AUTH_USERNAME": "", "JIB_TO_AUTH_PASSWORD": ""},
    ),
    Case(
        "relative-working-directory",
        2,
        ("tool.jib.container.working-directory",),
        'container.working-directory = "app"',
    ),
    Case(
        "registry-output-without-target",
        2,
        ("tool.jib.to.image",),
        env={"JIB_TO_IMAGE": ""},
        args=("--registry",),
    ),
    # Scripts and extras.
    Case(
        "missing-script",
        2,
        ("tool.jib.container.script", "nope", "app"),
        'container.script = "nope"',
    ),
    Case(
        "several-scripts-none-chosen",
        2,
        ("several scripts", "api", "worker", "tool.jib.container.script"),
        scripts=("api", "worker"),
    ),
    Case("missing-extra", 2, ("tool.jib.python.extras", "gpu"), 'python.extras = ["gpu"]'),
    Case("no-pyproject", 2, ("pyproject.toml",), pyproject=False),
]


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry that wants a password (Basic auth), for the wrong-credentials cases."""
    with running_registry(tmp_path_factory.mktemp("auth-registry"), "htpasswd") as running:
        yield running


def write_project(root: Path, case: Case) -> Path:
    """A one-module project with `case`'s scripts, dependencies and [tool.jib] lines."""
    project = root / "bad-input-app"
    package = project / "bad_input_app"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def main():\n    print('hi')\n")
    if not case.pyproject:
        return project
    scripts = "\n".join(f'{name} = "bad_input_app:main"' for name in case.scripts)
    dependencies = ", ".join(f'"{item}"' for item in case.dependencies)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "bad-input-app"\nversion = "1.0.0"\n'
        f"dependencies = [{dependencies}]\n"
        "[project.optional-dependencies]\ncli = []\n\n"
        f"[project.scripts]\n{scripts}\n\n"
        f"[tool.jib]\n{case.jib}\n"
    )
    return project


def run_cli(
    project: Path, env: dict[str, str], args: tuple[str, ...]
) -> subprocess.CompletedProcess:
    # Run from the checkout so `-m hatch_jib` is this worktree's code.
    return subprocess.run(
        [sys.executable, "-m", "hatch_jib", "build", str(project), "--plain", *args],
        cwd=REPO_ROOT,
        env={k: v for k, v in env.items() if v},
        capture_output=True,
        text=True,
        timeout=600,
    )


def base_env(tmp_path: Path, base_image: str, target: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIB_", "UV_", "PIP_"))}
    return {
        **env,
        "UV_INDEX_URL": PYPI,
        "JIB_CACHE_DIR": str(tmp_path / "cache"),
        "JIB_FROM_IMAGE": base_image,
        "JIB_TO_IMAGE": target,
        "JIB_TO_AUTH_USERNAME": "ci",
        "JIB_TO_AUTH_PASSWORD": SECRET,
    }


def assert_clean_failure(
    done: subprocess.CompletedProcess,
    *,
    exit_code: int,
    culprits: tuple[str, ...],
    project: Path,
    secrets: tuple[str, ...] = (SECRET,),
) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == exit_code, output
    for culprit in culprits:
        assert culprit in done.stderr, f"{culprit!r} not named in:\n{done.stderr}"
    assert "Traceback" not in output
    assert "internal error" not in output
    for secret in secrets:
        assert secret not in output
    assert done.stderr.count("error:") == 1, done.stderr
    dist = project / "dist"
    assert not dist.exists() or not any(dist.iterdir())


def assert_nothing_pushed(registry_url: str, repository: str, **client: object) -> None:
    tags = httpx.get(f"{registry_url}/v2/{repository}/tags/list", **client)  # type: ignore[arg-type]
    assert tags.status_code == 404, tags.text


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_with_one_clean_message(case, tmp_path, registry, base_image):
    project = write_project(tmp_path, case)
    repository = f"bad-input/{case.id}"
    env = {**base_env(tmp_path, base_image, f"{registry.host}/{repository}"), **case.env}

    done = run_cli(project, env, case.args)

    assert_clean_failure(done, exit_code=case.exit_code, culprits=case.culprits, project=project)
    assert_nothing_pushed(registry.url, repository)


def test_registry_that_is_down_is_a_build_failure_naming_it(tmp_path, registry, base_image):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"127.0.0.1:{probe.getsockname()[1]}"
    project = write_project(tmp_path, Case("down", 1, ()))
    env = base_env(tmp_path, f"{down}/base:1", f"{registry.host}/bad-input/down")

    done = run_cli(project, env, ())

    assert_clean_failure(done, exit_code=1, culprits=(down, "is it running?"), project=project)
    assert_nothing_pushed(registry.url, "bad-input/down")


def test_registry_host_that_does_not_resolve_is_named_as_such(tmp_path, registry, base_image):
    # registry.invalid never resolves (RFC 2606).
    project = write_project(tmp_path, Case("no-such-host", 1, ()))
    env = base_env(tmp_path, base_image, "registry.invalid:5000/app")

    done = run_cli(project, env, ())

    assert_clean_failure(
        done,
        exit_code=1,
        culprits=("registry.invalid:5000", "a host name did not resolve (registry.invalid"),
        project=project,
    )


def test_plain_http_registry_not_allowed_is_refused(tmp_path, registry, base_image):
    # This machine's own non-loopback address, on a port nothing listens on: HTTPS is refused,
    # and plain HTTP is never tried for a host that is not loopback unless the user allows it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, a route is chosen
        except OSError:
            pytest.skip("this machine has no route off loopback")
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    with socket.socket() as closed:
        closed.bind((address, 0))
        port = closed.getsockname()[1]
    project = write_project(tmp_path, Case("insecure", 1, ()))
    env = base_env(tmp_path, base_image, f"{address}:{port}/app")

    done = run_cli(project, env, ())

    assert_clean_failure(
        done,
        exit_code=1,
        culprits=(f"{address}:{port}", "allow-insecure-registries"),
        project=project,
    )


def test_plain_http_registry_under_a_non_loopback_name_is_not_downgraded(
    tmp_path, registry, base_image
):
    # The machine's own name reaches the same plain-HTTP registry, but it is not loopback
    # by name, so HTTPS must not silently fall back to HTTP without the user's consent.
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        pytest.skip(f"host name {name} does not resolve")
    if address != "127.0.0.1" or name == "localhost":
        pytest.skip(f"host name {name} resolves to {address}, not the registry's 127.0.0.1")
    port = registry.host.rsplit(":", 1)[1]
    base = base_image.replace(registry.host, f"{name}:{port}")
    project = write_project(tmp_path, Case("insecure-name", 1, ()))
    env = base_env(tmp_path, base, f"{registry.host}/bad-input/insecure-name")

    done = run_cli(project, env, ())

    assert_clean_failure(
        done,
        exit_code=1,
        culprits=(f"{name}:{port}", "allow-insecure-registries"),
        project=project,
    )
    assert_nothing_pushed(registry.url, "bad-input/insecure-name")


def test_wrong_credentials_for_the_base_name_the_registry(tmp_path, base_image, auth_registry):
    project = write_project(tmp_path, Case("wrong-base-auth", 1, ()))
    env = {
        **base_env(tmp_path, f"{auth_registry.host}/base:1", f"{auth_registry.host}/app"),
        # The push login is checked first, so it must pass for the base's to be reached.
        "JIB_TO_AUTH_USERNAME": auth_registry.username or "",
        "JIB_TO_AUTH_PASSWORD": auth_registry.password or "",
        "JIB_FROM_AUTH_USERNAME": "ci",
        "JIB_FROM_AUTH_PASSWORD": SECRET,
    }

    done = run_cli(project, env, ())

    assert_clean_failure(
        done,
        exit_code=1,
        culprits=(auth_registry.host, "JIB_FROM_AUTH_USERNAME"),
        project=project,
        secrets=(SECRET, auth_registry.password or ""),
    )


def test_wrong_credentials_for_the_target_push_nothing(
    tmp_path, registry, base_image, auth_registry
):
    project = write_project(tmp_path, Case("wrong-push-auth", 1, ()))
    env = base_env(tmp_path, base_image, f"{auth_registry.host}/bad-input/push")

    done = run_cli(project, env, ())

    assert_clean_failure(
        done,
        exit_code=1,
        culprits=(auth_registry.host, "JIB_TO_AUTH_USERNAME"),
        project=project,
        secrets=(SECRET, auth_registry.password or ""),
    )
    auth = (auth_registry.username or "", auth_registry.password or "")
    assert_nothing_pushed(auth_registry.url, "bad-input/push", auth=auth)


def test_dependency_without_a_wheel_for_the_target_names_it(tmp_path, registry, base_image):
    # docopt 0.6.2 was only ever published as an sdist.
    case = Case("no-wheel", 1, (), dependencies=("docopt==0.6.2",))
    project = write_project(tmp_path, case)
    env = base_env(tmp_path, base_image, f"{registry.host}/bad-input/no-wheel")

    done = run_cli(project, env, ())

    assert_clean_failure(done, exit_code=1, culprits=("docopt==0.6.2", "no wheel"), project=project)
    assert_nothing_pushed(registry.url, "bad-input/no-wheel")
