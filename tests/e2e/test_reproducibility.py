"""The same sources give the same image, wherever they are checked out and whenever touched."""

from __future__ import annotations

import os

from tests.e2e.conftest import copy_project
from tests.e2e.test_build_image import hatch_build


def touch_tree(root, when: int) -> None:
    for path in root.rglob("*"):
        os.utime(path, (when, when), follow_symlinks=False)


def test_two_checkouts_touched_at_other_times_give_the_same_image_digest(
    tmp_path, base_image, tmp_path_factory
):
    first = copy_project("hello-src", tmp_path / "a")
    second = copy_project("hello-src", tmp_path / "b" / "elsewhere")
    touch_tree(first, 1_000_000_000)
    touch_tree(second, 1_700_000_000)
    digests = []

    # Separate caches, so the second build cannot reuse a single layer of the first.
    for project in (first, second):
        cache = tmp_path_factory.mktemp("cache")
        built = hatch_build(project, {"JIB_FROM_IMAGE": base_image, "JIB_CACHE_DIR": str(cache)})
        assert built.returncode == 0, built.stderr
        assert "reused" not in built.stderr
        digests.append((project / "dist" / "jib-image.digest").read_text())

    assert digests[0] == digests[1]
    tars = [(p / "dist" / "hello-src-0.2.0.image.tar").read_bytes() for p in (first, second)]
    assert tars[0] == tars[1]
