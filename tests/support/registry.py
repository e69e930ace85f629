"""A real Distribution registry (`/usr/bin/docker-registry`) on 127.0.0.1 for tests.

`start_registry(workdir, mode)` starts one in a given auth mode and returns once `/v2/`
answers:

- ``open``: plain HTTP, no auth;
- ``htpasswd``: plain HTTP, Basic auth against a bcrypt htpasswd file;
- ``token``: plain HTTP, Bearer tokens from `tests.support.token_server.TokenServer`;
- ``tls``: HTTPS with a trustme CA (``ca_file``), no auth.

Storage lives under `workdir`, deletes are enabled. Call `stop()` when done, or use
`running_registry()` as a context manager.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.token_server import SERVICE, TokenServer, make_signing_chain

__all__ = ["MODES", "REGISTRY_BINARY", "RunningRegistry", "running_registry", "start_registry"]

REGISTRY_BINARY = "/usr/bin/docker-registry"
MODES = ("open", "htpasswd", "token", "tls")
USERNAME = "jib-tester"

_START_TIMEOUT = 20.0


@dataclass
class RunningRegistry:
    """A registry process started by `start_registry`, and how to reach it."""

    host: str
    url: str
    mode: str
    username: str | None
    password: str | None
    ca_file: Path | None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    token_server: TokenServer | None = field(default=None, repr=False)
    log_file: Path | None = None
    storage: Path | None = None

    def stop(self) -> None:
        """Stop the registry (and its token issuer); safe to call twice."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the registry's own log, for assertion messages."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def start_registry(workdir: Path, mode: str = "open") -> RunningRegistry:
    """Start docker-registry in `mode` under `workdir` and wait until `/v2/` answers."""
    if mode not in MODES:
        raise ValueError(f"unknown registry mode {mode!r}; expected one of {MODES}")
    if not Path(REGISTRY_BINARY).exists():
        raise RuntimeError(f"{REGISTRY_BINARY} is missing: apt-get install docker-registry")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    # Write the auth material this mode needs.
    username = password = None
    ca_file: Path | None = None
    token_server: TokenServer | None = None
    auth_yaml = ""
    tls_yaml = ""
    if mode in ("htpasswd", "token"):
        username, password = USERNAME, "pw-" + secrets.token_urlsafe(12)
    if mode == "htpasswd":
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(f"{username}:{_bcrypt_hash(password or '')}\n")
        auth_yaml = f"auth:\n  htpasswd:\n    realm: hatch-jib-test\n    path: {htpasswd}\n"
    elif mode == "token":
        chain = make_signing_chain()
        bundle = workdir / "token-ca.pem"
        bundle.write_bytes(chain.ca_pem)
        token_server = TokenServer(chain, username or "", password or "").start()
        auth_yaml = (
            "auth:\n  token:\n"
            f"    realm: {token_server.url}\n"
            f"    service: {SERVICE}\n"
            f"    issuer: {token_server.issuer}\n"
            f"    rootcertbundle: {bundle}\n"
        )
    elif mode == "tls":
        ca_file, cert, key = _tls_material(workdir)
        tls_yaml = f"  tls:\n    certificate: {cert}\n    key: {key}\n"

    # Start the process; a lost race for the port shows up as an early exit, so retry.
    last_error = ""
    for _attempt in range(3):
        port = _free_port()
        config = workdir / "config.yml"
        storage = workdir / "storage"
        config.write_text(_config_yaml(storage, port, auth_yaml, tls_yaml))
        log_file = workdir / "registry.log"
        scheme = "https" if mode == "tls" else "http"
        registry = RunningRegistry(
            host=f"127.0.0.1:{port}",
            url=f"{scheme}://127.0.0.1:{port}",
            mode=mode,
            username=username,
            password=password,
            ca_file=ca_file,
            token_server=token_server,
            log_file=log_file,
            storage=storage,
        )
        with open(log_file, "ab") as log:
            registry.process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if _wait_ready(registry):
            return registry
        last_error = registry.log_tail()
        registry.token_server = None  # keep the issuer for the next attempt
        registry.stop()
    if token_server is not None:
        token_server.stop()
    raise RuntimeError(f"docker-registry did not start in {workdir}:\n{last_error}")


@contextlib.contextmanager
def running_registry(workdir: Path, mode: str = "open") -> Iterator[RunningRegistry]:
    """`start_registry` as a context manager that always stops the registry."""
    registry = start_registry(workdir, mode)
    try:
        yield registry
    finally:
        registry.stop()


def _config_yaml(storage: Path, port: int, auth_yaml: str, tls_yaml: str) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
        f"  secret: {secrets.token_hex(16)}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
        f"{tls_yaml}"
        f"{auth_yaml}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(registry: RunningRegistry) -> bool:
    """Poll `/v2/` until any HTTP answer (200 or 401) arrives, or the process dies."""
    verify: bool | ssl.SSLContext = True
    if registry.ca_file:
        verify = ssl.create_default_context(cafile=str(registry.ca_file))
    deadline = time.monotonic() + _START_TIMEOUT
    with httpx.Client(verify=verify, timeout=2.0) as client:
        while time.monotonic() < deadline:
            assert registry.process is not None
            if registry.process.poll() is not None:
                return False
            try:
                client.get(f"{registry.url}/v2/")
                return True
            except httpx.HTTPError:
                time.sleep(0.05)
    return False


def _tls_material(workdir: Path) -> tuple[Path, Path, Path]:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = workdir / "ca.pem"
    cert = workdir / "server-chain.pem"
    key = workdir / "server-key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server.private_key_pem.write_to_path(str(key))
    # Leaf first, then the chain: what Go's tls.LoadX509KeyPair expects.
    with open(cert, "wb") as handle:
        handle.writelines(blob.bytes() for blob in server.cert_chain_pems)
    return ca_file, cert, key


def _bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd: the `bcrypt` package, else libcrypt, else `htpasswd`."""
    with contextlib.suppress(ImportError):
        import bcrypt

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())
    with contextlib.suppress(ImportError):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # stdlib up to Python 3.12; glibc's libxcrypt knows $2b$

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
        if hashed and hashed.startswith("$2"):
            return hashed
    tool = shutil.which("htpasswd")
    if tool:
        out = subprocess.run(
            [tool, "-nbB", "user", password], check=True, capture_output=True, text=True
        ).stdout
        return out.strip().split(":", 1)[1]
    raise RuntimeError("no bcrypt available: pip install bcrypt or apt-get install apache2-utils")
