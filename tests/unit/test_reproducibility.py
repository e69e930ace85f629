"""The bytes we write are pinned: layer tar and gzip, config and manifest JSON.

A change to any golden digest below means every user's image digest changes. If that is
intended (a new tar layout, a new config field), update the digests in the same commit and
say why in its message; otherwise it is a regression.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import tarfile
import zlib
from pathlib import Path

from hatch_jib.cache import BlobStore
from hatch_jib.config import load_config
from hatch_jib.image.descriptor import Descriptor, MediaType
from hatch_jib.image.layer import (
    GZIP_BLOCK,
    STOCK_DEFLATE,
    LayerEntry,
    LayerSpec,
    ParallelGzip,
    build_layer,
    deflate_fingerprint,
)
from hatch_jib.image.manifest import Manifest
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import parse_reference
from hatch_jib.pipeline.steps import (
    AppLayers,
    BaseImage,
    assemble_image,
    note_source_date_epoch,
    warn_unless_stock_deflate,
)
from hatch_jib.python.target import TargetProfile
from tests.support.deflate import deflate_by_write

GOLDEN_LAYER = "sha256:77ecdcc51f6dc99f587ae027354abaa58d4845fdc9d8c83a947d89da4cb7a138"
GOLDEN_DIFF_ID = "sha256:de0fbc16035a27df5a93d3b5d7be0b18eb974e0818e3f4b8c38957b8a07561b0"
GOLDEN_CONFIG = "sha256:a105d09fd4d540286293197c47f90bf2d4bb6a56c8767ab585c2b4205efe21f0"
GOLDEN_MULTI_BLOCK_GZIP = "0a848668c7103c3a2a79f28d472d53a8025e582c794c15bf81aedd6c044f9e90"
GOLDEN_MANIFEST = "sha256:666928cbf45049b4d7e0b6421d7ae5b2c57efc7ec1cd70202d635bcf76d15534"

LONG_NAME = "app/" + "/".join(["deep-directory-name"] * 8) + "/module_with_a_long_name.py"
UNICODE_NAME = "app/pkg/données-été.txt"


def _fixture_tree(root: Path, *, touch: int) -> LayerSpec:
    """A small tree: a module, an executable, a symlink, a long path and a non-ASCII name."""
    files = {
        "app/pkg/__init__.py": b"VALUE = 1\n",
        "app/pkg/run": b"#!/app/.venv/bin/python\nprint('hi')\n",
        LONG_NAME: b"LONG = True\n",
        UNICODE_NAME: "caf\u00e9\n".encode(),
    }
    entries = []
    for path, data in files.items():
        source = root / path
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        source.chmod(0o775 if path.endswith("/run") else 0o664)
        os.utime(source, (touch, touch))
        entries.append(LayerEntry.file(path, source))
    entries.append(LayerEntry.symlink("app/.venv/bin/python", "/usr/bin/python3.11"))
    return LayerSpec("code", tuple(reversed(entries)))


def _base() -> BaseImage:
    layer = Descriptor(MediaType.OCI_LAYER_GZIP, "sha256:" + "a" * 64, 1234)
    config = Descriptor(MediaType.OCI_CONFIG, "sha256:" + "b" * 64, 567)
    return BaseImage(
        reference=parse_reference("registry.example/base/python:3.11"),
        client=None,  # type: ignore[arg-type]  # assembling never talks to the registry
        manifest=Manifest(MediaType.OCI_MANIFEST, config, (layer,)),
        manifest_digest="sha256:" + "c" * 64,
        config={
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["python3"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "d" * 64]},
            "history": [{"created_by": "debootstrap"}],
        },
        platform=Platform("linux", "amd64"),
    )


def test_this_python_deflates_as_stock_zlib_did_for_the_golden_digests():
    # Every golden digest here was made with stock zlib; another deflate gives other bytes.
    assert deflate_fingerprint() == STOCK_DEFLATE


def test_a_deflate_that_compresses_otherwise_has_another_fingerprint(monkeypatch):
    deflate_by_write(monkeypatch)

    other = deflate_fingerprint()

    monkeypatch.undo()
    assert other != deflate_fingerprint() == STOCK_DEFLATE


def test_a_layer_cached_from_another_deflate_is_not_reused(tmp_path, monkeypatch):
    store = BlobStore(tmp_path / "c")
    with monkeypatch.context() as patch:
        deflate_by_write(patch)
        other = build_layer(_fixture_tree(tmp_path / "src", touch=1000), store)

    layer = build_layer(_fixture_tree(tmp_path / "src", touch=1000), store)

    assert other.digest != GOLDEN_LAYER
    assert (layer.digest, layer.diff_id, layer.reused) == (GOLDEN_LAYER, GOLDEN_DIFF_ID, False)


def test_a_build_warns_that_another_deflate_gives_other_digests(monkeypatch, caplog):
    warn_unless_stock_deflate()
    assert not caplog.records
    deflate_by_write(monkeypatch)

    warn_unless_stock_deflate()

    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert f"This Python's zlib ({zlib.ZLIB_RUNTIME_VERSION}) compresses differently" in (
        record.getMessage()
    )
    assert "build with a Python linked to stock zlib" in record.getMessage()


def test_a_build_says_when_source_date_epoch_dates_every_layer(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    table = {"from": {"image": "registry.example/base/python:3.11"}}
    dated = load_config(table, project_root=tmp_path, environ={})
    fixed = load_config(
        {**table, "container": {"files-modification-time": "1"}}, project_root=tmp_path, environ={}
    )

    note_source_date_epoch(fixed)
    assert not caplog.records
    note_source_date_epoch(dated)

    assert "dated 1700000000, from SOURCE_DATE_EPOCH: another value rebuilds" in caplog.text
    assert "`tool.jib.container.files-modification-time` keeps them reusable" in caplog.text


def test_golden_layer_digest_is_pinned(tmp_path):
    layer = build_layer(_fixture_tree(tmp_path / "src", touch=1000), BlobStore(tmp_path / "c"))

    assert (layer.digest, layer.diff_id) == (GOLDEN_LAYER, GOLDEN_DIFF_ID)


def test_golden_config_and_manifest_digests_are_pinned(tmp_path):
    layer = build_layer(_fixture_tree(tmp_path / "src", touch=1000), BlobStore(tmp_path / "c"))
    target = TargetProfile("3.11", "/usr/bin/python3.11", libc_version="2.36")
    table = {"from": {"image": "registry.example/base/python:3.11"}}
    config = load_config(table, project_root=tmp_path, version="1.0", environ={})
    environment = {"PATH": "/app/.venv/bin:/usr/bin:/bin", "VIRTUAL_ENV": "/app/.venv"}

    image = assemble_image(
        _base(), AppLayers((layer,), ("/app/.venv/bin/run",), target), config, environment
    )

    assert (image.config.digest, image.digest) == (GOLDEN_CONFIG, GOLDEN_MANIFEST)


def test_a_base_pinned_by_the_digest_its_tag_has_gives_the_same_image(tmp_path):
    layer = build_layer(_fixture_tree(tmp_path / "src", touch=1000), BlobStore(tmp_path / "c"))
    app = AppLayers((layer,), ("/app/.venv/bin/run",), TargetProfile("3.11", "/usr/bin/python3.11"))
    tagged = _base()
    pinned = dataclasses.replace(
        tagged, reference=tagged.reference.with_digest(tagged.manifest_digest)
    )
    images = []
    for base in (tagged, pinned):
        table = {"from": {"image": str(base.reference)}}
        config = load_config(table, project_root=tmp_path, version="1.0", environ={})

        images.append(assemble_image(base, app, config, {"PATH": "/usr/bin"}))

    assert "@sha256:" in str(pinned.reference)
    assert images[0].manifest_bytes == images[1].manifest_bytes


def test_same_tree_at_other_paths_with_other_times_gives_the_same_bytes(tmp_path):
    first = build_layer(_fixture_tree(tmp_path / "a", touch=1), BlobStore(tmp_path / "ca"))
    second = build_layer(
        _fixture_tree(tmp_path / "b" / "deeper", touch=2_000_000_000), BlobStore(tmp_path / "cb")
    )

    assert first.digest == second.digest
    assert (tmp_path / "ca").joinpath("blobs/sha256", first.digest[7:]).read_bytes() == (
        (tmp_path / "cb").joinpath("blobs/sha256", second.digest[7:]).read_bytes()
    )


def test_pax_records_carry_only_names_never_host_time_or_owner(tmp_path):
    store = BlobStore(tmp_path / "cache")
    layer = build_layer(_fixture_tree(tmp_path / "src", touch=123456789), store, mtime=7)

    raw = gzip.decompress(store.path(layer.digest).read_bytes())
    with tarfile.open(store.path(layer.digest)) as tar:
        members = {member.name: member for member in tar.getmembers()}

    # Long and non-ASCII names need PAX `path` records; nothing else may appear in them.
    assert members[LONG_NAME].pax_headers == {"path": LONG_NAME}
    assert members[UNICODE_NAME].pax_headers == {"path": UNICODE_NAME}
    for member in members.values():
        assert set(member.pax_headers) <= {"path", "linkpath"}
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == 7
    for leak in (b"mtime=", b"atime=", b"ctime=", b"uname=", b"123456789", b"root\0"):
        assert leak not in raw
    assert str(tmp_path).encode() not in raw


def _pseudo_random(size: int) -> bytes:
    """The same bytes on every machine, and barely compressible."""
    blocks, seed = [], b"hatch-jib"
    while sum(map(len, blocks)) < size:
        seed = hashlib.sha256(seed).digest()
        blocks.append(seed * 4 + bytes(range(64)))
    return b"".join(blocks)[:size]


class _Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def test_parallel_gzip_gives_the_same_bytes_with_any_number_of_threads():
    payload = _pseudo_random(3 * GZIP_BLOCK + 12345)
    outputs = []

    for workers in (1, 2, 5):
        sink = _Collect()
        with ParallelGzip(sink, workers=workers) as gz:
            for start in range(0, len(payload), 70_000):
                gz.write(payload[start : start + 70_000])
        outputs.append(bytes(sink.data))

    assert outputs[0] == outputs[1] == outputs[2]
    assert gzip.decompress(outputs[0]) == payload
    assert hashlib.sha256(outputs[0]).hexdigest() == GOLDEN_MULTI_BLOCK_GZIP
