"""`BlobStore.prune`: old blobs go, then the least recently used until the rest fit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hatch_jib import cache as cache_module
from hatch_jib.cache import LOCAL_WHEELS, BlobStore, cache_in_use
from hatch_jib.errors import BuildError

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0
DAY = 86400.0


def put(store: BlobStore, data: bytes, *, age_days: float) -> str:
    digest = store.put_bytes(data)
    stamp = NOW - age_days * DAY
    os.utime(store.path(digest), (stamp, stamp))
    return digest


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "cache")


def test_prune_removes_blobs_unused_for_longer_than_the_limit(store):
    old = put(store, b"old" * 100, age_days=40)
    fresh = put(store, b"fresh", age_days=1)

    report = store.prune(older_than=30 * DAY, now=NOW)

    assert [blob.digest for blob in report.removed] == [old]
    assert report.freed_bytes == 300
    assert not store.has(old) and store.has(fresh)
    assert (report.kept, report.kept_bytes) == (1, 5)


def test_prune_to_a_size_removes_the_least_recently_used_first(store):
    oldest = put(store, b"a" * 100, age_days=3)
    middle = put(store, b"b" * 100, age_days=2)
    newest = put(store, b"c" * 100, age_days=1)

    report = store.prune(max_size=150, now=NOW)

    assert [blob.digest for blob in report.removed] == [oldest, middle]
    assert store.has(newest) and not store.has(middle)


def test_prune_waits_for_a_running_build_and_gives_up_with_a_message(store):
    put(store, b"x", age_days=99)
    with cache_in_use(store.root), pytest.raises(BuildError, match="in use by a running build"):
        store.prune(older_than=0, wait=0.3, now=NOW)


def _hold_the_cache(store: BlobStore, seconds: float, *, exclusive=False) -> threading.Thread:
    """A thread that holds the cache as a running build (or with `exclusive`, a prune)
    does, returned once it holds it."""
    held = threading.Event()

    def hold() -> None:
        with cache_in_use(store.root, exclusive=exclusive):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    return thread


def test_prune_proceeds_once_the_build_releases_the_cache(store):
    digest = put(store, b"x", age_days=99)

    thread = _hold_the_cache(store, 0.3)
    report = store.prune(older_than=DAY, wait=5, now=NOW)
    thread.join()

    assert [blob.digest for blob in report.removed] == [digest]


def test_prune_counts_ages_from_when_it_runs_not_from_when_it_began_to_wait(store):
    digest = store.put_bytes(b"written just before the prune was asked for")

    thread = _hold_the_cache(store, 1.5)
    report = store.prune(older_than=1.0, wait=10)
    thread.join()

    assert [blob.digest for blob in report.removed] == [digest]


def test_prune_removes_what_a_killed_build_left_in_the_temp_directory(store):
    left = store.tmp_dir / "blob-abc123"
    left.write_bytes(b"half a layer")

    store.prune(older_than=None, max_size=None, now=NOW)

    assert not left.exists()
    assert store.tmp_dir.is_dir()


def test_prune_clears_a_killed_builds_scratch_tree_but_not_what_its_links_point_at(store, tmp_path):
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "python").write_bytes(b"interpreter")
    with store.scratch_directory() as name:
        scratch = Path(name)
    # What a SIGKILL leaves: the directory that the context manager never got to remove.
    venv = scratch / "root" / "app" / ".venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "module.py").write_bytes(b"x" * 1000)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(outside / "python")
    (store.tmp_dir / "build-linked").symlink_to(outside / "dir")
    (scratch / "root" / "read-only").mkdir()
    (scratch / "root" / "read-only").chmod(0o500)
    (store.tmp_dir / "notes.txt").write_text("not a build's")

    report = store.prune(older_than=None, max_size=None, now=NOW)

    assert [path.name for path in store.tmp_dir.iterdir()] == ["notes.txt"]
    assert (outside / "python").read_bytes() == b"interpreter"
    assert (outside / "dir").is_dir()
    assert report.leftover_bytes >= 1000


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root, to make another user's directory, and setpriv to drop root's rights",
)
def test_prune_empties_read_only_trees_and_names_one_it_cannot_remove(store):
    package = store.tmp_dir / "build-mine" / "root" / "pkg"
    package.mkdir(parents=True)
    (package / "module.py").write_text("x = 1\n")
    package.chmod(0o555)
    foreign = store.tmp_dir / "build-theirs"
    foreign.mkdir(mode=0o700)
    (foreign / "file").write_text("another user's")
    os.chown(foreign / "file", 65534, 65534)
    os.chown(foreign, 65534, 65534)
    record = store.root / "selectors" / "ab" / "old.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    os.utime(record, (NOW - 90 * DAY, NOW - 90 * DAY))

    # As an ordinary user would: root without the rights that let it ignore permissions.
    pruned = subprocess.run(
        [
            *("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"),
            *(sys.executable, "-c", PRUNE_AS_A_USER, str(store.root), str(NOW)),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert pruned.returncode == 0, pruned.stderr
    assert [path.name for path in store.tmp_dir.iterdir()] == ["build-theirs"]
    assert f"cache: cannot remove {foreign}, left by a build that was stopped" in pruned.stderr
    assert not record.exists()  # the prune went on after it


PRUNE_AS_A_USER = """
import logging, sys
from pathlib import Path
from hatch_jib.cache import BlobStore
logging.basicConfig()
BlobStore(Path(sys.argv[1])).prune(older_than=30 * 86400, now=float(sys.argv[2]))
"""


def test_without_a_lock_prune_removes_only_leftovers_a_day_old(store, monkeypatch):
    # As on Windows, where builds take no lock: a young temp file may be a running build's.
    monkeypatch.setattr(cache_module, "_CAN_LOCK", False)
    old, young = store.tmp_dir / "build-old", store.tmp_dir / "blob-young"
    old.mkdir()
    (old / "file").write_bytes(b"left")
    young.write_bytes(b"being written")
    os.utime(old, (NOW - 2 * DAY, NOW - 2 * DAY))
    os.utime(young, (NOW - 60, NOW - 60))

    store.prune(older_than=None, max_size=None, now=NOW)

    assert [path.name for path in store.tmp_dir.iterdir()] == ["blob-young"]


def test_a_scratch_directory_is_in_the_stores_temp_directory_and_goes_when_done(store):
    with store.scratch_directory() as name:
        scratch = Path(name)
        (scratch / "file").write_bytes(b"data")
        assert scratch.parent == store.tmp_dir

    assert not scratch.exists()


def test_a_build_waiting_for_a_prune_says_so(store, caplog):
    caplog.set_level("INFO")

    thread = _hold_the_cache(store, 0.3, exclusive=True)
    with cache_in_use(store.root):
        pass
    thread.join()

    assert f"Waiting for a cache prune to finish with the cache {store.root}" in caplog.text


# Written out rather than taken from RECORD_KINDS: each is a kind some step writes.
BUILD_RECORD_KINDS = [
    "selectors",
    "targets",
    "resolutions",
    "content-hashes",
    "wheels",
    "last-wheels",
    "installed-layers",
    "manifests",
    "tags",
    "diff-ids",
]


def age_record(store: BlobStore, kind: str, key: str, *, written: float, read: float) -> None:
    path = store._record_path(kind, key)
    os.utime(path, (NOW - read * DAY, NOW - written * DAY))


@pytest.mark.parametrize("kind", BUILD_RECORD_KINDS)
def test_prune_by_age_drops_old_records_of_every_kind_a_build_writes(store, kind: str):
    store.write_record(kind, "old", {"value": 1})
    age_record(store, kind, "old", written=40, read=40)
    store.write_record(kind, "fresh", {"value": 2})

    store.prune(older_than=30 * DAY, now=NOW)

    assert store.read_record(kind, "old") is None
    assert store.read_record(kind, "fresh") == {"value": 2}


def test_prune_by_age_keeps_an_old_record_that_builds_still_read(store):
    store.write_record("selectors", "in-use", {"value": 1})
    age_record(store, "selectors", "in-use", written=40, read=1)

    store.prune(older_than=30 * DAY, now=NOW)

    assert store.read_record("selectors", "in-use") == {"value": 1}


def test_prune_by_age_drops_old_local_dependency_wheels_and_their_directories(store):
    old = store.root / LOCAL_WHEELS / ("a" * 64) / "helper-1.0-py3-none-any.whl"
    fresh = store.root / LOCAL_WHEELS / ("b" * 64) / "helper-1.1-py3-none-any.whl"
    for wheel in (old, fresh):
        wheel.parent.mkdir(parents=True)
        wheel.write_bytes(b"PK")
    os.utime(old, (NOW - 40 * DAY, NOW - 40 * DAY))
    os.utime(fresh, (NOW - DAY, NOW - 40 * DAY))

    store.prune(older_than=30 * DAY, now=NOW)

    assert not old.parent.exists()
    assert fresh.is_file()


@pytest.mark.parametrize("entry", ["tmp", "selectors", "local-wheels", "blobs/sha256"])
def test_prune_never_follows_a_symlink_out_of_the_cache(store, tmp_path, caplog, entry):
    outside = tmp_path / "elsewhere"
    (outside / "sub").mkdir(parents=True)
    names = ["tmpfile.txt", "build-notes", "blob-1", "sub/old.json", "a" * 64]
    for name in names:
        (outside / name).write_text("not the cache's")
        os.utime(outside / name, (NOW - 99 * DAY, NOW - 99 * DAY))
    target = store.root / entry
    if target.exists():
        shutil.rmtree(target)
    target.symlink_to(outside)

    store.prune(older_than=DAY, max_size=0, now=NOW)

    assert all((outside / name).read_text() == "not the cache's" for name in names)
    assert f"not pruning {target}: it is a symlink" in caplog.text


def test_prune_leaves_a_file_in_the_blob_directory_that_is_not_named_by_a_digest(store):
    stray = store.root / "blobs" / "sha256" / ".DS_Store"
    stray.write_bytes(b"Finder")
    os.utime(stray, (NOW - 99 * DAY, NOW - 99 * DAY))
    kept = put(store, b"kept", age_days=1)

    report = store.prune(older_than=30 * DAY, now=NOW)

    assert stray.read_bytes() == b"Finder"
    assert (report.removed, report.kept) == ((), 1) and store.has(kept)


def test_store_refuses_a_record_kind_that_prune_would_not_know(store):
    with pytest.raises(ValueError, match="RECORD_KINDS"):
        store.write_record("layer-notes", "key", {"value": 1})
