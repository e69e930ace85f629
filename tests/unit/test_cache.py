"""The blob store and the layer selector's content hashes: safe to share, never wrongly hit."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading

import pytest

from hatch_jib import cache as cache_module
from hatch_jib.cache import BlobStore
from hatch_jib.errors import BuildError
from hatch_jib.image.layer import LayerEntry, LayerSpec, build_layer
from hatch_jib.image.platform import Platform
from hatch_jib.image.reference import parse_reference
from hatch_jib.pipeline.steps import pull_base_image
from hatch_jib.python.target import TargetProfile


def _spec(root, text="VALUE = 1\n"):
    source = root / "mod.py"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text)
    os.utime(source, (500, 500))
    return LayerSpec("code", (LayerEntry.file("app/mod.py", source),))


@pytest.fixture
def counted_hashing(monkeypatch):
    """Count full-content hashes, and remember files however young they are."""
    calls = []
    real = cache_module._read_file
    monkeypatch.setattr(cache_module, "_RACY_SECONDS", -1)
    monkeypatch.setattr(
        cache_module, "_read_file", lambda path, keep: calls.append(path) or real(path, keep)
    )
    return calls


def test_unchanged_file_is_not_read_again_by_the_next_build(tmp_path, counted_hashing):
    store = BlobStore(tmp_path / "cache")
    spec = _spec(tmp_path / "src")
    build_layer(spec, store)
    counted_hashing.clear()

    again = build_layer(spec, BlobStore(tmp_path / "cache"))

    assert again.reused
    assert counted_hashing == []


def test_rewritten_file_with_its_old_mtime_is_hashed_again_and_rebuilt(tmp_path, counted_hashing):
    store = BlobStore(tmp_path / "cache")
    spec = _spec(tmp_path / "src")
    first = build_layer(spec, store)
    counted_hashing.clear()

    _spec(tmp_path / "src", text="VALUE = 2\n")  # same size, same mtime, new ctime
    second = build_layer(spec, BlobStore(tmp_path / "cache"))

    assert counted_hashing == [str(tmp_path / "src" / "mod.py")]
    assert not second.reused and second.digest != first.digest


def test_file_changed_just_now_is_never_trusted_by_its_stat(tmp_path, counted_hashing, monkeypatch):
    monkeypatch.setattr(cache_module, "_RACY_SECONDS", 3600)
    spec = _spec(tmp_path / "src")
    build_layer(spec, BlobStore(tmp_path / "cache"))
    counted_hashing.clear()

    build_layer(spec, BlobStore(tmp_path / "cache"))

    assert counted_hashing == [str(tmp_path / "src" / "mod.py")]


@pytest.mark.parametrize("growth", [1, 5000, 3 << 20])
def test_a_file_that_grew_after_its_stat_is_hashed_and_kept_whole(tmp_path, monkeypatch, growth):
    source = tmp_path / "growing.txt"
    source.write_bytes(b"first part")
    before = os.stat(source)
    with open(source, "ab") as handle:
        handle.write(b"x" * growth)
    real_open = cache_module.open_regular_file
    monkeypatch.setattr(cache_module, "open_regular_file", lambda p: (real_open(p)[0], before))

    _info, content, data = cache_module._read_file(str(source), 256 * 1024)

    whole = source.read_bytes()
    assert data == whole
    assert content == hashlib.sha256(whole).hexdigest()


def test_a_small_file_read_in_short_pieces_is_kept_whole(tmp_path, monkeypatch):
    source = tmp_path / "file.bin"
    source.write_bytes(bytes(range(256)) * 40)
    real_read = os.read
    # As a FUSE file system may answer, or a read that a signal cut short.
    monkeypatch.setattr(cache_module.os, "read", lambda fd, size: real_read(fd, min(size, 1000)))

    _info, content, data = cache_module._read_file(str(source), 256 * 1024)

    assert data == source.read_bytes()
    assert content == hashlib.sha256(data).hexdigest()


def test_a_small_file_of_the_size_its_stat_gave_takes_one_read(tmp_path, monkeypatch):
    source = tmp_path / "file.bin"
    source.write_bytes(bytes(range(256)) * 40)
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(
        cache_module.os, "read", lambda fd, size: reads.append(size) or real_read(fd, size)
    )

    _info, _content, data = cache_module._read_file(str(source), 256 * 1024)

    assert data == source.read_bytes()
    assert reads == [len(data) + 1]


def test_threads_writing_the_same_blob_at_once_all_succeed(tmp_path):
    data = os.urandom(1 << 20)
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    stores = [BlobStore(tmp_path / "cache") for _ in range(8)]
    results: list[str] = []

    threads = [
        threading.Thread(target=lambda s=s: results.append(s.put_bytes(data, expected)))
        for s in stores
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [expected] * 8
    assert BlobStore(tmp_path / "cache").read_bytes(expected) == data
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_truncated_blob_is_evicted_with_a_warning(tmp_path, caplog):
    store = BlobStore(tmp_path / "cache")
    digest = store.put_bytes(b"x" * 1000)
    path = store.path(digest)
    path.write_bytes(b"x" * 10)

    found = BlobStore(tmp_path / "cache").verified_path(digest)

    assert found is None and not path.exists()
    assert f"evicting corrupt blob {digest}" in caplog.text


def test_offline_build_names_the_base_tag_missing_from_the_cache(tmp_path):
    reference = parse_reference("registry.example/base/python:3.11")

    with pytest.raises(BuildError) as raised:
        pull_base_image(
            reference,
            None,  # type: ignore[arg-type]  # offline: the registry is never asked
            BlobStore(tmp_path / "cache"),
            Platform("linux", "amd64"),
            offline=True,
        )

    assert "registry.example/base/python:3.11" in raised.value.message
    assert "not in the cache" in raised.value.message
    assert "network" in (raised.value.hint or "")


def test_offline_build_names_the_manifest_digest_missing_from_the_cache(tmp_path):
    reference = parse_reference("registry.example/base/python:3.11")
    store = BlobStore(tmp_path / "cache")
    digest = "sha256:" + "ab" * 32
    store.write_record("tags", "registry.example/base/python:3.11", {"digest": digest})

    with pytest.raises(BuildError) as raised:
        pull_base_image(
            reference,
            None,  # type: ignore[arg-type]  # offline: the registry is never asked
            store,
            Platform("linux", "amd64"),
            offline=True,
        )

    assert raised.value.message.startswith(
        f"Offline build: the manifest {digest} of registry.example/base/python:3.11 is not in"
    )


def test_record_whose_bytes_changed_is_dropped_with_a_warning(tmp_path, caplog):
    store = BlobStore(tmp_path / "cache")
    store.write_record("selectors", "key", {"digest": "sha256:" + "0" * 64, "size": 10})
    path = store._record_path("selectors", "key")
    path.write_bytes(path.read_bytes().replace(b'"size": 10', b'"size": 11'))

    found = BlobStore(tmp_path / "cache").read_record("selectors", "key")

    assert found is None and not path.exists()
    assert f"dropping damaged selectors record {path}" in caplog.text


@pytest.mark.parametrize("cut", [0, 5, -65])
def test_record_cut_short_or_in_the_old_format_reads_as_none(tmp_path, cut):
    store = BlobStore(tmp_path / "cache")
    store.write_record("targets", "key", {"python_version": "3.11"})
    path = store._record_path("targets", "key")
    path.write_bytes(path.read_bytes()[:cut] if cut else b'{"python_version": "3.11"}')

    assert store.read_record("targets", "key") is None


def test_a_record_copied_over_another_keys_record_is_dropped_with_a_warning(tmp_path, caplog):
    store = BlobStore(tmp_path / "cache")
    store.write_record("selectors", "code", {"digest": "sha256:" + "1" * 64, "size": 10})
    store.write_record("selectors", "resources", {"digest": "sha256:" + "2" * 64, "size": 20})
    resources = store._record_path("selectors", "resources")
    resources.write_bytes(store._record_path("selectors", "code").read_bytes())

    found = store.read_record("selectors", "resources")

    assert found is None and not resources.exists()
    assert f"dropping damaged selectors record {resources}" in caplog.text


def test_an_older_hatch_jibs_record_is_not_read_and_not_warned_about(tmp_path, caplog):
    store = BlobStore(tmp_path / "cache")
    new = store._record_path("targets", "key")
    old = new.with_name(new.name.replace(".v2.json", ".json"))
    old.parent.mkdir(parents=True)
    payload = b'{"python_version": "3.11"}'
    old.write_bytes(payload + b"\n" + hashlib.sha256(payload).hexdigest().encode())

    assert store.read_record("targets", "key") is None
    assert "cache:" not in caplog.text and old.exists()


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_record_that_is_no_regular_file_is_dropped_not_read(tmp_path, caplog, kind):
    store = BlobStore(tmp_path / "cache")
    path = store._record_path("resolutions", "key")
    path.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer forever
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.mkdir()

    assert store.read_record("resolutions", "key") is None
    assert f"dropping damaged resolutions record {path}" in caplog.text
    assert not path.is_symlink() and path.exists() == (kind == "directory")


def test_record_of_another_shape_loads_as_none_with_a_warning(tmp_path, caplog):
    store = BlobStore(tmp_path / "cache")
    store.write_record("targets", "key", ["not", "a", "table"])

    loaded = store.load_record("targets", "key", lambda record: record["python_version"])

    assert loaded is None
    assert "cache: ignoring the targets record " in caplog.text
    assert "it has another shape (TypeError" in caplog.text


def test_a_good_copy_renamed_in_while_a_corrupt_one_is_read_is_kept(tmp_path, monkeypatch):
    store = BlobStore(tmp_path / "cache")
    digest = store.put_bytes(b"the layer's bytes")
    path = store.path(digest)
    path.write_bytes(b"a corrupt copy")
    stream_digest = cache_module._stream_digest

    def read_then_good_copy_renamed_in(handle):
        seen = stream_digest(handle)
        good = tmp_path / "good"
        good.write_bytes(b"the layer's bytes")
        os.replace(good, path)
        return seen

    monkeypatch.setattr(cache_module, "_stream_digest", read_then_good_copy_renamed_in)
    found = BlobStore(tmp_path / "cache").verified_path(digest)

    assert found == path
    assert path.read_bytes() == b"the layer's bytes"


def _write_checksummed(path, payload: bytes) -> None:
    """A record file as the store writes it, with whatever payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload + b"\n" + cache_module._record_checksum(path, payload))


def test_record_with_a_good_checksum_but_no_json_reads_as_none(tmp_path):
    store = BlobStore(tmp_path / "cache")
    _write_checksummed(store._record_path("targets", "key"), b"not json")

    assert store.read_record("targets", "key") is None


def test_record_values_of_the_wrong_type_load_as_none(tmp_path, caplog):
    store = BlobStore(tmp_path / "cache")
    store.write_record("targets", "key", {"python_version": 311, "interpreter": "/usr/bin/py"})

    loaded = store.load_record(
        "targets", "key", lambda record: cache_module.record_of(TargetProfile, record)
    )

    assert loaded is None
    assert "python_version is 311, not str" in caplog.text


@pytest.mark.parametrize("size", [-1, 1, "12", 1.5])
def test_a_selector_that_misstates_its_layer_size_is_not_reused(tmp_path, size):
    store = BlobStore(tmp_path / "cache")
    spec = _spec(tmp_path / "src")
    first = build_layer(spec, store)
    [path] = (store.root / "selectors").rglob("*.json")
    record = json.loads(path.read_bytes().rpartition(b"\n")[0])
    record["size"] = first.size + size if size == 1 else size
    _write_checksummed(path, json.dumps(record).encode())

    again = build_layer(spec, BlobStore(tmp_path / "cache"))

    assert not again.reused
    assert (again.digest, again.size) == (first.digest, first.size)


def test_a_full_disk_is_explained_with_the_cache_to_prune(tmp_path):
    error = OSError(errno.ENOSPC, "No space left on device")

    explained = cache_module.file_system_error(error, cache_dir=tmp_path / "cache")

    assert explained is not None
    assert explained.message == "Out of disk space (No space left on device)"
    assert f"make the cache at {tmp_path / 'cache'} smaller" in (explained.hint or "")


def test_another_users_file_in_the_cache_is_explained_with_whose_it_is(tmp_path):
    cache = tmp_path / "cache"
    error = PermissionError(errno.EACCES, "Permission denied", str(cache / "selectors" / "ab"))

    explained = cache_module.file_system_error(error, cache_dir=cache)

    assert explained is not None
    assert explained.message == f"Cannot use {cache / 'selectors' / 'ab'}: Permission denied"
    assert "chown -R" in (explained.hint or "") and "JIB_CACHE_DIR" in (explained.hint or "")


def test_a_file_of_the_wrong_type_is_a_damaged_cache_entry_only_inside_the_cache(tmp_path):
    cache = tmp_path / "cache"
    inside = IsADirectoryError(errno.EISDIR, "Is a directory", str(cache / "blobs" / "x"))
    outside = IsADirectoryError(errno.EISDIR, "Is a directory", str(tmp_path / "project"))

    explained = cache_module.file_system_error(inside, cache_dir=cache)

    assert explained is not None and explained.message.startswith("The cache entry ")
    assert cache_module.file_system_error(outside, cache_dir=cache) is None
    assert cache_module.file_system_error(OSError(errno.EIO, "I/O"), cache_dir=cache) is None


def test_a_clash_in_a_builds_own_scratch_directory_is_not_blamed_on_the_cache(tmp_path):
    cache = tmp_path / "cache"
    clash = FileExistsError(errno.EEXIST, "File exists", str(cache / "tmp" / "build-x" / "wheel"))

    assert cache_module.file_system_error(clash, cache_dir=cache) is None


def test_a_symlink_loop_in_the_cache_is_explained_not_raised(tmp_path):
    cache = tmp_path / "cache"
    (cache / "blobs").mkdir(parents=True)
    (cache / "blobs" / "sha256").symlink_to(cache / "blobs" / "sha256")
    loop = OSError(
        errno.ELOOP, "Too many levels of symbolic links", str(cache / "blobs" / "sha256")
    )

    explained = cache_module.file_system_error(loop, cache_dir=cache)

    assert explained is not None and explained.message.startswith("The cache entry ")
