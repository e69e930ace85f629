"""The test registry harness starts a real registry in each auth mode."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.support.registry import MODES, running_registry

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", MODES)
def test_harness_registry_answers_v2_and_demands_auth_only_when_configured(
    tmp_path: Path, mode: str
) -> None:
    with running_registry(tmp_path, mode) as registry:
        verify: bool | ssl.SSLContext = True
        if registry.ca_file:
            verify = ssl.create_default_context(cafile=str(registry.ca_file))
        with httpx.Client(verify=verify) as client:
            response = client.get(f"{registry.url}/v2/")

    expected = 401 if mode in ("htpasswd", "token") else 200
    assert response.status_code == expected
    assert registry.url.startswith("https://" if mode == "tls" else "http://")
    assert registry.process is None


def test_harness_htpasswd_registry_accepts_its_own_credentials(tmp_path: Path) -> None:
    with running_registry(tmp_path, "htpasswd") as registry:
        assert registry.username and registry.password
        good = httpx.get(f"{registry.url}/v2/", auth=(registry.username, registry.password))
        bad = httpx.get(f"{registry.url}/v2/", auth=(registry.username, "wrong"))

    assert (good.status_code, bad.status_code) == (200, 401)
