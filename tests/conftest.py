"""Session fixtures shared by every test suite: a real registry, the base image, a clean cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.base_image import push_base_image
from tests.support.registry import RunningRegistry, start_registry

__all__ = ["TESTS_DIR", "base_image", "base_image_docker", "jib_cache", "registry"]

TESTS_DIR = Path(__file__).resolve().parent
_SUITE_MARKERS = {"integration": "integration", "e2e": "slow"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by suite, so `-m 'not slow'` and `-m 'not integration'` select by directory."""
    for item in items:
        if not item.path.is_relative_to(TESTS_DIR):
            continue
        suite = item.path.relative_to(TESTS_DIR).parts[0]
        if suite in _SUITE_MARKERS:
            item.add_marker(getattr(pytest.mark, _SUITE_MARKERS[suite]))


@pytest.fixture(autouse=True)
def _restore_jib_logger() -> Iterator[None]:
    """In-process builds set up the console; put the logger back for the tests after them."""
    logger = logging.getLogger("hatch_jib")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """An open (no auth, plain HTTP) docker-registry on 127.0.0.1, shared by the session."""
    running = start_registry(tmp_path_factory.mktemp("registry"), "open")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def base_image(registry: RunningRegistry) -> str:
    """The runnable Debian bookworm + python3 base image (OCI manifest), pushed to `registry`.

    Returns ``HOST/base/debian-python:bookworm``. The first session on a machine builds the
    image with debootstrap, which takes a minute or two; later sessions reuse the cache.
    """
    return push_base_image(registry.host)


@pytest.fixture(scope="session")
def base_image_docker(registry: RunningRegistry) -> str:
    """The same base image with a Docker v2.2 manifest and config, pushed to `registry`."""
    return push_base_image(registry.host, "base/debian-python-docker", manifest_format="docker")


@pytest.fixture
def jib_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hatch-jib cache for one test, selected through JIB_CACHE_DIR."""
    cache = tmp_path / "jib-cache"
    cache.mkdir()
    monkeypatch.setenv("JIB_CACHE_DIR", str(cache))
    return cache
