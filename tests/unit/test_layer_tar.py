"""Our own tar encoder writes exactly the bytes Python's tarfile wrote for the same entries."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from hatch_jib import cache as cache_module
from hatch_jib.cache import BlobStore
from hatch_jib.image import layer as layer_module
from hatch_jib.image.layer import LayerEntry, LayerSpec, build_layer

FILES = {
    "app/pkg/__init__.py": b"VALUE = 1\n",
    "app/pkg/empty.txt": b"",
    "app/pkg/block.bin": b"x" * 512,
    "app/pkg/" + "n" * 92: b"exactly one hundred characters\n",
    "app/pkg/" + "n" * 93: b"one past the ustar name field\n",
    "app/" + "/".join(["deep-directory-name"] * 8) + "/module.py": b"LONG = True\n",
    "app/pkg/données-été.txt": "café\n".encode(),
    "app/pkg/日本語/ファイル.txt": "テキスト\n".encode(),
    "app/pkg/big.bin": bytes(range(256)) * 2048,
}
LINKS = {
    "app/.venv/bin/python": "/usr/bin/python3.11",
    "app/.venv/bin/long": "/" + "/".join(["target-directory"] * 8),
    "app/.venv/bin/unicode": "/usr/share/données",
}


def _spec(root: Path) -> LayerSpec:
    entries = [LayerEntry.directory("app/" + "d" * 95, mode=0o700)]
    for path, data in FILES.items():
        source = root / path
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        source.chmod(0o755 if path.endswith(".py") else 0o644)
        entries.append(LayerEntry.file(path, source))
    # A file name that is not valid UTF-8 goes into a binary PAX record.
    odd = os.fsdecode(b"app/pkg/latin-\xe9t\xe9.txt")
    (root / odd).write_bytes(b"latin-1 name\n")
    entries.append(LayerEntry.file(odd, root / odd))
    entries += [LayerEntry.symlink(path, target) for path, target in LINKS.items()]
    return LayerSpec("code", tuple(entries))


def _tarfile_bytes(spec: LayerSpec, mtime: int) -> bytes:
    """The layer's tar as Python's tarfile writes it, as hatch-jib wrote layers before."""
    buffer = io.BytesIO()
    entries = layer_module._with_parents(spec.entries)
    with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mtime, info.mode, info.uid, info.gid = mtime, entry.mode, 0, 0
            info.uname = info.gname = ""
            if entry.kind == "file":
                assert entry.source is not None
                if entry.mode is None:
                    executable = os.stat(entry.source).st_mode & 0o111
                    info.mode = 0o755 if executable else 0o644
                data = Path(entry.source).read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = tarfile.DIRTYPE if entry.kind == "dir" else tarfile.SYMTYPE
            info.linkname = entry.link_target or ""
            tar.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("keep_in_memory", [True, False])
def test_layer_tar_bytes_equal_tarfiles_for_every_kind_of_entry(
    tmp_path, monkeypatch, keep_in_memory
):
    spec = _spec(tmp_path / "src")
    if not keep_in_memory:
        monkeypatch.setattr(cache_module, "_KEEP_FILE", -1)
    store = BlobStore(tmp_path / "cache")

    layer = build_layer(spec, store, mtime=7)

    ours = gzip.decompress(store.path(layer.digest).read_bytes())
    assert ours == _tarfile_bytes(spec, 7)


def test_mtime_too_large_for_octal_goes_into_a_pax_record_as_tarfile_does():
    info = tarfile.TarInfo("app/x")
    info.mtime, info.uid, info.gid, info.uname, info.gname = 8**11, 0, 0, "", ""

    ours = layer_module.tar_header("app/x", "file", 0o644, 0, 8**11)

    assert ours == info.tobuf(tarfile.PAX_FORMAT)


def test_file_changed_after_hashing_fails_the_build_instead_of_caching_wrong_bytes(
    tmp_path, monkeypatch
):
    source = tmp_path / "data.bin"
    source.write_bytes(b"old content\n")
    monkeypatch.setattr(cache_module, "_KEEP_FILE", -1)
    real_take = cache_module.ContentHashes.take

    def rewrite_then_take(self, path):
        path.write_bytes(b"new content\n")
        return real_take(self, path)

    monkeypatch.setattr(cache_module.ContentHashes, "take", rewrite_then_take)
    store = BlobStore(tmp_path / "cache")

    with pytest.raises(layer_module.BuildError, match="changed while layer"):
        build_layer(LayerSpec("code", (LayerEntry.file("app/data.bin", source),)), store)

    assert not list(store.root.glob("selectors/*/*.json"))
