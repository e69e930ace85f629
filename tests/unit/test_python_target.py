"""Target detection from synthetic base-image layers and configs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path
from typing import cast

import pytest

from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError, ConfigError
from hatch_jib.image.descriptor import Descriptor, MediaType
from hatch_jib.image.manifest import Manifest
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import parse_reference
from hatch_jib.pipeline import steps
from hatch_jib.pipeline.steps import BaseImage, detect_target_profile
from hatch_jib.python.target import PythonOverrides, TargetProfile, detect_target
from hatch_jib.registry.client import RegistryClient

DPKG_STATUS = """\
Package: base-files
Status: install ok installed
Version: 12.4+deb12u8

Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: zlib1g
Status: install ok installed
Version: 1:1.2.13.dfsg-1
"""


def make_layer(path: Path, members: dict[str, str | bytes | None]) -> Path:
    """A gzip'd layer tar: a str/bytes value is a file, "->target" a symlink, None a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, str) and content.startswith("->"):
                info.type = tarfile.SYMTYPE
                info.linkname = content[2:]
                tar.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info.size = len(data)
                info.mode = 0o755
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def config(env: list[str] | None = None, **fields: object) -> dict[str, object]:
    return {"architecture": "amd64", "os": "linux", "config": {"Env": env or [], **fields}}


def test_python_image_env_names_version_and_local_interpreter(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "python.tar.gz",
        {
            "usr/local/bin/python3.12": b"\x7fELF",
            "usr/local/bin/python3": "->python3.12",
            "var/lib/dpkg/status": DPKG_STATUS,
        },
    )
    image = config(["PATH=/usr/local/bin:/usr/bin", "PYTHON_VERSION=3.12.7"], Cmd=["python3"])

    target = detect_target(image, [layer], architecture="amd64")

    assert target == TargetProfile(
        python_version="3.12",
        interpreter="/usr/local/bin/python3.12",
        architecture="amd64",
        libc="glibc",
        libc_version="2.36",
    )
    assert target.python_platform() == "x86_64-manylinux_2_36"
    assert target.describe() == "CPython 3.12, linux/amd64, glibc 2.36"


def test_env_alone_without_layers_gives_the_python_image_interpreter_path() -> None:
    target = detect_target(config(["PYTHON_VERSION=3.13.1"]), [], architecture="arm64")

    assert (target.python_version, target.interpreter) == ("3.13", "/usr/local/bin/python3.13")
    assert target.python_platform() == "aarch64-unknown-linux-gnu"


def test_debian_system_python_and_libc6_from_dpkg_status(tmp_path: Path) -> None:
    base = make_layer(
        tmp_path / "base.tar.gz",
        {
            "./usr/bin/": None,
            "./usr/bin/python3.11": b"\x7fELF",
            "./usr/bin/python3": "->python3.11",
            "./var/lib/dpkg/status": DPKG_STATUS,
        },
    )

    target = detect_target(config(), [base], architecture="arm64", variant="v8")

    assert target.interpreter == "/usr/bin/python3.11"
    assert target.libc_version == "2.36"
    assert target.python_platform() == "aarch64-manylinux_2_36"
    assert target.describe() == "CPython 3.11, linux/arm64/v8, glibc 2.36"


def test_distroless_status_d_gives_glibc_version(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "distroless.tar.gz",
        {
            "usr/bin/python3.11": b"\x7fELF",
            "var/lib/dpkg/status.d/libc6": DPKG_STATUS.split("\n\n")[1] + "\n",
            "var/lib/dpkg/status.d/libc6.md5sums": "0123  usr/lib/x86_64-linux-gnu/libc.so.6\n",
        },
    )

    target = detect_target(config(), [layer], architecture="amd64")

    assert target.libc_version == "2.36"


def test_versioned_libc_soname_gives_glibc_version_without_dpkg(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "old.tar.gz",
        {"usr/bin/python3.9": b"\x7fELF", "lib/x86_64-linux-gnu/libc-2.31.so": b"\x7fELF"},
    )

    target = detect_target(config(), [layer], architecture="amd64")

    assert target.libc_version == "2.31"
    assert target.python_platform() == "x86_64-manylinux_2_31"


def test_musl_loader_means_musl_and_apk_db_gives_its_version(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "alpine.tar.gz",
        {
            "lib/ld-musl-x86_64.so.1": b"\x7fELF",
            "lib/apk/db/installed": "P:busybox\nV:1.36.1-r29\n\nP:musl\nV:1.2.5-r0\nA:x86_64\n",
            "usr/local/bin/python3.12": b"\x7fELF",
        },
    )

    target = detect_target(config(["PYTHON_VERSION=3.12.7"]), [layer], architecture="amd64")

    assert (target.libc, target.libc_version) == ("musl", "1.2")
    assert target.python_platform() == "x86_64-unknown-linux-musl"


def test_entrypoint_chooses_among_several_interpreters(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "two.tar.gz",
        {"usr/bin/python3.11": b"\x7fELF", "usr/local/bin/python3.13": b"\x7fELF"},
    )
    image = config(Entrypoint=["/usr/bin/python3.11", "-m", "app"])

    target = detect_target(image, [layer], architecture="amd64")

    assert (target.python_version, target.interpreter) == ("3.11", "/usr/bin/python3.11")


def test_later_layer_whiteout_removes_an_interpreter(tmp_path: Path) -> None:
    lower = make_layer(
        tmp_path / "lower.tar.gz",
        {"usr/bin/python3.11": b"\x7fELF", "usr/local/bin/python3.12": b"\x7fELF"},
    )
    upper = make_layer(tmp_path / "upper.tar.gz", {"usr/local/bin/.wh.python3.12": b""})

    target = detect_target(config(), [lower, upper], architecture="amd64")

    assert target.interpreter == "/usr/bin/python3.11"


def test_opaque_whiteout_of_bin_dir_leaves_no_python(tmp_path: Path) -> None:
    lower = make_layer(tmp_path / "lower.tar.gz", {"usr/bin/python3.11": b"\x7fELF"})
    upper = make_layer(tmp_path / "upper.tar.gz", {"usr/bin/.wh..wh..opq": b""})

    with pytest.raises(BuildError) as raised:
        detect_target(config(), [lower, upper], architecture="amd64")

    assert raised.value.message == "base image has no Python interpreter"


def test_base_without_python_is_a_build_error_with_a_hint(tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "busybox.tar.gz", {"bin/sh": b"\x7fELF"})

    with pytest.raises(BuildError) as raised:
        detect_target(config(), [layer], architecture="amd64")

    assert raised.value.message == "base image has no Python interpreter"
    assert raised.value.hint == "set `tool.jib.python.version` or choose a Python base image"


def test_overrides_win_over_detection(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "base.tar.gz",
        {"usr/bin/python3.11": b"\x7fELF", "var/lib/dpkg/status": DPKG_STATUS},
    )
    overrides = PythonOverrides(version="3.11", platform_tags=("manylinux_2_28_x86_64",))

    target = detect_target(config(), [layer], architecture="amd64", overrides=overrides)

    assert (target.libc, target.libc_version) == ("glibc", "2.28")
    assert target.python_platform() == "x86_64-manylinux_2_28"


def test_version_override_without_interpreter_assumes_usr_bin(tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "empty.tar.gz", {"etc/hostname": "x\n"})

    target = detect_target(
        config(), [layer], architecture="amd64", overrides=PythonOverrides(version="3.12")
    )

    assert target.interpreter == "/usr/bin/python3.12"


def test_bad_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tool\.jib\.python\.libc"):
        detect_target(
            config(["PYTHON_VERSION=3.12.1"]),
            [],
            architecture="amd64",
            overrides=PythonOverrides(libc="bionic"),
        )


@pytest.mark.parametrize(
    ("architecture", "libc", "libc_version", "expected"),
    [
        ("amd64", "glibc", "2.41", "x86_64-manylinux_2_40"),
        ("amd64", "glibc", "2.30", "x86_64-manylinux_2_28"),
        ("arm64", "musl", "1.2", "aarch64-unknown-linux-musl"),
        ("ppc64le", "glibc", None, "powerpc64le-unknown-linux-gnu"),
        ("s390x", "glibc", "2.36", "s390x-manylinux_2_36"),
    ],
)
def test_python_platform_rounds_glibc_down_to_a_uv_target(
    architecture: str, libc: str, libc_version: str | None, expected: str
) -> None:
    target = TargetProfile("3.12", "/usr/bin/python3.12", architecture, None, libc, libc_version)

    assert target.python_platform() == expected


def test_python_platform_for_an_architecture_uv_cannot_target_is_a_build_error() -> None:
    target = TargetProfile("3.12", "/usr/bin/python3.12", "arm", "v7")

    with pytest.raises(BuildError, match="linux/arm"):
        target.python_platform()


def _base_with(store: BlobStore, layer: Path, diff_id: str | None = None) -> BaseImage:
    """A base of one gzip layer; its config lists `diff_id`, or no diff_ids at all."""
    digest = store.put_file(layer)
    manifest = Manifest(
        MediaType.OCI_MANIFEST,
        Descriptor(MediaType.OCI_CONFIG, "sha256:" + "0" * 64, 2),
        (Descriptor(MediaType.OCI_LAYER_GZIP, digest, layer.stat().st_size),),
    )
    image_config: dict[str, object] = {"config": {}}
    if diff_id is not None:
        image_config["rootfs"] = {"type": "layers", "diff_ids": [diff_id]}
    return BaseImage(
        parse_reference("example.com/base:1"),
        cast(RegistryClient, None),
        manifest,
        "sha256:" + "1" * 64,
        image_config,
        Platform("linux", "amd64"),
    )


DEBIAN = {"usr/bin/python3.11": b"\x7fELF", "var/lib/dpkg/status": DPKG_STATUS}


def test_target_recorded_by_an_older_hatch_jib_is_detected_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "cache")
    base = _base_with(store, make_layer(tmp_path / "debian.tar.gz", DEBIAN))
    overrides = PythonOverrides(version="3.12")
    # Before python.version had to exist in the base, this base was recorded as this target.
    old_key = json.dumps([base.manifest_digest, repr(overrides)])
    store.write_record("targets", old_key, TargetProfile("3.12", "/usr/bin/python3.12").__dict__)

    with pytest.raises(BuildError, match=r"base image has no python3\.12"):
        detect_target_profile(base, store, overrides)


def test_layers_read_for_the_target_are_checked_against_their_diff_ids_in_the_same_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "cache")
    layer = make_layer(tmp_path / "debian.tar.gz", DEBIAN)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer.read_bytes())).hexdigest()
    base = _base_with(store, layer, diff_id)
    unpacked: list[object] = []
    real = steps._uncompressed_digest
    monkeypatch.setattr(
        steps, "_uncompressed_digest", lambda *args: unpacked.append(args) or real(*args)
    )

    target = detect_target_profile(base, store, PythonOverrides())

    assert target.python_version == "3.11"
    assert unpacked == []
    assert store.read_record("diff-ids", base.manifest.layers[0].digest) == diff_id


def test_a_layer_read_for_the_target_that_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "cache")
    layer = make_layer(tmp_path / "debian.tar.gz", DEBIAN)
    base = _base_with(store, layer, "sha256:" + "0" * 64)

    with pytest.raises(BuildError) as raised:
        detect_target_profile(base, store, PythonOverrides())

    assert "unpacks to sha256:" in str(raised.value)
    assert "its config lists diff_id sha256:" + "0" * 64 in str(raised.value)
    assert not list((store.root / "targets").rglob("*.json"))  # nothing remembered


@pytest.mark.parametrize("compression", ["gz", "", "xz"])
def test_the_scan_gives_the_tar_digest_of_gzip_and_plain_layers(
    tmp_path: Path, compression: str
) -> None:
    tar = gzip.decompress(make_layer(tmp_path / "layer", DEBIAN).read_bytes())
    packed = {"gz": gzip.compress, "": bytes, "xz": lzma.compress}[compression](tar)
    layer = tmp_path / "layer"
    layer.write_bytes(packed)
    digests: dict[Path, str] = {}

    target = detect_target(config(), [layer], architecture="amd64", tar_digests=digests)

    assert target.python_version == "3.11"
    if compression == "xz":
        assert digests == {}
    else:
        assert digests == {layer: "sha256:" + hashlib.sha256(tar).hexdigest()}
