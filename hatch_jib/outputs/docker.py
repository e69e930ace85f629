"""Load an image into the local Docker daemon: the Engine API socket, else `docker load`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from hatch_jib.errors import BuildError
from hatch_jib.image.image import BuiltImage, Image
from hatch_jib.image.platform import Platform
from hatch_jib.interruptible import interruptible_transport
from hatch_jib.outputs.tar import write_image_tar

__all__ = ["DEFAULT_DOCKER_HOST", "DockerDaemon", "choose_image", "find_daemon", "load_image"]

log = logging.getLogger("hatch_jib")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# The host part of API URLs over a unix socket; the daemon ignores it.
_SOCKET_BASE_URL = "http://docker"
_CHUNK = 1 << 20
_NO_DAEMON_HINT = (
    "start Docker (or Podman's Docker-compatible socket), point DOCKER_HOST at it, "
    "or build a tar instead: hatch build -t jib:tar"
)


@dataclass(frozen=True)
class DockerDaemon:
    """A reachable daemon: where it is, how we talk to it, and the platform it runs."""

    host: str
    platform: Platform
    socket: str | None = None
    base_url: str | None = None

    @property
    def via_cli(self) -> bool:
        return self.base_url is None


def find_daemon(environ: Mapping[str, str] | None = None) -> DockerDaemon:
    """Find the daemon through DOCKER_HOST (or the default socket), else the `docker` CLI.

    Called before the build starts, so a missing daemon fails fast and writes nothing.
    """
    environ = os.environ if environ is None else environ
    host = environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    socket, base_url = _api_endpoint(host, environ)
    problem = f"{host} is not a socket or address hatch-jib can use"
    if base_url is not None:
        try:
            with _api_client(socket, base_url) as client:
                version = client.get("/version", timeout=10)
            version.raise_for_status()
            data = version.json()
            platform = Platform(str(data.get("Os", "linux")), str(data.get("Arch", "amd64")))
            log.debug("Docker daemon at %s runs %s", host, platform)
            return DockerDaemon(host, platform, socket, base_url)
        except (httpx.HTTPError, ValueError) as error:
            problem = f"{host}: {error}"
    return _cli_daemon(host, problem, environ)


def _api_endpoint(host: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The socket path and base URL for the Engine API, or (None, None) to use the CLI."""
    if host.startswith("unix://"):
        return host[len("unix://") :], _SOCKET_BASE_URL
    if host.startswith("tcp://") and not environ.get("DOCKER_TLS_VERIFY"):
        return None, "http://" + host[len("tcp://") :]
    # TODO(#6): TLS (DOCKER_CERT_PATH) and ssh:// daemons go through the docker CLI for now.
    return None, None


def _api_client(socket: str | None, base_url: str) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=socket) if socket else httpx.HTTPTransport()
    interruptible_transport(transport)
    return httpx.Client(transport=transport, base_url=base_url)


def _cli_daemon(host: str, problem: str, environ: Mapping[str, str]) -> DockerDaemon:
    docker = shutil.which("docker", path=environ.get("PATH"))
    if docker is None:
        raise BuildError(
            f"No Docker daemon to load the image into ({problem}; no `docker` command either)",
            hint=_NO_DAEMON_HINT,
        )
    command = [docker, "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"]
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env=dict(environ), timeout=60
    )
    if completed.returncode != 0:
        detail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BuildError(
            f"No Docker daemon to load the image into ({problem}; `docker version`: {detail[0]})",
            hint=_NO_DAEMON_HINT,
        )
    os_name, _, arch = completed.stdout.strip().partition("/")
    log.debug("Docker daemon behind the docker CLI runs %s/%s", os_name, arch)
    return DockerDaemon(host, Platform(os_name or "linux", arch or "amd64"))


def choose_image(built: BuiltImage, daemon: DockerDaemon) -> Image:
    """The image for the daemon's platform; a single-platform image is loaded as it is."""
    if len(built.images) == 1:
        image = built.images[0]
        if not image.platform.matches(daemon.platform):
            log.warning(
                "Loading a %s image into a %s Docker daemon: it will run only under emulation",
                image.platform,
                daemon.platform,
            )
        return image
    for image in built.images:
        if image.platform.matches(daemon.platform):
            return image
    built_for = ", ".join(str(image.platform) for image in built.images)
    raise BuildError(
        f"The Docker daemon at {daemon.host} runs {daemon.platform}, and the image was built "
        f"only for {built_for}",
        hint=f"add {daemon.platform} to `tool.jib.from.platforms`, or push to a registry",
    )


def load_image(
    built: BuiltImage,
    daemon: DockerDaemon,
    *,
    repo_tags: Sequence[str],
    blob_path: Callable[[str], Path],
    mtime: int = 1,
    scratch: Callable[[], AbstractContextManager[str]] | None = None,
) -> Image:
    """Load the daemon's platform image from `built` under `repo_tags`; return that image.

    The image's tar is written into a directory from `scratch` (a build passes its cache's,
    where a prune finds it if the build is killed), by default one in the system's temp.
    """
    image = choose_image(built, daemon)
    make_scratch = scratch or partial(tempfile.TemporaryDirectory, prefix="hatch-jib-docker-")
    with make_scratch() as scratch_dir:
        archive = write_image_tar(
            image,
            Path(scratch_dir) / "image.tar",
            repo_tags=repo_tags,
            blob_path=blob_path,
            mtime=mtime,
        )
        if daemon.via_cli:
            _load_with_cli(archive, daemon)
        else:
            _load_with_api(archive, daemon)
    log.info("Loaded %s into the Docker daemon at %s", ", ".join(repo_tags), daemon.host)
    return image


def _load_with_api(archive: Path, daemon: DockerDaemon) -> None:
    assert daemon.base_url is not None
    size = archive.stat().st_size
    what = f"POST /images/load on {daemon.host}"
    try:
        with (
            _api_client(daemon.socket, daemon.base_url) as client,
            client.stream(
                "POST",
                "/images/load",
                params={"quiet": "1"},
                headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
                content=_chunks(archive),
                timeout=httpx.Timeout(30, read=None),
            ) as response,
        ):
            body = response.read()
    except httpx.HTTPError as error:
        raise BuildError(f"{what}: {error}", hint=_NO_DAEMON_HINT) from error
    log.debug("%s: %d %s", what, response.status_code, body[:500].decode(errors="replace"))
    message = _load_error(response.status_code, body)
    if message:
        raise BuildError(
            f"{what} failed: {message}",
            hint="check the daemon's log; the image tar itself can be built with jib:tar",
        )


def _load_error(status: int, body: bytes) -> str | None:
    """The daemon's error: a failed status, or an `error` line in the 200 progress stream."""
    lines = [line for line in body.decode(errors="replace").splitlines() if line.strip()]
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and (item.get("error") or item.get("errorDetail")):
            detail = item.get("errorDetail") or {}
            return str(item.get("error") or detail.get("message"))
        if status >= 400 and isinstance(item, dict) and item.get("message"):
            return f"{status} {item['message']}"
    return f"{status} {' '.join(lines)[:200]}" if status >= 400 else None


def _load_with_cli(archive: Path, daemon: DockerDaemon) -> None:
    docker = shutil.which("docker") or "docker"
    completed = subprocess.run(
        [docker, "load", "--input", str(archive)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise BuildError(
            f"`docker load` into {daemon.host} failed: {completed.stderr.strip()}",
            hint="check that `docker info` works; the image tar itself can be built with jib:tar",
        )
    log.debug("docker load: %s", completed.stdout.strip())


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk
