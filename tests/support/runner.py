"""Run a built image like a container would, under chroot, with no container runtime.

`unpack_image` fetches an image with ``skopeo copy`` (which checks every digest) into a
scratch OCI layout and unpacks it with ``umoci unpack`` into a runtime bundle: ``rootfs/`` plus
the OCI runtime ``config.json``. `run_image` then runs that bundle's process under ``chroot``
with exactly the env, working directory and uid/gid the image asks for. Both need root.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_CONFIG_NAME", "RunResult", "run_image", "unpack_image"]

# Where unpack_image keeps the image config inside the bundle: config.json merges Entrypoint
# and Cmd into one argv, so run_image needs the original to replace Cmd alone.
IMAGE_CONFIG_NAME = "image-config.json"
_LAYOUT_TAG = "unpacked"
_TRANSPORTS = ("docker://", "oci:", "docker-archive:")

# Mount flags from <sys/mount.h> and <sched.h>, for the optional /dev and /proc mounts.
_CLONE_NEWNS = 0x00020000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


@dataclass(frozen=True)
class RunResult:
    """What a process run from an image did."""

    returncode: int
    stdout: str
    stderr: str


def unpack_image(image_ref_or_layout: str, dest: Path) -> Path:
    """Fetch an image and unpack it under `dest`; return the runtime bundle directory.

    Accepts ``docker://HOST/REPO:TAG`` (plain HTTP allowed), ``oci:DIR[:TAG]``,
    ``docker-archive:PATH`` or the path of an OCI layout directory holding one image.
    """
    source = _as_transport(image_ref_or_layout)
    dest.mkdir(parents=True, exist_ok=True)
    layout = dest / "image"
    bundle = dest / "bundle"

    # Copy into a private layout; skopeo verifies each blob's digest on the way.
    copy = ["skopeo", "copy", "--quiet"]
    if source.startswith("docker://"):
        copy.append("--src-tls-verify=false")
    _check_call([*copy, source, f"oci:{layout}:{_LAYOUT_TAG}"])

    # Unpack the layers into rootfs/ and generate the runtime config.json.
    _check_call(["umoci", "unpack", "--image", f"{layout}:{_LAYOUT_TAG}", str(bundle)])

    # Keep the image config next to config.json for run_image.
    (bundle / IMAGE_CONFIG_NAME).write_bytes(_image_config_bytes(layout))
    return bundle


def run_image(
    bundle: Path,
    args: Sequence[str] | None = None,
    *,
    timeout: float = 120,
    system_mounts: bool = False,
) -> RunResult:
    """Run the bundle's process under chroot and return what it exited with and printed.

    With `args`, the command is the image Entrypoint followed by `args` (as ``docker run IMAGE
    ARGS...``); otherwise it is Entrypoint plus Cmd. The env is config.json's: the image Env,
    completed by umoci as Docker does with HOME (from the image's /etc/passwd) and TERM.

    Nothing is mounted unless `system_mounts` is set: then the host's /dev and a fresh /proc
    are mounted in a private mount namespace, which the kernel tears down with the process,
    so nothing leaks even if the run fails.
    """
    process = json.loads((bundle / "config.json").read_text())["process"]
    argv = list(process["args"]) if args is None else _entrypoint(bundle) + list(args)
    if not argv:
        raise ValueError(f"{bundle}: the image has neither Entrypoint nor Cmd; pass args")
    env = dict(entry.split("=", 1) for entry in process.get("env", []))

    completed = subprocess.run(
        argv,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        preexec_fn=_enter_image(
            rootfs=(bundle / "rootfs").resolve(),
            cwd=process.get("cwd") or "/",
            user=process.get("user", {}),
            system_mounts=system_mounts,
        ),
    )
    return RunResult(
        returncode=completed.returncode,
        stdout=completed.stdout.decode(errors="replace"),
        stderr=completed.stderr.decode(errors="replace"),
    )


def _as_transport(image_ref_or_layout: str) -> str:
    if image_ref_or_layout.startswith(_TRANSPORTS):
        return image_ref_or_layout
    if (Path(image_ref_or_layout) / "oci-layout").is_file():
        return f"oci:{image_ref_or_layout}"
    raise ValueError(
        f"{image_ref_or_layout!r} is neither an OCI layout directory nor a reference starting "
        f"with one of {_TRANSPORTS}"
    )


def _check_call(command: list[str]) -> None:
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr}"
        )


def _image_config_bytes(layout: Path) -> bytes:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    return _blob(layout, manifest["config"]["digest"])


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, encoded = digest.split(":", 1)
    return (layout / "blobs" / algorithm / encoded).read_bytes()


def _entrypoint(bundle: Path) -> list[str]:
    config = json.loads((bundle / IMAGE_CONFIG_NAME).read_text()).get("config") or {}
    return list(config.get("Entrypoint") or [])


def _enter_image(
    *, rootfs: Path, cwd: str, user: dict[str, Any], system_mounts: bool
) -> Callable[[], None]:
    """Build the function the child runs between fork and exec to become the container."""
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    groups = [int(group) for group in user.get("additionalGids") or []]
    # Load libc in the parent: the child of a threaded parent should do as little as possible.
    libc = ctypes.CDLL(None, use_errno=True) if system_mounts else None

    def enter() -> None:
        if libc is not None:
            _mount_dev_and_proc(libc, rootfs)
        os.chroot(rootfs)

        # As a container runtime does, create a missing working directory.
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)

        # Drop privileges last: groups first, while still root.
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)

    return enter


def _mount_dev_and_proc(libc: ctypes.CDLL, rootfs: Path) -> None:
    def call(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    # A private namespace: the mounts vanish with the last process in it.
    call(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    call(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    dev, proc = bytes(rootfs / "dev"), bytes(rootfs / "proc")
    call(libc.mount(b"/dev", dev, None, _MS_BIND | _MS_REC, None), "bind /dev")
    call(libc.mount(b"proc", proc, b"proc", 0, None), "mount proc")
