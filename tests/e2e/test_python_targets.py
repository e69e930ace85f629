"""Images for a platform other than the host's, from a synthetic base pushed to the registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx

from tests.e2e.conftest import REPO_ROOT, copy_project

DPKG_STATUS = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\n"
ELF_MACHINE_AARCH64 = 183


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def synthetic_base(layout: Path, architecture: str) -> Path:
    """An OCI layout of a base that only looks like Debian + python3.11: enough to detect."""
    (layout / "blobs/sha256").mkdir(parents=True)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, data in [
            ("usr/bin/python3.11", b"\x7fELF not really"),
            ("var/lib/dpkg/status", DPKG_STATUS.encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, "python3.11"
        tar.addfile(link)
    layer = gzip.compress(tar_bytes.getvalue(), mtime=0)
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/usr/bin/python3"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes.getvalue()).hexdigest()],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(layout, json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, layer)}
        ],
    }
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(layout, json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "base"},
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return layout


def push(layout: Path, reference: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"oci:{layout}:base",
            f"docker://{reference}",
        ],
        check=True,
    )


def test_arm64_image_from_an_amd64_host_has_aarch64_extension_modules(
    tmp_path, registry, jib_cache
):
    base = f"{registry.host}/synthetic/debian-python:arm64"
    push(synthetic_base(tmp_path / "layout", "arm64"), base)
    project = copy_project("acme-app", tmp_path)
    target = f"{registry.host}/e2e/acme-arm64"

    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "hatch_jib",
            "build",
            str(project),
            "--from",
            base,
            "--to",
            target,
            "--tag",
            "1",
            "--platform",
            "linux/arm64",
            "--plain",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert built.returncode == 0, built.stderr
    assert "CPython 3.11, linux/arm64, glibc 2.36" in built.stderr
    result = json.loads((project / "dist" / "jib-image.json").read_text())
    [layer] = [layer for layer in result["layers"] if layer["name"] == "dependencies"]
    blob = httpx.get(f"http://{registry.host}/v2/e2e/acme-arm64/blobs/{layer['digest']}").content
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        [speedups] = [
            m
            for m in tar.getmembers()
            if "markupsafe/_speedups" in m.name and m.name.endswith(".so")
        ]
        header = tar.extractfile(speedups).read(20)
    assert speedups.name.endswith("_speedups.cpython-311-aarch64-linux-gnu.so")
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64
