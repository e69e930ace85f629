"""The docker output against a fake Docker Engine API on a unix socket (CI has no daemon)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socketserver
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.outputs.docker import find_daemon, load_image
from hatch_jib.pipeline.steps import assemble_index
from tests.integration.test_outputs_layout import REPO_TAGS, make_image

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeEngine:
    """What the fake daemon runs and what it received; `load_reply` scripts its answer."""

    socket: Path
    arch: str = "amd64"
    load_reply: bytes = b'{"stream":"Loaded image\\n"}\r\n'
    loads: list[dict] = field(default_factory=list)
    watched: Path | None = None  # a directory whose files are listed at each load
    seen: list[list[str]] = field(default_factory=list)


def _handler(engine: FakeEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def address_string(self) -> str:  # a unix socket has no client address
            return "fake-engine"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.endswith("/version"):
                self._reply(200, json.dumps({"Os": "linux", "Arch": engine.arch}).encode())
            else:
                self._reply(404, b'{"message":"page not found"}')

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(length)
            engine.loads.append(_check_upload(self.path, self.headers["Content-Type"], body))
            if engine.watched is not None:
                found = engine.watched.rglob("*.tar")
                engine.seen.append([str(path.relative_to(engine.watched)) for path in found])
            self._reply(200, engine.load_reply)

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _check_upload(path: str, content_type: str, body: bytes) -> dict:
    """Check the upload as the daemon would: a tar whose blobs match their names."""
    assert path.startswith("/images/load"), path
    assert content_type == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
    (entry,) = json.loads(files["manifest.json"])
    return {"repo_tags": entry["RepoTags"], "config": json.loads(files[entry["Config"]])}


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    fake = FakeEngine(tmp_path / "docker.sock")
    server = _UnixServer(str(fake.socket), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{fake.socket}")
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def test_load_uploads_the_daemons_platform_from_a_two_platform_image(engine, store, tmp_path):
    engine.arch = "arm64"
    amd64 = make_image(store, tmp_path, "amd64", "amd64\n")
    arm64 = make_image(store, tmp_path, "arm64", "arm64\n")
    index = assemble_index([amd64, arm64], image_format="oci")

    daemon = find_daemon()
    loaded = load_image(index, daemon, repo_tags=REPO_TAGS, blob_path=store.path)

    assert loaded == arm64
    assert len(engine.loads) == 1
    assert engine.loads[0]["repo_tags"] == REPO_TAGS
    assert engine.loads[0]["config"]["architecture"] == "arm64"


def test_error_in_the_load_stream_fails_the_build_with_the_daemons_message(engine, store, tmp_path):
    engine.load_reply = b'{"errorDetail":{"message":"no space left"},"error":"no space left"}\n'
    image = make_image(store, tmp_path, "amd64", "x\n")

    with pytest.raises(BuildError, match="no space left") as raised:
        load_image(image, find_daemon(), repo_tags=REPO_TAGS, blob_path=store.path)

    assert "/images/load" in str(raised.value)


def test_daemon_platform_missing_from_the_build_is_an_error_naming_both(engine, store, tmp_path):
    engine.arch = "s390x"
    index = assemble_index(
        [make_image(store, tmp_path, arch, arch) for arch in ("amd64", "arm64")],
        image_format="oci",
    )

    with pytest.raises(BuildError, match="linux/s390x") as raised:
        load_image(index, find_daemon(), repo_tags=REPO_TAGS, blob_path=store.path)

    assert "linux/amd64, linux/arm64" in str(raised.value)
    assert engine.loads == []


def test_no_daemon_and_no_docker_command_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(BuildError, match="No Docker daemon") as raised:
        find_daemon()

    assert "missing.sock" in str(raised.value)
    assert "jib:tar" in (raised.value.hint or "")


def test_docker_output_without_a_daemon_fails_before_building_and_writes_nothing(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\n[project.scripts]\napp = "app:main"\n'
    )
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/missing.sock",
        "PATH": str(Path(sys.executable).parent),  # python, but no docker command
        "JIB_CACHE_DIR": str(tmp_path / "cache"),
    }
    # The base registry does not exist either: the daemon check must come first.
    command = [sys.executable, "-m", "hatch_jib", "build", str(project), "--plain"]
    command += ["--docker", "--tar", "--from", "127.0.0.1:9/x:1"]

    built = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)

    assert built.returncode == 1
    assert "No Docker daemon" in built.stderr and "Traceback" not in built.stderr
    assert not (project / "dist").exists()


def test_a_docker_build_writes_its_image_tar_in_the_cache_not_the_system_temp(
    engine, tmp_path, base_image
):
    from tests.integration.test_pipeline import cli_command, cli_env, project_copy

    cache, system_tmp = tmp_path / "cache", tmp_path / "system-tmp"
    system_tmp.mkdir()
    engine.watched = tmp_path
    env = cli_env(cache, base_image, TMPDIR=str(system_tmp))

    built = subprocess.run(
        cli_command(project_copy(tmp_path), "--docker"),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert built.returncode == 0, built.stderr
    assert engine.loads and engine.loads[0]["repo_tags"][0].endswith("hello-cli:0.1.0")
    # Where a killed build leaves it for `cache prune`, and gone once the build is done.
    ((tar,),) = engine.seen
    assert tar.startswith("cache/tmp/build-") and tar.endswith("/image.tar")
    assert list(system_tmp.iterdir()) == []
    assert list((cache / "tmp").iterdir()) == []
