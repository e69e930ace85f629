"""Layers are byte-for-byte reproducible and their selectors never hit wrongly."""

from __future__ import annotations

import gzip
import os
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hatch_jib import cancel
from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.image import layer as layer_module
from hatch_jib.image.layer import LayerEntry, LayerSpec, build_layer


def _tree(root: Path, *, touch: int) -> LayerSpec:
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "pkg" / "tool").write_text("#!/bin/sh\n")
    (root / "pkg" / "tool").chmod(0o775)
    for path in (root / "pkg").iterdir():
        os.utime(path, (touch, touch))
    return LayerSpec(
        "code",
        (
            LayerEntry.file("app/pkg/tool", root / "pkg" / "tool"),
            LayerEntry.file("app/pkg/__init__.py", root / "pkg" / "__init__.py"),
            LayerEntry.symlink("app/.venv/bin/python", "/usr/bin/python3.11"),
        ),
    )


def test_same_inputs_at_other_paths_and_times_give_the_same_digest(tmp_path):
    first = build_layer(_tree(tmp_path / "a", touch=1000), BlobStore(tmp_path / "cache-a"))
    second = build_layer(_tree(tmp_path / "b", touch=9999), BlobStore(tmp_path / "cache-b"))

    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)


def test_tar_entries_are_sorted_with_parents_and_carry_no_host_identity(tmp_path):
    store = BlobStore(tmp_path / "cache")

    layer = build_layer(_tree(tmp_path / "src", touch=12345), store, mtime=7)

    with tarfile.open(store.path(layer.digest)) as tar:
        members = tar.getmembers()
    names = [member.name for member in members]
    assert names == sorted(names)
    assert {"app", "app/.venv", "app/.venv/bin", "app/pkg"} <= set(names)
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == 7
        assert not member.pax_headers
    modes = {member.name: member.mode for member in members}
    assert modes["app/pkg/tool"] == 0o755
    assert modes["app/pkg/__init__.py"] == 0o644


def test_gzip_header_has_no_name_and_no_time(tmp_path):
    store = BlobStore(tmp_path / "cache")

    layer = build_layer(_tree(tmp_path / "src", touch=1), store)

    header = store.path(layer.digest).read_bytes()[:10]
    assert header[3] & 0x08 == 0  # FNAME flag unset
    assert header[4:8] == b"\0\0\0\0"  # MTIME zero
    assert gzip.decompress(store.path(layer.digest).read_bytes())


def test_changed_content_with_unchanged_mtime_rebuilds_the_layer(tmp_path):
    store = BlobStore(tmp_path / "cache")
    spec = _tree(tmp_path / "src", touch=500)
    first = build_layer(spec, store)

    source = tmp_path / "src" / "pkg" / "__init__.py"
    source.write_text("VALUE = 2\n")
    os.utime(source, (500, 500))
    second = build_layer(spec, store)

    assert second.digest != first.digest
    assert not second.reused


def test_unchanged_inputs_reuse_the_cached_blob(tmp_path):
    store = BlobStore(tmp_path / "cache")
    spec = _tree(tmp_path / "src", touch=500)
    first = build_layer(spec, store)

    second = build_layer(spec, store)

    assert second.reused and second.digest == first.digest


def test_the_same_layer_asked_for_by_two_threads_at_once_is_written_once(tmp_path, monkeypatch):
    store = BlobStore(tmp_path / "cache")
    spec = _tree(tmp_path / "src", touch=500)
    real_write = layer_module._write_layer

    def slow_write(*args):
        # Long enough that, unserialized, the other thread would miss the record too.
        time.sleep(0.3)
        return real_write(*args)

    monkeypatch.setattr(layer_module, "_write_layer", slow_write)
    start = threading.Barrier(2)

    def build():
        start.wait()
        return build_layer(spec, store)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: build(), range(2)))

    assert sorted(layer.reused for layer in results) == [False, True]
    assert results[0].digest == results[1].digest


def test_corrupt_cached_blob_is_rebuilt_not_reused(tmp_path):
    store = BlobStore(tmp_path / "cache")
    spec = _tree(tmp_path / "src", touch=500)
    first = build_layer(spec, store)
    store.path(first.digest).write_bytes(b"garbage")
    store = BlobStore(tmp_path / "cache")  # a later build, which has verified nothing yet

    second = build_layer(spec, store)

    assert not second.reused
    assert second.digest == first.digest
    assert store.verified_path(first.digest) is not None


def test_entry_that_climbs_out_of_the_image_root_is_refused(tmp_path):
    spec = LayerSpec("extra", (LayerEntry.directory("app/../../etc"),))

    with pytest.raises(ValueError, match="not inside the image root"):
        build_layer(spec, BlobStore(tmp_path / "cache"))


def test_a_file_without_a_mode_takes_it_from_the_source_when_the_layer_is_written(tmp_path):
    store = BlobStore(tmp_path / "cache")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    spec = LayerSpec("code", (LayerEntry.file("app/run.sh", str(script)),))

    script.chmod(0o700)
    layer = build_layer(spec, store)

    with tarfile.open(store.path(layer.digest)) as tar:
        assert tar.getmember("app/run.sh").mode == 0o755


def test_a_source_made_executable_gives_a_new_layer_not_the_cached_one(tmp_path):
    store = BlobStore(tmp_path / "cache")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    os.utime(script, (1000, 1000))
    spec = LayerSpec("code", (LayerEntry.file("app/run.sh", script),))
    first = build_layer(spec, store)

    script.chmod(0o755)
    second = build_layer(spec, store)

    assert not second.reused
    assert second.digest != first.digest
    with tarfile.open(store.path(second.digest)) as tar:
        assert tar.getmember("app/run.sh").mode == 0o755


def test_an_entry_without_a_mode_or_a_file_to_take_it_from_is_refused(tmp_path):
    spec = LayerSpec("extra", (LayerEntry("etc/app", "dir", None),))

    with pytest.raises(ValueError, match="no mode"):
        build_layer(spec, BlobStore(tmp_path / "cache"))


def test_a_source_that_is_gone_is_named_in_a_build_error(tmp_path):
    missing = tmp_path / "gone.txt"
    spec = LayerSpec("code", (LayerEntry.file("app/gone.txt", missing),))

    with pytest.raises(BuildError, match=f"cannot read {missing} for /app/gone.txt in the image"):
        build_layer(spec, BlobStore(tmp_path / "cache"))


def _failure_within(seconds: float, spec: LayerSpec, store: BlobStore) -> BaseException:
    """What `build_layer` raised, on a thread of its own: reading a FIFO would wait for a
    writer and /dev/zero never ends, so the wait is bounded."""
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            build_layer(spec, store)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), f"build_layer still running after {seconds}s"
    [error] = outcome
    return error


@pytest.mark.parametrize(
    ("make", "kind"),
    [(os.mkfifo, "a FIFO"), (lambda path: os.symlink("/dev/zero", path), "a character device")],
    ids=["fifo", "dev-zero"],
)
def test_a_source_that_is_not_a_regular_file_is_refused_without_waiting_on_it(tmp_path, make, kind):
    source = tmp_path / "special"
    make(source)
    spec = LayerSpec("code", (LayerEntry.file("app/special", source),))

    error = _failure_within(20, spec, BlobStore(tmp_path / "cache"))

    assert isinstance(error, BuildError)
    assert f"{kind}, not a regular file" in str(error)


def test_a_large_source_swapped_for_a_fifo_before_it_streams_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(300_000))  # past the size kept in memory: read twice
    spec = LayerSpec("code", (LayerEntry.file("app/big.bin", source),))
    make_key = layer_module._selector_key

    def swap_then_make_key(*args):
        source.unlink()
        os.mkfifo(source)
        return make_key(*args)

    monkeypatch.setattr(layer_module, "_selector_key", swap_then_make_key)

    error = _failure_within(20, spec, BlobStore(tmp_path / "cache"))

    assert "it is a FIFO, not a regular file" in str(error)


def test_a_cancelled_build_stops_writing_a_layer_and_leaves_nothing_behind(tmp_path):
    store = BlobStore(tmp_path / "cache")
    spec = _tree(tmp_path / "src", touch=500)
    cancelled = threading.Event()
    cancelled.set()

    with cancel.scope(cancelled), pytest.raises(cancel.Cancelled):
        build_layer(spec, store)

    assert list(store.tmp_dir.iterdir()) == []
    assert not build_layer(spec, store).reused
