"""Credential lookup: explicit settings, Docker config (helpers, store, auths), Podman files."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from hatch_jib.errors import ConfigError
from hatch_jib.registry.auth import unauthorized_hint
from hatch_jib.registry.credentials import Credential, find_credential

# A docker-credential helper: answers from a JSON file of {server: [user, secret]} and logs
# every server URL it was asked about.
HELPER = f"""#!{sys.executable}
import json, os, sys
server = sys.stdin.read().strip()
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "asked.log"), "a") as log:
    log.write(server + "\\n")
with open(os.path.join(here, "store.json")) as handle:
    store = json.load(handle)
if sys.argv[1:] != ["get"] or server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = store[server]
print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
"""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def environ_for(tmp_path: Path, home: Path, config: dict | None = None) -> dict[str, str]:
    docker = tmp_path / "docker"
    docker.mkdir(exist_ok=True)
    if config is not None:
        (docker / "config.json").write_text(json.dumps(config))
    bin_dir = tmp_path / "bin"
    return {
        "DOCKER_CONFIG": str(docker),
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def install_helper(tmp_path: Path, name: str, store: dict[str, list[str]]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text(HELPER)
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (bin_dir / "store.json").write_text(json.dumps(store))
    return bin_dir / "asked.log"


def test_explicit_credential_wins_over_docker_config(tmp_path: Path, home: Path) -> None:
    env = environ_for(tmp_path, home, {"auths": {"reg.example": {"auth": b64("cfg:pw")}}})
    explicit = Credential("me", "secret", source="JIB_TO_AUTH_USERNAME/JIB_TO_AUTH_PASSWORD")

    found = find_credential("reg.example", explicit=explicit, environ=env)

    assert found == explicit


def test_auths_entry_is_decoded_and_names_the_config_file(tmp_path: Path, home: Path) -> None:
    env = environ_for(tmp_path, home, {"auths": {"reg.example:5000": {"auth": b64("u:p:w")}}})

    found = find_credential("reg.example:5000", environ=env)

    assert found is not None
    assert (found.username, found.password) == ("u", "p:w")
    assert str(Path(env["DOCKER_CONFIG"]) / "config.json") in found.source


def test_auths_key_with_scheme_and_path_matches_the_host(tmp_path: Path, home: Path) -> None:
    env = environ_for(tmp_path, home, {"auths": {"https://reg.example/v2/": {"auth": b64("a:b")}}})

    found = find_credential("reg.example", environ=env)

    assert found is not None and (found.username, found.password) == ("a", "b")


def test_other_hosts_entries_are_not_used(tmp_path: Path, home: Path) -> None:
    env = environ_for(tmp_path, home, {"auths": {"other.example": {"auth": b64("a:b")}}})

    assert find_credential("reg.example", environ=env) is None


def test_docker_hub_v1_key_serves_every_hub_alias(tmp_path: Path, home: Path) -> None:
    config = {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")}}}
    env = environ_for(tmp_path, home, config)

    found = [find_credential(host, environ=env) for host in ("registry-1.docker.io", "docker.io")]

    assert [(c.username, c.password) for c in found if c] == [("hubuser", "hubpw")] * 2


def test_identity_token_becomes_the_token_username(tmp_path: Path, home: Path) -> None:
    env = environ_for(tmp_path, home, {"auths": {"reg.example": {"identitytoken": "refresh-1"}}})

    found = find_credential("reg.example", environ=env)

    assert found is not None
    assert (found.username, found.password, found.is_identity_token) == (
        "<token>",
        "refresh-1",
        True,
    )


def test_cred_helpers_entry_for_the_host_runs_that_helper(tmp_path: Path, home: Path) -> None:
    asked = install_helper(tmp_path, "test", {"reg.example": ["helper-user", "helper-secret"]})
    config = {
        "credHelpers": {"reg.example": "test"},
        "auths": {"reg.example": {"auth": b64("stale:stale")}},
    }
    env = environ_for(tmp_path, home, config)

    found = find_credential("reg.example", environ=env)

    assert found is not None
    assert (found.username, found.password) == ("helper-user", "helper-secret")
    assert "docker-credential-test" in found.source
    assert asked.read_text().splitlines() == ["reg.example"]


def test_creds_store_miss_falls_back_to_auths(tmp_path: Path, home: Path) -> None:
    install_helper(tmp_path, "test", {})
    config = {"credsStore": "test", "auths": {"reg.example": {"auth": b64("file:pw")}}}
    env = environ_for(tmp_path, home, config)

    found = find_credential("reg.example", environ=env)

    assert found is not None and (found.username, found.password) == ("file", "pw")


def test_creds_store_is_asked_for_docker_hub_by_its_v1_url(tmp_path: Path, home: Path) -> None:
    asked = install_helper(tmp_path, "test", {"https://index.docker.io/v1/": ["hub", "tok"]})
    env = environ_for(tmp_path, home, {"credsStore": "test"})

    found = find_credential("registry-1.docker.io", environ=env)

    assert found is not None and (found.username, found.password) == ("hub", "tok")
    assert asked.read_text().splitlines() == ["https://index.docker.io/v1/"]


def test_named_cred_helper_is_used_before_the_docker_config(tmp_path: Path, home: Path) -> None:
    install_helper(tmp_path, "test", {"reg.example": ["named", "pw"]})
    env = environ_for(tmp_path, home, {"auths": {"reg.example": {"auth": b64("cfg:pw")}}})

    found = find_credential("reg.example", environ=env, cred_helper="test")

    assert found is not None and found.username == "named"


def test_refused_named_helper_credentials_are_renewed_in_the_helper(
    tmp_path: Path, home: Path
) -> None:
    install_helper(tmp_path, "test", {"reg.example": ["named", "pw"]})
    env = environ_for(tmp_path, home, {})
    named = find_credential("reg.example", environ=env, cred_helper="test")
    install_helper(tmp_path, "other", {"reg.example": ["stored", "pw"]})
    env = environ_for(tmp_path, home, {"credHelpers": {"reg.example": "other"}})
    from_config = find_credential("reg.example", environ=env)

    assert named is not None and from_config is not None
    # A plain `docker login` cannot replace what the named helper answers, unless Docker
    # stores its logins in that helper; it does store into the Docker config's own helper.
    assert unauthorized_hint("reg.example", named) == (
        "the credentials from credential helper docker-credential-test were refused: renew"
        " what the helper holds for reg.example (`docker login reg.example` does if Docker"
        " stores its logins in it), or set JIB_TO_AUTH_USERNAME and JIB_TO_AUTH_PASSWORD,"
        " which come before it"
    )
    assert "docker login reg.example" in unauthorized_hint("reg.example", from_config)


def test_missing_helper_program_is_a_config_error(tmp_path: Path, home: Path) -> None:
    env = environ_for(tmp_path, home, {"credHelpers": {"reg.example": "absent"}})

    with pytest.raises(ConfigError) as caught:
        find_credential("reg.example", environ=env)

    assert "docker-credential-absent" in str(caught.value)


def test_broken_config_json_is_a_config_error_naming_the_file(tmp_path: Path, home: Path) -> None:
    env = environ_for(tmp_path, home)
    config = Path(env["DOCKER_CONFIG"]) / "config.json"
    config.write_text("{not json")

    with pytest.raises(ConfigError) as caught:
        find_credential("reg.example", environ=env)

    assert str(config) in str(caught.value)


def test_without_docker_config_falls_back_to_home_docker_dir(tmp_path: Path, home: Path) -> None:
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"reg.example": {"auth": b64("h:pw")}}})
    )
    env = {"HOME": str(home), "PATH": ""}

    found = find_credential("reg.example", environ=env)

    assert found is not None and found.username == "h"


def test_podman_auth_file_is_read_when_docker_has_nothing(tmp_path: Path, home: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {"reg.example": {"auth": b64("pod:pw")}}}))
    env = environ_for(tmp_path, home) | {"REGISTRY_AUTH_FILE": str(auth)}

    found = find_credential("reg.example", environ=env)

    assert found is not None and found.username == "pod"
    assert str(auth) in found.source


def test_nothing_configured_means_anonymous(tmp_path: Path, home: Path) -> None:
    assert find_credential("reg.example", environ=environ_for(tmp_path, home)) is None


def test_password_is_not_in_the_credential_repr() -> None:
    assert "hunter2" not in repr(Credential("me", "hunter2", source="x"))


@pytest.mark.parametrize(
    ("env_prefix", "offered"),
    [("JIB_FROM_AUTH", "JIB_FROM_AUTH_USERNAME and JIB_FROM_AUTH_PASSWORD"), (None, None)],
)
def test_failing_helpers_hint_offers_the_variables_of_its_side(
    tmp_path: Path, home: Path, env_prefix: str | None, offered: str | None
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / "docker-credential-failing"
    helper.write_text("#!/bin/sh\necho 'session expired' >&2\nexit 1\n")
    helper.chmod(0o755)
    env = environ_for(tmp_path, home, {})

    with pytest.raises(ConfigError) as caught:
        find_credential("reg.example", environ=env, cred_helper="failing", env_prefix=env_prefix)

    hint = caught.value.hint or ""
    assert "log in again with it" in hint
    assert "JIB_TO_AUTH" not in hint
    if offered is None:
        assert "JIB_" not in hint  # `hatch-jib inspect` reads no such variables
    else:
        assert offered in hint


def test_failing_helper_shows_its_stderr_but_never_its_stdout(tmp_path: Path, home: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / "docker-credential-failing"
    helper.write_text(
        "#!/bin/sh\necho 'token TOPSECRET-43 expired'\necho 'session expired' >&2\nexit 1\n"
    )
    helper.chmod(0o755)
    env = environ_for(tmp_path, home, {"credHelpers": {"reg.example": "failing"}})

    with pytest.raises(ConfigError) as caught:
        find_credential("reg.example", environ=env)

    assert "session expired" in str(caught.value) and "exit 1" in str(caught.value)
    assert "TOPSECRET" not in str(caught.value)
