"""`[tool.jib]` is validated up front, with env and CLI overrides on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatch_jib.config import (
    effective_config,
    env_var_for,
    format_config,
    load_config,
    schema_keys,
)
from hatch_jib.errors import ConfigError
from hatch_jib.registry import Credential
from hatch_jib.registry.auth import unauthorized_hint

ROOT = Path("/project")
BASE = {"from": {"image": "python:3.12-slim"}}


def test_environment_configures_a_project_without_a_jib_table():
    environ = {
        "JIB_FROM_IMAGE": "localhost:5000/base:1",
        "JIB_TO_IMAGE": "localhost:5000/app",
        "JIB_TO_TAGS": "{version}, latest",
    }

    config = load_config(None, project_root=ROOT, version="2.0", environ=environ)

    assert str(config.from_.image) == "localhost:5000/base:1"
    assert str(config.to.image) == "localhost:5000/app"
    assert config.to.tags == ("2.0", "latest")


def test_print_config_says_a_tag_came_from_to_image():
    environ = {"JIB_TO_IMAGE": "localhost:5000/app:v1"}

    config = load_config({**BASE, "to": {"tags": ["latest"]}}, project_root=ROOT, environ=environ)
    entries = {entry.key: entry for entry in effective_config(config)}

    assert entries["to.tags"].value == ["v1", "latest"]
    assert entries["to.tags"].source == "to.image's tag (env JIB_TO_IMAGE) and pyproject.toml"


@pytest.mark.parametrize(
    ("image", "tags", "pushed"),
    [
        ("localhost:5000/app", None, ("latest",)),
        ("localhost:5000/app:v1", None, ("v1",)),
        ("localhost:5000/app:v1", ["{version}", "v1", "latest"], ("v1", "2.0", "latest")),
        ("localhost:5000/app", ["{version}"], ("2.0",)),
    ],
)
def test_a_tag_written_in_to_image_is_pushed_beside_to_tags(image, tags, pushed):
    to = {"image": image} | ({"tags": tags} if tags is not None else {})

    config = load_config({**BASE, "to": to}, project_root=ROOT, version="2.0", environ={})

    assert config.to.tags == pushed
    assert str(config.to.image) == image


def test_environment_overrides_the_table_and_cli_overrides_the_environment():
    table = {"from": {"image": "python:3.11"}, "to": {"image": "reg.io/a"}}
    environ = {"JIB_FROM_IMAGE": "python:3.12", "JIB_TO_IMAGE": "reg.io/b"}

    config = load_config(
        table, project_root=ROOT, environ=environ, overrides={"to.image": "reg.io/c"}
    )

    assert config.from_.image.tag == "3.12"
    assert config.to.image is not None and config.to.image.repository == "c"
    assert config.sources["from.image"] == "env JIB_FROM_IMAGE"
    assert config.sources["to.image"] == "command line"


def test_auth_from_environment_records_its_source_but_not_the_password_in_repr():
    environ = {"JIB_TO_AUTH_USERNAME": "ci", "JIB_TO_AUTH_PASSWORD": "s3cret-value"}

    config = load_config(BASE, project_root=ROOT, environ=environ)

    assert config.to.auth is not None
    assert config.to.auth.source == "JIB_TO_AUTH_USERNAME/JIB_TO_AUTH_PASSWORD"
    assert "s3cret-value" not in repr(config)


def test_auth_from_two_places_names_both():
    table = {**BASE, "to": {"auth": {"username": "ci"}}}
    environ = {"JIB_TO_AUTH_PASSWORD": "s3cret-value"}

    config = load_config(table, project_root=ROOT, environ=environ)

    assert config.to.auth is not None
    assert config.to.auth.source == (
        "pyproject.toml (tool.jib.to.auth.username) and JIB_TO_AUTH_PASSWORD"
    )
    credential = Credential("ci", "s3cret-value", source=config.to.auth.source)
    assert unauthorized_hint("reg.io", credential) == (
        "the credentials from pyproject.toml (tool.jib.to.auth.username) and"
        " JIB_TO_AUTH_PASSWORD were refused: check their values"
    )


def test_empty_tags_mean_latest():
    config = load_config(BASE, project_root=ROOT, environ={})

    assert config.to.tags == ("latest",)


def test_env_var_names_follow_key_paths():
    assert env_var_for("to.auth.username") == "JIB_TO_AUTH_USERNAME"
    assert env_var_for("allow-insecure-registries") == "JIB_ALLOW_INSECURE_REGISTRIES"


@pytest.mark.parametrize(
    ("table", "culprit"),
    [
        ({**BASE, "form": {}}, "did you mean `tool.jib.from`"),
        ({"from": {"image": "python:3", "imag": "x"}}, "tool.jib.from.imag"),
        ({**BASE, "container": {"ports": ["80", "http"]}}, "tool.jib.container.ports[1]"),
        ({**BASE, "container": {"ports": ["70000"]}}, "tool.jib.container.ports[0]"),
        ({**BASE, "container": {"entrypoint": "app"}}, "tool.jib.container.entrypoint"),
        ({**BASE, "container": {"format": "rpm"}}, "tool.jib.container.format"),
        ({**BASE, "container": {"working-directory": "app"}}, "working-directory"),
        ({**BASE, "container": {"creation-time": "yesterday"}}, "creation-time"),
        ({"from": {"image": "python:3.12", "platforms": ["amd64"]}}, "platforms[0]"),
        ({"from": {"image": "python:3.12", "platforms": ["linux/sparc"]}}, "platforms[0]"),
        ({**BASE, "to": {"tags": ["ok", "no spaces"]}}, "tool.jib.to.tags[1]"),
        ({**BASE, "to": {"auth": {"username": "u"}}}, "tool.jib.to.auth"),
        ({**BASE, "python": {"version": "three"}}, "tool.jib.python.version"),
        ({**BASE, "offline": "yes"}, "tool.jib.offline"),
        ({"from": {"image": "Bad/Name"}}, "tool.jib.from.image"),
        ({"to": {"image": "reg.io/a"}}, "tool.jib.from.image"),
    ],
)
def test_bad_config_names_the_key(table, culprit):
    with pytest.raises(ConfigError) as caught:
        load_config(table, project_root=ROOT, environ={})

    assert culprit in str(caught.value)


def test_bad_boolean_in_environment_names_the_variable():
    with pytest.raises(ConfigError, match="JIB_OFFLINE"):
        load_config(BASE, project_root=ROOT, environ={"JIB_OFFLINE": "maybe"})


def test_ports_get_a_protocol_and_ranges_one_key_per_port():
    table = {**BASE, "container": {"ports": ["8000", "9000-9002/udp"]}}

    config = load_config(table, project_root=ROOT, environ={})

    assert config.container.ports == ("8000/tcp", "9000/udp", "9001/udp", "9002/udp")


def test_name_and_version_placeholders_fill_tags():
    table = {**BASE, "to": {"tags": ["{name}-{version}", "{version}", "latest"]}}

    config = load_config(table, project_root=ROOT, version="1.2.0", name="my-app", environ={})

    assert config.to.tags == ("my-app-1.2.0", "1.2.0", "latest")


def test_empty_tag_list_means_latest():
    table = {**BASE, "to": {"image": "reg.io/app", "tags": []}}

    config = load_config(table, project_root=ROOT, environ={})

    assert config.to.tags == ("latest",)


def test_effective_config_lists_every_key_with_its_source_and_masks_secrets():
    table = {**BASE, "container": {"environment": {"API_TOKEN": "tok-123", "MODE": "prod"}}}
    environ = {"JIB_TO_AUTH_USERNAME": "ci", "JIB_TO_AUTH_PASSWORD": "s3cret-value"}

    config = load_config(
        table, project_root=ROOT, environ=environ, overrides={"to.image": "reg.io/app"}
    )
    entries = {entry.key: entry for entry in effective_config(config)}
    text = format_config(config)

    assert list(entries) == [key for key, _ in schema_keys()]
    assert entries["from.image"].source == "pyproject.toml"
    assert entries["to.image"].source == "command line"
    assert entries["to.auth.password"].source == "env JIB_TO_AUTH_PASSWORD"
    assert entries["to.auth.password"].value == "***"
    assert entries["container.environment"].value == {"API_TOKEN": "***", "MODE": "prod"}
    assert entries["container.working-directory"].source == "default"
    assert "s3cret-value" not in text and "tok-123" not in text
    assert 'to.image = "reg.io/app"' in text
    assert 'to.tags = ["latest"]' in text


def test_wrong_item_type_names_the_index_in_toml_words():
    table = {**BASE, "container": {"ports": ["80", 81]}}

    with pytest.raises(ConfigError) as caught:
        load_config(table, project_root=ROOT, environ={})

    assert "`tool.jib.container.ports[1]` must be a string, not integer 81" in str(caught.value)
    assert caught.value.hint


def test_error_about_a_value_from_the_environment_names_the_variable():
    with pytest.raises(ConfigError) as caught:
        load_config(BASE, project_root=ROOT, environ={"JIB_TO_TAGS": "Bad Tag"})

    assert "tool.jib.to.tags[0]" in str(caught.value)
    assert "(set by JIB_TO_TAGS)" in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "culprit"),
    [
        ({"JIB_OFFLINE": "maybe"}, "JIB_OFFLINE"),
        ({"JIB_CONTAINER_FORMAT": "zip"}, "tool.jib.container.format"),
        ({"JIB_UPLOAD_CHUNK_SIZE": "-4"}, "JIB_UPLOAD_CHUNK_SIZE"),
    ],
)
def test_bad_environment_values_come_with_a_hint(environ, culprit):
    with pytest.raises(ConfigError) as caught:
        load_config(BASE, project_root=ROOT, environ=environ)

    assert culprit in str(caught.value)
    assert caught.value.hint


def test_misspelt_jib_variable_is_reported_with_the_closest_setting():
    config = load_config(
        BASE, project_root=ROOT, environ={"JIB_FROM_IMAGES": "x", "JIB_DEBUG": "1"}
    )

    assert config.warnings == (
        "Environment variable JIB_FROM_IMAGES is not a hatch-jib setting; "
        "did you mean JIB_FROM_IMAGE?",
    )


@pytest.mark.parametrize(
    ("container", "culprit"),
    [
        ({"app-root": "/app/../usr"}, "tool.jib.container.app-root"),
        ({"working-directory": "/../x"}, "tool.jib.container.working-directory"),
        ({"volumes": ["/data", "rel"]}, "tool.jib.container.volumes[1]"),
        ({"user": ""}, "tool.jib.container.user"),
        ({"environment": {"A=B": "c"}}, "tool.jib.container.environment"),
        ({"entrypoint": []}, "tool.jib.container.entrypoint"),
    ],
)
def test_values_that_would_break_the_image_are_refused(container, culprit):
    with pytest.raises(ConfigError) as caught:
        load_config({**BASE, "container": container}, project_root=ROOT, environ={})

    assert culprit in str(caught.value)


def test_extra_directory_into_cannot_climb_out_of_the_image(tmp_path):
    (tmp_path / "static").mkdir()
    table = {**BASE, "extra-directories": [{"from": "static", "into": "/../../evil"}]}

    with pytest.raises(ConfigError, match=r"extra-directories\[0\]\.into"):
        load_config(table, project_root=tmp_path, environ={})


def test_image_paths_are_normalized():
    table = {**BASE, "container": {"app-root": "/srv//app/", "volumes": ["/data/"]}}

    config = load_config(table, project_root=ROOT, environ={})

    assert (config.container.app_root, config.container.volumes) == ("/srv/app", ("/data",))


@pytest.mark.parametrize(
    ("container", "culprit"),
    [
        ({"files-modification-time": "²"}, "is not a time"),
        ({"files-modification-time": "99999999999999999999"}, "outside 1970 to 2242"),
        ({"files-modification-time": "1960-01-01T00:00:00Z"}, "outside 1970 to 2242"),
        ({"creation-time": "9999-12-31T23:59:59-14:00"}, "is not a time"),
    ],
)
def test_times_a_tar_header_cannot_hold_are_config_errors(container, culprit):
    with pytest.raises(ConfigError, match=culprit):
        load_config({**BASE, "container": container}, project_root=ROOT, environ={})


def test_malformed_source_date_epoch_is_a_config_error(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "²")

    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        load_config(BASE, project_root=ROOT, environ={})


@pytest.mark.parametrize(
    "epoch", ["", "  ", "2024-01-01T00:00:00Z", "-5", "\x1c17\x1c", "4354819200"]
)
def test_source_date_epoch_set_but_not_seconds_is_a_config_error_even_when_unused(
    monkeypatch, epoch
):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    container = {"files-modification-time": "1700000000"}

    with pytest.raises(ConfigError) as raised:
        load_config({**BASE, "container": container}, project_root=ROOT, environ={})

    assert f"SOURCE_DATE_EPOCH is {epoch!r}," in str(raised.value)
    assert raised.value.hint is not None and "hatchling reads it too" in raised.value.hint


def test_source_date_epoch_sets_the_files_time_when_no_key_does(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", " 1700000000\n")

    config = load_config(BASE, project_root=ROOT, environ={})

    assert config.container.files_modification_time == 1700000000


def test_target_with_a_digest_is_refused():
    table = {**BASE, "to": {"image": "reg.io/app:1@sha256:" + "0" * 64}}

    with pytest.raises(ConfigError, match="names a digest"):
        load_config(table, project_root=ROOT, environ={})


def test_extra_directory_from_outside_the_project_is_warned_about(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "elsewhere").mkdir()
    table = {**BASE, "extra-directories": [{"from": "../elsewhere", "into": "/data"}]}

    config = load_config(table, project_root=project, environ={})

    assert len(config.warnings) == 1
    assert "extra-directories[0].from" in config.warnings[0]
    assert "outside the project" in config.warnings[0]


@pytest.mark.parametrize(
    ("table", "message", "hint"),
    [
        (
            {**BASE, "to": {"tags": ["{vers}"]}},
            "`tool.jib.to.tags[0]` = '{vers}' has the unknown placeholder {vers}",
            "the placeholders are {version} and {name}",
        ),
        (
            {**BASE, "to": {"tags": ["-rc1"]}},
            "`tool.jib.to.tags[0]` = '-rc1' gives the invalid tag '-rc1'",
            "does not start with . or -",
        ),
        (
            {**BASE, "extra-directories": [{"from": "static"}]},
            "`tool.jib.extra-directories[0].into` is required",
            'add into = "/app/static"',
        ),
        (
            {**BASE, "extra-directories": {"from": "static", "into": "/srv"}},
            "Field `tool.jib.extra-directories` must be an array of tables",
            "[[tool.jib.extra-directories]] header",
        ),
        (
            {**BASE, "extra-directories": [{"from": "no-such-dir", "into": "/srv"}]},
            "`tool.jib.extra-directories[0].from`: directory /project/no-such-dir does not exist",
            "relative to the project root",
        ),
    ],
    ids=["unknown-placeholder", "tag-starts-with-dash", "no-into", "single-brackets", "no-from"],
)
def test_config_mistakes_name_the_key_and_say_what_to_write(table, message, hint):
    with pytest.raises(ConfigError) as caught:
        load_config(table, project_root=ROOT, environ={})

    assert caught.value.message == message
    assert hint in (caught.value.hint or "")
