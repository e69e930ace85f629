"""Image references follow the distribution grammar."""

from __future__ import annotations

import pytest

from hatch_jib.errors import ConfigError
from hatch_jib.image.reference import parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python:3.12-slim", "registry-1.docker.io", "library/python", "3.12-slim", None),
        ("docker.io/team/app", "registry-1.docker.io", "team/app", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b:1.0", "localhost:5000", "a/b", "1.0", None),
        ("ghcr.io/o/r", "ghcr.io", "o/r", "latest", None),
        ("[::1]:5000/x:t", "[::1]:5000", "x", "t", None),
        (f"reg.io/app:1@{DIGEST}", "reg.io", "app", "1", DIGEST),
        (f"reg.io/app@{DIGEST}", "reg.io", "app", None, DIGEST),
        ("team/app", "registry-1.docker.io", "team/app", "latest", None),
    ],
)
def test_parse_reference_follows_distribution_grammar(text, registry, repository, tag, digest):
    reference = parse_reference(text)

    assert (reference.registry, reference.repository) == (registry, repository)
    assert (reference.tag, reference.digest) == (tag, digest)


def test_digest_wins_over_tag_as_identifier():
    reference = parse_reference(f"reg.io/app:1@{DIGEST}")

    assert reference.identifier == DIGEST


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("reg.io/App", "'App'"),
        ("reg.io/app:bad tag", "tag"),
        ("reg.io/app@sha256:xyz", "digest"),
        ("", "empty"),
        ("reg.io/a//b", "component"),
    ],
)
def test_invalid_reference_names_the_rule_and_the_key(text, culprit):
    with pytest.raises(ConfigError) as caught:
        parse_reference(text, key="tool.jib.to.image")

    assert culprit in str(caught.value)
    assert "tool.jib.to.image" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "suggested"),
    [
        ("REG.example.com/Team/App:V1", "'REG.example.com/team/app:V1'"),
        ("MyApp", "'myapp'"),
        (f"reg.io:5000/Org/app@{DIGEST}", f"'reg.io:5000/org/app@{DIGEST}'"),
    ],
)
def test_upper_case_repository_is_refused_with_its_lower_case_form(text, suggested):
    with pytest.raises(ConfigError) as caught:
        parse_reference(text, key="tool.jib.to.image")

    assert caught.value.hint == f"write the repository in lower case: {suggested}"


def test_a_repository_that_lower_case_cannot_mend_gets_the_general_form():
    with pytest.raises(ConfigError) as caught:
        parse_reference("reg.io/App..x", key="tool.jib.to.image")

    assert caught.value.hint.startswith("use the form [registry/]repository")


def test_reference_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(ConfigError) as caught:
        parse_reference("user:s3cret@127.0.0.1:5000/app", key="tool.jib.to.image")

    assert "credentials" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_port_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="not a valid host"):
        parse_reference("127.0.0.1:99999/app")
